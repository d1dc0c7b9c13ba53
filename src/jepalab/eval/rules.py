"""Acceptance rules: small named functions from per-episode outcomes to a `Decision`.

Rows are per-episode dicts as the episode store returns them; a rule reads `arm`
("candidate"/"baseline"), `condition`, `severity`, `pretrain_seed`, `eval_seed`, `episode` and
`success` (0/1). Pairing: episode e of evaluation seed s starts from the same reset seed in
both arms, so the pair key is (condition, eval_seed, episode); when an arm has several
pretraining seeds its outcome for that episode is the mean over them (the pair stays one
episode, and the bootstrap resamples episodes). Pairs missing from one arm are left out and
counted in `compared`.

Every rule takes keyword params with defaults; the decision records all of them (defaults
included), the numbers compared and one "PASS ..."/"FAIL ..." reason per check.
`describe(name, params)` says the rule in plain English for the card.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from jepalab.errors import JepalabError
from jepalab.eval.evidence import ARMS, CLEAN, FAIL, PASS, Decision, ResultCell, condition_key
from jepalab.eval.evidence import condition_label as _label
from jepalab.eval.stats import paired_bootstrap_diff, wilson_ci

Key = tuple[str, int]
RULES: dict[str, Callable[..., Decision]] = {}
_DESCRIPTIONS: dict[str, Callable[[dict[str, Any]], str]] = {}
_NEEDED = ("arm", "condition", "severity", "eval_seed", "episode", "success")
_TOL = 1e-9  # rates are k/n: a gap equal to delta must not fail by float round-off


def register(name: str, description: Callable[[dict[str, Any]], str]):
    def wrap(fn: Callable[..., Decision]) -> Callable[..., Decision]:
        RULES[name] = fn
        _DESCRIPTIONS[name] = description
        return fn
    return wrap


def rule_params(name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The rule's defaults overridden by `params`; unknown rule or param names are errors."""
    if name not in RULES:
        raise JepalabError(f"rule: unknown rule '{name}' (choose from {', '.join(RULES)})")
    sig = inspect.signature(RULES[name])
    defaults = {k: p.default for k, p in sig.parameters.items() if k != "rows"}
    for k in params or {}:
        if k not in defaults:
            raise JepalabError(f"rule.params.{k}: rule '{name}' has no such parameter "
                               f"(parameters: {', '.join(defaults)})")
    return {**defaults, **(params or {})}


def decide(rule_name: str, rows: Iterable[dict[str, Any]], **params: Any) -> Decision:
    """Apply a registered rule to per-episode rows."""
    full = rule_params(rule_name, params)
    return RULES[rule_name](list(rows), **full)


def describe(rule_name: str, params: dict[str, Any] | None = None) -> str:
    """One paragraph of plain English saying what the rule accepts, with its parameters."""
    return _DESCRIPTIONS[rule_name](rule_params(rule_name, params))


# ---------------------------------------------------------------- grouping


def _group(rows: list[dict[str, Any]]) -> dict[Key, dict[str, dict[tuple[int, int], list[float]]]]:
    """{condition key: {arm: {(eval_seed, episode): [success per pretraining seed]}}}."""
    if not rows:
        raise JepalabError("rule: no episode rows to decide on")
    out: dict[Key, dict[str, dict[tuple[int, int], list[float]]]] = {}
    for i, r in enumerate(rows):
        missing = [k for k in _NEEDED if k not in r]
        if missing:
            raise JepalabError(f"rows[{i}]: missing field {missing[0]!r}")
        if r["arm"] not in ARMS:
            raise JepalabError(f"rows[{i}].arm: {r['arm']!r} is not one of {ARMS}")
        key = condition_key(str(r["condition"]), int(r["severity"]))
        arms = out.setdefault(key, {a: {} for a in ARMS})
        arms[r["arm"]].setdefault((int(r["eval_seed"]), int(r["episode"])), []).append(
            float(r["success"]))
    for key, arms in out.items():
        for arm in ARMS:
            if not arms[arm]:
                raise JepalabError(f"rule: condition '{_label(*key)}' has no '{arm}' episodes")
    return dict(sorted(out.items(), key=lambda kv: kv[0][0] != CLEAN))


