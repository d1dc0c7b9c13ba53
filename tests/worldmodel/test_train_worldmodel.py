"""End to end on a tiny two-rooms dataset: train_worldmodel -> load_world_model -> diagnostics."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from jepalab.cli import main
from jepalab.config import WorldModelConfig
from jepalab.data.collect import collect
from jepalab.data.store import TrajectoryStore
from jepalab.errors import JepalabError
from jepalab.eval.rollout import plot_diagnostics, rollout_error_vs_horizon, true_action_rank
from jepalab.train.checkpoint import load_checkpoint, save_checkpoint
from jepalab.train.worldmodel import load_world_model, train_worldmodel
from tiny import TINY, logged

WM_TINY = [
    "--batch_size=8",
    "--predictor.dim=32",
    "--predictor.depth=2",
    "--predictor.heads=2",
    "--optim.warmup_steps=2",
    "--optim.lr=3e-3",
    "--log_every=1",
    "--data.val_fraction=0.3",
]


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory) -> tuple[Path, Path]:
    """(two-rooms dataset of 6 short 32 px episodes, a 4-step micro-ViT pretraining checkpoint)."""
    root = tmp_path_factory.mktemp("wm")
    data = collect("two-rooms", 6, root / "data", image_size=32, max_steps=12, progress=False)
    run = root / "pretrain"
    assert (
        main(["pretrain", "--quiet", f"--out_dir={run}", "--steps=4", "--ckpt_every=4", *TINY]) == 0
    )
    return data, run / "checkpoints" / "step_0000004"


def _cfg(out: Path, enc: Path, data: Path, *extra: str) -> WorldModelConfig:
    from jepalab.config import load

    return load(
        WorldModelConfig,
        None,
        [f"--out_dir={out}", f"--encoder={enc}", f"--data.path={data}", *WM_TINY, *extra],
    )


@pytest.fixture(scope="module")
def trained(tiny_inputs, tmp_path_factory) -> Path:
    data, enc = tiny_inputs
    out = tmp_path_factory.mktemp("wmrun") / "mlp"
    rc = main(
        [
            "worldmodel",
            "--quiet",
            f"--out_dir={out}",
            f"--encoder={enc}",
            f"--data.path={data}",
            "--steps=40",
            "--ckpt_every=20",
            *WM_TINY,
        ]
    )
    assert rc == 0
    return out / "checkpoints" / "step_0000040"


def test_checkpoint_records_encoder_data_split_and_holds_predictor_only(trained, tiny_inputs):
    data, enc = tiny_inputs
    manifest, tensors = load_checkpoint(trained)
    assert manifest["kind"] == "worldmodel"
    enc_manifest = json.loads((enc / "manifest.json").read_text())
    assert manifest["encoder_checkpoint"] == {
        "path": str(enc),
        "resolved_path": str(enc.resolve()),
        "sha256": enc_manifest["files"]["model.safetensors"]["sha256"],
    }
    store = TrajectoryStore.open(data)
    assert manifest["data_fingerprint"] == store.fingerprint()
    split = manifest["split"]
    assert sorted(split["train_episodes"] + split["val_episodes"]) == list(range(6))
    assert split["val_episodes"] and not set(split["train_episodes"]) & set(split["val_episodes"])
    assert manifest["action_dim"] == 2 and manifest["state_dim"] == 4
    n_train = int(store.episode_lengths[split["train_episodes"]].sum())
    assert manifest["latent"] == {
        "kind": "pooled",
        "pool": 1,
        "keypoints": None,
        "shape": [64],
        "layernorm": True,
        "standardised": {"frames": n_train, "sampled_from": "train_episodes"},
        "image_size": 32,
    }
    keys = load_file(trained / "model.safetensors").keys()
    assert {"latent_norm.mean", "latent_norm.std"} <= keys
    assert all(k.startswith(("predictor.", "latent_norm.")) for k in keys)
    # the latent space is standardised on the training frames (all of them, here)
    wm = load_world_model(trained)
    frames = np.concatenate([store.episode(e)["frames"] for e in split["train_episodes"]])
    with torch.inference_mode():
        z = wm.encode(torch.from_numpy(frames))
    torch.testing.assert_close(z.mean(0), torch.zeros(64), atol=1e-4, rtol=0)
    assert ((z.std(0, unbiased=False) - 1).abs() < 0.05).all()
    rows = [
        json.loads(ln) for ln in (trained.parents[1] / "metrics.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 40 and {"tf_loss", "rollout_loss", "copy_loss"} <= rows[0].keys()
    first = np.mean([r["loss"] for r in rows[:5]])
    last = np.mean([r["loss"] for r in rows[-5:]])
    assert last < first, (first, last)


def test_load_world_model_planner_contract(trained):
    wm = load_world_model(trained)
    assert wm.action_dim == 2 and wm.state_dim == 0 and len(wm.encoder_sha256) == 64
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8, generator=g)
    acts = torch.rand(5, 4, 2, generator=g) * 2 - 1
    with torch.inference_mode():
        z = wm.encode(pixels)
        assert z.shape == (3, 64)
        assert wm.predict(z, acts[:3, 0]).shape == (3, 64)
        out = wm.unroll_from(z[:1], acts)
        assert out.shape == (5, 4, 64)
        torch.testing.assert_close(out, wm.rollout(z[:1].repeat(5, 1), acts))
        torch.testing.assert_close(out[:, 0], wm.predict(z[:1].repeat(5, 1), acts[:, 0]))
        with pytest.raises(JepalabError, match="need 1 or equal"):
            wm.unroll_from(z, acts)
        with pytest.raises(JepalabError, match="uint8"):
            wm.encode(pixels.float())


def test_diagnostics_on_held_out_episodes(trained, tiny_inputs, tmp_path):
    data, _ = tiny_inputs
    wm = load_world_model(trained)
    store = TrajectoryStore.open(data)
    ro = rollout_error_vs_horizon(
        wm, store, horizon=3, n_windows=12, seed=0, probe=lambda z: np.zeros((len(z), 4))
    )
    assert ro["horizon"] == [1, 2, 3] and ro["episodes"] == wm.val_episodes
    for key in ("l1", "l2", "copy_l1", "state_error", "state_error_encoded"):
        mean, ci = np.array(ro[key]["mean"]), np.array(ro[key]["ci95"])
        assert mean.shape == (3,) and ci.shape == (3, 2) and (mean > 0).all()
        assert (ci[:, 0] <= mean + 1e-9).all() and (mean <= ci[:, 1] + 1e-9).all()
    assert ro == rollout_error_vs_horizon(
        wm, store, horizon=3, n_windows=12, seed=0, probe=lambda z: np.zeros((len(z), 4))
    )
    rk = true_action_rank(
        wm,
        store,
        n_candidates=15,
        horizon=2,
        seed=0,
        n_transitions=10,
        action_low=-1.0,
        action_high=1.0,
    )
    ranks = np.array(rk["ranks"])
    assert rk["n"] == len(ranks) == 10 and ((ranks >= 1) & (ranks <= 16)).all()
    assert 0.0 <= rk["mean_normalized_rank"] <= 1.0
    assert rk["action_bounds"] == {"low": [-1.0, -1.0], "high": [1.0, 1.0]}
    png = plot_diagnostics({"rollout": ro, "rank": rk}, tmp_path / "diag.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # another dataset: the recorded val split does not apply to it, episodes must be named
    other = TrajectoryStore.open(
        collect(
            "two-rooms", 2, tmp_path / "other", image_size=32, max_steps=6, seed=7, progress=False
        )
    )
    with pytest.raises(JepalabError, match="val split does not apply"):
        true_action_rank(wm, other, n_transitions=2)
    assert rollout_error_vs_horizon(wm, other, [1], horizon=2, n_windows=3)["n_windows"] == 3


def test_true_action_rank_finds_the_action_of_a_perfect_model(trained, tiny_inputs):
    """With an oracle predictor (latents = the true next latent only for the true action) the
    true action ranks first: the diagnostic measures what it claims."""
    data, _ = tiny_inputs
    wm = load_world_model(trained)
    store = TrajectoryStore.open(data)
    rk = true_action_rank(wm, store, n_candidates=7, horizon=1, seed=1, n_transitions=6)
    assert 0 <= rk["frac_rank1"] <= 1
    known = []  # (z_t, a_t, z_{t+1}) of every held-out transition
    for e in wm.val_episodes:
        ep = store.episode(e)
        with torch.inference_mode():
            zz = wm.encode(torch.from_numpy(ep["frames"]))
        known += [(zz[t], torch.from_numpy(a), zz[t + 1]) for t, a in enumerate(ep["actions"])]

    def oracle_rollout(z0, actions, s0=None):  # the true next latent for the true action only
        out = torch.full((len(z0), 1, z0.shape[-1]), 5.0)
        for i, (z, a) in enumerate(zip(z0, actions)):
            for zk, ak, nk in known:
                if torch.equal(a[0], ak) and torch.allclose(z, zk, atol=1e-5):
                    out[i, 0] = nk
        return out

    wm.rollout = oracle_rollout
    rk = true_action_rank(wm, store, n_candidates=7, horizon=1, seed=1, n_transitions=6)
    assert rk["frac_rank1"] == 1.0 and rk["mean_normalized_rank"] == 0.0


def test_refuses_an_encoder_whose_sha_differs(trained, tiny_inputs, tmp_path):
    data, enc = tiny_inputs
    copy = tmp_path / "enc"
    shutil.copytree(enc, copy)
    out = tmp_path / "wm"
    path = train_worldmodel(_cfg(out, copy, data, "--steps=3", "--ckpt_every=3"), progress=False)
    assert load_world_model(path).encoder_sha256 == load_world_model(trained).encoder_sha256
    # a re-trained encoder at the same path: a valid checkpoint with other weights
    manifest, tensors = load_checkpoint(copy)
    w = {k: v + 0.01 if v.is_floating_point() else v for k, v in tensors["model"].items()}
    meta = {
        k: v
        for k, v in manifest.items()
        if k not in ("files", "format", "created_at", "jepalab_version", "git")
    }
    save_checkpoint(copy, {"model": w}, meta)
    with pytest.raises(JepalabError, match="refusing to pair"):
        load_world_model(path)
    # the original encoder, found elsewhere, is accepted
    assert (
        load_world_model(path, encoder=enc).encoder_sha256
        == manifest["files"]["model.safetensors"]["sha256"]
    )
    # a tampered weights file (manifest not updated) is caught by the checkpoint hash
    shutil.rmtree(copy)
    shutil.copytree(enc, copy)
    with open(copy / "model.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(JepalabError, match="sha256 mismatch"):
        load_world_model(path)


def test_resume_matches_uninterrupted_and_transformer_variant(tiny_inputs, tmp_path,
                                                             monkeypatch):
    data, enc = tiny_inputs
    common = [
        "--steps=6",
        "--ckpt_every=3",
        "--keep_ckpts=3",
        "--predictor.arch=transformer",
        "--rollout_steps=2",
    ]
    ref = train_worldmodel(_cfg(tmp_path / "ref", enc, data, *common), progress=False)
    cut_dir = tmp_path / "cut"
    train_worldmodel(_cfg(cut_dir, enc, data, *common), progress=False)
    shutil.rmtree(cut_dir / "checkpoints" / "step_0000006")
    train_worldmodel(_cfg(cut_dir, enc, data, *common), resume=True, progress=False)

    def losses(run: Path) -> list[float]:
        return [json.loads(ln)["loss"] for ln in (run / "metrics.jsonl").read_text().splitlines()]

    assert losses(cut_dir) == losses(tmp_path / "ref") and len(losses(cut_dir)) == 6
    wm = load_world_model(ref)
    pixels = torch.zeros(1, 32, 32, 3, dtype=torch.uint8)
    with torch.inference_mode():
        z = wm.encode(pixels)
        assert z.shape == (1, 16, 64)
        assert wm.unroll_from(z, torch.zeros(7, 5, 2)).shape == (7, 5, 16, 64)
    with pytest.raises(JepalabError, match="already has checkpoints"):
        train_worldmodel(_cfg(cut_dir, enc, data, *common), progress=False)
    # resuming a finished run returns its checkpoint without touching data or encoder
    import jepalab.train.worldmodel as twm

    def no_encoder(*a, **k):
        raise AssertionError("a finished run was rebuilt")

    monkeypatch.setattr(twm, "load_encoder", no_encoder)
    done = train_worldmodel(_cfg(cut_dir, enc, data, *common), resume=True, progress=False)
    assert done == cut_dir / "checkpoints" / "step_0000006"
    with pytest.raises(AssertionError, match="rebuilt"):  # more steps: trains on
        train_worldmodel(_cfg(cut_dir, enc, data, *common[1:], "--steps=9"), resume=True,
                         progress=False)


@pytest.mark.parametrize("keypoints", [None, 2.0])
def test_latent_cache_matches_encoding_on_the_fly_with_a_pooled_grid(tiny_inputs, tmp_path,
                                                                     keypoints):
    """pool=2: latents are the tokens averaged onto a 2x2 grid (plus, with keypoints, each
    channel's soft-argmax x, y); the training cache holds exactly what the loaded world model's
    encode() computes from the same frames."""
    from jepalab.data.loaders import TransitionDataset
    from jepalab.objectives.worldmodel import FROZEN, WorldModelObjective
    from jepalab.train.worldmodel import LatentCache

    data, enc = tiny_inputs
    path = train_worldmodel(
        _cfg(tmp_path / "p2", enc, data, "--predictor.pool=2", "--steps=3", "--ckpt_every=3",
             *([f"--predictor.keypoints={keypoints}"] if keypoints else [])),
        progress=False,
    )
    wm = load_world_model(path)
    dim = 64 * (4 if keypoints is None else 6)
    assert wm.manifest["latent"]["pool"] == 2 and wm.manifest["latent"]["shape"] == [dim]
    assert wm.manifest["latent"]["keypoints"] == keypoints
    store = TrajectoryStore.open(data)
    base = TransitionDataset(store, 2, episodes=[0, 1])
    models = torch.nn.ModuleDict({FROZEN: wm.encoder, "latent_norm": wm.latent_norm})
    obj = WorldModelObjective(WorldModelConfig(**wm.manifest["config"]), 2, 4)
    cache = LatentCache(base, models, obj, torch.device("cpu"), progress=False)
    item = cache[5]
    e, t = base.locate(5)
    tr = store.transition(e, t, 2)
    with torch.inference_mode():
        want = wm.encode(torch.from_numpy(tr["obs"]))  # standardised
    assert item["obs"].shape == (3, dim)
    for key in ("actions", "states"):  # held in memory, the same rows as the store's
        torch.testing.assert_close(item[key], torch.from_numpy(tr[key]))
    torch.testing.assert_close(wm.latent_norm(item["obs"]), want, atol=1e-5, rtol=1e-5)


def test_value_trains_with_the_world_model_resumes_exactly_and_plans(tiny_inputs, trained,
                                                                     tmp_path):
    """`value`: the cost-to-go trains beside the predictor (its loss in the metrics), its goals
    are drawn per item deterministically, a resumed run replays the same losses, the loaded
    world model plans with `controller.metric: value`, and one without a value refuses to."""
    from jepalab.config import ControllerConfig, SceneConfig
    from jepalab.data.loaders import TransitionDataset
    from jepalab.eval.control import run_episodes
    from jepalab.objectives.worldmodel import FROZEN, WorldModelObjective
    from jepalab.train.worldmodel import LatentCache

    data, enc = tiny_inputs
    common = ["--steps=6", "--ckpt_every=3", "--keep_ckpts=3", "--value.hidden=16",
              "--value.goals=3", "--predictor.pool=2"]
    ref = train_worldmodel(_cfg(tmp_path / "ref", enc, data, *common), progress=False)
    cut = tmp_path / "cut"
    train_worldmodel(_cfg(cut, enc, data, *common), progress=False)
    shutil.rmtree(cut / "checkpoints" / "step_0000006")
    train_worldmodel(_cfg(cut, enc, data, *common), resume=True, progress=False)
    rows = [json.loads(ln) for ln in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    resumed = [json.loads(ln) for ln in (cut / "metrics.jsonl").read_text().splitlines()]
    assert [r["value_loss"] for r in rows] == [r["value_loss"] for r in resumed]
    assert all(r["value_mean"] <= 0 and "value_pred_loss" in r for r in rows)  # k = 2

    wm = load_world_model(ref)
    assert wm.value is not None and wm.value.form == "diff"  # the default, as recorded
    cfg = WorldModelConfig(**wm.manifest["config"])
    models = torch.nn.ModuleDict({FROZEN: wm.encoder, "latent_norm": wm.latent_norm})
    base = TransitionDataset(TrajectoryStore.open(data), 2, episodes=[0, 1])
    cache = LatentCache(base, models, WorldModelObjective(cfg, 2, 4), torch.device("cpu"),
                        progress=False, value=cfg.value, seed=0)
    assert len(cache) == 3 * len(cache.base)
    for i in (0, 4, 7):
        item, again = cache[i], cache[i]
        torch.testing.assert_close(item["goals"], again["goals"])
        e, t = cache.base.locate(i // 3)
        k = int(item["goal_steps"][0])  # one goal draw per item: value.updates = 1
        if k >= 0:
            torch.testing.assert_close(item["goals"][0], cache.z[e][t + k])
    with pytest.raises(JepalabError, match="p_layout=1.0: no two training episodes"):
        LatentCache(base, models, WorldModelObjective(cfg, 2, 4), torch.device("cpu"),
                    progress=False, value=cfg.value.model_copy(update={"p_layout": 1.0}))
    base.store.layout_ids = lambda: np.zeros(base.store.num_episodes, np.int64)  # one layout
    mates = LatentCache(base, models, WorldModelObjective(cfg, 2, 4), torch.device("cpu"),
                        progress=False, value=cfg.value.model_copy(update={"p_layout": 1.0}))
    for i in (0, 4, 7):  # p_layout 1: a frame of the other episode, with no logged return
        e, _ = mates.base.locate(i // 3)
        item = mates[i]
        assert int(item["goal_steps"][0]) == -1
        assert any(torch.equal(item["goals"][0], z) for z in mates.z[1 - e])
    more = LatentCache(base, models, WorldModelObjective(cfg, 2, 4), torch.device("cpu"),
                       progress=False, value=cfg.value.model_copy(update={"updates": 3}))
    for i in (0, 4, 7):  # value.updates = 3: three draws, the first the one-update run's
        item = more[i]
        assert item["goals"].shape == (3, cache.z[0].shape[-1]) and item["goal_steps"].shape == (3,)
        torch.testing.assert_close(item["goals"][0], cache[i]["goals"][0])

    ctrl = ControllerConfig(planner={"method": "cem", "horizon": 3, "samples": 8,
                                     "iterations": 1, "elites": 2},
                            max_steps=3, metric="value", weights="final")
    scene = SceneConfig(name="two-rooms", image_size=32)
    (row,) = run_episodes(wm, scene, ctrl, [0], progress=False)
    assert row.steps == 3 and row.plan_time_s > 0
    seen, planned = [], []  # model: the planner's unroll built from the scene, per episode

    def model(env):
        seen.append(env.unwrapped.agent.copy())
        return lambda z0, actions: planned.append(len(actions)) or wm.unroll_from(z0, actions)

    (again,) = run_episodes(wm, scene, ctrl, [0], progress=False, model=model)
    assert len(seen) == 1 and planned == [8] * 3 and again.steps == 3
    shapes = []  # a model is exact: controller.correct leaves its unroll alone

    def exact(env):
        return lambda z0, actions: shapes.append(tuple(actions.shape[:2])) or wm.unroll_from(
            z0, actions)

    corrected = ctrl.model_copy(update={"correct": 1.0})
    run_episodes(wm, scene, corrected, [0], progress=False, model=exact)
    assert shapes == [(8, 3)] * 3
    with pytest.raises(JepalabError, match="trained with `value`"):
        run_episodes(load_world_model(trained), scene, ctrl, [0], progress=False)


def test_a_value_recorded_before_forms_existed_loads_as_the_mlp_it_was():
    from jepalab.config import stored_config

    old = {"steps": 5, "value": {"gamma": 0.98, "hidden": 16}}
    assert stored_config(old)["value"] == {"gamma": 0.98, "hidden": 16, "form": "mlp"}
    assert old["value"] == {"gamma": 0.98, "hidden": 16}  # the manifest's dict is not changed
    for cfg in ({"value": {"form": "diff"}}, {"value": None}, {"steps": 5}):
        assert stored_config(cfg) == cfg


@pytest.mark.parametrize("grid", [["--predictor.pool=2"], [
    "--predictor.arch=conv", "--predictor.pool=4", "--predictor.dim=16", "--value.pool=2"]])
def test_a_quasimetric_value_trains_with_the_world_model_and_loads(tiny_inputs, tmp_path, grid):
    """`value.learning: quasimetric`: the loss's push and one-step violation reach the metrics
    (also at the predicted frame, k = 2), and the loaded value is the learned distance. Also
    with the conv predictor on the 4 x 4 grid and the value reading it averaged onto 2 x 2."""
    from jepalab.models.ac_predictor import ACConv
    from jepalab.models.value import GridPool

    data, enc = tiny_inputs
    ref = train_worldmodel(_cfg(tmp_path, enc, data, "--steps=3", "--value.hidden=16",
                                "--value.form=metric", "--value.learning=quasimetric", *grid),
                           progress=False)
    rows = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(r["value_push"] > 0 and r["value_violation"] >= 0 and "value_pred_loss" in r
               for r in rows)
    wm = load_world_model(ref)
    assert wm.value is not None and wm.value.form == "metric"
    z = torch.randn(4, wm.value.latent_dim)
    torch.testing.assert_close(wm.value.steps_to_go(z, z.flip(0)), wm.value.distance(z, z.flip(0)),
                               atol=1e-3, rtol=1e-3)
    conv = "--predictor.arch=conv" in grid
    assert isinstance(wm.predictor, ACConv) == conv and isinstance(wm.value.view, GridPool) == conv


def test_value_updates_under_two_processes_match_one(tiny_inputs, tmp_path):
    """`value.updates` under torchrun: the value's extra steps, which DDP does not see, average
    their gradients over the ranks by hand, so two gloo processes log the losses of one."""
    data, enc = tiny_inputs
    args = [f"--encoder={enc}", f"--data.path={data}", *WM_TINY, "--steps=4", "--ckpt_every=4",
            "--predictor.pool=2", "--value.hidden=16", "--value.form=metric",
            "--value.learning=quasimetric", "--value.updates=3"]
    single, multi = tmp_path / "single", tmp_path / "multi"
    assert main(["worldmodel", "--quiet", f"--out_dir={single}", *args]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "jepalab.cli", "worldmodel", "--quiet", f"--out_dir={multi}", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for key in ("loss", "extra_loss"):
        a, b = logged(single, key), logged(multi, key)
        assert len(a) == len(b) == 4
        for x, y in zip(a, b):
            assert abs(x - y) <= 1e-4 * max(1.0, abs(x)), (key, a, b)
