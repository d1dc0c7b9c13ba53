"""Rotary position embeddings and the ViT / predictor with pos="rope" / "rope_vjepa2"."""

from __future__ import annotations

import pytest
import torch

from jepalab.models.rope import apply_rope, axis_dim, rope_angles, rope_tables
from jepalab.models.vit import Predictor, vit


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Micro models run fastest on one thread (and do not stall when the cores are shared)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

def _rotate(x: torch.Tensor, grid: tuple[int, ...], variant: str = "rope") -> torch.Tensor:
    cos, sin = rope_tables(grid, x.shape[-1], variant)  # type: ignore[arg-type]
    return apply_rope(x, cos[None], sin[None])


@pytest.mark.parametrize("grid", [(7,), (3, 4), (2, 3, 4)])
def test_rotation_preserves_norms(grid):
    n = torch.Size(grid).numel()
    x = torch.randn(2, 3, n, 16, generator=torch.Generator().manual_seed(0))
    y = _rotate(x, grid)
    assert not torch.allclose(y, x)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))


def test_dot_product_depends_only_on_position_difference():
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(16, generator=g), torch.randn(16, generator=g)
    length = 12
    rq = _rotate(q.expand(1, 1, length, 16), (length,))[0, 0]  # q at every position
    rk = _rotate(k.expand(1, 1, length, 16), (length,))[0, 0]
    dots = rq @ rk.T  # [m, n]: q at m, k at n
    for shift in (1, 3, 5):
        torch.testing.assert_close(dots[shift:, shift:], dots[:-shift, :-shift])
    assert not torch.allclose(dots[0, 1], dots[0, 4])  # but it does depend on the difference


def test_angle_layouts_per_variant():
    """3 axes, head_dim 14 -> 4 channels per axis, 2 unrotated; ω = (1, 1/100) per axis chunk."""
    coords = torch.tensor([[1.0, 2.0, 3.0]])
    ours = rope_angles(coords, 14, "rope")[0]
    vj2 = rope_angles(coords, 14, "rope_vjepa2")[0]
    want_ours = [1, 1, 0.01, 0.01, 2, 2, 0.02, 0.02, 3, 3, 0.03, 0.03, 0, 0]
    want_vj2 = [1, 0.01, 1, 0.01, 2, 0.02, 2, 0.02, 3, 0.03, 3, 0.03, 0, 0]
    torch.testing.assert_close(ours, torch.tensor(want_ours, dtype=torch.float64))
    torch.testing.assert_close(vj2, torch.tensor(want_vj2, dtype=torch.float64))
    assert axis_dim(64, 3) == 20 and axis_dim(80, 3) == 26
    with pytest.raises(ValueError, match="too small"):
        axis_dim(2, 3)


def test_vjepa2_variant_treats_images_as_frame_zero_and_leaves_the_tail():
    img = rope_tables((4, 4), 32, "rope_vjepa2")
    vid = rope_tables((2, 4, 4), 32, "rope_vjepa2")
    torch.testing.assert_close(img[0], vid[0][:16])
    torch.testing.assert_close(img[1], vid[1][:16])
    cos, sin = vid
    assert torch.all(cos[:, 30:] == 1) and torch.all(sin[:, 30:] == 0)  # 3 * 10 rotated
    # The released layout is not a rotation: norms change (why it is kept as its own variant).
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    y = apply_rope(x, cos[None], sin[None])
    assert not torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-3)


@pytest.mark.parametrize("pos", ["rope", "rope_vjepa2"])
def test_vit_with_rope_runs_images_and_video(pos):
    torch.manual_seed(0)
    enc = vit("micro", img_size=32, patch_size=8, pos=pos).eval()
    assert enc.pos_embed is None
    assert set(enc.state_dict()) == set(vit("micro", img_size=32, patch_size=8).state_dict())
    assert enc(torch.randn(2, 3, 32, 32)).shape == (2, 16, 64)
    venc = vit("micro", img_size=32, patch_size=8, frames=4, pos=pos).eval()
    out = venc(torch.randn(2, 4, 3, 32, 32))
    assert out.shape == (2, 32, 64) and torch.isfinite(out).all()


