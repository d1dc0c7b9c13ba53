"""Typed configs: pydantic classes hold the defaults, YAML and dotted CLI overrides only override.

Every cross-field rule is checked when a config is built; a bad key, type or value raises a
`JepalabError` whose one-line message names the field (and the allowed values).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from jepalab.errors import JepalabError

T = TypeVar("T", bound="Config")


class Config(BaseModel):
    """Base: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class DataConfig(Config):
    source: Literal["shapes", "folder", "dataset"] = "shapes"
    path: str | None = Field(None, description="image folder or trajectory dataset directory")
    image_size: int = Field(64, ge=8)
    num_images: int = Field(2048, ge=1, description="size of the procedural shapes set")
    skip_bad: bool = Field(
        False, description="skip (and count) unreadable images instead of failing"
    )
    frames: int = Field(1, ge=1, description="clip length; > 1 trains a video encoder")
    stride: int = Field(1, ge=1)
    workers: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _path_needed(self) -> DataConfig:
        if self.source != "shapes" and not self.path:
            raise ValueError(f"data.path is required when data.source is '{self.source}'")
        if self.frames > 1 and self.source != "dataset":
            raise ValueError("data.frames > 1 (video) needs data.source 'dataset' (clips)")
        return self


class ModelConfig(Config):
    arch: Literal["vit", "conv"] = "vit"
    preset: Literal["micro", "tiny", "small", "base", "large", "huge", "giant"] = "tiny"
    patch_size: int = Field(8, ge=1)
    tubelet: int = Field(2, ge=1, description="frames per video token")
    depth: int | None = Field(None, ge=1, description="override the preset's depth")
    embed_dim: int | None = Field(None, ge=8)
    num_heads: int | None = Field(None, ge=1)
    pred_depth: int = Field(4, ge=1)
    pred_dim: int = Field(96, ge=8)
    pred_heads: int = Field(4, ge=1)
    grad_checkpointing: bool = False
    pos_embed: Literal["sincos", "stored", "rope", "rope_vjepa2"] = Field(
        "sincos",
        description="positions of encoder and predictor: fixed sin-cos, a stored fixed table "
        "(imported I-JEPA/V-JEPA weights), or rotary (rope_vjepa2: V-JEPA 2's layout)",
    )
    pred_mask_tokens: int = Field(
        1, ge=1, description="learned predictor mask tokens (V-JEPA keeps one per mask kind)"
    )


class MaskConfig(Config):
    kind: Literal["multiblock", "tube", "none"] = "multiblock"
    params: dict[str, Any] = Field(default_factory=dict, description="passed to the mask policy")


class ObjectiveConfig(Config):
    name: str = "jepa"
    loss: Literal["l2", "l1", "smooth_l1"] = "l2"
    target_layernorm: bool = True
    ema: tuple[float, float] = (0.996, 1.0)
    params: dict[str, Any] = Field(default_factory=dict, description="objective-specific options")

    @model_validator(mode="after")
    def _ema_range(self) -> ObjectiveConfig:
        lo, hi = self.ema
        if not (0.0 <= lo <= hi <= 1.0):
            raise ValueError(f"objective.ema must satisfy 0 <= start <= end <= 1, got {self.ema}")
        return self


class OptimConfig(Config):
    lr: float = Field(1e-3, gt=0)
    start_lr: float = Field(1e-5, ge=0)
    min_lr: float = Field(1e-6, ge=0)
    warmup_steps: int = Field(20, ge=0)
    weight_decay: tuple[float, float] = (0.04, 0.4)
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float | None = Field(1.0, gt=0)


class RunConfig(Config):
    """A top-level config (one YAML file): its `kind` field says which class it is."""


class TrainConfig(RunConfig):
    """What every training run shares (pretraining and world models use the same trainer)."""

    seed: int = 0
    steps: int = Field(300, ge=1)
    batch_size: int = Field(64, ge=1)
    out_dir: str = "runs/pretrain"
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast where bf16 is native (CUDA, CPUs with "
        "AVX512-BF16/AMX), else fp32 (emulated bf16 is ~13x slower on an AVX2 CPU)")
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    compile: bool = False
    log_every: int = Field(10, ge=1)
    monitor_every: int = Field(50, ge=1)
    ckpt_every: int = Field(100, ge=1)
    keep_ckpts: int = Field(2, ge=1)
    optim: OptimConfig = Field(default_factory=OptimConfig)

    @model_validator(mode="after")
    def _warmup(self) -> TrainConfig:
        if self.optim.warmup_steps >= self.steps:
            raise ValueError(
                f"optim.warmup_steps ({self.optim.warmup_steps}) must be < steps ({self.steps})"
            )
        return self


