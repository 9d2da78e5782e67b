"""The benchmark scripts the suites run, derived from the ops: ``bench_<op>.py`` of each op of ``ops.SPECS`` (the
op's name without the trailing ``_`` of an in-place op) that has one (``noise_bits_``, a test op, has none),
besides the op layer's overhead and the whole paths.

    python bench/suite.py    # the op benchmarks' script names, one a line (for bench/gpu/run.sh)
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

from dopamine_fast.ops import SPECS

HERE = Path(__file__).resolve().parent


def ops_by_bench() -> Dict[str, str]:
    """``bench_<op>`` -> op, for every op that has its benchmark script, in the order of ``SPECS``."""
    names = {"bench_" + op.rstrip("_"): op for op in SPECS}
    return {n: op for n, op in names.items() if (HERE / f"{n}.py").exists()}


def op_benches() -> List[str]:
    """``bench_<op>`` of every op that has its benchmark script, in the order of ``SPECS``."""
    return list(ops_by_bench())


if __name__ == "__main__":
    print("\n".join(op_benches()))
