"""Backend choice: automatic order, forcing by name or environment, and import without compiled parts."""

import os
import subprocess
import sys
import threading

import pytest
import torch

from dopamine_fast import backend_info, backends, ops, use_backend
from dopamine_fast.backends import native, registry


def test_reference_is_always_available():
    for op, spec in ops.SPECS.items():
        assert "reference" in backends.available_backends(op, "cpu")
        assert backends.implementation(op, "reference") is spec.reference


def test_automatic_choice_prefers_compiled_code_and_never_the_interpreter():
    chosen = backends.select("perturbed_linear", "cpu")
    expected = "cpp" if "cpp" in backends.available_backends("perturbed_linear", "cpu") else "reference"
    assert chosen == expected
    assert backend_info()["perturbed_linear"]["cpu"] == expected


def test_a_gpu_measurement_reorders_one_op_and_leaves_the_others(monkeypatch):
    """OP_ORDER puts Triton before CUDA for perturbed_linear only: with both serving a device (faked here as the
    CPU, so that no GPU is needed), perturbed_linear picks Triton and perturbed_rnn keeps CUDA."""
    fake = registry.Impl(lambda *a: None, (), (), lambda: None)
    for op in ("perturbed_linear", "perturbed_rnn"):
        monkeypatch.setitem(registry._REGISTRY, op, {"cuda": fake, "triton": fake, "reference": fake})
    registry.clear_cache()
    try:
        assert backends.select("perturbed_linear", "cpu") == "triton"
        assert backends.select("perturbed_rnn", "cpu") == "cuda"
        assert backends.available_backends("perturbed_linear", "cpu") == ["triton", "cuda", "reference"]
    finally:
        monkeypatch.undo()
        registry.clear_cache()


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
            "assert df.backends.native.load_error() is not None\n"
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


def test_use_backend_is_local_to_its_thread(monkeypatch):
    monkeypatch.delenv(backends.BACKEND_ENV, raising=False)
    auto = backends.select("noise_", "cpu")
    seen = {}
    entered, release = threading.Event(), threading.Event()

    def forced_elsewhere():
        with use_backend("reference"):
            seen["inside"] = backends.select("noise_", "cpu")
            entered.set()
            release.wait(10)

    worker = threading.Thread(target=forced_elsewhere)
    worker.start()
    try:
        assert entered.wait(10)
        seen["here"] = backends.select("noise_", "cpu")
    finally:
        release.set()
        worker.join()
    assert seen["inside"] == "reference"
    assert seen["here"] == auto


def test_blocks_left_out_of_order_leave_nothing_forced(monkeypatch):
    monkeypatch.delenv(backends.BACKEND_ENV, raising=False)
    outer, inner = use_backend("reference"), use_backend("cpp")
    outer.__enter__()
    inner.__enter__()
    assert backends.forced_backend() == "cpp"
    outer.__exit__(None, None, None)  # the outer block ends first
    assert backends.forced_backend() == "cpp"
    inner.__exit__(None, None, None)
    assert backends.forced_backend() is None


def test_cached_choice_follows_the_environment_and_use_backend(monkeypatch):
    monkeypatch.delenv(backends.BACKEND_ENV, raising=False)
    device = torch.device("cpu")
    auto = backends.dispatch("noise_", device)
    assert backends.dispatch("noise_", device) is auto  # cached
    monkeypatch.setenv(backends.BACKEND_ENV, "reference")
    assert backends.dispatch("noise_", device) is ops.SPECS["noise_"].reference
    monkeypatch.setenv(backends.BACKEND_ENV, "auto")
    assert backends.dispatch("noise_", device) is auto
    with use_backend("reference"):
        assert backends.dispatch("noise_", device) is ops.SPECS["noise_"].reference
    assert backends.dispatch("noise_", device) is auto


def test_a_gpu_without_a_kernel_image_falls_back_with_the_reason(monkeypatch):
    """A module built for 8.0-9.0 on a compute-capability 7.5 card: cuda reports why and another backend serves."""
    if native.load_error() is not None:
        pytest.skip(f"no compiled module: {native.load_error()}")
    monkeypatch.setattr(native, "_has_kernel", lambda op, key: True)  # as if built with CUDA kernels
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(native, "built_cuda_arch_list", lambda: "8.0;8.6;8.9;9.0+PTX")
    native._device_image_problem.cache_clear()
    backends.clear_cache()
    try:
        why = native.status("noise_", "CUDA")
        assert "compute capability 7.5" in why and "8.0;8.6;8.9;9.0+PTX" in why
        assert backends.select("noise_", "cuda") != "cuda"
        assert "compute capability 7.5" in backend_info(explain=True)["noise_"]["cuda"]
        with use_backend("cuda"), pytest.raises(RuntimeError, match="no kernel image .*compute capability 7.5"):
            backends.select("noise_", "cuda")
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 9))
        native._device_image_problem.cache_clear()
        assert native.status("noise_", "CUDA") is None
    finally:
        monkeypatch.undo()
        native._device_image_problem.cache_clear()
        backends.clear_cache()


