"""Large models at inference memory: peak memory and step time of inference, Adam, the MeZO loop and Dopamine's
drop-in step (``memory="exact"`` and ``"lean"``, rank 0 and 4) on transformer stacks of 10M, 42M and 124M
parameters, float32 and bfloat16, through the public API.

Each case runs in a fresh process (so one case's allocator state never flatters the next): it builds the model,
runs a warm forward pass, then measures ``--steps`` steps after one warm-up step. ``peak_mb`` is the growth of the
resident set above the warm model (``PeakMemory``: the kernel's high-water mark; with ``--device cuda``, the CUDA
allocator's peak) over the warm-up and measured steps, so Adam's lazily created state counts; ``time_s`` is the
median step. ``forward_s`` is the median of three ``no_grad`` forward passes of the same process, and
``step_over_forwards`` divides a step by the forward passes it needs (Dopamine 1 + K, MeZO 2, inference 1, Adam:
forward + backward counted as one forward). Models:

- ``10M``: ``nn.TransformerEncoder``, 3 layers, d 512, 8 heads, FFN 2048, on a [2, 64, 512] input, MSE loss;
- ``42M``: 6 layers, d 768, 12 heads, FFN 3072 (the issue's model), [2, 64, 768], MSE loss;
- ``124M``: GPT-2-small-shaped: token embedding 50257 x 768, 12 layers d 768, the head tied to the embedding,
  cross-entropy of 2 x 64 random tokens.

    python bench/bench_large.py --threads 1 [--sizes 10M,42M,124M] [--dtypes float32,bfloat16] [--quick]
    python bench/bench_large.py --device cuda --sizes 124M --dtypes bfloat16     # bench/gpu/run.sh's row
"""

from __future__ import annotations

import argparse
import csv
import math
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import common
import dopamine_fast as df
from dopamine_fast.experiments.memory import PeakMemory
from peers import MeZO

NAME = "large"
K = 4  # Dopamine's perturbations (antithetic pairs) unless a method says "k<K>"
SIZES = {  # name -> (d_model, layers, heads, vocabulary or None)
    "tiny": (32, 2, 2, 97),
    "10M": (512, 3, 8, None),
    "42M": (768, 6, 12, None),
    "124M": (768, 12, 12, 50257),
}
# "dopamine <memory> r<rank> [k<K>]"; "k2" is one antithetic pair, MeZO's two-point estimate plus the baseline.
METHODS = ["inference", "adam", "mezo", "dopamine exact r0", "dopamine lean r0", "dopamine exact r4",
           "dopamine lean r4"]
COLUMNS = ["size", "params", "dtype", "method", "rank", "memory", "K", "forwards_per_step", "param_mb",
           "largest_tensor_mb", "forward_s", "threads"]
DERIVED = ["step_over_forwards", "peak_over_inference", "lean_budget_mb"]
NUMERIC = ["params", "param_mb", "largest_tensor_mb", "forward_s", "forwards_per_step", "time_s", "min_s", "max_s",
           "peak_mb"]


class TokenModel(torch.nn.Module):
    """Token embedding, a transformer stack and a head tied to the embedding (GPT-2's layout, bidirectional)."""

    def __init__(self, vocabulary: int, encoder: torch.nn.Module, d_model: int):
        super().__init__()
        self.embedding = torch.nn.Embedding(vocabulary, d_model)
        self.encoder = encoder

    def forward(self, tokens):
        return F.linear(self.encoder(self.embedding(tokens)), self.embedding.weight)


def build(size: str, dtype: torch.dtype, device: str = "cpu", batch: int = 2, tokens: int = 64):
    """The model and its loss closure, seeded (built on the CPU, then moved: the same weights on any device)."""
    d, layers, heads, vocabulary = SIZES[size]
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True)
    encoder = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
    g = torch.Generator().manual_seed(1)
    if vocabulary is None:
        model = encoder.to(device, dtype)
        x = torch.randn(batch, tokens, d, generator=g).to(device, dtype)
        y = torch.randn(batch, tokens, d, generator=g).to(device, dtype)

        def loss():
            return F.mse_loss(model(x).float(), y.float())
    else:
        model = TokenModel(vocabulary, encoder, d).to(device, dtype)
        x = torch.randint(vocabulary, (batch, tokens), generator=g).to(device)
        y = torch.randint(vocabulary, (batch, tokens), generator=g).to(device)

        def loss():
            return F.cross_entropy(model(x).float().flatten(0, 1), y.flatten())
    return model, loss


