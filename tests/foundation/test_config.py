from pathlib import Path

import pytest

from jepalab.cli import main
from jepalab.config import PretrainConfig, load, parse_overrides
from jepalab.errors import JepalabError

CONFIGS = sorted((Path(__file__).parents[2] / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    from jepalab.config import Config, load_any, read_yaml

    cfg = load_any(path)
    assert isinstance(cfg, Config)
    assert cfg.kind == read_yaml(path).get("kind", "pretrain")


def test_dotted_overrides_parse_and_apply(tmp_path):
    assert parse_overrides(["--model.depth=4", "--optim.lr", "5e-4", "precision=bf16"]) == {
        "model": {"depth": 4},
        "optim": {"lr": 5e-4},
        "precision": "bf16",
    }
    tiny = Path(__file__).parents[2] / "configs" / "ijepa_tiny.yaml"
    cfg = load(PretrainConfig, tiny, ["--model.depth=2", "--optim.lr=5e-4"])
    assert cfg.model.depth == 2 and cfg.optim.lr == 5e-4
    for stray in (["model.depth"], ["=4"], ["--"]):
        with pytest.raises(JepalabError, match="unexpected argument"):
            parse_overrides(stray)


@pytest.mark.parametrize(
    "override, fragment",
    [
        (["--model.dept=4"], "model.dept: unknown field (allowed: arch, preset"),
        (["--model.arch=resnet"], "model.arch: Input should be 'vit' or 'conv'"),
        (["--steps=abc"], "steps: Input should be a valid integer"),
        (["--model.patch_size=7"], "must be divisible by model.patch_size (7)"),
        (["--optim.warmup_steps=1000", "--steps=10"], "optim.warmup_steps (1000) must be < steps"),
    ],
)
def test_config_errors_name_the_field(override, fragment):
    with pytest.raises(JepalabError, match=None) as err:
        load(PretrainConfig, None, override)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_cli_bad_config_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["pretrain", str(CONFIGS[0]), f"--out_dir={out}", "--model.dept=3"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.dept: unknown field" in err[0]
    assert not out.exists()


def test_missing_config_file_is_one_line(tmp_path):
    with pytest.raises(JepalabError, match="config file not found"):
        load(PretrainConfig, tmp_path / "nope.yaml")


def test_demo_world_models_learn_the_value_the_demo_contract_plans_with():
    from jepalab.config import ContractConfig, WorldModelConfig
    from jepalab.models.value import QUASIMETRIC

    demo = Path(__file__).parents[2] / "configs" / "demo"
    contract = load(ContractConfig, demo / "contract.yaml")
    wm = load(WorldModelConfig, demo / "worldmodel.yaml")
    assert contract.controller.metric == "value" and contract.controller.weights == "final"
    assert wm.value is not None and wm.value.learning == "quasimetric"
    # The YAML spells out the same settings as `QUASIMETRIC` (value_planning.py's quasimetric).
    assert {k: getattr(wm.value, k) for k in QUASIMETRIC} == QUASIMETRIC
    # `--value=null` (benchmarks/scene_control.py) drops it again.
    assert load(WorldModelConfig, demo / "worldmodel.yaml", ["--value=null"]).value is None


def test_a_run_recorded_before_a_field_existed_is_the_same_config():
    """Resuming compares validated configs: a field added since a run was recorded (at its
    default) does not make it differ; any changed value does."""
    import json

    from jepalab.config import WorldModelConfig, same_config

    cfg = WorldModelConfig(encoder="e", data={"path": "d"},
                           value={"form": "metric", "learning": "quasimetric"})
    recorded = json.loads(cfg.model_dump_json())
    del recorded["value"]["consistency"]  # recorded before ValueConfig.consistency existed
    assert same_config(cfg, recorded)
    assert not same_config(cfg.model_copy(update={"steps": cfg.steps + 1}), recorded)
    assert not same_config(cfg, {**recorded, "value": {**recorded["value"], "cap": 1.0}})
    assert not same_config(cfg, {**recorded, "bogus": 1})  # fails validation: not the same
