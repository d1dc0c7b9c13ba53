from __future__ import annotations

import json
import time

import pytest
import torch
from mask_geometry import bbox, check_padded, grid_mask, is_rectangle, reachable

from jepalab.masks import MaskError, Tube, build_mask_policy
from jepalab.masks.base import block_area_range


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_defaults_two_generators_disjoint_complement():
    grid = (4, 8, 8)
    n = 4 * 8 * 8
    policy = build_mask_policy("tube", grid)
    assert [g["num_blocks"] for g in policy.config["generators"]] == [8, 2]
    assert [g["spatial_scale"] for g in policy.config["generators"]] == [[0.15, 0.15], [0.7, 0.7]]
    masks = policy.sample(gen(0), 8)
    assert len(masks) == 2
    for ms in masks:
        assert ms.num_targets == 1 and ms.context_idx.shape[0] == 8
        check_padded(ms.context_idx, ms.context_keep)
        check_padded(ms.target_idx, ms.target_keep)
        for b in range(8):
            ctx = grid_mask(ms.context_idx[b], ms.context_keep[b], n)
            tgt = grid_mask(ms.target_idx[b, 0], ms.target_keep[b, 0], n)
            assert not bool((ctx & tgt).any())
            assert bool((ctx | tgt).all())  # the context is the complement of the target
            assert int(ctx.sum()) >= 4
            # t-major flattening: the target is the same spatial set in every frame
            frames = tgt.reshape(grid)
            assert bool((frames == frames[0]).all()) and bool(frames[0].any())
    # the target is a union of blocks: on average larger than the largest single block
    for g, ms in zip(policy.generators, masks):
        one_block = block_area_range(g.spatial_scale, g.aspect, 8, 8)[1] * 4
        assert float(ms.target_keep.sum()) / 8 > one_block


def test_blocks_are_rectangles_spanning_all_frames_with_reachable_sizes():
    grid = (3, 10, 12)
    policy = Tube(grid)
    for g, dense in zip(policy.generators, policy.sample_dense(gen(1), 32)):
        assert dense.blocks.shape == (32, g.num_blocks, *grid)
        sizes = set()
        for b in range(32):
            for k in range(g.num_blocks):
                block = dense.blocks[b, k]
                assert bool((block == block[0]).all()), "block does not span all frames"
                assert is_rectangle(block[0])
                _, _, h, w = bbox(block[0])
                assert reachable(h, w, 10, 12, g.spatial_scale, g.aspect)
                sizes.add((h, w))
            assert torch.equal(dense.targets[b, 0], dense.blocks[b].any(0))
        assert len(sizes) > 1  # per-sample sizes (the aspect varies)


def test_partial_temporal_extent():
    grid = (8, 6, 6)
    policy = Tube(grid, generators=[{"spatial_scale": (0.2, 0.3), "num_blocks": 3,
                                     "temporal_scale": (0.25, 0.5)}])
    [dense] = policy.sample_dense(gen(2), 64)
    starts, ends = set(), set()
    for b in range(64):
        for k in range(3):
            active = dense.blocks[b, k].flatten(1).any(1).nonzero().flatten().tolist()
            assert active == list(range(active[0], active[-1] + 1))  # contiguous frames
            assert 2 <= len(active) <= 4
            starts.add(active[0])
            ends.add(active[-1])
    assert 0 in starts and 7 in ends  # the first and last frames are both reachable


def test_determinism_and_config_round_trip():
    policy = Tube((2, 6, 6), generators=[{"spatial_scale": [0.2, 0.4], "num_blocks": 2}],
                  min_keep=3)
    a, b, c = (policy.sample(gen(s), 8)[0] for s in (5, 5, 6))
    assert torch.equal(a.context_idx, b.context_idx) and torch.equal(a.target_keep, b.target_keep)
    same_shape = a.target_idx.shape == c.target_idx.shape
    assert not (same_shape and torch.equal(a.target_idx, c.target_idx))
    cfg = json.loads(json.dumps(policy.config))
    rebuilt = build_mask_policy(**cfg)
    assert rebuilt.config == policy.config
    assert torch.equal(rebuilt.sample(gen(5), 8)[0].target_idx, a.target_idx)


def test_min_keep_errors_are_bounded():
    with pytest.raises(ValueError, match=r"cannot satisfy min_keep=4 on a 1x2x2 grid"):
        Tube((1, 2, 2), generators=[{"spatial_scale": (1.0, 1.0), "num_blocks": 1}])
    # 24 = 32 - one 2x2x2 tube passes upfront, but needs all 8 blocks to coincide
    policy = Tube((2, 4, 4), min_keep=24, generators=[
        {"spatial_scale": (0.25, 0.25), "aspect": (1.0, 1.0), "num_blocks": 8}])
    t0 = time.perf_counter()
    with pytest.raises(MaskError, match=r"min_keep=24 on a 2x4x4 grid with generators\[0\]"):
        policy.sample(gen(0), 16)
    assert time.perf_counter() - t0 < 2.0


@pytest.mark.parametrize(("gens", "match"), [
    ([], "non-empty"),
    ({"spatial_scale": (0.1, 0.1), "num_blocks": 1}, "non-empty list"),
    ([{"spatial_scale": (0.1, 0.1), "num_blocks": 1, "blocks": 3}], "unknown key 'blocks'"),
    ([{"num_blocks": 2}], r"generators\[0\] needs 'spatial_scale'"),
    ([{"spatial_scale": (0.1, 1.5), "num_blocks": 2}], r"generators\[0\].spatial_scale"),
    ([{"spatial_scale": (0.1, 0.1), "num_blocks": 0}], r"generators\[0\].num_blocks"),
])
def test_bad_generators(gens, match):
    with pytest.raises(MaskError, match=match):
        build_mask_policy("tube", (2, 8, 8), generators=gens)


def test_bad_grid_and_param():
    with pytest.raises(MaskError, match="grid"):
        build_mask_policy("tube", (8, 8))
    with pytest.raises(MaskError, match="unknown tube mask param 'npred'"):
        build_mask_policy("tube", (2, 8, 8), npred=4)
