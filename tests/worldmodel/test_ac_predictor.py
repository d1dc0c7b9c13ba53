"""Action-conditioned predictors: mask, causality, shapes, rollout consistency, overfitting."""

from __future__ import annotations

import pytest
import torch

from jepalab.config import PredictorConfig
from jepalab.models.ac_predictor import (
    ACMLP,
    ACConv,
    ACTransformer,
    block_causal_mask,
    build_predictor,
)

D, A, S, GRID = 8, 2, 3, (2, 2)


def _transformer(state_dim: int = 0, context: int = 3) -> ACTransformer:
    torch.manual_seed(0)
    return ACTransformer(D, GRID, A, state_dim, width=32, depth=2, heads=2, context=context).eval()


def test_block_causal_mask_structure():
    m = block_causal_mask(3, 2)
    assert m.shape == (6, 6) and m.dtype == torch.bool
    frame = torch.arange(3).repeat_interleave(2)
    for i in range(6):
        for j in range(6):
            assert bool(m[i, j]) == bool(frame[i] >= frame[j])
    # within a frame every token sees every other token; nothing sees the future
    assert m[0, 1] and m[1, 0] and not m[1, 2] and m[5, 0]


@pytest.mark.parametrize("state_dim", [0, S])
def test_transformer_never_attends_to_the_future(state_dim):
    model = _transformer(state_dim)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 3, 4, D, generator=g)
    a = torch.randn(2, 3, A, generator=g)
    s = torch.randn(2, 3, S, generator=g) if state_dim else None
    out, s_out = model(z, a, s)
    z2, a2 = z.clone(), a.clone()
    z2[:, 2] += 5.0  # perturb frame 2's tokens and the action after it
    a2[:, 2] -= 3.0
    s2 = s.clone() if s is not None else None
    if s2 is not None:
        s2[:, 2] += 1.0
    out2, s_out2 = model(z2, a2, s2)
    torch.testing.assert_close(out[:, :2], out2[:, :2])  # frames <= 1 unchanged
    assert (out[:, 2] - out2[:, 2]).abs().max() > 1e-3  # frame 2 itself does change
    if state_dim:
        torch.testing.assert_close(s_out[:, :2], s_out2[:, :2])


def test_shapes_of_both_predictors():
    z_tok, z_pool = torch.randn(5, 3, 4, D), torch.randn(5, 3, D)
    a, s = torch.randn(5, 3, A), torch.randn(5, 3, S)
    t = _transformer()
    assert t.predict(z_tok, a).shape == (5, 3, 4, D)
    assert t.rollout(z_tok[:, 0], torch.randn(5, 6, A)).shape == (5, 6, 4, D)
    ts = _transformer(S)
    zn, sn = ts(z_tok, a, s)
    assert zn.shape == (5, 3, 4, D) and sn.shape == (5, 3, S)
    zr, sr = ts.rollout_states(z_tok[:, 0], torch.randn(5, 4, A), s[:, 0])
    assert zr.shape == (5, 4, 4, D) and sr.shape == (5, 4, S)
    m = ACMLP(D, A, 0, width=16, depth=2)
    assert m.predict(z_pool, a).shape == (5, 3, D)
    assert m.rollout(z_pool[:, 0], torch.randn(5, 7, A)).shape == (5, 7, D)
    ms = ACMLP(D, A, S, width=16, depth=2)
    zr, sr = ms.rollout_states(z_pool[:, 0], torch.randn(5, 2, A), s[:, 0])
    assert zr.shape == (5, 2, D) and sr.shape == (5, 2, S)
    # a planner-sized batch in one call
    assert m.rollout(torch.randn(512, D), torch.randn(512, 10, A)).shape == (512, 10, D)
    c = ACConv(D * 4, A, 2, S, width=16, depth=2)
    zr, sr = c.rollout_states(torch.randn(5, D * 4), torch.randn(5, 3, A), s[:, 0])
    assert zr.shape == (5, 3, D * 4) and sr.shape == (5, 3, S)


def test_conv_reads_the_pooled_grid_locally():
    """A change in one cell of the D-major flattened grid reaches only cells within the
    receptive field (depth + 1 convolutions of 3 x 3): the flat latent is laid out as the grid
    `encode_latents` pools."""
    torch.manual_seed(0)
    side, depth = 6, 1  # two 3 x 3 convolutions: a cell sees 2 cells away
    model = ACConv(D * side * side, A, side, width=16, depth=depth).eval()
    z, a = torch.randn(1, 1, D * side * side), torch.randn(1, 1, A)
    z2 = z.clone().view(1, 1, D, side, side)
    z2[..., 0, 0] += 3.0  # the top-left cell, every channel
    diff = (model.predict(z2.view(1, 1, -1), a) - model.predict(z, a)).view(D, side, side)
    changed = diff.abs().amax(0) > 1e-6
    near = torch.zeros(side, side, dtype=torch.bool)
    near[:3, :3] = True
    assert torch.equal(changed, near), changed
    with pytest.raises(ValueError, match="not D"):
        ACConv(D * 4 + 1, A, 2)


