"""Smoke test of the benchmark suite: one script at --quick sizes on the reference backend writes its CSV.

Checks the files and their columns only; benchmarks report times, tests never judge them.
"""

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from dopamine_fast.backends import available_backends

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = {"bench", "device", "in_features", "out_features", "batch", "K", "members", "backend", "rank", "normals",
            "time_s", "min_s", "max_s", "repeats", "peak_mb", "status", "ratio_to_floor", "gflops",
            "matmul_fraction"}


def test_perturbed_linear_bench_quick_writes_csv(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("DOPAMINE_FAST_BACKEND", None)
    cmd = [sys.executable, str(ROOT / "bench" / "bench_perturbed_linear.py"), "--quick", "--device", "cpu",
           "--backends", "reference", "--out", str(tmp_path), "--budget-s", "60"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    with open(tmp_path / "perturbed_linear.csv") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert EXPECTED <= set(reader.fieldnames)
    backends = {r["backend"] for r in rows if r["status"] == "ok"}
    assert {"floor", "reference"} <= backends
    assert all(float(r["time_s"]) > 0 for r in rows if r["status"] == "ok")
    assert (tmp_path / "perturbed_linear.png").exists() and (tmp_path / "perturbed_linear.json").exists()

    summary = subprocess.run([sys.executable, str(ROOT / "bench" / "summarize.py"), "--out", str(tmp_path)],
                             env=env, capture_output=True, text=True, timeout=60)
    assert summary.returncode == 0, summary.stderr[-2000:]
    assert "perturbed_linear" in (tmp_path / "README.md").read_text()


def test_summarize_keeps_op_results_written_before_they_named_their_op(tmp_path):
    """Results written before the benchmarks recorded their op (no "op" key): the op's table is still summarised."""
    shutil.copy(ROOT / "bench" / "results" / "noise.csv", tmp_path)
    meta = json.loads((ROOT / "bench" / "results" / "noise.json").read_text())
    meta.pop("op", None)
    (tmp_path / "noise.json").write_text(json.dumps(meta))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    summary = subprocess.run([sys.executable, str(ROOT / "bench" / "summarize.py"), "--out", str(tmp_path)],
                             env=env, capture_output=True, text=True, timeout=60)
    assert summary.returncode == 0, summary.stderr[-2000:]
    text = (tmp_path / "README.md").read_text()
    assert "## Single ops" in text and "`noise_`" in text and "| 64 | 1048576 | cpp |" in text


def test_population_and_step_benches_time_the_public_api(tmp_path):
    """The package's rows come from df.Population / opt.step(population=...) and say which path they took."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("DOPAMINE_FAST_BACKEND", None)
    backend = "cpp" if "cpp" in available_backends("perturbed_linear", "cpu") else "reference"
    for script in ("bench_population.py", "bench_step.py"):
        cmd = [sys.executable, str(ROOT / "bench" / script), "--quick", "--device", "cpu", "--backends", backend,
               "--out", str(tmp_path), "--budget-s", "60", "--threads", "1", "--no-peers"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for name, method in (("population", "population"), ("step", "dopamine_step")):
        with open(tmp_path / f"{name}.csv") as f:
            rows = [r for r in csv.DictReader(f) if r["method"] == method and r["status"] == "ok"]
        assert rows, f"no {method} rows in {name}.csv"
        assert {r["path"] for r in rows} == {"fused"}
    assert not (ROOT / "bench" / "workloads.py").read_text().count("perturbed_linear(")  # no copy of the fused path


def test_population_bench_large_k_runs_members_in_a_budget(tmp_path):
    """``--cases large_k``: the budgeted rows run fused and carry members/s, the rate against the floor's and the
    peak against the budget."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("DOPAMINE_FAST_BACKEND", None)
    cmd = [sys.executable, str(ROOT / "bench" / "bench_population.py"), "--quick", "--cases", "large_k", "--device",
           "cpu", "--out", str(tmp_path), "--budget-s", "60", "--threads", "1"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    with open(tmp_path / "population_large_k.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["method"] == "population_budget" and r["status"] == "ok"]
    assert rows and {r["path"] for r in rows} == {"fused"}
    assert all(float(r["members_per_s"]) > 0 and float(r["rows_vs_floor"]) > 0 and r["peak_vs_budget"] for r in rows)


def test_large_bench_quick_writes_csv(tmp_path):
    """bench_large at the toy size: inference, the MeZO loop and Dopamine lean, one process per case."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("DOPAMINE_FAST_BACKEND", None)
    cmd = [sys.executable, str(ROOT / "bench" / "bench_large.py"), "--quick", "--dtypes", "float32", "--methods",
           "inference,mezo,dopamine lean r4", "--out", str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    with open(tmp_path / "large_quick.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["memory"], r["rank"]) for r in rows] == [("inference", "", ""), ("mezo", "", ""),
                                                                      ("dopamine lean", "lean", "4")]
    assert all(r["status"] == "ok" and float(r["time_s"]) > 0 and r["peak_over_inference"] for r in rows)


def test_memory_bench_quick_writes_its_table(tmp_path):
    """bench_memory at the toy size: Adam/BPTT and Dopamine with and without a budget, one table per device."""
    cmd = [sys.executable, str(ROOT / "bench" / "bench_memory.py"), "--quick", "--ks", "4", "--repeats", "1",
           "--bptt-repeats", "1", "--out", str(tmp_path)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    rows = list(csv.DictReader(open(tmp_path / "memory_cpu_quick.csv")))
    assert [r["method"] for r in rows] == ["adam_bptt", "dopamine", "dopamine"]
    assert rows[1]["max_memory_mb"] and not rows[2]["max_memory_mb"]  # the budgeted run first
    assert "CPU" in (tmp_path / "memory_cpu_quick.md").read_text()


def test_targets_bench_quick_judges_every_target_and_its_ceiling(tmp_path):
    """bench_targets at the toy size: a verdict per target, and the machine's ceiling beside the one it bounds."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(ROOT / "bench" / "bench_targets.py"), "--quick", "--out", str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "targets.csv")))
    targets = {r["target"]: r for r in rows if r["method"] == "target"}
    assert len(targets) == 7
    floor = next(r for r in rows if r["method"] == "floor" and r["batch"] == "32")
    assert float(floor["matmul_fraction"]) > 0  # torch's own GEMM rate on the floor's rows, beside the target's
    speedup = targets["B=1: rank-1 evaluation, speedup vs EvoTorch's evaluation"]
    if speedup["verdict"] != "not measured":  # EvoTorch installed: the ceiling is measured with it
        assert float(speedup["ceiling"]) > 0


def test_member_flops_count_the_first_layer_once_per_batch_row():
    spec = importlib.util.spec_from_file_location("bench_workloads", ROOT / "bench" / "workloads.py")
    workloads = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look their module up
    spec.loader.exec_module(workloads)  # by path: bench/ is not a package, and its names stay off sys.path

    w = workloads.make_workload("mlp32", 3, "cpu")
    members = 5
    assert w.matmul_flops(members * 3) == 2.0 * members * 3 * 3 * 32 * 32
    assert w.member_flops(members) == 2.0 * 3 * 32 * 32 * (3 * members - (members - 1))


def test_defaults_bench_spreads_seeds_over_processes_and_keeps_each_seed(tmp_path):
    """Every (case, seed) is one job; the summary counts the seeds of each case whichever process ran them."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(ROOT / "bench" / "bench_defaults.py"), "--seeds", "3", "--steps", "20", "--cases",
           "xor_2-2-1,task_xor", "--optimizers", "dopamine", "--threads", "1", "--jobs", "2", "--out", str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    with open(tmp_path / "defaults_runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert sorted((r["case"], r["seed"]) for r in runs) == [(c, str(s)) for c in ("task_xor", "xor_2-2-1")
                                                             for s in range(3)]
    with open(tmp_path / "defaults_summary.csv") as f:
        summary = {r["case"]: r for r in csv.DictReader(f)}
    assert set(summary) == {"xor_2-2-1", "task_xor"} and all(r["seeds"] == "3" for r in summary.values())
    first = [float(r["first_loss"]) for r in runs if r["case"] == "xor_2-2-1"]
    assert float(summary["xor_2-2-1"]["median first loss"]) == sorted(first)[1]


def _claims_runs(folder, task, rows):
    (folder / task).mkdir(parents=True)
    with open(folder / task / "claims_runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["task", "optimizer", "seed", "test_error", "diverged",
                                               "evals_to_threshold", "s_to_threshold"])
        writer.writeheader()
        for optimizer, seed, error in rows:
            writer.writerow({"task": task, "optimizer": optimizer, "seed": seed, "test_error": error,
                             "diverged": False, "evals_to_threshold": 100, "s_to_threshold": 1.0})


def test_quality_claims_gather_each_method_from_the_first_folder_that_ran_it(tmp_path):
    """A method rerun alone is judged against the others' earlier runs: the first folder listed wins a method."""
    new, old, out = tmp_path / "new", tmp_path / "old", tmp_path / "out"
    _claims_runs(new, "noisy_xor", [("dopamine", s, 0.05) for s in range(3)])
    _claims_runs(old, "noisy_xor", [("dopamine", s, 0.5) for s in range(3)] + [("wp", s, 0.1) for s in range(3)])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(ROOT / "bench" / "bench_quality.py"), "--claims-only", "--tasks", "noisy_xor",
           "--gather", f"{new},{old}", "--out", str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    claims = (out / "claims.md").read_text()
    assert "tuned Dopamine vs tuned WP: median 0.05 vs 0.1: **better**" in claims
    assert "noisy_xor: dopamine from `new`, wp from `old`" in claims
    with open(out / "noisy_xor" / "claims_runs.csv") as f:
        assert len(list(csv.DictReader(f))) == 6
    missing = subprocess.run(cmd[:-4] + ["--gather", str(tmp_path / "none"), "--out", str(out)], env=env,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "--gather: no folder" in missing.stderr
