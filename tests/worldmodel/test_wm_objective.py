"""The world-model objective: k=1 identity, loss composition, frozen encoder, checkpoint keys."""

from __future__ import annotations

import pytest
import torch

from jepalab.config import WorldModelConfig
from jepalab.models.build import FrozenEncoder
from jepalab.models.vit import vit
from jepalab.objectives import OBJECTIVES, Batch
from jepalab.objectives.worldmodel import WorldModelObjective

A, S = 2, 4


def _cfg(arch: str, k: int, use_state: bool = False, **kw) -> WorldModelConfig:
    return WorldModelConfig(
        encoder="unused",
        data={"path": "unused"},
        rollout_steps=k,
        predictor={"arch": arch, "dim": 16, "depth": 1, "heads": 2, "use_state": use_state,
                   "pool": 2 if arch == "conv" else 1},
        **kw,
    )


def _setup(arch: str, k: int, use_state: bool = False, **kw):
    torch.manual_seed(0)
    enc = FrozenEncoder(vit("micro", img_size=16, patch_size=8, depth=1), "0" * 64, {})
    obj = WorldModelObjective(_cfg(arch, k, use_state, **kw), A, S)
    models = obj.build(enc)
    g = torch.Generator().manual_seed(1)
    batch = Batch(
        x=torch.randn(3, k + 1, 3, 16, 16, generator=g),
        masks=[],
        generator=g,
        actions=torch.randn(3, k, A, generator=g),
        states=torch.randn(3, k + 1, S, generator=g),
    )
    return obj, models, batch


@pytest.mark.parametrize(
    "arch,use_state",
    [("mlp", False), ("transformer", False), ("conv", False), ("mlp", True), ("transformer", True),
     ("conv", True)],
)
def test_rollout_loss_equals_teacher_forcing_when_k_is_1(arch, use_state):
    obj, models, batch = _setup(arch, 1, use_state)
    loss, m = obj.loss(batch, models)
    assert m["tf_loss"] > 0
    assert m["rollout_loss"] == pytest.approx(m["tf_loss"], rel=1e-6)
    assert float(loss.detach()) == pytest.approx(2 * m["tf_loss"], rel=1e-6)


@pytest.mark.parametrize("arch", ["mlp", "transformer", "conv"])
def test_k_step_loss_composition_and_frozen_encoder(arch):
    obj, models, batch = _setup(arch, 3, rollout_weight=0.5)
    loss, m = obj.loss(batch, models)
    assert m["rollout_loss"] != pytest.approx(m["tf_loss"], rel=1e-4)  # errors compound
    assert float(loss.detach()) == pytest.approx(m["tf_loss"] + 0.5 * m["rollout_loss"], rel=1e-6)
    assert m["copy_loss"] > 0
    loss.backward()
    assert all(p.grad is None for p in models["encoder"].parameters())
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in models["predictor"].parameters()
    )
    assert obj.trainable(models) == ["predictor"]


def test_teacher_forcing_weight_and_rollout_only(monkeypatch):
    obj, models, batch = _setup("mlp", 3, rollout_weight=0.5, teacher_forcing=0.25)
    loss, both = obj.loss(batch, models)
    assert float(loss.detach()) == pytest.approx(
        0.25 * both["tf_loss"] + 0.5 * both["rollout_loss"], rel=1e-6)
    obj, models, batch = _setup("mlp", 3, rollout_weight=0.5, teacher_forcing=0.0)

    def no_forward(*args, **kw):
        raise AssertionError("teacher_forcing=0 must skip the teacher-forced pass")

    monkeypatch.setattr(obj, "_teacher_forced", no_forward)
    loss, m = obj.loss(batch, models)
    assert "tf_loss" not in m  # the same predictor and batch: the same rollout term
    assert m["rollout_loss"] == pytest.approx(both["rollout_loss"], rel=1e-6)
    assert float(loss.detach()) == pytest.approx(0.5 * m["rollout_loss"], rel=1e-6)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in models["predictor"].parameters())
    with pytest.raises(ValueError, match="nothing to learn"):
        _cfg("mlp", 3, rollout_weight=0.0, teacher_forcing=0.0)