def _rate(episodes: dict[tuple[int, int], list[float]]) -> tuple[float, int]:
    """Point estimate over every episode of every pretraining seed, and that count."""
    vals = [v for vs in episodes.values() for v in vs]
    return float(np.mean(vals)), len(vals)


def _pairs(arms: dict[str, dict[tuple[int, int], list[float]]]) -> tuple[np.ndarray, np.ndarray,
                                                                         int]:
    cand, base = arms["candidate"], arms["baseline"]
    common = sorted(set(cand) & set(base))
    a = np.array([np.mean(cand[k]) for k in common])
    b = np.array([np.mean(base[k]) for k in common])
    return a, b, len(set(cand) ^ set(base))


def _paired_check(label: str, arms, bound: float, params: dict[str, Any],
                  compared: dict[str, Any]) -> str:
    """Lower CI bound of the paired difference > bound; fills `compared`, returns the reason."""
    a, b, unpaired = _pairs(arms)
    if a.size == 0:
        raise JepalabError(f"rule: condition '{label}' has no episode run in both arms")
    diff, lo, hi = paired_bootstrap_diff(a, b, n_boot=params["n_boot"], seed=params["seed"],
                                         level=params["level"])
    compared.update({f"{label}.candidate": float(a.mean()), f"{label}.baseline": float(b.mean()),
                     f"{label}.diff": diff, f"{label}.ci_low": lo, f"{label}.ci_high": hi,
                     f"{label}.pairs": int(a.size), f"{label}.unpaired": unpaired})
    ok = lo > bound
    pct = round(100 * params["level"])
    return (f"{PASS if ok else FAIL}{label}: candidate − baseline success = {diff:+.3f} "
            f"({pct} % paired-bootstrap CI [{lo:+.3f}, {hi:+.3f}] over {a.size} paired "
            f"episodes); lower bound {lo:+.3f} {'>' if ok else '<='} {bound:+.3f}")


def _check_common(delta: float, n_boot: int, level: float) -> None:
    if not delta >= 0:
        raise JepalabError(f"rule.params.delta: must be >= 0, got {delta}")
    if n_boot < 100:
        raise JepalabError(f"rule.params.n_boot: must be >= 100, got {n_boot}")
    if not 0 < level < 1:
        raise JepalabError(f"rule.params.level: must be in (0, 1), got {level}")


# ---------------------------------------------------------------- rules


def _describe_default(p: dict[str, Any]) -> str:
    pct = round(100 * p["level"])
    return (
        "The candidate is accepted only if two things hold. First, on the clean condition it "
        "must beat the baseline: the same evaluation episodes (same reset seeds) are run with "
        "both encoders, the per-episode success differences are resampled "
        f"{p['n_boot']} times (paired bootstrap, seed {p['seed']}), and the lower end of the "
        f"{pct} % confidence interval of the mean difference must be above zero. Second, it "
        "must not break under perturbation: on every perturbed condition of the panel the "
        "candidate's success rate may not fall below the baseline's by more than "
        f"{p['delta']:.2f} (point estimates)"
        + (f", and the panel must hold at least {p['min_perturbations']} perturbed "
           "condition(s)" if p["min_perturbations"] > 0 else "")
        + ". Failing either check rejects it.")


