"""`jepalab demo --quick` through the CLI, shrunk further: the whole embedded path runs, plans
with the world models' learned cost-to-go, and writes its summary, evidence and card."""

import json

import yaml

import jepalab.demo
from jepalab.cli import main

TINY = {
    "episodes": 6,
    "pretrain": ["--steps=3", "--optim.warmup_steps=1", "--ckpt_every=3", "--batch_size=8"],
    "worldmodel": ["--steps=4", "--optim.warmup_steps=1", "--ckpt_every=4", "--batch_size=8"],
    "contract": ["--episodes=1", "--controller.max_steps=8", "--controller.planner.samples=8",
                 "--controller.planner.elites=2", "--controller.planner.iterations=1",
                 "--workers=1"],
}


def test_demo_runs_the_whole_path_and_plans_with_the_value(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(jepalab.demo, "QUICK", TINY)
    assert main(["demo", "--quick", "--out", str(tmp_path),
                 "--wm-set", "predictor.keypoints=null", "--wm-set", "value.updates=1"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    cells = {(c["arm"], c["condition"]) for c in summary["results"]}
    assert cells == {(arm, cond) for arm in ("candidate", "baseline")
                     for cond in ("clean", "lighting_shift", "distractors")}
    evidence = json.loads((tmp_path / "evaluate" / "evidence.json").read_text())
    assert evidence["controller"]["params"]["metric"] == "value"
    assert (tmp_path / "evaluate" / "card.html").is_file()
    assert "accepted:" in capsys.readouterr().out
    assert summary["wm_overrides"] == ["predictor.keypoints=null", "value.updates=1"]
    for arm in ("jepa", "random_init"):  # --wm-set reached both arms (the demo's: 2.0, 2)
        wm = yaml.safe_load((tmp_path / "worldmodel" / arm / "config.yaml").read_text())
        assert wm["predictor"]["keypoints"] is None and wm["value"]["updates"] == 1