@pytest.mark.parametrize("frames", [1, 4])
def test_masked_tokens_keep_their_grid_positions(frames):
    """Permuting the kept indices permutes the outputs (positions travel with the tokens), and
    idx = all tokens equals the unmasked forward."""
    torch.manual_seed(0)
    enc = vit("micro", img_size=32, patch_size=8, frames=frames, pos="rope").eval()
    x = torch.randn(2, frames, 3, 32, 32) if frames > 1 else torch.randn(2, 3, 32, 32)
    n = enc.num_tokens
    with torch.no_grad():
        full = enc(x)
        torch.testing.assert_close(enc(x, torch.arange(n).expand(2, -1)), full)
        idx = torch.tensor([[0, 3, 6, 9, 12], [1, 2, 7, 11, 15]])
        perm = torch.tensor([4, 0, 3, 1, 2])
        torch.testing.assert_close(enc(x, idx[:, perm]), enc(x, idx)[:, perm])
        # Padded positions do not leak into real tokens.
        padded = torch.cat([idx, torch.zeros(2, 2, dtype=torch.long)], 1)
        keep = torch.cat([torch.ones(2, 5), torch.zeros(2, 2)], 1).bool()
        torch.testing.assert_close(enc(x, padded, keep)[:, :5], enc(x, idx), atol=1e-5, rtol=1e-5)


def test_rope_vit_sees_only_relative_positions():
    """Shift the image content one patch row down and the kept indices with it: a RoPE ViT gives
    the same tokens (only differences matter); a sin-cos ViT does not."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)
    shifted = torch.roll(x, shifts=8, dims=-2)
    idx = torch.tensor([[0, 1, 5, 6, 9, 11]])  # rows 0..2 of the 4x4 grid
    for pos, same in (("rope", True), ("sincos", False)):
        enc = vit("micro", img_size=32, patch_size=8, pos=pos).eval()
        with torch.no_grad():
            a, b = enc(x, idx), enc(shifted, idx + 4)
        assert torch.allclose(a, b, atol=1e-5) is same, pos


def test_predictor_with_rope_uses_target_positions():
    torch.manual_seed(0)
    pred = Predictor((2, 4, 4), embed_dim=64, pred_dim=48, depth=2, num_heads=2, pos="rope",
                     num_mask_tokens=3).eval()
    assert pred.mask_token.shape == (3, 1, 48) and pred.pos_embed is None
    z = torch.randn(2, 5, 64)
    ci = torch.tensor([[0, 1, 2, 3, 4]] * 2)
    ck = torch.ones(2, 5, dtype=torch.bool)
    ti = torch.tensor([[[8, 9], [20, 21]]] * 2)
    tk = torch.ones(2, 2, 2, dtype=torch.bool)
    with torch.no_grad():
        out = pred(z, ci, ck, ti, tk)
        assert out.shape == (2, 2, 2, 64)
        moved = pred(z, ci, ck, torch.tensor([[[8, 9], [30, 31]]] * 2), tk)
        torch.testing.assert_close(out[:, 0], moved[:, 0])  # blocks stay independent
        assert not torch.allclose(out[:, 1], moved[:, 1])  # positions reach the mask tokens
        assert not torch.allclose(out, pred(z, ci, ck, ti, tk, mask_index=2))


def test_rope_trains_with_activation_checkpointing():
    torch.manual_seed(0)
    enc = vit("micro", img_size=32, patch_size=8, pos="rope", grad_checkpointing=True).train()
    enc(torch.randn(2, 3, 32, 32), torch.tensor([[0, 2, 4], [1, 3, 5]])).sum().backward()
    assert enc.trunk.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown position scheme 'alibi'"):
        vit("micro", pos="alibi")
