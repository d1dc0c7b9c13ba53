from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from jepalab.data.loaders import (
    ClipDataset,
    FrameDataset,
    TransitionDataset,
    seed_worker,
    split_episodes,
)
from jepalab.errors import JepalabError


def test_frame_dataset(fake_dataset):
    ds = FrameDataset(fake_dataset)
    assert len(ds) == fake_dataset.num_frames
    x = ds[10]
    assert x.dtype == torch.uint8 and x.shape == (3, 16, 16)
    np.testing.assert_array_equal(x.permute(1, 2, 0).numpy(), fake_dataset.frame(10))
    assert ds.fingerprint() == fake_dataset.fingerprint()
    sub = FrameDataset(fake_dataset.path, episodes=[2, 0])  # a path works too
    lengths = fake_dataset.episode_lengths
    assert len(sub) == lengths[0] + lengths[2]
    np.testing.assert_array_equal(
        sub[int(lengths[0])].permute(1, 2, 0).numpy(), fake_dataset.episode(2)["frames"][0]
    )


def test_clip_dataset_covers_every_window(fake_dataset):
    T, stride = 3, 2
    ds = ClipDataset(fake_dataset, frames=T, stride=stride)
    lengths = fake_dataset.episode_lengths
    assert len(ds) == int(np.maximum(lengths - (T - 1) * stride, 0).sum())
    seen = {ds.locate(i) for i in range(len(ds))}
    assert len(seen) == len(ds)
    for e, t in seen:
        assert t + (T - 1) * stride < lengths[e]
    x = ds[len(ds) - 1]
    assert x.dtype == torch.uint8 and x.shape == (T, 3, 16, 16)
    e, t = ds.locate(len(ds) - 1)
    assert t + (T - 1) * stride == lengths[e] - 1  # the last window ends on the last frame
    ref = fake_dataset.episode(e)["frames"][t : t + (T - 1) * stride + 1 : stride]
    np.testing.assert_array_equal(x.permute(0, 2, 3, 1).numpy(), ref)
    with pytest.raises(IndexError):
        ds[len(ds)]
    with pytest.raises(JepalabError, match="no window of 99 frames"):
        ClipDataset(fake_dataset, frames=99)


def test_transition_dataset(fake_dataset):
    k = 2
    ds = TransitionDataset(fake_dataset, k)
    item = ds[5]
    assert item["obs"].shape == (k + 1, 3, 16, 16) and item["obs"].dtype == torch.uint8
    assert item["actions"].shape == (k, 2) and item["actions"].dtype == torch.float32
    assert item["states"].shape == (k + 1, 4) and item["states"].dtype == torch.float32
    e, t = int(item["episode"]), int(item["t"])
    ep = fake_dataset.episode(e)
    np.testing.assert_array_equal(item["actions"].numpy(), ep["actions"][t : t + k])
    np.testing.assert_array_equal(item["states"].numpy(), ep["states"][t : t + k + 1])
    # No transition may use the zero-padded action of an episode's last frame.
    assert all(
        ds.locate(i)[1] + k <= fake_dataset.episode_lengths[ds.locate(i)[0]] - 1
        for i in range(len(ds))
    )


def test_dataloader_with_spawned_workers(fake_dataset):
    ds = ClipDataset(fake_dataset, frames=2)
    loader = DataLoader(
        ds,
        batch_size=8,
        shuffle=True,
        num_workers=2,
        worker_init_fn=seed_worker,
        multiprocessing_context="spawn",
        generator=torch.Generator().manual_seed(0),
    )
    batches = list(loader)
    assert sum(len(b) for b in batches) == len(ds)
    assert batches[0].shape == (8, 2, 3, 16, 16) and batches[0].dtype == torch.uint8
    total = sum(int(b.sum(dtype=torch.int64)) for b in batches)
    assert total == sum(int(ds[i].sum(dtype=torch.int64)) for i in range(len(ds)))


def test_split_episodes_is_disjoint_seeded_and_stable_under_append(fake_dataset):
    train, val = split_episodes(fake_dataset, 0.3, seed=0)
    assert len(val) >= 1 and len(train) >= 1
    assert sorted([*train, *val]) == list(range(fake_dataset.num_episodes))
    again = split_episodes(fake_dataset, 0.3, seed=0)
    np.testing.assert_array_equal(again[1], val)
    big = SimpleNamespace(num_episodes=400, path="big")
    small = SimpleNamespace(num_episodes=200, path="small")
    tb, vb = split_episodes(big, 0.25, seed=1)
    ts, vs = split_episodes(small, 0.25, seed=1)
    np.testing.assert_array_equal(vb[vb < 200], vs)  # old episodes keep their side
    assert 0.18 < len(vb) / 400 < 0.32
    assert not np.array_equal(split_episodes(big, 0.25, seed=2)[1], vb)
    assert len(split_episodes(fake_dataset, 0.0)[1]) == 0
    with pytest.raises(JepalabError, match="val_fraction"):
        split_episodes(fake_dataset, 1.0)
    val_loader = FrameDataset(fake_dataset, episodes=val)
    assert len(val_loader) == int(fake_dataset.episode_lengths[val].sum())
