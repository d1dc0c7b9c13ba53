"""The supervised (no pretraining, end-to-end from labels) baseline: data, loss, training."""

from __future__ import annotations

import pytest
import torch

from jepalab.config import PretrainConfig, load
from jepalab.data.collect import collect
from jepalab.errors import JepalabError
from jepalab.models.build import build_encoder
from jepalab.objectives import Batch, build_objective
from jepalab.train.loop import make_dataset
from objectives.baseline_runs import loss_ratio, pretrain_rows


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sup")
    return collect("two-rooms", 8, root / "data", image_size=32, max_steps=16, progress=False)


def _cfg(data, *extra: str) -> PretrainConfig:
    return load(PretrainConfig, None, ["--objective.name=supervised", "--data.source=dataset",
                                       f"--data.path={data}", "--data.image_size=32",
                                       "--model.preset=micro", "--model.patch_size=8", *extra])


def test_batches_carry_each_frames_state(data):
    cfg = _cfg(data)
    ds = make_dataset(cfg)
    item = ds[5]
    e, t = ds.locate(5)
    assert item["obs"].shape == (3, 32, 32) and item["obs"].dtype == torch.uint8
    assert torch.equal(item["states"], torch.from_numpy(ds.store.episode(e)["states"][t]))


def test_loss_is_zero_for_a_perfect_head_and_weighs_dims_alike(data):
    cfg = _cfg(data)
    obj = build_objective(cfg)
    models = obj.build(build_encoder(cfg))
    x = torch.randn(6, 3, 32, 32)
    head = models["head"]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    # the head predicts 0; dims 0 and 1 deviate by one std each, on scales 100x apart
    s = torch.zeros(6, 4)
    s[:, 0] = torch.tensor([1.0, -1.0] * 3) * 0.1
    s[:, 1] = torch.tensor([1.0, -1.0] * 3) * 10.0
    loss, _ = obj.loss(Batch(x, [], torch.Generator(), states=s), models)
    z = s[:, :2] / s[:, :2].std(0)  # constant dims (2, 3) contribute 0
    assert torch.isclose(loss, z.square().sum(1).mean() / 4)
    assert torch.isclose(z[:, 0].square().mean(), z[:, 1].square().mean())
    perfect = Batch(x, [], torch.Generator(), states=torch.zeros(6, 4))
    assert float(obj.loss(perfect, models)[0].detach()) == 0.0


def test_needs_trajectory_frames():
    cfg = load(PretrainConfig, None, ["--objective.name=supervised"])
    with pytest.raises(JepalabError, match="supervised.*data.source 'dataset'"):
        build_objective(cfg)


def test_trains_with_falling_loss(tmp_path, data):
    rows = pretrain_rows(tmp_path / "run", "supervised", 30, "--data.source=dataset",
                         f"--data.path={data}", "--optim.lr=3e-3")
    assert loss_ratio(rows, 5) < 0.5
    assert all("state_rmse" in r for r in rows)
