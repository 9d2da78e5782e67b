"""The examples run at toy size and do what they claim."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_finetune_char_lm_improves_the_target_loss(tmp_path):
    result = load("finetune_char_lm").main(["--quick", "--out", str(tmp_path / "finetune.json")])
    before = result["target_loss_before"]
    for method in ("dopamine", "mezo", "adam"):
        row = result["methods"][method]
        assert row["target_loss_after"] < before, (method, row, before)
        assert row["peak_mb"] >= 0 and row["seconds"] > 0
    assert (tmp_path / "finetune.json").exists()