def test_checkpoint_holds_the_predictor_only_and_loads_strictly():
    obj, models, _ = _setup("transformer", 2)
    sd = models.state_dict()
    assert sd and all(k.startswith(("predictor.", "latent_norm.")) for k in sd)
    assert "latent_norm.std" in sd
    _, fresh, _ = _setup("transformer", 2)
    with torch.no_grad():
        for p in fresh["predictor"].parameters():
            p.add_(1.0)
    fresh.load_state_dict(sd)  # strict: the encoder's keys may be absent, nothing else
    for k, v in fresh.state_dict().items():
        torch.testing.assert_close(v, sd[k])
    broken = {k: v for k, v in sd.items() if "proj_out" not in k}
    with pytest.raises(RuntimeError, match="proj_out"):
        fresh.load_state_dict(broken)


def test_not_a_pretraining_objective():
    assert "worldmodel" not in OBJECTIVES


def test_latents_are_layer_normed_tokens_or_their_mean():
    obj, models, batch = _setup("transformer", 1)
    z = obj.latents(batch.x, models)
    assert z.shape == (3, 2, 4, 64)
    torch.testing.assert_close(z.mean(-1), torch.zeros(3, 2, 4), atol=1e-5, rtol=0)
    obj_m, models_m, _ = _setup("mlp", 1)
    torch.testing.assert_close(obj_m.latents(batch.x, models_m), z.mean(2))


def test_latent_norm_standardises_and_is_identity_until_fit():
    from jepalab.objectives.worldmodel import LatentNorm

    norm = LatentNorm(5)
    z = torch.randn(40, 3, 5) * torch.tensor([1.0, 2.0, 0.1, 5.0, 0.0]) + 3.0
    torch.testing.assert_close(norm(z), z)
    norm.fit(z)
    out = norm(z).reshape(-1, 5)
    torch.testing.assert_close(out.mean(0), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, :4].std(0, unbiased=False), torch.ones(4), atol=1e-4, rtol=0)
    assert torch.isfinite(out[:, 4]).all() and out[:, 4].abs().max() < 1e-3  # constant dim


def test_a_video_encoder_reads_images_as_static_clips():
    """World models, probes and planners take a video encoder: an image is the clip of that
    frame repeated, its tokens averaged over time (one per spatial cell); clips pass whole."""
    from jepalab.models.build import normalize_pixels

    torch.manual_seed(0)
    v = vit("micro", img_size=16, patch_size=8, depth=1, frames=4, tubelet=2).eval()
    enc = FrozenEncoder(v, "0" * 64, {})
    px = torch.randint(0, 256, (3, 16, 16, 3), dtype=torch.uint8)
    clip = normalize_pixels(px.movedim(-1, -3))[:, None].expand(-1, 4, -1, -1, -1)
    with torch.no_grad():
        tok = enc(px)
        assert enc.grid == (2, 2) and tok.shape == (3, 4, v.embed_dim)
        assert torch.allclose(tok, v(clip).view(3, 2, 4, -1).mean(1), atol=1e-6)
        moving = px[:, None].repeat(1, 4, 1, 1, 1)
        moving[:, 1:] = 255 - moving[:, 1:]
        assert enc(moving).shape == (3, 8, v.embed_dim)  # a clip: all its tokens
    obj = WorldModelObjective(_cfg("mlp", 1), A, S)
    models = obj.build(enc)  # pooled latents on the per-frame grid
    z = obj.latents(torch.randn(2, 2, 3, 16, 16), models, standardise=False)
    assert z.shape == (2, 2, v.embed_dim * obj.pool**2)


