import math

import pytest
import torch
from baseline_runs import loss_ratio, pretrain_rows

from jepalab.config import PretrainConfig, load
from jepalab.models.build import build_encoder
from jepalab.objectives import Batch, build_objective
from jepalab.objectives.vicreg import vicreg_terms
from tiny import TINY


def test_identical_views_have_zero_invariance():
    z = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    terms = vicreg_terms(z, z.clone())
    assert float(terms["invariance"]) == 0.0
    assert float(vicreg_terms(z, z + 0.5)["invariance"]) == pytest.approx(0.25)


@pytest.mark.parametrize("gamma", [1.0, 2.0])
def test_collapsed_embeddings(gamma):
    z = torch.tensor([0.3, -1.0, 2.0]).expand(8, 3)  # every sample the same vector
    exact = vicreg_terms(z, z, gamma=gamma, eps=0.0)
    assert float(exact["variance"]) == pytest.approx(gamma)
    assert float(exact["covariance"]) == 0.0
    default = vicreg_terms(z, z, gamma=gamma)  # eps = 1e-4 keeps the sqrt differentiable
    assert float(default["variance"]) == pytest.approx(gamma - math.sqrt(1e-4))


def test_variance_and_covariance_values():
    # 4 samples at the corners of a square: zero mean, var 4c²/3 per dim, uncorrelated
    c = 2.0
    z = c * torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    t = vicreg_terms(z, z, gamma=3.0, eps=0.0)
    assert float(t["variance"]) == pytest.approx(3.0 - math.sqrt(4 * c * c / 3))
    assert float(t["covariance"]) == pytest.approx(0.0, abs=1e-6)
    # duplicate a dimension: Cov_01 = Cov_10 = var, so each view adds 2·var²/K (K = 2)
    dup = torch.stack([z[:, 0], z[:, 0]], 1)
    var = 4 * c * c / 3
    assert float(vicreg_terms(dup, dup)["covariance"]) == pytest.approx(2 * (2 * var**2 / 2))
    assert float(vicreg_terms(z, z, gamma=1.0)["variance"]) == 0.0  # std 2.3 > γ: no penalty


def test_weights_come_from_params():
    over = ["--objective.name=vicreg", "--mask.kind=none", *TINY]
    x = torch.randn(8, 3, 32, 32)
    losses = {}
    for w in ["25", "0"]:
        cfg = load(PretrainConfig, None, [*over, f"--objective.params.std_weight={w}"])
        torch.manual_seed(0)
        objective = build_objective(cfg)
        models = objective.build(build_encoder(cfg))
        loss, m = objective.loss(Batch(x, [], torch.Generator().manual_seed(0)), models)
        losses[w] = (float(loss.detach()), m)
    full, m = losses["25"]
    assert full == pytest.approx(25 * m["invariance"] + 25 * m["variance"] + m["covariance"],
                                 rel=1e-5)
    assert losses["0"][0] == pytest.approx(full - 25 * m["variance"], rel=1e-5)


def test_vicreg_pretrains_loss_falls(tmp_path):
    # An expander narrower than the batch (4 < 8) and milder crops: at batch 8 a wide expander
    # cannot reach unit variance without large covariances (rank <= 7), so the loss plateaus.
    rows = pretrain_rows(tmp_path / "run", "vicreg", 80, "--mask.kind=none",
                         "--objective.params.proj_dims=[32,4]",
                         "--objective.params.augment.crop_scale=[0.6,1.0]")
    assert loss_ratio(rows) < 0.9
    first = sum(r["variance"] for r in rows[:10]) / 10
    assert sum(r["variance"] for r in rows[-10:]) / 10 < 0.7 * first
    mon = [r for r in rows if "rankme" in r]
    assert len(mon) == 16 and all(r["rankme"] > 2.0 and r["token_std"] > 0.05 for r in mon)