class PretrainConfig(TrainConfig):
    """Everything one pretraining run needs; saved resolved beside every checkpoint."""

    kind: Literal["pretrain"] = "pretrain"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    mask: MaskConfig = Field(default_factory=MaskConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)

    @model_validator(mode="after")
    def _cross_field(self) -> PretrainConfig:
        if self.data.image_size % self.model.patch_size:
            raise ValueError(
                f"data.image_size ({self.data.image_size}) must be divisible by "
                f"model.patch_size ({self.model.patch_size})"
            )
        video = self.data.frames > 1
        if video and self.data.frames % self.model.tubelet:
            raise ValueError(
                f"data.frames ({self.data.frames}) must be divisible by model.tubelet "
                f"({self.model.tubelet})"
            )
        if self.mask.kind == "tube" and not video:
            raise ValueError("mask.kind 'tube' needs video clips (data.frames > 1)")
        if self.mask.kind == "multiblock" and video:
            raise ValueError(
                "mask.kind 'multiblock' is for images; use 'tube' with data.frames > 1"
            )
        return self


# ---------------------------------------------------------------- loading and overrides


def config_kinds() -> dict[str, type[Config]]:
    """Every top-level config class by its `kind` (each YAML file says which it is)."""
    found: dict[str, type[Config]] = {}
    stack = list(RunConfig.__subclasses__())
    while stack:
        c = stack.pop()
        stack.extend(c.__subclasses__())
        if "kind" in c.model_fields:
            found[c.model_fields["kind"].default] = c
    return found


def _format_error(err: ValidationError, source: str) -> str:
    parts = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            parts.append(f"{field}: unknown field")
        else:
            parts.append(f"{field}: {e['msg']}")
    return f"{source}: invalid config: " + "; ".join(parts)


def _allowed_fields(cls: type[Config], dotted: str) -> str:
    """Name the valid keys at the level where an unknown key was given."""
    model: Any = cls
    for part in dotted.split(".")[:-1]:
        field = model.model_fields.get(part)
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, Config)):
            return ""
        model = ann
    return ", ".join(model.model_fields)


def build(cls: type[T], data: dict[str, Any], source: str = "config") -> T:
    """Validate a plain dict into `cls`, turning pydantic's errors into one line."""
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        msg = _format_error(err, source)
        unknown = [e for e in err.errors() if e["type"] == "extra_forbidden"]
        if unknown:
            dotted = ".".join(str(p) for p in unknown[0]["loc"])
            msg += f" (allowed: {_allowed_fields(cls, dotted)})"
        raise JepalabError(msg) from None


def _scalar(raw: str) -> Any:
    """A command-line value: numbers (incl. 5e-4, which YAML 1.1 reads as text), then YAML."""
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    try:
        return yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        return raw


def stored_config(config: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's recorded config as it was trained: a value recorded before
    `ValueConfig.form` existed was an MLP of [z, g] ("mlp"), not today's default."""
    value = config.get("value")
    if isinstance(value, dict) and "form" not in value:
        return {**config, "value": {**value, "form": "mlp"}}
    return config


def same_config(cfg: Config, recorded: dict[str, Any]) -> bool:
    """Whether a checkpoint's recorded config is `cfg` (resuming). Compared as validated configs,
    so a field added since the run was recorded (at its default) does not make it differ."""
    try:
        return type(cfg).model_validate(stored_config(recorded)) == cfg
    except ValidationError:
        return False


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """`['--model.depth=4', '--optim.lr', '5e-4', 'precision=bf16']` -> nested dict, values
    parsed as YAML scalars (the bare KEY=VALUE form is what --set style flags collect)."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        bare = not arg.startswith("--") and "=" in arg[1:]
        if not (bare or arg.startswith("--")) or len(arg) == 2:
            raise JepalabError(f"unexpected argument '{arg}' (overrides look like --model.depth=4)")
        key, sep, raw = (arg if bare else arg[2:]).partition("=")
        if not sep:
            if i + 1 >= len(args):
                raise JepalabError(f"override --{key} has no value")
            raw, i = args[i + 1], i + 1
        value = _scalar(raw)
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise JepalabError(f"override --{key} conflicts with an earlier override")
        node[parts[-1]] = value
        i += 1
    return out


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; `over` wins."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise JepalabError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise JepalabError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise JepalabError(f"{p}: top level must be a mapping, got {type(data).__name__}")
    return data


def load(cls: type[T], path: str | Path | None, overrides: list[str] | None = None) -> T:
    """YAML file (optional) + dotted overrides -> validated config."""
    data = read_yaml(path) if path else {}
    data = merge(data, parse_overrides(overrides or []))
    return build(cls, data, source=str(path) if path else "config")


def load_any(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load a YAML file as the config class its `kind` names (default: pretrain)."""
    kind = read_yaml(path).get("kind", "pretrain")
    kinds = config_kinds()
    if kind not in kinds:
        raise JepalabError(
            f"{path}: kind: unknown config kind '{kind}' (choose from {', '.join(sorted(kinds))})"
        )
    return load(kinds[kind], path, overrides)


def dump(cfg: Config) -> str:
    """The resolved config as YAML (stable key order)."""
    return yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False)