def stepper(method: str, model, loss):
    """``(one training step, forward passes it needs)`` of ``method``."""
    if method == "inference":
        def infer():
            with torch.no_grad():
                loss()
        return infer, 1
    if method == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=1e-5)

        def adam_step():
            opt.zero_grad(set_to_none=True)
            loss().backward()
            opt.step()
        return adam_step, 1
    if method == "mezo":
        mezo = MeZO(model.parameters(), lr=1e-6, eps=1e-3)
        return (lambda: mezo.step(loss)), 2
    memory, rank, k = dopamine_case(method)
    opt = df.Dopamine(model.parameters(), lr=1e-3, sigma=1e-3, num_perturbations=k, rank=rank, memory=memory)
    return (lambda: opt.step(loss)), 1 + k


def dopamine_case(method: str):
    """``(memory, rank, K)`` of a method named "dopamine <memory> r<rank> [k<K>]"."""
    words = method.split()
    return words[1], int(words[2][1:]), int(words[3][1:]) if len(words) > 3 else K


def run_case(size: str, dtype_name: str, method: str, steps: int, threads: int, device: str = "cpu") -> dict:
    """One case, in its own process: the row's measured fields (on CUDA, the allocator's peak above the warm
    model)."""
    torch.set_num_threads(threads)
    dtype = getattr(torch, dtype_name)
    model, loss = build(size, dtype, device)
    params = list(model.parameters())

    def timed(fn):
        t0 = time.perf_counter()
        fn()
        common.synchronize(torch.device(device))
        return time.perf_counter() - t0
    with torch.no_grad():
        timed(loss)  # warm: thread pools, lazy initialisation, kernel selection
        forwards = [timed(loss) for _ in range(3)]
    step, forwards_per_step = stepper(method, model, loss)
    meter = PeakMemory(device)
    with meter.active():
        times = [timed(step) for _ in range(1 + steps)]
    timed = times[1:]
    element = params[0].element_size()
    return dict(params=sum(p.numel() for p in params), param_mb=sum(p.numel() for p in params) * element / 2**20,
                largest_tensor_mb=max(p.numel() for p in params) * element / 2**20,
                forward_s=statistics.median(forwards), forwards_per_step=forwards_per_step,
                timing=dict(time_s=statistics.median(timed), min_s=min(timed), max_s=max(timed), repeats=len(timed)),
                peak_mb=meter.peak_mb)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10M,42M,124M")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=3, help="measured steps per case (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="the tiny model only, one step: a smoke run")
    parser.add_argument("--out", default=str(common.DEFAULT_OUT))
    parser.add_argument("--name", default=NAME, help="the CSV's, JSON's and plots' file name")
    parser.add_argument("--rederive", action="store_true",
                        help="measure nothing: recompute the derived columns, table and plots of <out>/<name>.csv")
    args = parser.parse_args()
    args.out, args.device, args.budget_s = Path(args.out), torch.device(args.device), math.inf
    if args.rederive:
        return rederive(args.out, args.name, args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = ["tiny"] if args.quick else args.sizes.split(",")
    steps = 1 if args.quick else args.steps
    recorder = common.Recorder(args.name + ("_quick" if args.quick else ""), args, COLUMNS, DERIVED)
    context = multiprocessing.get_context("spawn")
    for size in sizes:
        for dtype in args.dtypes.split(","):
            for method in args.methods.split(","):
                with context.Pool(1) as pool:  # a fresh process per case
                    got = pool.apply(run_case, (size, dtype, method, steps, args.threads, args.device.type))
                timing, peak = got.pop("timing"), got.pop("peak_mb")
                fields = dict(method=method, rank="", memory="", K=1 if method == "mezo" else "")
                if method.startswith("dopamine"):
                    memory, rank, k = dopamine_case(method)
                    name = f"dopamine {memory}" + (f" K={k}" if k != K else "")
                    fields = dict(method=name, rank=rank, memory=memory, K=k)
                recorder.record(timing, peak, size=size, dtype=dtype, threads=args.threads, **fields, **got)
                derive(recorder.rows)
                print(f"{size} {dtype} {method}: {timing['time_s']:.3f} s/step "
                      f"({recorder.rows[-1]['step_over_forwards']:.2f}x its forwards), peak +{peak:.1f} MiB",
                      flush=True)
    recorder.write({"K": K, "steps": steps, "note": "CPU shared with other work; compare within one run"})
    report(recorder.rows, args.out, recorder.name, where(args.device, args.threads))


def derive(rows) -> None:
    """Fill each row's derived columns from the measured ones (and its size and dtype's inference row)."""
    for r in rows:
        inference = next((i for i in rows if i["method"] == "inference" and i["size"] == r["size"]
                          and i["dtype"] == r["dtype"]), None)
        r["step_over_forwards"] = r["time_s"] / (r["forward_s"] * r["forwards_per_step"])
        # Memory of the whole step (parameters + its peak) over inference's, as the target reads.
        r["peak_over_inference"] = ((r["param_mb"] + r["peak_mb"]) / (r["param_mb"] + inference["peak_mb"])
                                    if inference else float("nan"))
        # The issue's lean target: one largest tensor + 10% of the parameters' bytes.
        r["lean_budget_mb"] = r["largest_tensor_mb"] + 0.1 * r["param_mb"]


def where(device: torch.device, threads: int) -> str:
    """The machine a table speaks of, for its title."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {threads} thread(s), shared with other work"


def report(rows, out: Path, name: str, machine: str) -> None:
    """``<name>.md`` (the table) and the plots of peak memory and step time."""
    rows = common.ok_rows(rows)
    (out / f"{name}.md").write_text(table(rows, machine))
    for y, ylabel in (("peak_mb", "peak above the warm model (MiB)"), ("time_s", "seconds per step")):
        common.plot_series(rows, out / f"{name}_{y}.png", "params", y, ["dtype"], f"Large models, {machine}",
                           ylabel)


def rederive(out: Path, name: str, threads: int) -> None:
    """Recompute the derived columns, the table and the plots of a written ``<name>.csv`` (nothing re-measured)."""
    path = out / f"{name}.csv"
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    for r in rows:
        for key in NUMERIC:
            r[key] = float(r[key]) if r.get(key) not in (None, "") else float("nan")
    derive([r for r in rows if r["status"] == "ok"])
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: common._fmt(v) for k, v in r.items()} for r in rows)
    report(rows, out, name, where(torch.device("cpu"), threads))


def table(rows, machine: str) -> str:
    """The rows as a markdown table, each size and dtype against its own inference and Adam rows."""
    lines = [f"# Large models at inference memory ({machine})", "",
             "Peak: growth of the resident set (on a GPU, of the CUDA allocator's peak) above the warm model over one "
             "warm-up and the measured steps. "
             "`x fwd`: a step's median time over its forward passes' (1 + K for Dopamine, 2 for MeZO). "
             "`x inference`: (parameters + peak) over (parameters + inference's peak). "
             "Lean budget: the largest tensor + 10% of the parameters' bytes (`python bench/bench_large.py`).", "",
             "| size | dtype | method | rank | K | step (s) | x fwd | peak (MiB) | x inference | "
             "lean budget (MiB) | Adam peak / this |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        adam = next((a for a in rows if a["method"] == "adam" and (a["size"], a["dtype"]) == (r["size"], r["dtype"])),
                    None)
        versus_adam = f"{adam['peak_mb'] / r['peak_mb']:.1f}" if adam and r["peak_mb"] > 0 else ""
        lines.append(f"| {r['size']} | {r['dtype']} | {r['method']} | {r['rank']} | {r['K']} | {r['time_s']:.3g} | "
                     f"{r['step_over_forwards']:.2f} | {r['peak_mb']:.1f} | {r['peak_over_inference']:.2f} | "
                     f"{r['lean_budget_mb']:.1f} | {versus_adam} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
