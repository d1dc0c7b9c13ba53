"""`jepalab compare` on tiny models through the CLI: budget refusal (one line listing every
mismatch), then a whole comparison (JEPA vs MAE vs random init) that writes the card, one
evidence record per pair, and reuses everything on a second run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from jepalab.cli import main
from jepalab.config import CompareConfig, PretrainConfig, build, load, load_any, parse_overrides
from jepalab.errors import JepalabError
from jepalab.eval.compare import entry_dict
from jepalab.eval.evidence import EvidenceRecord
from jepalab.masks import build_mask_policy
from jepalab.models.build import build_encoder
from tiny import TINY

CONFIGS = sorted((Path(__file__).parents[2] / "configs" / "compare").glob("*.yaml"))
MASK = {"kind": "multiblock", "params": {"min_keep": 2}}


def tiny_compare(out: Path, **changes) -> Path:
    pre = parse_overrides(TINY)
    pre.pop("mask")  # per entry
    c = {"kind": "compare", "name": "tiny",
         "data": {"collect": {"scene": "two-rooms", "episodes": 6, "image_size": 32,
                              "max_steps": 12}},
         "pretrain": {**pre, "steps": 4, "ckpt_every": 4},
         "entries": [
             {"name": "jepa", "overrides": {"objective": {"name": "jepa"}, "mask": MASK}},
             {"name": "mae", "overrides": {"objective": {"name": "mae"}, "mask": MASK}},
             {"name": "random-init", "train": False,
              "overrides": {"objective": {"name": "jepa"}, "mask": MASK}}],
         "worldmodel": {"batch_size": 8, "steps": 12, "ckpt_every": 12,
                        "optim": {"warmup_steps": 2}, "data": {"val_fraction": 0.3},
                        "predictor": {"arch": "mlp", "dim": 32, "depth": 2, "pool": 2}},
         "scene": {"name": "two-rooms", "image_size": 32},
         "controller": {"planner": {"method": "cem", "horizon": 3, "samples": 16,
                                    "iterations": 2, "elites": 4}, "max_steps": 6},
         "perturbations": [{"name": "clean"}, {"name": "lighting_shift", "severity": 2}],
         "episodes": 2, "rollout_horizon": 3,
         "probe": {"every": 2, "knn_k": 3, "retrieval_tol": 0.1, "label_budgets": [1, 2, 4]},
         "out_dir": str(out / "run"), **changes}
    path = out / "compare.yaml"
    path.write_text(yaml.safe_dump(c))
    return path


def test_compare_configs_are_shipped():
    assert {p.name for p in CONFIGS} >= {"two_rooms.yaml", "tabletop_push.yaml",
                                         "masking_ablation.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_compare_configs_load_and_their_entries_build(path):
    cfg = load_any(path)
    assert isinstance(cfg, CompareConfig) and len(cfg.entries) >= 2
    masks = []
    for e in cfg.entries:  # every entry is a valid pretraining config whose masks fit its grid
        d = entry_dict(cfg, e)
        d["data"] = {"source": "shapes", "image_size": cfg.scene.image_size}
        pre = build(PretrainConfig, d, source=e.name)
        if pre.mask.kind != "none":
            build_mask_policy(pre.mask.kind, build_encoder(pre).grid, **pre.mask.params)
        masks.append(json.dumps(pre.mask.model_dump(), sort_keys=True))
        if e.train:
            assert pre.steps == cfg.pretrain["steps"] and pre.batch_size == cfg.pretrain[
                "batch_size"]
    if path.name == "masking_ablation.yaml":  # only the masks vary
        trained = [m for m, e in zip(masks, cfg.entries) if e.train]
        assert len(set(trained)) == len(trained) >= 3


def test_config_checks_entries(tmp_path):
    path = tiny_compare(tmp_path)
    with pytest.raises(JepalabError, match=r"reference: 'nope' is not an entry"):
        load(CompareConfig, path, ["--reference=nope"])
    with pytest.raises(JepalabError, match=r"worldmodel: encoder are set by compare"):
        load(CompareConfig, path, ["--worldmodel.encoder=x"])


def test_unequal_budgets_are_refused_in_one_line(tmp_path, capsys):
    path = tiny_compare(tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["entries"][1]["overrides"]["steps"] = 6
    doc["entries"][1]["overrides"]["batch_size"] = 4
    doc["budget"] = {"flops_tolerance": 1.0}  # JEPA's and MAE's steps never cost the same
    path.write_text(yaml.safe_dump(doc))
    assert main(["compare", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    line = err[0]
    assert "training budgets differ" in line
    assert "steps: jepa=4, mae=6" in line and "batch_size: jepa=8, mae=4" in line
    assert "FLOPs/step" in line and "budget.flops_tolerance 1x" in line
    assert "random-init" not in line  # an untrained entry has no training budget
    assert not (tmp_path / "run" / "encoders").exists()  # refused before anything trained


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared 2-core machine its
    spin-waiting doubled this test's time (measured 113 s vs 50 s under load)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_compare_end_to_end_writes_card_and_records(tmp_path, capsys, monkeypatch, one_thread):
    # one tracking store for both pairs: its schema is created once (seconds per new store);
    # with a tracking URI, MLflow puts artifacts in ./mlruns, hence the chdir
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    path = tiny_compare(tmp_path)
    assert main(["compare", str(path), "--quiet"]) == 0
    run = tmp_path / "run"
    out = capsys.readouterr().out
    assert "jepa vs mae:" in out and "jepa vs random-init:" in out
    summary = json.loads((run / "compare.json").read_text())
    assert summary["budget"]["matched"] and summary["budget"]["steps"] == 4
    flops = summary["budget"]["flops_per_step"]
    assert flops["jepa"] > flops["mae"] > 0 and flops["random-init"] == 0
    rows = {e["name"]: e for e in summary["entries"]}
    assert set(rows) == {"jepa", "mae", "random-init"}
    for e in rows.values():
        m = e["metrics"]
        assert m["probe_rmse"] > 0 and 0 <= m["knn_precision"] <= 1 and m["rollout_l1"] > 0
        assert list(m["probe_r2"]) == ["agent_x", "agent_y", "wall_x", "door_y"]
        assert all(v is None or v <= 1 for v in m["probe_r2"].values())
        assert m["probe_r2"]["agent_x"] is not None  # the agent moves; a fixed wall gives None
        assert set(e["success"]) == {"clean", "lighting_shift@2"}
        assert all(s["n"] == 2 for s in e["success"].values())
    assert rows["jepa"]["cost"]["wall_s"] > 0 and rows["random-init"]["cost"]["wall_s"] == 0
    # one evidence record per reference-vs-entry pair, through the evaluate path
    for other in ("mae", "random-init"):
        rec = EvidenceRecord.load(summary["pairs"][other]["evidence"])
        assert rec.objective.name == "jepa" and rec.baseline.name == other
        assert rec.decision.accepted == summary["pairs"][other]["accepted"]
        tb = rec.training_budget  # the pair's share of the matched budget, in the record
        assert tb["matched"] and tb["steps"] == 4 and tb["batch_size"] == summary["budget"][
            "batch_size"]
        assert tb["flops_per_step"] == {"jepa": flops["jepa"], other: flops[other]}
        assert tb["untrained"] == (["random-init"] if other == "random-init" else [])
        assert Path(summary["pairs"][other]["card"]).is_file()
    html = (run / "compare.html").read_text()
    assert "Matched budget" in html and "main failure mode" in html
    assert "What each latent keeps" in html and "door_y" in html
    assert "Training budget" in Path(summary["pairs"]["mae"]["card"]).read_text()
    assert html.count("<img") == 3 and "random-init" in html
    md = (run / "compare.md").read_text()
    assert "| jepa | jepa |" in md and "planning success, lighting_shift@2" in md
    # a second run trains nothing and runs no episode again
    mtimes = {p: p.stat().st_mtime for p in run.glob("encoders/*/checkpoints/*/manifest.json")}
    assert main(["compare", str(path), "--quiet"]) == 0
    assert {p: p.stat().st_mtime for p in mtimes} == mtimes
    again = json.loads((run / "compare.json").read_text())
    assert again["entries"] == summary["entries"]


def _runs(**steps: int) -> dict:
    """{name: [Run]} with these steps; 0 steps = an untrained entry."""
    from jepalab.eval.compare import Run

    out = {}
    for name, n in steps.items():
        cfg = load(PretrainConfig, None, [f"--steps={max(n, 2)}", "--optim.warmup_steps=1"])
        out[name] = [Run(name, 0, "jepa" if n else "none", n > 0, cfg, name)]
    return out


def test_budget_within_tolerance_passes_and_unequal_is_recorded_when_allowed(tmp_path):
    from jepalab.eval.compare_budget import check_budget

    c = load(CompareConfig, tiny_compare(tmp_path))
    flops = {"a": 100, "b": 190, "init": 0}
    got = check_budget(c, _runs(a=10, b=10, init=0), flops)  # tolerance 2x: 1.9x is within
    assert got["matched"] and got["flops_ratio"] == pytest.approx(1.9)
    assert got["untrained"] == ["init"]
    with pytest.raises(JepalabError, match=r"FLOPs/step: b 2.1e-07 GFLOP is 2.10x a"):
        check_budget(c, _runs(a=10, b=10), {"a": 100, "b": 210})
    c = load(CompareConfig, tiny_compare(tmp_path), ["--budget.allow_unequal=true"])
    got = check_budget(c, _runs(a=10, b=20), {"a": 100, "b": 100})
    assert not got["matched"] and got["mismatches"] == ["steps: a=10, b=20"]


def test_operations_name_best_worst_and_ties_from_the_numbers():
    from jepalab.eval.compare_card import operations

    def entry(name, objective, rmse, prec, succ):
        return {"name": name, "objective": objective,
                "metrics": {"probe_rmse": rmse, "knn_precision": prec, "rollout_rel": 0.5,
                            "label_efficiency_area": 0.1},
                "success": {"clean": {"value": succ, "ci_low": max(0, succ - 0.2),
                                      "ci_high": min(1, succ + 0.2), "n": 20}}}

    s = {"entries": [entry("jepa", "jepa", 0.02, 0.6, 0.7), entry("mae", "mae", 0.05, 0.8, 0.6),
                     entry("none", "none", 0.09, 0.2, 0.1)]}
    ops = {o["key"]: o for o in operations(s)}
    assert (ops["probe_rmse"]["best"], ops["probe_rmse"]["worst"]) == ("jepa", "none")
    assert (ops["knn_precision"]["best"], ops["knn_precision"]["worst"]) == ("mae", "none")
    assert ops["knn_precision"]["rank"] == {"mae": 1, "jepa": 2, "none": 3}
    assert ops["rollout_rel"]["tie"] and ops["rollout_rel"]["rank"]["none"] == 1
    clean = ops["success:clean"]
    assert clean["best"] == "jepa" and clean["overlap"]  # 0.7 vs 0.6 with +-0.2 CIs
