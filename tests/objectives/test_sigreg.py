import numpy as np
import pytest
import torch
from baseline_runs import loss_ratio, pretrain_rows

from jepalab.objectives.sigreg import epps_pulley, random_directions, sigreg


def integrand(t: np.ndarray) -> np.ndarray:
    """|φ̂(t) − φ(t)|² φ(t) for samples all at 0 (φ̂ ≡ 1)."""
    phi = np.exp(-0.5 * t * t)
    return (1 - phi) ** 2 * phi


def test_collapsed_samples_give_the_analytic_statistic():
    n = 32
    u = torch.zeros(n, 3, dtype=torch.float64)
    stat = epps_pulley(u, t_max=3.0, knots=17)
    t = np.linspace(0, 3, 17)  # the 17-knot trapezoid rule on [0, 3], doubled (even integrand)
    trap = 2 * float(np.sum((integrand(t[1:]) + integrand(t[:-1])) / 2 * (t[1] - t[0])))
    assert torch.allclose(stat, torch.full((3,), n * trap, dtype=torch.float64), rtol=1e-12)
    fine = np.linspace(-3, 3, 200_001)
    exact = float(np.sum((integrand(fine[1:]) + integrand(fine[:-1])) / 2 * (fine[1] - fine[0])))
    assert float(stat[0]) == pytest.approx(n * exact, rel=2e-2)


def test_gaussian_embeddings_score_low_and_others_high():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4096, 8, generator=g)
    a = random_directions(g, 8, 64)
    assert torch.allclose(a.norm(dim=0), torch.ones(64))
    ok = float(sigreg(z, a))
    assert ok < 1.0
    assert float(sigreg(3 * z, a)) > 50 * ok  # too spread
    assert float(sigreg(z + 1.0, a)) > 50 * ok  # off-centre
    aniso = z * torch.tensor([1.0] * 4 + [0.1] * 4)  # half the dimensions nearly collapsed
    assert float(sigreg(aniso, a)) > 50 * ok


def test_sigreg_pretrains_loss_falls(tmp_path):
    rows = pretrain_rows(tmp_path / "run", "sigreg", 80, "--mask.kind=none", "--optim.lr=2e-3")
    assert loss_ratio(rows) < 0.85
    assert {"invariance", "sigreg"} <= set(rows[0])
    mon = [r for r in rows if "rankme" in r]
    assert len(mon) == 16 and all(r["rankme"] > 2.0 and r["token_std"] > 0.05 for r in mon)
