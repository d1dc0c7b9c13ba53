"""JEPA's optional variance and covariance terms (C-JEPA) on the pooled context embedding."""

import pytest
import torch

from jepalab.config import PretrainConfig, load
from jepalab.errors import JepalabError
from jepalab.masks import build_mask_policy
from jepalab.models.build import build_encoder
from jepalab.objectives import build_objective
from jepalab.objectives.jepa import frame_differences
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


def test_frame_differences_are_per_frame_means_of_kept_tokens():
    grid = (3, 2, 2)  # frame t holds flat tokens 4t..4t+3
    idx = torch.tensor([[0, 1, 5, 6, 8, 11]])
    keep = torch.tensor([[True, True, True, False, True, True]])
    z = torch.tensor([[1.0, 3.0, 10.0, 99.0, 20.0, 30.0]]).unsqueeze(-1)  # the 99 is padding
    d = frame_differences(z, idx, keep, grid)
    assert d.shape == (1, 2, 1)
    assert torch.allclose(d[0, :, 0], torch.tensor([10.0 - 2.0, 25.0 - 10.0]))


def test_motion_term_on_clips_and_refused_on_images():
    with pytest.raises(JepalabError, match="motion_weight needs clips"):
        _setup("--objective.params.motion_weight=1.0")
    over = [a for a in TINY if not a.startswith(("--mask.params", "--data.num_images"))]
    cfg = load(PretrainConfig, None, [
        "--objective.name=jepa", *over, "--data.source=dataset", "--data.path=unused",
        "--data.frames=4", "--model.tubelet=2", "--mask.kind=tube", "--mask.params.min_keep=2",
        "--objective.params.motion_weight=0.5"])
    obj = build_objective(cfg)
    torch.manual_seed(0)
    models = obj.build(build_encoder(cfg))
    policy = build_mask_policy("tube", models["encoder"].grid, **cfg.mask.params)
    x = torch.randint(0, 256, (5, 4, 3, 32, 32), dtype=torch.uint8)
    batch = make_batch(x, 0, cfg, policy, torch.device("cpu"))
    loss, m = obj.loss(batch, models)
    hinges = []
    for ms in batch.masks:  # one per tube generator (V-JEPA's short- and long-range masks)
        z = models["encoder"](batch.x, ms.context_idx, ms.context_keep)
        d = frame_differences(z, ms.context_idx, ms.context_keep, models["encoder"].grid)
        assert d.shape == (5, 1, z.shape[-1])
        hinges.append(std_hinge(d[:, 0]).item())
    assert len(hinges) == 2 and m["motion"] == pytest.approx(sum(hinges) / 2, rel=1e-5)
    assert loss.item() == pytest.approx(m["prediction"] + 0.5 * m["motion"], rel=1e-5)
