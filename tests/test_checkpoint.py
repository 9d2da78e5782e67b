"""Checkpoints: validated before anything is loaded, readable errors, no temporary files left behind."""

import copy
import subprocess
import sys

import pytest
import torch
from torch import nn

import dopamine_fast as df
from dopamine_fast.distributed import atomic_save, load_checkpoint, save_checkpoint

NAN = float("nan")


def trained(cls=df.WeightPerturbation, width=5, **kwargs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, 2))
    opt = cls(model.parameters(), num_perturbations=4, **kwargs)
    x, y = torch.randn(8, 3), torch.randn(8, 2)
    opt.step(lambda: ((model(x) - y) ** 2).mean())
    return model, opt


def untouched(model, opt):
    """The model's and optimizer's states now, to compare after a refused load."""
    return copy.deepcopy(model.state_dict()), repr(opt.state_dict())


def assert_untouched(model, opt, before):
    weights, state = before
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key])
    assert repr(opt.state_dict()) == state


def save_edited(path, edit):
    model, opt = trained()
    state = {"model": copy.deepcopy(model.state_dict()), "optimizer": copy.deepcopy(opt.state_dict())}
    edit(state)
    torch.save(state, path)


BAD_CHECKPOINTS = {
    "another optimizer class": (lambda s: s["optimizer"]["state"]["global"].update(optimizer="Dopamine"),
                                "saved by Dopamine"),
    "nan lr": (lambda s: s["optimizer"]["param_groups"][0].update(lr=float("nan")), "lr must be a finite number"),
    "another model": (lambda s: s["model"].update({"0.weight": torch.zeros(7, 3)}), r"0.weight has shape \(7, 3\)"),
    "a missing layer": (lambda s: s["model"].pop("2.bias"), r"lacks \['2.bias'\]"),
    "nan best weights": (lambda s: s["optimizer"]["state"].update({0: {"best_weights": torch.full((5, 3), NAN)}}),
                         "best_weights of parameter 0 are not all finite"),
    "best weights of another shape": (lambda s: s["optimizer"]["state"].update({1: {"best_weights": torch.zeros(3)}}),
                                      r"best_weights of parameter 1 have shape \(3,\)"),
    "state of an unknown parameter": (lambda s: s["optimizer"]["state"].update({9: {"best_weights": torch.zeros(3)}}),
                                      "parameter 9, which no param group lists"),
}


@pytest.mark.parametrize("case", BAD_CHECKPOINTS)
def test_a_refused_checkpoint_changes_neither_the_model_nor_the_optimizer(tmp_path, case):
    edit, message = BAD_CHECKPOINTS[case]
    path = tmp_path / "ckpt.pt"
    save_edited(path, edit)
    model, opt = trained()
    with torch.no_grad():
        model[0].weight.add_(1.0)  # differs from the file: a load that went halfway would show
    before = untouched(model, opt)
    with pytest.raises(ValueError, match=message) as err:
        load_checkpoint(path, model, opt)
    assert str(path) in str(err.value)
    assert_untouched(model, opt, before)


def test_a_good_checkpoint_round_trips(tmp_path):
    model, opt = trained(on_divergence="restore")
    save_checkpoint(tmp_path / "ckpt.pt", model, opt, step=1)
    model2, opt2 = trained(on_divergence="restore")
    with torch.no_grad():
        model2[0].weight.zero_()
    assert load_checkpoint(tmp_path / "ckpt.pt", model2, opt2)["step"] == 1
    assert torch.equal(model2[0].weight, model[0].weight)
    assert repr(opt2.state_dict()) == repr(opt.state_dict())


@pytest.mark.parametrize("content,message", [
    (b"", "not a readable checkpoint .*EOFError.*empty or cut short"),
    (b"not a torch file", "not a readable checkpoint"),
])
def test_an_unreadable_file_is_named(tmp_path, content, message):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(content)
    model, opt = trained()
    before = untouched(model, opt)
    with pytest.raises(ValueError, match=message):
        load_checkpoint(path, model, opt)
    assert_untouched(model, opt, before)


def test_the_cli_weights_file_is_told_apart_from_a_checkpoint(tmp_path):
    model, opt = trained()
    atomic_save(model.state_dict(), tmp_path / "weights.pt")
    with pytest.raises(ValueError, match=r"weights.pt is not a checkpoint of save_checkpoint .*model.load_state_dict"):
        load_checkpoint(tmp_path / "weights.pt", model, opt)


def test_a_model_without_parameters_gets_a_message_not_stopiteration(tmp_path):
    model, opt = trained()
    save_checkpoint(tmp_path / "ckpt.pt", model, opt)
    with pytest.raises(ValueError, match="lacks"):
        load_checkpoint(tmp_path / "ckpt.pt", nn.Identity(), opt)


def test_a_save_removes_the_temporary_file_of_a_killed_writer(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])  # a process that has ended: its pid is free
    dead.wait()
    stale = tmp_path / f"ckpt.pt.{dead.pid}.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / "other.pt.1.x.tmp"  # another file's: not this save's business
    other.write_bytes(b"")
    model, opt = trained()
    save_checkpoint(tmp_path / "ckpt.pt", model, opt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt", "other.pt.1.x.tmp"]