# ---------------------------------------------------------------- world models


class TransitionDataConfig(Config):
    path: str = Field(..., description="trajectory dataset directory (jepalab collect)")
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="episodes held out")
    workers: int = Field(0, ge=0)


class PredictorConfig(Config):
    arch: Literal["transformer", "mlp", "conv"] = "mlp"
    depth: int = Field(4, ge=1)
    dim: int = Field(256, ge=8)
    heads: int = Field(4, ge=1)
    use_state: bool = Field(False, description="add a proprioceptive/state token per frame")
    pool: int = Field(1, ge=1, description="mlp, conv: average tokens onto a pool x pool grid "
                      "(1: one mean vector); a coarse grid keeps where things are")
    init: Literal["trunc_normal", "torch"] = Field(
        "trunc_normal", description="mlp: initial weights, truncated normal std 0.02 (as the "
        "ViTs) or PyTorch's default (Kaiming uniform, scaled to each layer's fan-in: keeps a "
        "small input's signal through the layers: with an L2 loss, on tabletop-push's true "
        "states, the cube's move under contact, benchmarks/push_ceiling.py)")
    keypoints: float | None = Field(
        None, gt=0.0, description="mlp: also append each channel's soft-argmax over the token "
        "grid (its expected x, y under a softmax of this temperature over the tokens): 2 * D "
        "coordinates that say where what each channel responds to is, finer than the grid")

    @model_validator(mode="after")
    def _keypoints_need_mlp(self) -> PredictorConfig:
        if self.keypoints is not None and self.arch != "mlp":
            raise ValueError(f"keypoints: needs arch 'mlp' (a flat latent), got {self.arch!r}")
        if self.init != "trunc_normal" and self.arch != "mlp":
            raise ValueError(f"init: {self.init!r} is for arch 'mlp', got {self.arch!r}")
        return self

    @property
    def pooled(self) -> bool:
        """Whether the predictor works on pooled latents [D * pool^2] (else on tokens [N, D])."""
        return self.arch != "transformer"

    def latent_dim(self, embed_dim: int) -> int:
        if not self.pooled:
            return embed_dim
        return embed_dim * (self.pool**2 + (2 if self.keypoints is not None else 0))


ValueForm = Literal["diff", "mlp", "metric"]  # `jepalab.models.value` says what each is
VALUE_FORMS: tuple[str, ...] = get_args(ValueForm)
ValueNorm = Literal["l2", "l1"]  # form "metric": the norm of phi(z) - phi(g)
VALUE_NORMS: tuple[str, ...] = get_args(ValueNorm)


