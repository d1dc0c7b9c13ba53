from __future__ import annotations

import json
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mask_geometry import bbox, check_padded, grid_mask, is_rectangle, reachable

from jepalab.masks import MaskError, MaskSet, MultiBlock, build_mask_policy
from jepalab.masks.base import block_area_range


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def target_rects(ms: MaskSet, grid: tuple[int, int]) -> list[list[tuple[int, int, int, int]]]:
    """Per sample, per target block: (top, left, h, w), asserting each block is a full rectangle."""
    h, w = grid
    out = []
    for b in range(ms.target_idx.shape[0]):
        row = []
        for m in range(ms.num_targets):
            mask = grid_mask(ms.target_idx[b, m], ms.target_keep[b, m], h * w).reshape(h, w)
            assert is_rectangle(mask), "target block is not a full rectangle"
            row.append(bbox(mask))
        out.append(row)
    return out


ranges = st.tuples(st.floats(0.05, 0.5), st.floats(0.0, 0.5)).map(
    lambda t: (t[0], min(1.0, t[0] + t[1])))
aspects = st.tuples(st.floats(0.4, 1.6), st.floats(1.0, 2.0)).map(lambda t: (t[0], t[0] * t[1]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(h=st.integers(3, 16), w=st.integers(3, 16), npred=st.integers(1, 5), tscale=ranges,
       taspect=aspects, cscale=st.floats(0.5, 1.0).map(lambda lo: (lo, 1.0)), cas=aspects,
       min_keep=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_geometry(h, w, npred, tscale, taspect, cscale, cas, min_keep, seed):
    kw = dict(npred=npred, target_scale=tscale, target_aspect=taspect, context_scale=cscale,
              context_aspect=cas, min_keep=min_keep)
    try:
        policy = build_mask_policy("multiblock", (h, w), **kw)
        [ms] = policy.sample(gen(seed), 6)
        [dense] = policy.sample_dense(gen(seed), 6)
    except MaskError as e:  # infeasible draws must fail fast and say why
        assert "min_keep" in str(e)
        return
    # sample() is exactly the dense draw converted to index lists
    again = dense.to_maskset()
    assert torch.equal(again.context_idx, ms.context_idx)
    assert torch.equal(again.target_idx, ms.target_idx)
    assert ms.num_targets == npred and ms.context_idx.dtype == torch.int64
    check_padded(ms.context_idx, ms.context_keep)
    check_padded(ms.target_idx, ms.target_keep)
    for b, rects in enumerate(target_rects(ms, (h, w))):
        for _, _, bh, bw in rects:
            assert reachable(bh, bw, h, w, tscale, taspect), (bh, bw)
        ctx = grid_mask(ms.context_idx[b], ms.context_keep[b], h * w)
        assert int(ctx.sum()) >= min_keep
        union = torch.zeros(h * w, dtype=torch.bool)
        for m in range(npred):
            tgt = grid_mask(ms.target_idx[b, m], ms.target_keep[b, m], h * w)
            assert not bool((ctx & tgt).any()), "context overlaps a target"
            union |= tgt
        block = dense.context_block[b]
        assert is_rectangle(block)
        _, _, ch, cw = bbox(block)
        assert reachable(ch, cw, h, w, cscale, cas)
        # context = its block minus the targets: inside the block, nothing else dropped
        assert torch.equal(ctx, block.flatten() & ~union)


def test_defaults_and_shapes():
    policy = MultiBlock((14, 14))
    assert policy.config == {
        "kind": "multiblock", "grid": [14, 14], "npred": 4, "target_scale": [0.15, 0.2],
        "target_aspect": [0.75, 1.5], "context_scale": [0.85, 1.0], "context_aspect": [1.0, 1.0],
        "min_keep": 4, "allow_overlap": False, "max_tries": 20,
    }
    masks = policy.sample(gen(0), 8)
    assert len(masks) == 1
    ms = masks[0]
    assert ms.num_targets == 4 and ms.target_idx.shape[:2] == (8, 4)
    assert ms.context_idx.shape[0] == 8 and int(ms.context_idx.max()) < 196


def test_context_within_its_block_bbox():
    """Public API only: a small context block bounds the context's bounding box."""
    grid = (12, 12)
    policy = MultiBlock(grid, context_scale=(0.3, 0.4), context_aspect=(1.0, 1.0))
    area_max = block_area_range((0.3, 0.4), (1.0, 1.0), *grid)[1]
    [ms] = policy.sample(gen(1), 64)
    for b in range(64):
        ctx = grid_mask(ms.context_idx[b], ms.context_keep[b], 144).reshape(grid)
        _, _, h, w = bbox(ctx)
        assert h * w <= area_max and h <= 8 and w <= 8


@pytest.mark.parametrize("grid", [(14, 14), (8, 8), (5, 9)])
def test_blocks_reach_every_row_and_column(grid):
    h, w = grid
    [ms] = MultiBlock(grid).sample(gen(2), 256)
    rects = [r for rs in target_rects(ms, grid) for r in rs]
    rows = torch.zeros(h, dtype=torch.bool)
    cols = torch.zeros(w, dtype=torch.bool)
    for top, left, bh, bw in rects:
        rows[top:top + bh] = True
        cols[left:left + bw] = True
    assert bool(rows.all()) and bool(cols.all())
    # edge placements happen: blocks flush with the last row / column, not only the first
    assert any(top + bh == h for top, _, bh, _ in rects)
    assert any(left + bw == w for _, left, _, bw in rects)
    assert any(top == 0 for top, *_ in rects) and any(left == 0 for _, left, *_ in rects)


def test_per_sample_sizes_and_independent_scale_aspect():
    grid = (14, 14)
    [ms] = MultiBlock(grid).sample(gen(3), 256)
    rects = [r for rs in target_rects(ms, grid) for r in rs]
    assert len({(bh, bw) for _, _, bh, bw in rects[:4 * 8]}) > 1  # within the first 8 samples
    area = torch.tensor([bh * bw for *_, bh, bw in rects], dtype=torch.float64)
    ratio = torch.tensor([bh / bw for *_, bh, bw in rects], dtype=torch.float64)
    # one draw for both (the reference collator) would tie area to aspect; separate draws don't
    corr = torch.corrcoef(torch.stack([area, ratio]))[0, 1]
    assert abs(float(corr)) < 0.3, float(corr)


def test_determinism_per_seed():
    policy = MultiBlock((14, 14))
    a, b, c = (policy.sample(gen(s), 16)[0] for s in (7, 7, 8))
    for name in ("context_idx", "context_keep", "target_idx", "target_keep"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not (a.context_idx.shape == c.context_idx.shape
                and torch.equal(a.context_idx, c.context_idx))


def test_allow_overlap_keeps_the_whole_context_block():
    policy = MultiBlock((10, 10), allow_overlap=True)
    [dense] = policy.sample_dense(gen(4), 16)
    assert torch.equal(dense.context, dense.context_block)


def test_config_round_trip_through_json():
    policy = MultiBlock((9, 7), npred=3, target_scale=(0.1, 0.3), min_keep=2)
    cfg = json.loads(json.dumps(policy.config))
    rebuilt = build_mask_policy(**cfg)
    assert rebuilt.config == policy.config
    ref = policy.sample(gen(5), 4)[0].target_idx
    assert torch.equal(rebuilt.sample(gen(5), 4)[0].target_idx, ref)


def test_infeasible_config_fails_upfront():
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"cannot satisfy min_keep=15 on a 4x4 grid"):
        build_mask_policy("multiblock", (4, 4), min_keep=15)
    with pytest.raises(MaskError, match="min_keep=17"):
        MultiBlock((4, 4), min_keep=17, allow_overlap=True)
    assert time.perf_counter() - t0 < 1.0


def test_unsatisfiable_draws_raise_after_bounded_tries():
    # passes the upfront bound (12 = 16 - one 2x2 block) but needs all 8 blocks to coincide
    policy = MultiBlock((4, 4), npred=8, target_scale=(0.25, 0.25), target_aspect=(1.0, 1.0),
                        context_scale=(1.0, 1.0), min_keep=12, max_tries=20)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"cannot satisfy min_keep=12 on a 4x4 grid .*20 tries"):
        policy.sample(gen(6), 16)
    assert time.perf_counter() - t0 < 2.0


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 6), w=st.integers(1, 6), min_keep=st.integers(1, 36),
       npred=st.integers(1, 6), seed=st.integers(0, 1000))
