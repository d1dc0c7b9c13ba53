"""The evidence record: the one versioned, validated JSON document that says "accepted".

It names what was compared (encoder checkpoints by sha256, objective, masking policy, controller,
baseline), how (task, metric, perturbation and seed panels, rollout horizon, intervention
budget), what came out (one cell per condition × arm) and the decision of a named rule, with the
numbers the rule compared and one reason per check. Provenance (time, jepalab version, git
commit + dirty flag) is filled in when the record is built.

Conventions:
  * a condition is a perturbation name with its severity; "clean" (no perturbation) ignores the
    severity. `condition_label` gives "clean" or "name@severity" (tables, plots, frame keys).
  * every reason starts with "PASS " or "FAIL "; `accepted` must equal "no reason failed".
The record is validated when built, when saved (a mutated record is re-validated) and when
loaded; a failure raises `JepalabError` with one line naming the field, e.g.
"evidence.json: results[3]: ci_low (0.6) <= value (0.5) <= ci_high (0.7) does not hold".
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from jepalab import __version__
from jepalab.errors import JepalabError
from jepalab.io import atomic_write_text, git_info, now_iso

SCHEMA_VERSION = "jepalab.evidence/1"
CLEAN = "clean"
Arm = Literal["candidate", "baseline"]
ARMS: tuple[Arm, Arm] = ("candidate", "baseline")
PASS, FAIL = "PASS ", "FAIL "
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def condition_label(condition: str, severity: int | None = None) -> str:
    """"clean", or "name@severity" for a perturbation ("name" when severity is None)."""
    if condition == CLEAN or severity is None:
        return condition
    return f"{condition}@{severity}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class Checkpoint(_Model):
    path: str
    sha256: str

    @field_validator("sha256")
    @classmethod
    def _hex64(cls, v: str) -> str:
        if not _SHA256.match(v.lower()):
            raise ValueError(f"must be 64 hex characters (a sha256 digest), got {v!r}")
        return v.lower()


class SeedCheckpoint(Checkpoint):
    """An arm's encoder for one pretraining seed (when the seed panel has several)."""

    pretrain_seed: int


class Objective(_Model):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class Controller(_Model):
    kind: str  # e.g. "mpc-cem"
    params: dict[str, Any] = Field(default_factory=dict)
    checkpoint: Checkpoint | None = None  # e.g. the action-conditioned world model


class Perturbation(_Model):
    name: str
    severity: int = Field(ge=0)
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int