class ValueConfig(Config):
    """A learned cost-to-go trained with the world model (`jepalab.models.value`): expectile TD
    on hindsight goals from the same episodes; the planner uses it with `controller.metric:
    value`."""

    gamma: float = Field(0.98, gt=0.0, lt=1.0, description="discount per step")
    expectile: float = Field(0.9, gt=0.0, lt=1.0, description="> 0.5: the best logged action")
    hidden: int = Field(512, ge=8)
    depth: int = Field(3, ge=1)
    form: ValueForm = Field(
        "diff", description="V from an MLP of [z, g - z] (what z and g share cancels), of "
        "[z, g], or steps to go as a learned distance ||phi(z) - phi(g)|| (symmetric: for "
        "scenes whose moves can be undone)")
    embed: int = Field(64, ge=1, description="width of phi for form 'metric'")
    norm: ValueNorm = Field(
        "l2", description="form 'metric': the norm of phi(z) - phi(g); l1 holds shortest paths "
        "around an obstacle that l2 cannot (two rooms joined at a door embed in l1, not in l2)")
    learning: Literal["td", "quasimetric"] = Field(
        "td", description="expectile TD on V, or the steps to go learned as a quasimetric "
        "(form 'metric'; goals from both directions of the episode)")
    penalty: float = Field(10.0, gt=0.0, description="quasimetric: weight of the one-step "
                           "constraint d(z, z') <= 1")
    cap: float = Field(40.0, gt=0.0, description="quasimetric: steps beyond which pairs are "
                       "no longer pushed apart")
    weight: float = Field(1.0, gt=0.0, description="loss weight next to the predictor's")
    consistency: float = Field(
        0.0, ge=0.0, description="form 'metric': weight of a loss on the predictor, the learned "
        "steps between its rollout and the encoded frames (the value itself is not moved by it)")
    target_momentum: float = Field(0.98, ge=0.0, lt=1.0, description="slow target copy's EMA")
    goals: int = Field(8, ge=1, description="hindsight goals drawn per training window")
    updates: int = Field(
        1, ge=1, description="value updates per world-model step: the first with the "
        "predictor's, then updates - 1 of the value alone, each on a goal of its own for the "
        "batch's windows and the window's next transition (a value step costs a fraction of "
        "the predictor's)")
    p_current: float = Field(0.2, ge=0.0, le=1.0, description="goal = the window's own frame")
    p_future: float = Field(0.5, ge=0.0, le=1.0,
                            description="goal = a later frame (geometric offset); the rest: "
                            "any frame of the episode")
    p_layout: float = Field(
        0.0, ge=0.0, le=1.0, description="goal = any frame of another episode of the same "
        "layout (data collected with the scene's layout_every > 1), before the draws above")
    pool: int | None = Field(
        None, ge=1, description="read the latents averaged onto a pool x pool grid, coarser "
        "than the predictor's (None: the predictor's grid as it is)")

    @model_validator(mode="after")
    def _probabilities(self) -> ValueConfig:
        if self.learning == "quasimetric" and self.form != "metric":
            raise ValueError(f"learning 'quasimetric' needs form 'metric', got {self.form!r}")
        if self.consistency > 0 and self.form != "metric":
            raise ValueError(f"consistency needs form 'metric' (a distance), got {self.form!r}")
        if self.p_current + self.p_future > 1.0:
            raise ValueError(f"p_current + p_future must be <= 1, got "
                             f"{self.p_current} + {self.p_future}")
        return self


class WorldModelConfig(TrainConfig):
    """An action-conditioned latent predictor trained on top of a frozen encoder."""

    kind: Literal["worldmodel"] = "worldmodel"
    out_dir: str = "runs/worldmodel"
    encoder: str = Field(..., description="pretraining checkpoint directory (frozen)")
    data: TransitionDataConfig
    predictor: PredictorConfig = Field(default_factory=PredictorConfig)
    rollout_steps: int = Field(2, ge=1, description="k of the k-step autoregressive loss")
    loss: Literal["l1", "l2", "smooth_l1"] = "l1"
    rollout_weight: float = Field(1.0, ge=0.0)
    teacher_forcing: float = Field(
        1.0, ge=0.0, description="weight of the teacher-forced loss; 0 skips its forward pass "
        "(the rollout's first step is teacher-forced already): half the predictor's cost")
    value: ValueConfig | None = Field(None, description="also learn a cost-to-go (pooled only)")

    @model_validator(mode="after")
    def _consistent(self) -> WorldModelConfig:
        if self.teacher_forcing == 0 and self.rollout_weight == 0:
            raise ValueError("teacher_forcing and rollout_weight are both 0: nothing to learn")
        if self.value is not None and not self.predictor.pooled:
            raise ValueError("value: needs pooled latents (predictor.arch 'mlp' or 'conv'), "
                             f"got {self.predictor.arch!r}")
        if self.value is not None and self.value.pool and self.predictor.keypoints is not None:
            raise ValueError("value.pool: reads a grid, not keypoints; leave it unset with "
                             "predictor.keypoints")
        if self.value is not None and self.value.pool and self.predictor.pool % self.value.pool:
            raise ValueError(f"value.pool={self.value.pool} must divide predictor.pool="
                             f"{self.predictor.pool} (the value reads a coarser grid)")
        return self


# ---------------------------------------------------------------- planning


