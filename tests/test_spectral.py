import pytest
import torch

import dopamine_fast as df


def test_rescale_sets_the_radius():
    w = torch.randn(17, 17)
    df.rescale_spectral_radius_(w, 0.9)
    assert df.spectral_radius(w) == pytest.approx(0.9, rel=1e-5)
    z = torch.zeros(3, 3)
    df.rescale_spectral_radius_(z)
    assert torch.equal(z, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="square"):
        df.spectral_radius(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="radius"):
        df.rescale_spectral_radius_(w, 0.0)


def test_kept_after_every_step():
    rnn = torch.nn.RNN(3, 8, batch_first=True)
    x = torch.randn(4, 5, 3)
    opt = df.Dopamine(rnn.parameters(), num_perturbations=2)
    df.keep_spectral_radius(opt, rnn.weight_hh_l0, 1.0)
    assert df.spectral_radius(rnn.weight_hh_l0) == pytest.approx(1.0, rel=1e-5)
    for _ in range(3):
        opt.step(lambda: rnn(x)[0].pow(2).mean())
        assert df.spectral_radius(rnn.weight_hh_l0) == pytest.approx(1.0, rel=1e-5)
