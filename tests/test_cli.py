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
    assert per_step == (2 if optimizer == "dopamine2" else 9)  # 1 + K loss evaluations per step
    assert {"nrmse", "free_run_nrmse", "lr"} <= set(rows[0])
    assert "free_run_nrmse" in capsys.readouterr().out


@needs_optimizers
def test_compare_xor_writes_table_and_plot(tmp_path, capsys):
    optimizers = "wp,dopamine,dopamine2,sgd,adam"
    assert main(["compare", "--task", "xor", "--optimizers", optimizers, "--seeds", "2", "--evaluations", "90",
                 "--log-points", "3", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    for name in optimizers.split(","):
        assert f"| {name} " in out
    runs = _rows(tmp_path / "compare_runs.csv")
    assert len(runs) == 10 and all(int(r["evaluations"]) <= 90 for r in runs)
    assert {r["optimizer"] for r in runs if int(r["evaluations"]) == 90} >= {"wp", "dopamine", "sgd", "adam"}
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
    (["train", "--task", "lorenz", "--optimizer", "sgd", "--lookback", "4000"], "fewer than lookback"),
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