def test_small_grids_never_hang(h, w, min_keep, npred, seed):
    t0 = time.perf_counter()
    try:
        [ms] = MultiBlock((h, w), npred=npred, min_keep=min_keep).sample(gen(seed), 8)
        assert int(ms.context_keep.sum(1).min()) >= min_keep
    except MaskError as e:
        assert f"min_keep={min_keep}" in str(e) and f"{h}x{w}" in str(e)
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize(("kw", "match"), [
    (dict(target_scale=(0.0, 0.2)), "target_scale"),
    (dict(context_scale=(0.9, 1.2)), "context_scale"),
    (dict(target_scale=(0.3, 0.2)), "target_scale"),
    (dict(target_aspect=(-1.0, 1.0)), "target_aspect"),
    (dict(target_scale=0.2), "target_scale"),
    (dict(npred=0), "npred"),
    (dict(min_keep=200), "min_keep=200"),
    (dict(max_tries=0), "max_tries"),
    (dict(allow_overlap="no"), "allow_overlap"),
])
def test_bad_params_name_the_param(kw, match):
    with pytest.raises(MaskError, match=match):
        build_mask_policy("multiblock", (14, 14), **kw)


def test_unknown_kind_param_and_grid():
    with pytest.raises(MaskError, match="unknown mask kind 'blocks'"):
        build_mask_policy("blocks", (14, 14))
    with pytest.raises(MaskError, match="unknown multiblock mask param 'nprd'"):
        build_mask_policy("multiblock", (14, 14), nprd=4)
    with pytest.raises(MaskError, match="grid"):
        build_mask_policy("multiblock", (4, 14, 14))
    with pytest.raises(MaskError, match="batch_size"):
        MultiBlock((8, 8)).sample(gen(0), 0)
