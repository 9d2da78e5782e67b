"""Fine-tune a small character-level GPT without back-propagation: Dopamine (memory="lean") vs MeZO vs Adam.

A GPT-style model (token embedding, causal transformer stack, head tied to the embedding) is pre-trained with
Adam on a generated corpus of sentences in one style, then fine-tuned from the same weights on a shifted style
(other words, every sentence ending with a new tag) by three methods with the same number of steps:

- ``dopamine``: ``df.Dopamine(..., memory="lean")``, forward passes only, no weight copy;
- ``mezo``: MeZO's two-point SPSA loop (``bench/peers.py``), forward passes only;
- ``adam``: back-propagation, for reference.

It prints and writes (``--out``, JSON) each method's loss on held-out text of the new style before and after,
its wall time and its peak memory above the warm model (``PeakMemory``). Defaults take minutes on one CPU
thread (about 3 minutes on a shared machine); ``--quick`` runs a toy size in seconds.

    python examples/finetune_char_lm.py [--quick] [--threads 1] [--out finetune.json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import dopamine_fast as df  # noqa: E402
from dopamine_fast.experiments.memory import PeakMemory  # noqa: E402
from peers import MeZO  # noqa: E402

STYLES = {  # subjects, verbs, objects, the sentence's end
    "pretrain": (["the cat", "a dog", "my friend", "the old man", "a bird", "the child"],
                 ["sees", "likes", "finds", "wants", "takes"],
                 ["the ball", "a red apple", "the small house", "some bread", "a book"], "."),
    "target": (["the robot", "a machine", "the old man", "the computer"],
               ["builds", "likes", "repairs", "finds"],
               ["a circuit", "the ball", "some code", "a metal box"], " ok!"),
}
# lr: Dopamine's rate, the best of 0.03 / 0.06 / 0.12 / 0.24 at the full size (0.24 diverged; the width factor
# takes this 104k-parameter model's step to 0.53x of lr per coordinate, docs/algorithm.md); the 14k-parameter toy
# model (factor 0.87) keeps 0.03: 0.12 diverged there. The best rate is the model's, not only its size's.
SIZES = {
    "full": dict(d=64, layers=2, heads=4, context=32, batch=16, pretrain_steps=500, finetune_steps=200, k=4, lr=0.12),
    "quick": dict(d=32, layers=1, heads=2, context=24, batch=8, pretrain_steps=200, finetune_steps=60, k=4, lr=0.03),
}


def corpus(style: str, sentences: int, seed: int) -> str:
    subjects, verbs, objects, end = STYLES[style]
    rng = random.Random(seed)
    return " ".join(f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}{end}"
                    for _ in range(sentences))


class CharGPT(torch.nn.Module):
    """Token and position embeddings, a causal transformer stack, a head tied to the token embedding."""

    def __init__(self, vocabulary: int, d: int, layers: int, heads: int, context: int):
        super().__init__()
        self.tokens = torch.nn.Embedding(vocabulary, d)
        self.positions = torch.nn.Parameter(torch.randn(context, d) * 0.02)
        layer = torch.nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.stack = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = torch.nn.LayerNorm(d)
        self.register_buffer("mask", torch.nn.Transformer.generate_square_subsequent_mask(context))

    def forward(self, x):
        t = x.shape[1]
        h = self.stack(self.tokens(x) + self.positions[:t], mask=self.mask[:t, :t], is_causal=True)
        return F.linear(self.norm(h), self.tokens.weight)


def batches(text: str, alphabet: str, context: int, batch: int, seed: int):
    """An endless stream of (inputs, next characters) windows of ``text``."""
    ids = torch.tensor([alphabet.index(c) for c in text])
    g = torch.Generator().manual_seed(seed)
    while True:
        starts = torch.randint(len(ids) - context - 1, (batch,), generator=g)
        window = torch.stack([ids[s:s + context + 1] for s in starts.tolist()])
        yield window[:, :-1], window[:, 1:]


def lm_loss(model, x, y) -> torch.Tensor:
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


@torch.no_grad()
def held_out_loss(model, data) -> float:
    return sum(float(lm_loss(model, x, y)) for x, y in data) / len(data)


def finetune(method: str, model, train, steps: int, k: int, lr: float) -> None:
    if method == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        for _ in range(steps):
            x, y = next(train)
            opt.zero_grad(set_to_none=True)
            lm_loss(model, x, y).backward()
            opt.step()
        return
    if method == "mezo":
        # Two forward passes per step; MeZO's paper tunes lr in {1e-7 .. 1e-6} for OPT, larger for a small model.
        mezo = MeZO(model.parameters(), lr=1e-3, eps=1e-3, seed=0)
        for _ in range(steps * (1 + k) // 2):  # as many forward passes as Dopamine's steps take
            x, y = next(train)
            mezo.step(lambda: lm_loss(model, x, y))
        return
    opt = df.Dopamine(model.parameters(), lr=lr, sigma=1e-2, num_perturbations=k, memory="lean")
    for _ in range(steps):
        x, y = next(train)
        opt.step(lambda: lm_loss(model, x, y))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a toy size, seconds")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", default="dopamine,mezo,adam")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    size = SIZES["quick" if args.quick else "full"]
    source, target = corpus("pretrain", 4000, seed=0), corpus("target", 4000, seed=1)
    held_out = corpus("target", 400, seed=2)
    alphabet = "".join(sorted(set(source + target + held_out)))
    torch.manual_seed(0)
    model = CharGPT(len(alphabet), size["d"], size["layers"], size["heads"], size["context"])
    train = batches(source, alphabet, size["context"], size["batch"], seed=0)
    pretrain = torch.optim.Adam(model.parameters(), lr=3e-3)
    start = time.perf_counter()
    for _ in range(size["pretrain_steps"]):
        x, y = next(train)
        pretrain.zero_grad(set_to_none=True)
        lm_loss(model, x, y).backward()
        pretrain.step()
    stream = batches(held_out, alphabet, size["context"], 32, seed=3)
    evaluation = [next(stream) for _ in range(4)]
    result = {"size": size, "params": sum(p.numel() for p in model.parameters()),
              "pretrain_s": time.perf_counter() - start, "target_loss_before": held_out_loss(model, evaluation),
              "methods": {}}
    print(f"pre-trained {result['params']} parameters in {result['pretrain_s']:.1f} s; held-out loss on the new "
          f"style {result['target_loss_before']:.3f}", flush=True)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    for method in args.methods.split(","):
        model.load_state_dict(weights)
        with torch.no_grad():
            lm_loss(model, *evaluation[0])  # warm
        meter = PeakMemory("cpu")
        start = time.perf_counter()
        with meter.active():
            finetune(method, model, batches(target, alphabet, size["context"], size["batch"], seed=4),
                     size["finetune_steps"], size["k"], size["lr"])
        row = {"seconds": time.perf_counter() - start, "peak_mb": meter.peak_mb,
               "target_loss_after": held_out_loss(model, evaluation)}
        result["methods"][method] = row
        print(f"{method}: held-out loss {result['target_loss_before']:.3f} -> {row['target_loss_after']:.3f} in "
              f"{row['seconds']:.1f} s, peak +{row['peak_mb']:.1f} MiB", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