class SeedPanel(_Model):
    pretrain_seeds: list[int] = Field(min_length=1)
    eval_seeds: list[int] = Field(min_length=1)

    @field_validator("pretrain_seeds", "eval_seeds")
    @classmethod
    def _unique(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be unique, got {v}")
        return v


class InterventionBudget(_Model):
    kind: Literal["labelled_trials", "env_interactions"]
    amount: int = Field(ge=0)


class Baseline(_Model):
    name: str
    encoder_checkpoint: Checkpoint
    objective: Objective | None = None
    encoder_checkpoints: list[SeedCheckpoint] = Field(default_factory=list)


class ResultCell(_Model):
    """One arm under one condition: the metric's point estimate, its episodes and 95 % CI."""

    condition: str
    severity: int = Field(0, ge=0)
    arm: Arm
    value: float
    n: int = Field(ge=1)
    ci_low: float
    ci_high: float

    @model_validator(mode="after")
    def _ordered(self) -> ResultCell:
        nums = (self.ci_low, self.value, self.ci_high)
        if not all(math.isfinite(x) for x in nums):
            raise ValueError(f"value and CI must be finite, got {nums}")
        if not (self.ci_low <= self.value + 1e-12 and self.value <= self.ci_high + 1e-12):
            raise ValueError(f"ci_low ({self.ci_low}) <= value ({self.value}) <= ci_high "
                             f"({self.ci_high}) does not hold")
        return self

    @property
    def label(self) -> str:
        return condition_label(self.condition, self.severity)

    @property
    def key(self) -> tuple[str, int]:
        return condition_key(self.condition, self.severity)


def condition_key(condition: str, severity: int) -> tuple[str, int]:
    """Grouping key of a condition: the clean condition is one key whatever its severity."""
    return (condition, 0) if condition == CLEAN else (condition, int(severity))


class Decision(_Model):
    accepted: bool
    rule: str
    rule_params: dict[str, Any] = Field(default_factory=dict)
    compared: dict[str, float | int | bool | str | None] = Field(default_factory=dict)
    reasons: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Decision:
        bad = [r for r in self.reasons if not r.startswith((PASS, FAIL))]
        if bad:
            raise ValueError(f"reasons must start with 'PASS ' or 'FAIL ', got {bad[0]!r}")
        failed = any(r.startswith(FAIL) for r in self.reasons)
        if self.accepted == failed:
            raise ValueError(f"accepted={self.accepted} contradicts the reasons "
                             f"({'a check failed' if failed else 'every check passed'})")
        return self


class GitInfo(_Model):
    commit: str | None = None
    dirty: bool | None = None


class EvidenceRecord(_Model):
    schema_version: Literal["jepalab.evidence/1"] = "jepalab.evidence/1"
    encoder_checkpoint: Checkpoint
    encoder_checkpoints: list[SeedCheckpoint] = Field(
        default_factory=list, description="one per pretraining seed when there are several")
    objective: Objective
    masking_policy: dict[str, Any]
    downstream_task: str = Field(pattern=r"^[a-z_]+:\S+$")  # e.g. "plan:two-rooms"
    controller: Controller
    metric: str
    perturbation_panel: list[Perturbation] = Field(default_factory=list)
    seed_panel: SeedPanel
    rollout_horizon: int = Field(ge=1)
    intervention_budget: InterventionBudget
    training_budget: dict[str, Any] | None = Field(
        None, description="comparisons: steps, batch, data and FLOPs per step of both arms")
    baseline: Baseline
    results: list[ResultCell] = Field(min_length=1)
    decision: Decision
    created_at: str = Field(default_factory=now_iso)
    jepalab_version: str = __version__
    git: GitInfo = Field(default_factory=lambda: GitInfo(**git_info()))

    @model_validator(mode="after")
    def _cross_field(self) -> EvidenceRecord:
        arms: dict[tuple[str, int], list[str]] = {}
        for c in self.results:
            got = arms.setdefault(c.key, [])
            if c.arm in got:
                raise ValueError(f"results: condition '{c.label}' has two '{c.arm}' cells")
            got.append(c.arm)
        for key, got in arms.items():
            for arm in ARMS:
                if arm not in got:
                    raise ValueError(f"results: condition '{condition_label(*key)}' has no "
                                     f"'{arm}' arm")
        panel = {(p.name, p.severity) for p in self.perturbation_panel}
        for key in arms:
            if key[0] != CLEAN and key not in panel:
                raise ValueError(f"results: condition '{condition_label(*key)}' is not in "
                                 "perturbation_panel")
        seeds = set(self.seed_panel.pretrain_seeds)
        for where, cks in (("encoder_checkpoints", self.encoder_checkpoints),
                           ("baseline.encoder_checkpoints", self.baseline.encoder_checkpoints)):
            extra = sorted({c.pretrain_seed for c in cks} - seeds)
            if extra:
                raise ValueError(f"{where}: pretrain_seed {extra} not in seed_panel")
        return self

    # ------------------------------------------------------------------ views

    def conditions(self) -> list[tuple[str, int]]:
        """Condition keys in first-seen order, clean first."""
        keys = list(dict.fromkeys(c.key for c in self.results))
        return sorted(keys, key=lambda k: k[0] != CLEAN)

    def cell(self, condition: str, arm: str, severity: int = 0) -> ResultCell | None:
        key = condition_key(condition, severity)
        return next((c for c in self.results if c.key == key and c.arm == arm), None)

    def result(self, key: tuple[str, int], arm: str) -> ResultCell:
        """The cell of a condition key (as from `conditions()`) and arm; KeyError if absent."""
        cell = self.cell(key[0], arm, key[1])
        if cell is None:
            raise KeyError(f"no {arm} result for condition '{condition_label(*key)}'")
        return cell

    def as_row(self) -> dict[str, Any]:
        """One flat row for tables: key fields, clean values of both arms, accepted."""
        cand, base = self.cell(CLEAN, "candidate"), self.cell(CLEAN, "baseline")
        return {
            "task": self.downstream_task,
            "metric": self.metric,
            "objective": self.objective.name,
            "encoder": self.encoder_checkpoint.path,
            "encoder_sha256": self.encoder_checkpoint.sha256,
            "baseline": self.baseline.name,
            "baseline_sha256": self.baseline.encoder_checkpoint.sha256,
            "controller": self.controller.kind,
            "rollout_horizon": self.rollout_horizon,
            "budget": f"{self.intervention_budget.amount} {self.intervention_budget.kind}",
            "perturbations": len(self.perturbation_panel),
            "pretrain_seeds": len(self.seed_panel.pretrain_seeds),
            "eval_seeds": len(self.seed_panel.eval_seeds),
            "candidate_clean": cand.value if cand else None,
            "baseline_clean": base.value if base else None,
            "rule": self.decision.rule,
            "accepted": self.decision.accepted,
            "created_at": self.created_at,
            "git_commit": self.git.commit,
        }

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path) -> Path:
        """Re-validate (the record may have been mutated) and write it atomically."""
        checked = _validate(self.model_dump(mode="json"), str(path))
        return atomic_write_text(path, checked.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> EvidenceRecord:
        p = Path(path)
        if not p.is_file():
            raise JepalabError(f"{p}: evidence record not found")
        try:
            data = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise JepalabError(f"{p}: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise JepalabError(f"{p}: top level must be an object, got {type(data).__name__}")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise JepalabError(f"{p}: schema_version: {version!r} is not supported (this "
                               f"jepalab {__version__} reads {SCHEMA_VERSION!r})")
        return _validate(data, str(p))


def _validate(data: dict[str, Any], source: str) -> EvidenceRecord:
    try:
        return EvidenceRecord.model_validate(data)
    except ValidationError as err:
        raise JepalabError(format_error(err, source)) from None


def format_error(err: ValidationError, source: str = "evidence") -> str:
    """One line naming the first failing field, e.g. "x.json: results[2].n: ... (+1 more)"."""
    errors = err.errors()
    first = errors[0]
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".")
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    elif first["type"] == "missing":
        msg = "field required"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{source}: {loc + ': ' if loc else ''}{msg}{more}"


def build_record(**fields: Any) -> EvidenceRecord:
    """Build and validate a record from plain values; errors as `JepalabError` (one line)."""
    try:
        return EvidenceRecord(**fields)
    except ValidationError as err:
        raise JepalabError(format_error(err)) from None
