"""The command line end to end on tiny sizes: files written, table printed, bad input refused before work."""

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import dopamine_fast
from dopamine_fast.cli import main

needs_optimizers = pytest.mark.skipif(not hasattr(dopamine_fast, "Dopamine"),
                                      reason="dopamine_fast.Dopamine is not in this build")
TINY_LORENZ = ["--task", "lorenz", "--length", "200", "--lookback", "6", "--horizon", "5", "--hidden", "6"]


def _rows(path: Path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_train_sgd_writes_curve_plot_and_table(tmp_path, capsys):
    assert main(["train", "--task", "xor", "--optimizer", "sgd", "--steps", "20", "--log-points", "4", "--threads", "1",
                 "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| metric" in out and "test_error" in out and "loss evaluations" in out
    rows = _rows(tmp_path / "curve.csv")
    assert [int(r["step"]) for r in rows] == [0, 5, 10, 15, 20]
    assert {"train_loss", "lr", "test_error", "accuracy", "evaluations"} <= set(rows[0])
    assert (tmp_path / "curve.png").stat().st_size > 0


@needs_optimizers
@pytest.mark.parametrize("optimizer", ["dopamine", "dopamine2"])
def test_train_dopamine_on_lorenz(tmp_path, capsys, optimizer):
    assert main(["train", *TINY_LORENZ, "--optimizer", optimizer, "--steps", "3", "--out", str(tmp_path)]) == 0
    rows = _rows(tmp_path / "curve.csv")
    per_step = int(rows[-1]["evaluations"]) // int(rows[-1]["step"])
    k = 1 if optimizer == "dopamine2" else 16  # Dopamine's constructor default: the CLI uses it on every task
    assert per_step == 1 + k  # 1 + K loss evaluations per step
    assert {"nrmse", "free_run_nrmse", "lr"} <= set(rows[0])
    assert "free_run_nrmse" in capsys.readouterr().out


@needs_optimizers
def test_compare_xor_writes_table_and_plot(tmp_path, capsys):
    optimizers = "wp,dopamine,dopamine2,sgd,adam"
    # 153 evaluations: whole steps for WP (K = 8 on XOR, 9 a step) and Dopamine (its default K = 16, 17 a step).
    assert main(["compare", "--task", "xor", "--optimizers", optimizers, "--seeds", "2", "--evaluations", "153",
                 "--log-points", "3", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    for name in optimizers.split(","):
        assert f"| {name} " in out
    runs = _rows(tmp_path / "compare_runs.csv")
    assert len(runs) == 10 and all(int(r["evaluations"]) <= 153 for r in runs)
    assert {r["optimizer"] for r in runs if int(r["evaluations"]) == 153} >= {"wp", "dopamine", "sgd", "adam"}
    assert len(_rows(tmp_path / "compare_summary.csv")) == 5
    assert (tmp_path / "compare.png").stat().st_size > 0 and (tmp_path / "compare_curves.csv").exists()


def test_compare_lorenz_with_backprop(tmp_path, capsys):
    assert main(["compare", *TINY_LORENZ, "--optimizers", "sgd,adam", "--seeds", "2", "--evaluations", "4",
                 "--batch-size", "16", "--out", str(tmp_path), "--no-progress"]) == 0
    assert "test NRMSE" in capsys.readouterr().out
    assert {r["optimizer"] for r in _rows(tmp_path / "compare_runs.csv")} == {"sgd", "adam"}


@pytest.mark.skipif(importlib.util.find_spec("evotorch") is None, reason="evotorch is not installed")
def test_compare_with_pgpe(tmp_path, capsys):
    assert main(["compare", "--task", "xor", "--optimizers", "pgpe,adam", "--seeds", "1", "--evaluations", "27",
                 "--out", str(tmp_path), "--no-progress"]) == 0
    runs = _rows(tmp_path / "compare_runs.csv")
    assert [int(r["evaluations"]) for r in runs] == [27, 27]  # pgpe: popsize 8 + the centre per step


@pytest.mark.parametrize("argv, message", [
    (["train", "--task", "lorenzz", "--optimizer", "wp"], "invalid choice: 'lorenzz' (choose from 'xor'"),
    (["train", "--task", "xor", "--optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
    (["compare", "--task", "xor", "--optimizers", "wp,foo"], "unknown optimizer(s) foo; valid optimizers: wp,"),
    (["train", "--task", "xor", "--optimizer", "sgd", "--steps", "0"], "--steps: expected an integer >= 1"),
    (["train", "--task", "xor", "--optimizer", "sgd", "--hidden", "-3"], "--hidden: expected an integer >= 1"),
    (["train", "--task", "lorenz", "--optimizer", "sgd", "--lookback", "4000"], "than lookback"),
    (["train", "--task", "xor", "--optimizer", "sgd", "--lookback", "4"], "takes no option lookback"),
    (["compare", "--task", "xor", "--optimizers", "sgd", "--seeds", "0"], "--seeds: expected an integer >= 1"),
])
def test_bad_input_is_refused_with_the_valid_choices(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@needs_optimizers
def test_budget_below_one_step_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--task", "xor", "--optimizers", "sgd,wp", "--evaluations", "3"])
    assert "less than one wp step (9 loss evaluations)" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli():
    env = dict(os.environ, PYTHONPATH=str(Path(dopamine_fast.__file__).parents[1]))
    done = subprocess.run([sys.executable, "-m", "dopamine_fast", "list"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "lorenz" in done.stdout and "dopamine2" in done.stdout


# -- reliability: bad values are usage errors, the output folder is checked first, work is kept ------------------

@pytest.mark.parametrize("argv, message", [
    (["--lr", "inf"], "--lr: expected a finite positive number, got inf"),
    (["--sigma", "inf"], "--sigma: expected a finite positive number, got inf"),
    (["--sigma", "1e400"], "--sigma: expected a finite positive number, got 1e400"),
    (["--sigma", "1e300"], "wp: sigma must be <= "),
    (["--num-perturbations", "3"], "wp: num_perturbations must be even with antithetic=True"),
    (["--optimizer-option", "lr=nan"], "wp: lr must be a finite number"),
    (["--optimizer-option", "temperature=2"], "unexpected keyword argument 'temperature'"),
    (["--optimizer-option", "dopamine.lr=0.1"], "--optimizer-option dopamine.lr: dopamine is not an optimizer"),
    (["--optimizer-option", "lr"], "--optimizer-option: expected KEY=VALUE"),
    (["--task-option", "activation=gelu"], "activation must be"),
    (["--task-option", "hidden=2.5"], "--task-option hidden: expected int like the default 2"),
    (["--task-option", "lookback=4"], "takes no option lookback"),
])
def test_bad_values_are_usage_errors(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--task", "xor", "--optimizer", "wp", "--steps", "3", "--out", str(tmp_path / "run"), *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before the output folder was even made


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is here: the cuda backend can run")
def test_a_gpu_backend_without_a_gpu_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--task", "xor", "--optimizer", "wp", "--steps", "3", "--backend", "cuda"])
    assert exc.value.code == 2
    assert "--backend cuda: cannot run on cpu" in capsys.readouterr().err


@pytest.mark.parametrize("make_out, message", [
    (lambda tmp: tmp / "file.txt", "exists and is not a folder"),
    (lambda tmp: tmp / "file.txt" / "sub", "cannot create the folder"),
    (lambda tmp: Path("/proc/dopamine-fast-test"), "cannot create the folder"),
])
def test_a_bad_output_folder_is_refused_before_training(make_out, message, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("not a folder")
    with pytest.raises(SystemExit) as exc:
        main(["train", "--task", "xor", "--optimizer", "sgd", "--steps", "20", "--out", str(make_out(tmp_path)),
              "--no-progress"])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert "--out: " in captured.err and message in captured.err
    assert "| metric" not in captured.out  # nothing was trained


@needs_optimizers
def test_no_antithetic_and_optimizer_options_reach_the_optimizer(tmp_path):
    assert main(["train", "--task", "xor", "--optimizer", "wp", "--steps", "4", "--log-points", "2",
                 "--num-perturbations", "3", "--no-antithetic", "--optimizer-option", "lr=0.125",
                 "--optimizer-option", "max_grad_norm=1.0", "--out", str(tmp_path), "--no-progress"]) == 0
    rows = _rows(tmp_path / "curve.csv")
    assert int(rows[-1]["evaluations"]) // int(rows[-1]["step"]) == 4  # 1 + 3 independent perturbations
    assert {float(r["lr"]) for r in rows} == {0.125}


@needs_optimizers
def test_compare_takes_lr_and_per_optimizer_options(tmp_path, capsys):
    assert main(["compare", "--task", "xor", "--optimizers", "wp,sgd", "--seeds", "1", "--evaluations", "36",
                 "--log-points", "2", "--lr", "0.375", "--optimizer-option", "wp.lr=0.25",
                 "--out", str(tmp_path), "--no-progress"]) == 0
    lrs = {(r["optimizer"], float(r["lr"])) for r in _rows(tmp_path / "compare_curves.csv")}
    assert lrs == {("wp", 0.25), ("sgd", 0.375)}
    with pytest.raises(SystemExit):  # unqualified, the option goes to every optimizer, and SGD has no such knob
        main(["compare", "--task", "xor", "--optimizers", "wp,sgd", "--optimizer-option", "max_grad_norm=1.0"])
    assert "sgd: " in capsys.readouterr().err


def test_list_shows_exactly_the_accepted_task_options(capsys):
    from dopamine_fast.tasks import TASKS, task_options
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in TASKS:
        line = next(row for row in out.splitlines() if row.split() and row.split()[0] == name)
        listed = [item.split("=")[0].strip() for item in line.split(None, 1)[1].split(", ") if "=" in item]
        assert listed == task_options(name)


def test_lorenz_sigma_is_a_task_option_apart_from_the_perturbation_sigma(tmp_path):
    # --sigma is the perturbation scale; the Lorenz system's own sigma goes through --task-option.
    assert main(["train", *TINY_LORENZ, "--optimizer", "sgd", "--steps", "2", "--task-option", "sigma=12",
                 "--task-option", "rho=20", "--sigma", "0.01", "--out", str(tmp_path), "--no-progress"]) == 0
    from dopamine_fast.tasks import get_task
    default = get_task("lorenz", length=200, lookback=6, horizon=5)
    changed = get_task("lorenz", length=200, lookback=6, horizon=5, sigma=12.0, rho=20.0)
    assert not __import__("torch").equal(default.x_train, changed.x_train)


def _interrupted_run(tmp_path, argv, csv_name, signum=None):
    """Start the CLI, wait until it has written a few curve rows, press Ctrl-C (or send ``signum``); return
    (process, rows)."""
    import signal
    import time
    env = dict(os.environ, PYTHONPATH=str(Path(dopamine_fast.__file__).parents[1]))
    proc = subprocess.Popen([sys.executable, "-m", "dopamine_fast", *argv, "--out", str(tmp_path), "--no-progress",
                             "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        path = tmp_path / csv_name
        if path.exists() and len(path.read_text().splitlines()) >= 4:  # a header and three rows, on disk already
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT if signum is None else signum)
    stdout, stderr = proc.communicate(timeout=120)
    return proc, stderr, _rows(tmp_path / csv_name)


def test_ctrl_c_stops_train_at_the_next_step_and_keeps_the_curve(tmp_path):
    proc, stderr, rows = _interrupted_run(
        tmp_path, ["train", "--task", "xor", "--optimizer", "sgd", "--steps", "100000000", "--log-points",
                   "100000000"], "curve.csv")
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1].startswith("interrupted after step ")
    assert "Traceback" not in stderr
    last = int(stderr.strip().splitlines()[-1].split()[3])
    steps = [int(r["step"]) for r in rows]
    assert steps == list(range(last + 1))  # every step logged, up to the one it stopped at
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_ctrl_c_stops_compare_and_keeps_what_exists(tmp_path):
    proc, stderr, rows = _interrupted_run(
        tmp_path, ["compare", "--task", "xor", "--optimizers", "sgd,adam", "--seeds", "2", "--evaluations",
                   "100000000", "--log-points", "100000000"], "compare_curves.csv")
    assert proc.returncode == 130, stderr
    assert "interrupted during run 1 of 4" in stderr and "Traceback" not in stderr
    assert {r["optimizer"] for r in rows} == {"sgd"} and len(rows) >= 3
    assert len(_rows(tmp_path / "compare_runs.csv")) == 1


# -- runs are never overwritten silently ---------------------------------------------------------------------------

TINY_TRAIN = ["train", "--task", "xor", "--optimizer", "sgd", "--steps", "3", "--no-progress"]


def test_an_empty_out_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        main([*TINY_TRAIN, "--out", ""])
    assert exc.value.code == 2 and "--out: expected a folder name, got ''" in capsys.readouterr().err


def test_a_folder_holding_a_run_is_refused_unless_overwrite(tmp_path, capsys):
    assert main([*TINY_TRAIN, "--out", str(tmp_path / "run")]) == 0
    first = (tmp_path / "run" / "curve.csv").read_text()
    with pytest.raises(SystemExit) as exc:
        main([*TINY_TRAIN, "--lr", "0.5", "--out", str(tmp_path / "run")])
    assert exc.value.code == 2
    assert "already holds curve.csv, curve.png; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "run" / "curve.csv").read_text() == first
    assert main([*TINY_TRAIN, "--lr", "0.5", "--out", str(tmp_path / "run"), "--overwrite"]) == 0
    assert (tmp_path / "run" / "curve.csv").read_text() != first
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["curve.csv", "curve.png"]  # the lock is gone


def test_default_folders_are_named_after_the_options_and_never_reused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert main([*TINY_TRAIN, "--lr", "0.5"]) == 0
    assert main(TINY_TRAIN) == 0
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(folders) == 3
    assert sum(name.startswith("xor-sgd-seed0-lr0.5-") for name in folders) == 2


def test_a_folder_another_run_is_writing_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".dopamine-fast.lock").write_text(str(writer.pid))
        with pytest.raises(SystemExit) as exc:
            main([*TINY_TRAIN, "--out", str(out), "--overwrite"])
        assert exc.value.code == 2
        assert f"is being written by another run (pid {writer.pid})" in capsys.readouterr().err
    finally:
        writer.kill()
        writer.wait()
    assert main([*TINY_TRAIN, "--out", str(out), "--overwrite"]) == 0  # its writer is gone: the lock is stale


@pytest.mark.parametrize("value, message", [("maybe", "antithetic must be True or False, got 'maybe'"),
                                            ("'False'", "antithetic must be True or False, got 'False'")])
def test_antithetic_must_be_true_or_false(value, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--task", "xor", "--optimizer", "wp", "--steps", "3", "--optimizer-option",
              f"antithetic={value}", "--out", str(tmp_path / "run")])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_antithetic_false_in_any_case_is_the_boolean(tmp_path):
    assert main(["train", "--task", "xor", "--optimizer", "wp", "--steps", "3", "--num-perturbations", "3",
                 "--optimizer-option", "antithetic=FALSE", "--out", str(tmp_path), "--no-progress"]) == 0


def test_a_broken_evotorch_is_a_usage_error(tmp_path, monkeypatch, capsys):
    (tmp_path / "evotorch").mkdir()
    (tmp_path / "evotorch" / "__init__.py").write_text("raise RuntimeError('half installed')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "evotorch" or m.startswith("evotorch.")]:
        monkeypatch.delitem(sys.modules, name)  # a real EvoTorch imported by an earlier test would be reused
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--task", "xor", "--optimizers", "pgpe", "--out", str(tmp_path / "run")])
    assert exc.value.code == 2
    assert "evotorch, which is installed but fails to import (RuntimeError: half installed)" in capsys.readouterr().err


def test_ctrl_c_while_the_command_line_starts_prints_one_line(tmp_path):
    import signal
    import time
    env = dict(os.environ, PYTHONPATH=str(Path(dopamine_fast.__file__).parents[1]))
    proc = subprocess.Popen([sys.executable, "-m", "dopamine_fast", *TINY_TRAIN, "--out", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(1.0)  # importing torch, on most machines
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run ended before the signal came")
    assert proc.returncode == 130 and stderr == "interrupted\n", stderr


def test_sigterm_stops_train_like_ctrl_c(tmp_path):
    import signal
    proc, stderr, rows = _interrupted_run(
        tmp_path, ["train", "--task", "xor", "--optimizer", "sgd", "--steps", "100000000", "--log-points",
                   "100000000"], "curve.csv", signal.SIGTERM)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1].startswith("interrupted after step ") and "Traceback" not in stderr
    assert len(rows) >= 3
