"""Compiled Triton kernels do not specialise on per-call counters (seed words, step, streams, member and noise ids):
Triton compiles an int argument's values 1 and multiples of 16 apart, so the optimizer's first steps each paid a
compile on a GPU. Checked on the compiled kernels' parameters, which need no GPU to build (the interpreter the
other tests use keeps no such flag)."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

CHECK = """
import triton
from dopamine_fast.backends.triton import noise, perturb, perturbed_linear, perturbed_rnn, rpe_update
from dopamine_fast.backends.triton.philox import COUNTERS
kernels = 0
for module in (noise, perturb, perturbed_linear, perturbed_rnn, rpe_update):
    for name, k in vars(module).items():
        is_kernel = isinstance(k, triton.runtime.jit.JITFunction) and name.endswith("_kernel")
        if is_kernel and k.__module__ == module.__name__:
            kernels += 1
            wrong = [p.name for p in k.params if (p.name in COUNTERS) != bool(p.do_not_specialize)]
            assert not wrong, (module.__name__, name, wrong)
print(kernels)
"""


def test_every_kernel_leaves_its_counters_unspecialised():
    env = dict(os.environ, TRITON_INTERPRET="0")
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == 8  # noise, perturb (2), perturbed_linear (2), perturbed_rnn (2), rpe_update
