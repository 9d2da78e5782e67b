"""``torchrun ... -m dopamine_fast train --distributed``: a run that loses a worker resumes bit-exactly.

Two 2-worker torchrun jobs on the loopback run side by side: one uninterrupted, one whose rank 1 kills itself
(SIGKILL) at step 7 of its first attempt; torchrun restarts both workers, which resume from the step-5
checkpoint. Both must end with the same weights, bit for bit.
"""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import torch

STEPS, CHECKPOINT_EVERY, KILL_AT = 12, 5, 7

# Fault injection stays in the test: the worker wraps the optimizer's update and kills rank 1 once.
WORKER = """
import os, signal, sys
from dopamine_fast import cli
from dopamine_fast.optim.perturbation_optimizer import PerturbationOptimizer

kill_at = int(sys.argv[1])
original = PerturbationOptimizer.step_from_losses

def step_from_losses(self, losses, plan):
    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    if os.environ["RANK"] == "1" and first_attempt and self.state["global"]["step"] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, losses, plan)

PerturbationOptimizer.step_from_losses = step_from_losses
sys.exit(cli.main(sys.argv[2:]))
"""


def _free_ports(n: int):
    """``n`` distinct free loopback ports (all sockets held open together, so no port comes back twice)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _torchrun(worker: Path, out: Path, kill_at: int, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--max-restarts", "1",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--local-addr", "127.0.0.1",
           str(worker), str(kill_at), "train", "--task", "xor", "--optimizer", "wp", "--steps", str(STEPS),
           "--batch-size", "2", "--distributed", "--checkpoint-every", str(CHECKPOINT_EVERY), "--no-progress",
           "--device", "cpu", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    if "lo" in {name for _, name in socket.if_nameindex()}:
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # gloo would bind to the hostname's interface otherwise
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def test_a_restarted_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    ports = _free_ports(2)
    jobs = {name: _torchrun(worker, tmp_path / name, kill_at, port)
            for (name, kill_at), port in zip((("whole", -1), ("killed", KILL_AT)), ports)}
    logs = {name: job.communicate(timeout=240)[0] for name, job in jobs.items()}
    for name, job in jobs.items():
        assert job.returncode == 0, logs[name]
    resumed = {name: re.search(r"resumed from step\s*\|\s*(\d+)", log) for name, log in logs.items()}
    assert int(resumed["whole"].group(1)) == 0, logs["whole"]
    assert int(resumed["killed"].group(1)) == CHECKPOINT_EVERY, logs["killed"]
    assert torch.load(tmp_path / "killed" / "checkpoint.pt")["step"] == STEPS
    whole = torch.load(tmp_path / "whole" / "weights.pt")
    killed = torch.load(tmp_path / "killed" / "weights.pt")
    assert whole.keys() == killed.keys()
    for key in whole:
        assert torch.equal(whole[key], killed[key]), key