class ControllerConfig(Config):
    """Receding-horizon MPC with a latent planner (fields of `jepalab.planning.PlannerConfig`)."""

    planner: dict[str, Any] = Field(
        default_factory=lambda: {"method": "cem", "horizon": 10, "samples": 256, "iterations": 4},
        description="planner settings (method, horizon, samples, iterations, elites, ...)",
    )
    replan_every: int = Field(1, ge=1, description="actions executed between re-plans")
    max_steps: int | None = Field(None, ge=1, description="episode step cap (default: the scene's)")
    metric: Literal["l1", "l2", "cosine", "value"] = Field(
        "l1", description="latent distance to the goal, or 'value': the world model's learned "
        "cost-to-go (steps to the goal; needs a world model trained with `value`)")
    weights: Literal["final", "all"] = Field(
        "final", description="energy on the final predicted step, or averaged over all steps")
    correct: float | None = Field(
        None, gt=0, description="add the model's one-step errors on the episode's executed "
        "steps back into plans near them (`EpisodeCorrection`), with this latent bandwidth "
        "(in steps of motion); None: off. Markov (one-frame) world models only")


class SceneConfig(Config):
    name: str = "two-rooms"
    kwargs: dict[str, Any] = Field(default_factory=dict)
    image_size: int = Field(64, ge=8)


class PlanConfig(RunConfig):
    """`jepalab plan`: MPC episodes in a scene with a trained world model."""

    kind: Literal["plan"] = "plan"
    world_model: str = Field(..., description="world-model checkpoint directory")
    scene: SceneConfig = Field(default_factory=SceneConfig)
    controller: ControllerConfig = Field(default_factory=ControllerConfig)
    episodes: int = Field(20, ge=1)
    seed: int = 1000
    perturb: str | None = None
    severity: int = Field(1, ge=0, le=3)
    gifs: int = Field(3, ge=0, description="episodes written as GIFs")
    out_dir: str = "runs/plan"


# ---------------------------------------------------------------- evaluation contracts


class ArmRun(Config):
    pretrain_seed: int = 0
    encoder: str = Field(..., description="pretraining checkpoint directory")
    world_model: str = Field(..., description="world-model checkpoint trained on that encoder")


class ArmConfig(Config):
    name: str
    objective: str = "jepa"
    runs: list[ArmRun] = Field(..., min_length=1)


class PerturbationCell(Config):
    name: str = Field("clean", description="'clean' or a perturbation spec (a+b composes)")
    severity: int = Field(1, ge=0, le=3)


class BudgetConfig(Config):
    kind: Literal["labelled_trials", "env_interactions"] = "env_interactions"
    amount: int = Field(0, ge=0)


class RuleConfig(Config):
    name: str = "beats_baseline_clean_and_robust"
    params: dict[str, Any] = Field(default_factory=lambda: {"delta": 0.05})


class PanelConfig(Config):
    """The evaluation panel a contract (and each pair of a comparison) runs."""

    scene: SceneConfig = Field(default_factory=SceneConfig)
    controller: ControllerConfig = Field(default_factory=ControllerConfig)
    metric: str = "success_rate"
    perturbations: list[PerturbationCell] = Field(
        default_factory=lambda: [PerturbationCell(name="clean")], min_length=1)
    eval_seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    episodes: int = Field(20, ge=1, description="episodes per (arm, run, perturbation, eval seed)")
    rollout_horizon: int = Field(10, ge=1)
    intervention_budget: BudgetConfig = Field(default_factory=BudgetConfig)
    rule: RuleConfig = Field(default_factory=RuleConfig)
    workers: int = Field(1, ge=1)


class ContractConfig(RunConfig, PanelConfig):
    """Written before the run: what is compared, on what, and the rule that decides `accepted`."""

    kind: Literal["contract"] = "contract"
    name: str = "contract"
    candidate: ArmConfig
    baseline: ArmConfig
    task: Literal["plan", "state_estimation", "rollout", "retrieval", "value"] = Field(
        "plan", description="plan: closed-loop MPC; the others score frozen-latent heads on "
        "evaluation episodes collected per condition (jepalab.eval.offline)")
    task_params: dict[str, Any] = Field(
        default_factory=dict, description="offline tasks: tolerance (pass/fail per episode), "
        "k (retrieval), policy (evaluation data)")
    training_budget: dict[str, Any] | None = Field(
        None, description="set by `jepalab compare`: the two arms' matched training budget "
        "(steps, batch, data, FLOPs per step), copied into the evidence record")
    out_dir: str = "runs/evaluate"