@pytest.mark.parametrize("capability, arch_list, runs", [
    ((8, 6), "8.0", True),  # a cubin runs on later minors of its major
    ((8, 0), "8.6", False),
    ((12, 0), "8.0;9.0+PTX", True),  # PTX is compiled by the driver for newer GPUs
    ((12, 0), "8.0;9.0", False),
    ((9, 0), "9.0a", True),
    ((9, 1), "9.0a", False),  # arch-specific cubins run on their own arch only
    ((7, 5), "Ampere", True),  # a named list cannot be read: not held against the GPU
])
def test_kernel_image_rule(capability, arch_list, runs):
    assert (native.image_problem(capability, arch_list) is None) == runs


def test_python_api_runs_the_chosen_kernel_and_traces_to_the_public_op():
    from torch.fx.experimental.proxy_tensor import make_fx

    x, w, b = torch.randn(3, 8), torch.randn(5, 8), torch.randn(5)

    def layer(x, w, b):
        return ops.perturbed_linear(x, w, b, 1, 0, 0, 1, 0.1, 4, rank=1, activation="tanh")

    eager = layer(x, w, b)
    torch.testing.assert_close(eager, torch.ops.dopamine_fast.perturbed_linear(x, w, b, 1, 0, 0, 1, 0.1, 4, 1, True,
                                                                               False, "tanh"))
    graph = make_fx(layer)(x, w, b).graph
    targets = {str(node.target) for node in graph.nodes if node.op == "call_function"}
    assert "dopamine_fast.perturbed_linear.default" in targets


def test_use_backend_none_keeps_the_environment_and_auto_overrides_it(monkeypatch):
    monkeypatch.setenv(backends.BACKEND_ENV, "reference")
    with use_backend(None):
        assert backends.forced_backend() == "reference"
    with use_backend("auto"):
        assert backends.forced_backend() is None


def test_each_op_is_specified_once_and_both_namespaces_share_its_schema():
    for name, spec in ops.SPECS.items():
        public = getattr(torch.ops.dopamine_fast, name).default._schema
        assert str(public) == "dopamine_fast::" + name + spec.schema
        assert public.arguments[spec.device_index].name == spec.device_arg
        if native.load_error() is None:
            compiled = getattr(torch.ops.dopamine_fast_C, name).default._schema
            assert str(compiled) == "dopamine_fast_C::" + name + spec.schema
    # C++ registers kernels only: a schema written there again could drift from the spec. (The C++ tests define
    # the ops from the spec itself: the build writes its schemas into their op_schemas.inc.)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for folder, _, files in os.walk(os.path.join(root, "csrc")):
        if os.path.relpath(folder, root) == os.path.join("csrc", "tests"):
            continue
        for file in files:
            with open(os.path.join(folder, file)) as f:
                assert "TORCH_LIBRARY(" not in f.read(), file


def test_a_kernel_whose_signature_differs_from_the_schema_is_refused():
    """The guard behind one schema: the dispatcher compares each C++ kernel's signature with the schema Python
    defines, so a stale or wrong build fails to define the op instead of being called with the wrong arguments."""
    if native.load_error() is not None:
        pytest.skip(f"no compiled module: {native.load_error()}")
    code = ("import importlib, torch, dopamine_fast\n"
            "importlib.import_module('dopamine_fast._C')\n"
            "lib = torch.library.Library('dopamine_fast_C', 'DEF')\n"
            "try:\n"
            "    lib.define('noise_(Tensor(a!) out, int seed, int step, float stream, int first_id) -> ()')\n"
            "except RuntimeError as err:\n"
            "    print(str(err).splitlines()[0])\n")
    env = dict(os.environ, DOPAMINE_FAST_NO_NATIVE="1")  # the package leaves _C alone: the test loads it
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "doesn't match the expected function schema" in out.stdout


def test_the_recorded_cuda_targets_are_read(monkeypatch):
    """The build (CMakeLists.txt) records beside the module what the CUDA kernels were built for, or why none
    were; the loader must find that record (a wrong import path would read as 'unknown' and never hold a missing
    kernel image against a GPU)."""
    try:
        from dopamine_fast import _build_config
    except ImportError:
        pytest.skip("no build record: the native module was not built here")
    monkeypatch.setattr(_build_config, "CUDA_ARCH_LIST", "8.0;9.0+PTX")
    monkeypatch.setattr(_build_config, "CUDA_HOME", "/opt/cuda", raising=False)
    assert native.built_cuda_arch_list() == "8.0;9.0+PTX"
    assert native.build_summary() == "CUDA kernels for 8.0;9.0+PTX, toolkit /opt/cuda"
    monkeypatch.setattr(_build_config, "CUDA_ARCH_LIST", None)
    monkeypatch.setattr(_build_config, "NO_CUDA_REASON", "DOPAMINE_FAST_CUDA=OFF", raising=False)
    assert native.build_summary() == "CPU kernels only (no CUDA kernels: DOPAMINE_FAST_CUDA=OFF)"