def test_value_consistency_trains_the_predictor_in_the_values_units_only():
    """`value.consistency` c adds c x (the learned steps between the k-step rollout and the
    encoded frames); its gradient reaches the predictor, never the value's embedding."""
    from jepalab.config import ValueConfig
    from jepalab.objectives.worldmodel import _fixed_distance

    value = {"form": "metric", "learning": "quasimetric", "hidden": 8, "depth": 1}
    runs = {}
    for c in (0.0, 0.5):
        obj, models, batch = _setup("mlp", 3, value={**value, "consistency": c})
        d = models["value"].latent_dim
        g = torch.Generator().manual_seed(2)
        batch.goals = torch.randn(3, 1, d, generator=g)
        batch.goal_steps = torch.tensor([[2], [-1], [5]])
        runs[c] = obj.loss(batch, models)
    (base, m0), (loss, m) = runs[0.0], runs[0.5]
    assert "value_consistency" not in m0 and m["value_consistency"] > 0
    expected = float(base.detach()) + 0.5 * m["value_consistency"]
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)

    z = torch.randn(3, 2, d)
    pred = models["predictor"].rollout(z[:, 0], batch.actions[:, :2])
    _fixed_distance(models["value"], pred, z).backward()
    assert all(p.grad is None for p in models["value"].parameters())
    assert all(p.requires_grad for p in models["value"].parameters())  # restored
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in models["predictor"].parameters())
    with pytest.raises(ValueError, match="consistency needs form 'metric'"):
        ValueConfig(form="diff", consistency=0.1)


@pytest.mark.parametrize("learning", ["quasimetric", "td"])
def test_value_updates_take_more_steps_of_the_value_alone(learning):
    """`value.updates` m: one train_step takes the predictor's step as with m = 1, then m - 1
    steps of the value alone (Adam's step count m for the value, 1 for the predictor), each on
    its own goal draw; the predictor ends as it would with m = 1."""
    from jepalab.train.loop import make_optimizer, train_step

    value = {"hidden": 8, "depth": 1, "form": "metric", "learning": learning}
    after = {}
    for m in (1, 3):
        obj, models, batch = _setup("mlp", 2, value={**value, "updates": m})
        d = models["value"].latent_dim
        g = torch.Generator().manual_seed(2)
        goals, steps = torch.randn(3, 3, d, generator=g), torch.tensor([[2, 0, 1]] * 3)
        batch.goals, batch.goal_steps = goals[:, :m], steps[:, :m]
        opt = make_optimizer(models, obj.trainable(models), 1e-2)
        metrics = train_step(models, obj, opt, batch, obj.wm)
        counts = {name: {int(opt.state[p]["step"]) for p in models[name].parameters()}
                  for name in ("predictor", "value")}
        assert counts == {"predictor": {1}, "value": {m}}
        assert ("extra_loss" in metrics) == (m > 1)
        after[m] = {k: v.clone() for k, v in models.state_dict().items()}
    for key, v in after[1].items():
        if key.startswith("predictor."):
            torch.testing.assert_close(after[3][key], v)
    assert any(not torch.equal(after[3][k], v) for k, v in after[1].items()
               if k.startswith("value."))


@pytest.mark.parametrize("arch,use_state", [("mlp", False), ("conv", True)])
def test_value_updates_read_the_predictors_teacher_forced_step(arch, use_state):
    """The extra value updates compute only the one-step predictions they read; each update's
    loss is the one from the full teacher-forced pass."""
    value = {"hidden": 8, "depth": 1, "form": "metric", "learning": "quasimetric", "updates": 5}
    obj, models, batch = _setup(arch, 3, use_state, value=value)
    d = models["value"].latent_dim
    g = torch.Generator().manual_seed(3)
    batch.goals, batch.goal_steps = torch.randn(3, 5, d, generator=g), torch.full((3, 5), -1)
    got = [float(loss.detach()) for loss, _ in obj.extra_steps(batch, models)]
    z = obj.latents(batch.x, models)
    a, s = obj._inputs(batch)
    z_pred = obj._teacher_forced(models, z, a, s)[0]
    want = [float(obj._value_loss(batch, z, z_pred[:, j % 3], models, j, j % 3)[0].detach())
            for j in range(1, 5)]
    assert got == pytest.approx(want, rel=1e-5)
