"""Constructed per-episode outcomes and evidence records for the evidence-layer tests."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from jepalab.eval.evidence import EvidenceRecord
from jepalab.eval.rules import decide, result_cells

SHA_A = hashlib.sha256(b"candidate").hexdigest()
SHA_B = hashlib.sha256(b"baseline").hexdigest()


def episode_rows(spec: dict[tuple[str, int], tuple[int, int]], n: int = 40, seed: int = 0,
                 pretrain_seeds: tuple[int, ...] = (0,), eval_seeds: tuple[int, ...] = (0,),
                 ) -> list[dict[str, Any]]:
    """Rows with exactly k_cand / k_base successes out of n episodes per condition (and per
    pretrain × eval seed); the baseline's successes are a subset of the candidate's when
    k_cand >= k_base (and vice versa), so paired differences all share one sign."""
    rng = np.random.default_rng(seed)
    rows = []
    for (cond, sev), (kc, kb) in spec.items():
        for ps in pretrain_seeds:
            for es in eval_seeds:
                order = rng.permutation(n)
                for arm, k in (("candidate", kc), ("baseline", kb)):
                    won = set(order[:k].tolist())
                    for e in range(n):
                        rows.append({"arm": arm, "encoder_sha": SHA_A if arm == "candidate"
                                     else SHA_B, "condition": cond, "severity": sev,
                                     "pretrain_seed": ps, "eval_seed": es, "episode": e,
                                     "success": int(e in won), "final_distance": 0.1 + 0.01 * e,
                                     "steps": 20 + e % 7, "plan_time_s": 0.5})
    return rows


def make_record(rows: list[dict[str, Any]], rule: str = "beats_baseline_clean_and_robust",
                **params: Any) -> EvidenceRecord:
    conds = sorted({(r["condition"], r["severity"]) for r in rows if r["condition"] != "clean"})
    return EvidenceRecord(
        encoder_checkpoint={"path": "runs/pretrain/ckpt", "sha256": SHA_A},
        objective={"name": "jepa", "params": {"loss": "l2", "target_layernorm": True,
                                              "ema": [0.996, 1.0]}},
        masking_policy={"kind": "multiblock", "params": {
            "npred": 4, "target_scale": [0.15, 0.2], "target_aspect": [0.75, 1.5],
            "context_scale": [0.85, 1.0], "context_aspect": [1.0, 1.0], "min_keep": 4,
            "allow_overlap": False}},
        downstream_task="plan:two-rooms",
        controller={"kind": "mpc-cem", "params": {"horizon": 8, "samples": 128},
                    "checkpoint": {"path": "runs/wm", "sha256": SHA_A[::-1]}},
        metric="success_rate",
        perturbation_panel=[{"name": c, "severity": s, "seed": 0} for c, s in conds],
        seed_panel={"pretrain_seeds": sorted({r["pretrain_seed"] for r in rows}),
                    "eval_seeds": sorted({r["eval_seed"] for r in rows})},
        rollout_horizon=8,
        intervention_budget={"kind": "env_interactions", "amount": 19200},
        baseline={"name": "random-init", "encoder_checkpoint": {"path": "runs/rand",
                                                                "sha256": SHA_B}},
        results=result_cells(rows),
        decision=decide(rule, rows, **params),
    )