# ---------------------------------------------------------------- collection


class CollectConfig(RunConfig):
    """`jepalab collect` as a file (the demo's data; the CLI takes the same fields as flags)."""

    kind: Literal["collect"] = "collect"
    scene: str = "two-rooms"
    episodes: int = Field(100, ge=1)
    policy: str = "mixture:0.5"
    workers: int = Field(1, ge=1)
    seed: int = 0
    image_size: int = Field(64, ge=8)
    max_steps: int | None = Field(None, ge=1)
    scene_kwargs: dict[str, Any] = Field(default_factory=dict)
    perturb: str | None = None
    severity: int = Field(1, ge=0, le=3)


# ---------------------------------------------------------------- objective comparisons


class CompareEntry(Config):
    """One arm of a comparison: a pretraining config (a file and/or the shared `pretrain`
    fields) plus this entry's overrides; `train: false` keeps the random initialisation."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    config: str | None = Field(None, description="pretraining YAML this entry starts from")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="merged last, e.g. {objective: {name: mae}}")
    train: bool = Field(True, description="false: the step-0 checkpoint (no pretraining)")


class CompareDataConfig(Config):
    path: str | None = Field(None, description="an existing trajectory dataset")
    collect: CollectConfig | None = Field(None, description="or collect into OUT_DIR/data")

    @model_validator(mode="after")
    def _one(self) -> CompareDataConfig:
        if (self.path is None) == (self.collect is None):
            raise ValueError("data: give exactly one of data.path and data.collect")
        return self


class CompareProbeConfig(Config):
    every: int = Field(4, ge=1, description="every n-th frame of an episode is a probe row")
    train_episodes: int = Field(50, ge=1, description="training episodes the probes fit on")
    ridge: float = Field(1e-3, ge=0)
    knn_k: int = Field(5, ge=1)
    retrieval_tol: float = Field(0.05, gt=0, description="true-state distance (scene units) "
                                 "within which a retrieved frame counts as relevant")
    retrieval_dims: list[int] | None = Field(None, description="state dims (default: all)")
    label_budgets: list[int] = Field(default_factory=lambda: [2, 5, 10, 20, 50], min_length=1)


class CompareBudgetConfig(Config):
    flops_tolerance: float = Field(
        2.0, ge=1.0, description="largest allowed max/min ratio of training FLOPs per step")
    allow_unequal: bool = Field(
        False, description="compare anyway when steps, batch, data or FLOPs differ (the card "
        "then says the budgets were not matched)")


class CompareConfig(RunConfig, PanelConfig):
    """`jepalab compare`: one encoder per entry per seed on the same data and budget, a world
    model on each, the evidence panel on each, one evidence record per reference-vs-entry pair."""

    kind: Literal["compare"] = "compare"
    name: str = "compare"
    data: CompareDataConfig
    pretrain: dict[str, Any] = Field(
        default_factory=dict, description="pretraining fields every entry shares (budget)")
    entries: list[CompareEntry] = Field(..., min_length=2)
    reference: str | None = Field(None, description="the candidate entry (default: the first)")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    worldmodel: dict[str, Any] = Field(
        default_factory=dict, description="world-model fields (encoder, data.path, out_dir and "
        "seed are set per run)")
    probe: CompareProbeConfig = Field(default_factory=CompareProbeConfig)
    budget: CompareBudgetConfig = Field(default_factory=CompareBudgetConfig)
    out_dir: str = "runs/compare"

    @model_validator(mode="after")
    def _entries(self) -> CompareConfig:
        names = [e.name for e in self.entries]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"entries: duplicate name(s) {dup}")
        ref = self.reference or names[0]
        if ref not in names:
            raise ValueError(f"reference: '{ref}' is not an entry (entries: {', '.join(names)})")
        if not next(e for e in self.entries if e.name == ref).train:
            raise ValueError(f"reference: entry '{ref}' has train: false")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: duplicates in {self.seeds}")
        fixed = sorted({"encoder", "out_dir", "seed", "kind"} & set(self.worldmodel))
        if fixed:
            raise ValueError(f"worldmodel: {', '.join(fixed)} are set by compare, not the config")
        for i, e in enumerate(self.entries):
            if "out_dir" in e.overrides or "seed" in e.overrides:
                raise ValueError(f"entries[{i}].overrides: out_dir and seed are set by compare")
        return self

    @property
    def reference_name(self) -> str:
        return self.reference or self.entries[0].name
