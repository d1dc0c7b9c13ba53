from __future__ import annotations

import pytest
import torch

from jepalab.masks import MaskError, MaskSet, apply, indices_from_mask, mask_stats


def test_apply_gathers_rows():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(3, 10, 5, generator=g)
    idx = torch.randint(0, 10, (3, 4), generator=g)
    out = apply(tokens, idx)
    assert out.shape == (3, 4, 5)
    for b in range(3):
        for k in range(4):
            assert torch.equal(out[b, k], tokens[b, int(idx[b, k])])
    # extra index dims ([B, M, Nt] targets) keep their shape
    idx3 = torch.randint(0, 10, (3, 2, 4), generator=g)
    out3 = apply(tokens, idx3)
    assert out3.shape == (3, 2, 4, 5)
    assert torch.equal(out3[2, 1, 3], tokens[2, int(idx3[2, 1, 3])])
    with pytest.raises(MaskError, match="apply"):
        apply(tokens, idx[:2])


def test_indices_from_mask_sorted_and_end_padded():
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(4, 3, 12, generator=g) < 0.4
    mask[0, 0] = False  # an empty list is all padding
    idx, keep = indices_from_mask(mask)
    assert idx.shape == keep.shape and idx.shape[-1] == int(mask.sum(-1).max())
    for i in range(4):
        for j in range(3):
            expect = mask[i, j].nonzero().flatten().tolist()
            n = len(expect)
            assert idx[i, j, :n].tolist() == expect
            assert keep[i, j].tolist() == [True] * n + [False] * (idx.shape[-1] - n)
            assert idx[i, j, n:].eq(0).all()


def test_maskset_validates_and_moves():
    c = torch.tensor([[1, 2, 0]])
    ck = torch.tensor([[True, True, False]])
    t = torch.tensor([[[3, 4], [5, 0]]])
    tk = torch.tensor([[[True, True], [True, False]]])
    ms = MaskSet(c, ck, t, tk)
    assert ms.num_targets == 2
    moved = ms.to("cpu")
    assert torch.equal(moved.target_idx, t) and moved.context_keep.dtype == torch.bool
    with pytest.raises(MaskError, match="target_idx"):
        MaskSet(c, ck, t[0], tk[0])
    with pytest.raises(MaskError, match="int64"):
        MaskSet(c.int(), ck, t, tk)
    with pytest.raises(MaskError, match="bool"):
        MaskSet(c, ck.long(), t, tk)
    stats = mask_stats([ms])
    assert stats["context_tokens"] == 2.0 and stats["target_tokens"] == 1.5
    assert stats["context_pad"] == pytest.approx(1 / 3)
    assert stats["target_pad"] == pytest.approx(0.25)
