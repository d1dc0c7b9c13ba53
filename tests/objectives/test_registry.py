"""Objectives are chosen by name; the shipped baseline configs match I-JEPA's budget."""

from pathlib import Path

import pytest

from jepalab.cli import main
from jepalab.config import PretrainConfig, load
from jepalab.errors import JepalabError
from jepalab.models.build import build_encoder
from jepalab.objectives import OBJECTIVES, build_objective

CONFIGS = Path(__file__).parents[2] / "configs"
BASELINES = {"mae": "mae_tiny.yaml", "contrastive": "contrastive_tiny.yaml",
             "vicreg": "vicreg_tiny.yaml", "sigreg": "sigreg_tiny.yaml"}


def test_all_objectives_registered():
    names = {"jepa", "mae", "contrastive", "vicreg", "sigreg", "supervised", "pldm"}
    assert names <= set(OBJECTIVES)


def test_unknown_objective_lists_the_names(capsys):
    cfg = load(PretrainConfig, None, ["--objective.name=simsiam"])
    with pytest.raises(JepalabError) as err:
        build_objective(cfg)
    msg = str(err.value)
    assert "objective.name" in msg and "'simsiam'" in msg
    assert all(name in msg for name in OBJECTIVES)
    assert main(["pretrain", "--quiet", "--objective.name=simsiam", "--steps=2",
                 "--optim.warmup_steps=1"]) == 2
    err_line = capsys.readouterr().err
    assert "simsiam" in err_line and all(name in err_line for name in OBJECTIVES)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_unknown_param_names_the_key(name):
    cfg = load(PretrainConfig, None, [f"--objective.name={name}", "--objective.params.tau=0.1"])
    with pytest.raises(JepalabError, match=r"objective\.params.*tau: unknown field \(allowed: "):
        build_objective(cfg)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_shipped_config_matches_the_ijepa_budget(name):
    ref = load(PretrainConfig, CONFIGS / "ijepa_tiny.yaml")
    cfg = load(PretrainConfig, CONFIGS / BASELINES[name])
    assert cfg.objective.name == name
    for field in ("seed", "steps", "batch_size", "precision", "data", "model", "optim"):
        assert getattr(cfg, field) == getattr(ref, field), field
    # MAE sees JEPA's masks; the two-view objectives draw none
    assert cfg.mask == ref.mask if name == "mae" else cfg.mask.kind == "none"
    objective = build_objective(cfg)
    models = objective.build(build_encoder(cfg))
    assert objective.eval_encoder(models) is models["encoder"]
    assert set(objective.trainable(models)) == set(models.keys())
