"""Every Python block of the README runs, as a user would paste it, and the ones that train do train."""

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs_and_trains(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks that save a checkpoint write it here
    torch.manual_seed(0)
    namespace = {"__name__": f"readme_block_{index}"}
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), namespace)
    losses = namespace.get("losses")
    if losses is not None:
        assert len(losses) >= 2
        assert all(torch.isfinite(torch.as_tensor(float(v))) for v in losses)
        assert float(losses[-1]) < float(losses[0]), f"block {index} did not train: {losses[0]} -> {losses[-1]}"
