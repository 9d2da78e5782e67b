"""Run the CPU benchmark suite (under 10 minutes on 2 cores) and write bench/results/README.md.

    python bench/run_cpu_suite.py [--out DIR] [--quick]

Each benchmark runs in its own process with a wall-clock budget (cases left when it is spent are recorded as
skipped), so the suite's time is bounded whatever backends the machine has.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from suite import op_benches

HERE = Path(__file__).resolve().parent
# Seconds per script on the CPU: the op layer's overhead, each op's benchmark (OP_BUDGET_S unless it needs more or
# less), then the whole paths. With today's four ops they add up to 8.7 minutes, leaving room for start-up and the
# last measurement each script starts before its budget runs out.
OP_BUDGET_S = 30
OP_BUDGETS_S = {"bench_noise": 20, "bench_perturbed_linear": 60, "bench_perturbed_rnn": 45}
BUDGETS = {"bench_dispatch": 20, **{name: OP_BUDGETS_S.get(name, OP_BUDGET_S) for name in op_benches()},
           "bench_population": 290, "bench_step": 60}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for every benchmark (default: torch's choice, all cores)")
    args = parser.parse_args()
    start = time.perf_counter()
    failed = []
    for script, budget in BUDGETS.items():
        cmd = [sys.executable, str(HERE / f"{script}.py"), "--device", "cpu", "--out", args.out,
               "--budget-s", str(budget)] + (["--quick"] if args.quick else [])
        cmd += ["--threads", str(args.threads)] if args.threads else []
        print(f"== {script} (budget {budget} s)", flush=True)
        if subprocess.run(cmd).returncode != 0:
            failed.append(script)
    command = " ".join(["python bench/run_cpu_suite.py"] + sys.argv[1:])
    subprocess.run([sys.executable, str(HERE / "summarize.py"), "--out", args.out, "--command", command], check=True)
    print(f"suite done in {time.perf_counter() - start:.0f} s" + (f"; failed: {failed}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
