"""The core needs torch only: with numpy, tqdm, matplotlib and scipy hidden, the package imports and trains, and
what needs the ``experiments`` extra says what to install instead of a traceback."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import dopamine_fast
from dopamine_fast._extras import INSTALL, MissingExtra, require

ROOT = Path(dopamine_fast.__file__).resolve().parents[1]
BLOCKED = ("numpy", "tqdm", "matplotlib", "scipy")

# Installed first in the child process: a finder in front of all the others that finds nothing for these modules,
# so that they look uninstalled both to `import` (ModuleNotFoundError, which torch answers with a warning when numpy
# is missing) and to importlib.util.find_spec (None; torch._dynamo probes its skip list this way, and a finder that
# raised instead would break it where a real uninstall does not).
BLOCKER = textwrap.dedent(f"""
    import sys

    class _Hide:
        def __init__(self, finders):
            self.finders = finders

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {BLOCKED!r}:
                return None
            for finder in self.finders:
                spec = finder.find_spec(name, path, target) if hasattr(finder, "find_spec") else None
                if spec is not None:
                    return spec
            return None

        def invalidate_caches(self):
            for finder in self.finders:
                if hasattr(finder, "invalidate_caches"):
                    finder.invalidate_caches()

    for _name in list(sys.modules):
        if _name.split(".")[0] in {BLOCKED!r}:
            del sys.modules[_name]
    sys.meta_path[:] = [_Hide(list(sys.meta_path))]
""")


def _run_blocked(code: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code), *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=timeout)


def test_core_imports_and_trains_without_the_extras():
    done = _run_blocked("""
        import torch
        import dopamine_fast as df
        from dopamine_fast.tasks import get_task

        for name in ("numpy", "tqdm", "matplotlib", "scipy"):
            assert name not in sys.modules, name

        torch.manual_seed(0)
        x = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
        y = torch.tensor([[-1.0], [1.0], [1.0], [-1.0]])
        model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        opt = df.Dopamine(model.parameters(), seed=0)
        loss = lambda: torch.mean((model(x) - y) ** 2)
        first = float(loss())
        for _ in range(100):
            opt.step(loss)
        last = float(loss())
        assert last < first, (first, last)

        task = get_task("xor")  # the XOR tasks need torch only
        assert task.x_train.shape == (4, 2)
        try:
            get_task("lorenz", length=200)
        except ImportError as err:
            print("LORENZ:", err)
        print("TRAINED", first, last)
    """)
    assert done.returncode == 0, done.stderr
    assert "TRAINED" in done.stdout
    assert "LORENZ: the chaotic tasks need numpy: pip install 'dopamine-fast[experiments]'" in done.stdout


@pytest.mark.parametrize("argv, module", [
    (["train", "--task", "xor", "--optimizer", "sgd", "--steps", "2"], "matplotlib"),
    (["compare", "--task", "lorenz", "--optimizers", "sgd", "--seeds", "1"], "matplotlib"),
])
def test_cli_names_the_extra_to_install(tmp_path, argv, module):
    done = _run_blocked("""
        import runpy
        sys.argv = ["dopamine-fast", *sys.argv[1:]]
        runpy.run_module("dopamine_fast", run_name="__main__")
    """, *argv, "--out", str(tmp_path / "out"), "--no-progress")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"need {module}: pip install 'dopamine-fast[experiments]'" in done.stderr
    assert not (tmp_path / "out").exists()  # refused before any work


def test_cli_list_needs_no_extra():
    done = _run_blocked("""
        from dopamine_fast.cli import main
        sys.exit(main(["list"]))
    """)
    assert done.returncode == 0, done.stderr
    assert "lorenz" in done.stdout


def test_require_names_what_needs_the_module():
    with pytest.raises(MissingExtra, match=r"^the tests need no_such_module_here: pip install "):
        require("no_such_module_here.sub", "the tests")
    assert INSTALL == "pip install 'dopamine-fast[experiments]'"
    assert require("math", "the tests").sqrt(4.0) == 2.0
