"""JEPA's optional variance and covariance terms (C-JEPA) on the pooled context embedding."""

import pytest
import torch

from jepalab.config import PretrainConfig, load
from jepalab.errors import JepalabError
from jepalab.masks import build_mask_policy
from jepalab.models.build import build_encoder
from jepalab.objectives import build_objective
from jepalab.objectives.vicreg import covariance_penalty, std_hinge
from jepalab.train.loop import make_batch
from tiny import TINY


def _setup(*extra: str):
    cfg = load(PretrainConfig, None, ["--objective.name=jepa", *TINY, *extra])
    obj = build_objective(cfg)
    torch.manual_seed(0)
    models = obj.build(build_encoder(cfg))
    policy = build_mask_policy(cfg.mask.kind, models["encoder"].grid, **cfg.mask.params)
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    return obj, models, make_batch(x, 0, cfg, policy, torch.device("cpu"))


def test_off_by_default_and_each_term_is_what_it_says():
    obj0, models0, batch = _setup()
    plain, m0 = obj0.loss(batch, models0)
    assert "variance" not in m0
    plain.backward()
    obj, models, batch = _setup("--objective.params.std_weight=2.0",
                                "--objective.params.cov_weight=0.5")
    loss, m = obj.loss(batch, models)
    assert m["prediction"] == pytest.approx(plain.item(), rel=1e-6)  # same weights, same masks
    ms = batch.masks[0]  # one mask set: the hand-computed per-image mean of the context tokens
    z = models["encoder"](batch.x, ms.context_idx, ms.context_keep)
    s = torch.stack([z[i][ms.context_keep[i]].mean(0) for i in range(len(z))])
    std, cov = std_hinge(s, 1.0), covariance_penalty(s)
    assert m["variance"] == pytest.approx(std.item(), rel=1e-5)
    assert m["covariance"] == pytest.approx(cov.item(), rel=1e-5)
    assert loss.item() == pytest.approx(plain.item() + 2.0 * std.item() + 0.5 * cov.item(),
                                         rel=1e-5)
    loss.backward()  # the terms reach the context encoder, not the EMA target
    assert any(not torch.allclose(p.grad, q.grad) for p, q in
               zip(models["encoder"].parameters(), models0["encoder"].parameters()))
    assert all(p.grad is None for p in models["target_encoder"].parameters())


def test_bad_params_are_refused():
    with pytest.raises(JepalabError, match="objective.params"):
        _setup("--objective.params.std_weigth=1.0")
    with pytest.raises(JepalabError, match="objective.params"):
        _setup("--objective.params.std_weight=-1")
