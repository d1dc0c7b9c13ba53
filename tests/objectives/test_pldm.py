"""The action-conditioned joint-embedding objective (PLDM): data, loss terms, training."""

from __future__ import annotations

import pytest
import torch

from jepalab.config import PretrainConfig, load
from jepalab.data.collect import collect
from jepalab.errors import JepalabError
from jepalab.models.build import build_encoder
from jepalab.objectives import Batch, build_objective
from jepalab.objectives.worldmodel import encode_latents
from jepalab.train.loop import make_dataset
from objectives.baseline_runs import loss_ratio, pretrain_rows


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pldm")
    return collect("two-rooms", 6, root / "data", image_size=32, max_steps=16, progress=False)


def _cfg(data, *extra: str) -> PretrainConfig:
    return load(PretrainConfig, None, ["--objective.name=pldm", "--data.source=dataset",
                                       f"--data.path={data}", "--data.image_size=32",
                                       "--model.preset=micro", "--model.patch_size=8",
                                       "--objective.params.steps=3", *extra])


def test_items_are_windows_of_frames_and_their_actions(data):
    ds = make_dataset(_cfg(data))
    item = ds[7]
    e, t = ds.locate(7)
    ep = ds.store.episode(e)
    assert item["obs"].shape == (4, 3, 32, 32) and item["obs"].dtype == torch.uint8
    assert torch.equal(item["actions"], torch.from_numpy(ep["actions"][t:t + 3]))


def _setup(data, **params):
    extra = [f"--objective.params.{k}={v}" for k, v in params.items()]
    cfg = _cfg(data, *extra)
    obj = build_objective(cfg)
    torch.manual_seed(0)
    return obj, obj.build(build_encoder(cfg))


def test_each_term_is_what_it_says(data):
    obj, models = _setup(data, std_weight=0, cov_weight=0, time_weight=0, idm_weight=0)
    for last in (models["dynamics"].net[-1], models["idm"][-1]):  # g = 0 (nothing moves), h = 0
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.zeros_(last.bias)
    x = torch.randn(4, 4, 3, 32, 32)
    a = torch.randn(4, 3, 2)
    loss, m = obj.loss(Batch(x, [], torch.Generator(), actions=a), models)
    z = encode_latents(models["encoder"], x.flatten(0, 1), 2).view(4, 4, -1)
    copy = (z[:, 1:] - z[:, :1]).square().mean()  # g = 0: every prediction is z_0
    assert torch.isclose(loss.detach(), copy.detach(), rtol=1e-5)
    assert m["prediction"] == pytest.approx(float(copy))
    assert m["temporal"] == pytest.approx(float((z[:, 1:] - z[:, :-1]).square().mean()), rel=1e-5)
    assert m["inverse_dynamics"] == pytest.approx(float(a.square().mean()), rel=1e-5)
    assert m["covariance"] > 0 and 0 < m["variance"] < 1


def test_needs_trajectory_windows():
    with pytest.raises(JepalabError, match="pldm.*data.source 'dataset'"):
        build_objective(load(PretrainConfig, None, ["--objective.name=pldm"]))


def test_trains_with_falling_loss(tmp_path, data):
    rows = pretrain_rows(tmp_path / "run", "pldm", 30, "--data.source=dataset",
                         f"--data.path={data}", "--objective.params.steps=3",
                         "--objective.params.hidden=64", "--optim.lr=3e-3")
    assert loss_ratio(rows, 5) < 0.9
    first, last = rows[:5], rows[-5:]  # the latents spread out: the variance hinge falls
    assert sum(r["variance"] for r in last) < 0.9 * sum(r["variance"] for r in first)


def test_window_centring_counts_static_content_as_collapsed(data):
    x = torch.randn(4, 1, 3, 32, 32).expand(4, 4, 3, 32, 32)  # each window: one frame, repeated
    a = torch.randn(4, 3, 2)
    m = {}
    for c in ("batch", "window"):
        obj, models = _setup(data, center=c)
        m[c] = obj.loss(Batch(x, [], torch.Generator(), actions=a), models)[1]
    assert m["window"]["variance"] == pytest.approx(1.0 - 1e-2, abs=1e-4)  # γ − sqrt(ε)
    assert m["window"]["covariance"] == pytest.approx(0.0, abs=1e-8)
    assert m["batch"]["variance"] < m["window"]["variance"] and m["batch"]["covariance"] > 0
