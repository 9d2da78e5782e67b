"""Backend choice: automatic order, forcing by name or environment, and import without compiled parts."""

import os
import subprocess
import sys

import pytest
import torch

from dopamine_fast import backend_info, backends, ops, use_backend


def test_reference_is_always_available():
    for op in ops.SCHEMAS:
        assert "reference" in backends.available_backends(op, "cpu")
        assert backends.implementation(op, "reference") is ops.REFERENCES[op]


def test_automatic_choice_prefers_compiled_code_and_never_the_interpreter():
    chosen = backends.select("perturbed_linear", "cpu")
    expected = "cpp" if "cpp" in backends.available_backends("perturbed_linear", "cpu") else "reference"
    assert chosen == expected
    assert backend_info()["perturbed_linear"]["cpu"] == expected


def test_forcing_an_unknown_name_fails():
    with pytest.raises(ValueError, match="DOPAMINE_FAST_BACKEND"):
        with use_backend("fortran"):
            pass


def test_forcing_a_backend_that_cannot_run_raises_instead_of_falling_back():
    with use_backend("cuda"):
        with pytest.raises(RuntimeError, match="forced"):
            ops.noise(1, 0, 0, 0, 1, 8, device="cpu")


def test_environment_variable_forces_a_backend(monkeypatch):
    monkeypatch.setenv(backends.BACKEND_ENV, "reference")
    assert backends.select("noise_", "cpu") == "reference"
    monkeypatch.setenv(backends.BACKEND_ENV, "auto")
    assert backends.select("noise_", "cpu") in ("cpp", "reference")


def test_import_without_native_module_or_triton():
    code = ("import sys; sys.modules['triton'] = None\n"
            "import torch, dopamine_fast as df\n"
            "assert df.ops._native.load_error() is not None\n"
            "print(df.backend_info()['perturbed_linear']['cpu'])\n"
            "w = torch.nn.Parameter(torch.ones(3)); opt = df.Dopamine([w], num_perturbations=2)\n"
            "opt.step(lambda: (w ** 2).sum())\n")
    env = dict(os.environ, DOPAMINE_FAST_NO_NATIVE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "reference"


def test_unknown_op():
    with pytest.raises(KeyError, match="unknown op"):
        backends.select("conv", torch.device("cpu"))