@register("beats_baseline_clean_and_robust", _describe_default)
def beats_baseline_clean_and_robust(rows: list[dict[str, Any]], delta: float = 0.05,
                                    n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                                    min_perturbations: int = 1) -> Decision:
    """Clean: paired-bootstrap CI lower bound of (cand − base) > 0. Each perturbation:
    base − cand <= delta on point estimates."""
    params = {"delta": delta, "n_boot": n_boot, "seed": seed, "level": level,
              "min_perturbations": min_perturbations}
    _check_common(delta, n_boot, level)
    groups = _group(rows)
    if (CLEAN, 0) not in groups:
        raise JepalabError("rule: the rows hold no 'clean' condition, which this rule compares")
    compared: dict[str, Any] = {}
    reasons = [_paired_check(CLEAN, groups[(CLEAN, 0)], 0.0, params, compared)]
    perturbed = [k for k in groups if k[0] != CLEAN]
    for key in perturbed:
        label = _label(*key)
        (c, nc), (b, nb) = _rate(groups[key]["candidate"]), _rate(groups[key]["baseline"])
        gap = c - b
        ok = gap >= -delta - _TOL
        compared.update({f"{label}.candidate": c, f"{label}.baseline": b, f"{label}.gap": gap,
                         f"{label}.n_candidate": nc, f"{label}.n_baseline": nb})
        reasons.append(f"{PASS if ok else FAIL}{label}: candidate {c:.3f} vs baseline {b:.3f} "
                       f"(gap {gap:+.3f}; {'within' if ok else 'beyond'} the allowed "
                       f"{-delta:+.3f})")
    compared["perturbations"] = len(perturbed)
    if len(perturbed) < min_perturbations:
        reasons.append(f"{FAIL}robustness: the panel has {len(perturbed)} perturbed "
                       f"condition(s); the rule needs at least {min_perturbations}")
    return _decision("beats_baseline_clean_and_robust", params, compared, reasons)


def _describe_noninf(p: dict[str, Any]) -> str:
    pct = round(100 * p["level"])
    return (
        "The candidate is accepted if it is not worse than the baseline by more than "
        f"{p['delta']:.2f} on any condition, clean included. For each condition the same "
        "evaluation episodes are run with both encoders, the per-episode success differences "
        f"are resampled {p['n_boot']} times (paired bootstrap, seed {p['seed']}), and the lower "
        f"end of the {pct} % confidence interval of the mean difference (candidate − baseline) "
        f"must be above −{p['delta']:.2f}. It does not require the candidate to be better.")


@register("non_inferior", _describe_noninf)
def non_inferior(rows: list[dict[str, Any]], delta: float = 0.05, n_boot: int = 2000,
                 seed: int = 0, level: float = 0.95) -> Decision:
    """Every condition: paired-bootstrap CI lower bound of (cand − base) > −delta."""
    params = {"delta": delta, "n_boot": n_boot, "seed": seed, "level": level}
    _check_common(delta, n_boot, level)
    compared: dict[str, Any] = {}
    reasons = [_paired_check(_label(*key), arms, -delta, params, compared)
               for key, arms in _group(rows).items()]
    return _decision("non_inferior", params, compared, reasons)


def _decision(name: str, params: dict[str, Any], compared: dict[str, Any],
              reasons: list[str]) -> Decision:
    accepted = not any(r.startswith(FAIL) for r in reasons)
    return Decision(accepted=accepted, rule=name, rule_params=params, compared=compared,
                    reasons=reasons)


# ---------------------------------------------------------------- results table


def result_cells(rows: Iterable[dict[str, Any]], level: float = 0.95) -> list[ResultCell]:
    """Success rate with a Wilson CI per condition × arm (pooled over pretraining seeds),
    clean first: the `results` of an evidence record."""
    cells = []
    for key, arms in _group(list(rows)).items():
        for arm in ARMS:
            rate, n = _rate(arms[arm])
            k = round(rate * n)
            _, lo, hi = wilson_ci(k, n, level)
            cells.append(ResultCell(condition=key[0], severity=key[1], arm=arm, value=rate, n=n,
                                    ci_low=float(lo), ci_high=float(hi)))
    return cells
