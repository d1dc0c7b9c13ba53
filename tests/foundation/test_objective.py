import numpy as np
import pytest
import torch

from jepalab.eval.residuals import latent_residuals
from jepalab.objectives.jepa import ema_momentum, ema_update, latent_distance


def test_residual_example_from_the_issue():
    context = np.array([0.20, 0.40, -0.10, 0.70])
    scale = np.array([1.05, 0.88, 0.85, 1.12])
    target = np.array([0.28, 0.33, -0.02, 0.82])
    pred = context * scale
    np.testing.assert_allclose(pred, [0.21, 0.352, -0.085, 0.784], atol=1e-12)
    rep = latent_residuals(pred[None], target[None])
    np.testing.assert_allclose(rep.residual, [-0.07, 0.022, -0.065, -0.036], atol=1e-12)
    # mean of squared residuals over the 4 dimensions: 0.010905 / 4
    assert rep.loss == pytest.approx(0.00272625, abs=1e-10)
    # the latent loss used in training agrees with the diagnostic
    loss = latent_distance(torch.tensor(pred)[None], torch.tensor(target)[None], "l2")
    assert float(loss) == pytest.approx(rep.loss, rel=1e-9)


def test_residual_spike_detection():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(500, 16))
    p = t + rng.normal(scale=0.05, size=t.shape)
    p[:, 7] += rng.normal(scale=1.0, size=500)  # dimension 7 is missed
    rep = latent_residuals(p, t)
    assert rep.spikes == [7]


def test_ema_schedule_is_linear_and_stateless():
    assert ema_momentum(0, 100, 0.996, 1.0) == 0.996
    assert ema_momentum(50, 100, 0.996, 1.0) == pytest.approx(0.998)
    assert ema_momentum(100, 100, 0.996, 1.0) == 1.0
    assert ema_momentum(150, 100, 0.996, 1.0) == 1.0


def test_ema_update():
    online, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = target.weight.detach().clone()
    ema_update(target, online, 0.9)
    torch.testing.assert_close(target.weight, 0.9 * before + 0.1 * online.weight.detach())
    ema_update(target, online, 1.0)  # momentum 1 freezes the target
    torch.testing.assert_close(target.weight, 0.9 * before + 0.1 * online.weight.detach())


@pytest.mark.parametrize("kind", ["l2", "l1", "smooth_l1"])
def test_latent_distance_kinds(kind):
    a, b = torch.zeros(2, 4), torch.full((2, 4), 2.0)
    expect = {"l2": 4.0, "l1": 2.0, "smooth_l1": 1.5}[kind]
    assert torch.allclose(latent_distance(a, b, kind), torch.full((2,), expect))
