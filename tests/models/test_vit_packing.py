"""Padded batches give each sample the same outputs (and gradients) as running it alone.

The trunk packs real tokens and the predictor's last block computes target rows only; both are
pure speed-ups, so a padded batch must match per-sample runs without padding."""

from __future__ import annotations

import pytest
import torch

from jepalab.models.vit import Predictor, vit


def _padded(lengths: list[int], n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    keep = torch.zeros_like(idx, dtype=torch.bool)
    for i, k in enumerate(lengths):
        idx[i, :k] = torch.randperm(n, generator=gen)[:k].sort().values
        keep[i, :k] = True
    return idx, keep


@pytest.mark.parametrize("pos", ["sincos", "rope"])
def test_encoder_padded_batch_matches_single_samples(pos: str) -> None:
    torch.manual_seed(0)
    enc = vit("micro", img_size=32, patch_size=8, pos=pos).double()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    idx, keep = _padded([5, 16, 9], 16, gen)
    out = enc(x, idx, keep)
    for i in range(3):
        k = int(keep[i].sum())
        alone = enc(x[i : i + 1], idx[i : i + 1, :k])
        torch.testing.assert_close(out[i, :k], alone[0])
    assert torch.all(out[~keep] == 0)


@pytest.mark.parametrize("pos", ["sincos", "rope"])
def test_predictor_padded_batch_matches_single_samples(pos: str) -> None:
    torch.manual_seed(0)
    grid = (4, 4)
    pred = Predictor(grid, 32, pred_dim=24, depth=2, num_heads=2, pos=pos).double()
    gen = torch.Generator().manual_seed(2)
    c_idx, c_keep = _padded([6, 11], 16, gen)
    t = [_padded([3, 5], 16, gen) for _ in range(2)]  # per sample: M=2 targets
    t_idx, t_keep = torch.stack([t[0][0], t[1][0]]), torch.stack([t[0][1], t[1][1]])
    z = torch.randn(2, c_idx.shape[1], 32, dtype=torch.float64, requires_grad=True)
    out = pred(z, c_idx, c_keep, t_idx, t_keep)  # [B, M, Nt, D]
    (out * t_keep[..., None]).sum().backward()
    grad = z.grad.clone()
    for b in range(2):
        kc = int(c_keep[b].sum())
        for m in range(2):
            kt = int(t_keep[b, m].sum())
            zb = z[b : b + 1, :kc].detach().requires_grad_(True)
            alone = pred(zb, c_idx[b : b + 1, :kc], c_keep[b : b + 1, :kc],
                         t_idx[b : b + 1, m : m + 1, :kt], t_keep[b : b + 1, m : m + 1, :kt])
            torch.testing.assert_close(out[b, m, :kt], alone[0, 0])
    # gradient w.r.t. the context equals the sum of the per-(sample, target) runs
    want = torch.zeros_like(grad)
    for b in range(2):
        kc = int(c_keep[b].sum())
        zb = z[b : b + 1, :kc].detach().requires_grad_(True)
        for m in range(2):
            kt = int(t_keep[b, m].sum())
            y = pred(zb, c_idx[b : b + 1, :kc], c_keep[b : b + 1, :kc],
                     t_idx[b : b + 1, m : m + 1, :kt], t_keep[b : b + 1, m : m + 1, :kt])
            y.sum().backward()
        want[b, :kc] = zb.grad[0]
    torch.testing.assert_close(grad, want)


def test_checkpointed_trunk_matches_plain() -> None:
    torch.manual_seed(0)
    a = vit("micro", img_size=32, patch_size=8)
    b = vit("micro", img_size=32, patch_size=8, grad_checkpointing=True)
    b.load_state_dict(a.state_dict())
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 32, 32)
    idx, keep = _padded([7, 12], 16, gen)
    for m in (a, b):
        m(x, idx, keep).sum().backward()
    ga = a.trunk.blocks[0].attn.qkv.weight.grad
    torch.testing.assert_close(ga, b.trunk.blocks[0].attn.qkv.weight.grad)