def test_bad_inputs_are_refused():
    t = _transformer(context=2)
    with pytest.raises(ValueError, match="actions must be"):
        t.predict(torch.randn(2, 2, 4, D), torch.randn(2, 2, A + 1))
    with pytest.raises(ValueError, match="at most 2 frames"):
        t.predict(torch.randn(2, 3, 4, D), torch.randn(2, 3, A))
    with pytest.raises(ValueError, match="state_dim=0"):
        t.predict(torch.randn(2, 2, 4, D), torch.randn(2, 2, A), torch.randn(2, 2, S))
    with pytest.raises(ValueError, match="B = z0's 2"):
        ACMLP(D, A).rollout(torch.randn(2, D), torch.randn(3, 4, A))


def test_rollout_feeds_predictions_back_through_a_sliding_window():
    t = _transformer(context=2)
    g = torch.Generator().manual_seed(3)
    z0, acts = torch.randn(3, 4, D, generator=g), torch.randn(3, 4, A, generator=g)
    roll = t.rollout(z0, acts)
    # step 0 is the one-frame prediction; step 1 sees [z0, r1]; step 3 sees only [r2, r3]
    torch.testing.assert_close(roll[:, 0], t.predict(z0[:, None], acts[:, :1])[:, 0])
    hist = torch.stack([z0, roll[:, 0]], 1)
    torch.testing.assert_close(roll[:, 1], t.predict(hist, acts[:, :2])[:, 1])
    hist = torch.stack([roll[:, 1], roll[:, 2]], 1)
    torch.testing.assert_close(roll[:, 3], t.predict(hist, acts[:, 2:4])[:, 1])
    m = ACMLP(D, A, width=16, depth=2).eval()
    roll = m.rollout(z0[:, 0], acts)
    torch.testing.assert_close(roll[:, 2], m.predict(roll[:, 1:2], acts[:, 2:3])[:, 0])


def _linear_system(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=g))
    return 0.9 * q, torch.randn(D, A, generator=g) * 0.5


def _overfit(model, tokens: int | None, steps: int) -> tuple[float, float]:
    """Fit z_{t+1} = M z_t + B a_t (per token) with 2-step rollout + teacher-forcing loss."""
    g = torch.Generator().manual_seed(0)
    mat, bmat = _linear_system(g)
    shape = (64, 3, tokens, D) if tokens else (64, 3, D)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        z0 = torch.randn(shape[0], *shape[2:], generator=g)
        acts = torch.rand(shape[0], 2, A, generator=g) * 2 - 1
        zs = [z0]
        for t in range(2):
            eff = acts[:, t] @ bmat.T
            zs.append(zs[-1] @ mat.T + (eff[:, None] if tokens else eff))
        z = torch.stack(zs, 1)
        tf = (model.predict(z[:, :2], acts) - z[:, 1:]).abs().mean()
        ro = (model.rollout(z0, acts) - z[:, 1:]).abs().mean()
        loss = tf + ro
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return sum(losses[:10]) / 10, sum(losses[-10:]) / 10


def test_mlp_overfits_linear_latent_dynamics():
    torch.manual_seed(0)
    first, last = _overfit(ACMLP(D, A, width=64, depth=2), None, 300)
    assert last < 0.2 * first, (first, last)


def test_transformer_overfits_linear_latent_dynamics():
    torch.manual_seed(0)
    model = ACTransformer(D, GRID, A, width=32, depth=1, heads=2, context=2)
    first, last = _overfit(model, 4, 250)
    assert last < 0.3 * first, (first, last)


def test_build_predictor_by_arch():
    mlp = build_predictor(PredictorConfig(arch="mlp", dim=16, depth=1), D, GRID, A, S, 2)
    assert isinstance(mlp, ACMLP) and mlp.state_dim == 0
    conv = build_predictor(PredictorConfig(arch="conv", dim=16, depth=1, pool=2), D * 4, GRID,
                           A, S, 2)
    assert isinstance(conv, ACConv) and conv.side == 2 and conv.channels == D
    tr = build_predictor(
        PredictorConfig(arch="transformer", dim=16, depth=1, heads=2, use_state=True),
        D,
        GRID,
        A,
        S,
        2,
    )
    assert isinstance(tr, ACTransformer) and tr.state_dim == S and tr.context == 2
    with pytest.raises(ValueError, match="needs an image encoder"):
        build_predictor(PredictorConfig(arch="transformer", dim=16, heads=2), D, (2, 2, 2), A, 0, 2)


def test_mlp_init_choice():
    """trunc_normal: every Linear at std 0.02 (as the ViTs); torch: nn.Linear's Kaiming uniform,
    std 1 / sqrt(3 fan_in), which keeps a small input's signal through the layers."""
    torch.manual_seed(0)
    cfg = PredictorConfig(arch="mlp", dim=256, depth=2)
    vit = build_predictor(cfg, 6, GRID, 2, 0, 1)
    own = build_predictor(cfg.model_copy(update={"init": "torch"}), 6, GRID, 2, 0, 1)
    first = [m.net[0].weight.std().item() for m in (vit, own)]
    assert abs(first[0] - 0.02) < 0.003 and abs(first[1] - (3 * 8) ** -0.5) < 0.03, first
    x = torch.randn(64, 1, 6)
    a = torch.randn(64, 1, 2)
    moved = [(m(x, a)[0] - x).std().item() for m in (vit, own)]
    assert moved[1] > 10 * moved[0], moved  # the 0.02 net starts near the identity map
    with pytest.raises(ValueError, match="init: 'torch' is for arch 'mlp'"):
        PredictorConfig(arch="conv", init="torch")
