"""The matched training budget of a comparison: steps, batch, data and FLOPs per step.

Training FLOPs per step are counted with torch's FlopCounterMode on one real training step of the
entry's resolved config (step 0: its batch, masks and augmentations), forward + backward of
matmuls, convolutions and attention (optimizer and EMA updates are elementwise and not counted).
Counts are cached under OUT_DIR/flops by the config's hash.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jepalab.config import CompareConfig, PretrainConfig
from jepalab.errors import JepalabError

if TYPE_CHECKING:
    from jepalab.eval.compare import Run

DATA_FIELDS = ("source", "path", "image_size", "frames", "stride")  # what "same data" means


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(msg, flush=True)


class TrainingStep:
    """The modules, optimizer and batches of `cfg`'s training, exactly as `pretrain` builds them,
    to run single steps outside the loop (FLOP counting, throughput benchmarks)."""

    def __init__(self, cfg: PretrainConfig) -> None:
        import torch

        from jepalab.masks import build_mask_policy
        from jepalab.models.build import build_encoder
        from jepalab.objectives import build_objective
        from jepalab.train.loop import make_dataset, make_optimizer

        self.cfg = cfg
        self.data: Any = make_dataset(cfg)
        torch.manual_seed(cfg.seed)
        self.objective = build_objective(cfg)
        self.models = self.objective.build(build_encoder(cfg))
        grid: Any = self.models["encoder"].grid
        self.policy = (build_mask_policy(cfg.mask.kind, grid, **cfg.mask.params)
                       if self.objective.needs_masks and cfg.mask.kind != "none" else None)
        self.opt = make_optimizer(self.models, self.objective.trainable(self.models),
                                  cfg.optim.lr)

    def batch(self, step: int) -> Any:
        import torch
        from torch.utils.data import default_collate

        from jepalab.train.loop import batch_indices, make_batch

        idx = batch_indices(step, self.cfg.batch_size, len(self.data), self.cfg.seed)
        item = default_collate([self.data[i] for i in idx])
        return make_batch(item, step, self.cfg, self.policy, torch.device("cpu"))

    def run(self, step: int, batch: Any = None) -> dict[str, float]:
        """One optimizer step (+ the objective's after-step update, e.g. EMA)."""
        from jepalab.train.loop import set_schedules, train_step

        set_schedules(self.opt, step, self.cfg)
        metrics = train_step(self.models, self.objective, self.opt,
                             batch if batch is not None else self.batch(step), self.cfg)
        self.objective.after_step(self.models, step + 1, self.cfg.steps)
        return metrics


def count_flops(fn: Any) -> int:
    """FLOPs of `fn()` by FlopCounterMode (matmuls, convolutions, attention; fwd + bwd)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten
    # torch's counter has no formula for the CPU flash-attention kernel: give it the SDPA one
    extra = {
        aten._scaled_dot_product_flash_attention_for_cpu:
            lambda q, k, v, *a, out_shape=None, **kw: sdpa_flop_count(q, k, v),
        aten._scaled_dot_product_flash_attention_for_cpu_backward:
            lambda g, q, k, v, *a, out_shape=None, **kw: sdpa_backward_flop_count(g, q, k, v),
    }
    with FlopCounterMode(display=False, custom_mapping=extra) as counter:
        fn()
    return int(counter.get_total_flops())


def train_step_flops(cfg: PretrainConfig) -> int:
    """Training FLOPs of step 0 of `cfg` (its real batch, masks and augmentations)."""
    step = TrainingStep(cfg)
    batch = step.batch(0)
    return count_flops(lambda: step.run(0, batch))


def step_flops(c: CompareConfig, runs: dict[str, list[Run]], progress: bool) -> dict[str, int]:
    """{entry: training FLOPs per step} (0 for untrained entries), cached by config hash."""
    out: dict[str, int] = {}
    for name, rs in runs.items():
        r = rs[0]
        if not r.train:
            out[name] = 0
            continue
        path = Path(c.out_dir) / "flops" / f"{r.key[:16]}.json"
        if path.is_file():
            out[name] = int(json.loads(path.read_text())["flops_per_step"])
            continue
        _say(progress, f"   counting training FLOPs of one step: {name}")
        out[name] = train_step_flops(r.cfg)
        from jepalab.io import atomic_write_json

        atomic_write_json(path, {"entry": name, "key": r.key, "flops_per_step": out[name]})
    return out


def check_budget(c: CompareConfig, runs: dict[str, list[Run]], flops: dict[str, int]
                 ) -> dict[str, Any]:
    """Steps, batch, data and FLOPs/step of the trained entries; refuses a mismatch (one line)
    unless budget.allow_unequal. Returns what was compared, for the record and the card."""
    trained = {n: rs[0].cfg for n, rs in runs.items() if rs[0].train}
    fields: dict[str, dict[str, Any]] = {
        "steps": {n: cfg.steps for n, cfg in trained.items()},
        "batch_size": {n: cfg.batch_size for n, cfg in trained.items()},
        "data": {n: json.dumps({k: getattr(cfg.data, k) for k in DATA_FIELDS}, sort_keys=True)
                 for n, cfg in trained.items()},
    }
    mismatches = [f"{f}: " + ", ".join(f"{n}={v}" for n, v in vals.items())
                  for f, vals in fields.items() if len(set(vals.values())) > 1]
    fl = {n: flops[n] for n in trained}
    lo, hi = min(fl, key=lambda n: fl[n]), max(fl, key=lambda n: fl[n])
    ratio = fl[hi] / max(fl[lo], 1)
    if ratio > c.budget.flops_tolerance:
        mismatches.append(f"FLOPs/step: {hi} {fl[hi] / 1e9:.3g} GFLOP is {ratio:.2f}x {lo} "
                          f"{fl[lo] / 1e9:.3g} GFLOP (budget.flops_tolerance "
                          f"{c.budget.flops_tolerance:g}x)")
    if mismatches and not c.budget.allow_unequal:
        raise JepalabError(f"{c.name}: compare refused, training budgets differ (set "
                           "budget.allow_unequal: true to compare anyway): "
                           + "; ".join(mismatches))
    first = next(iter(trained.values()))
    return {"matched": not mismatches, "mismatches": mismatches,
            "steps": first.steps, "batch_size": first.batch_size,
            "data": {k: getattr(first.data, k) for k in DATA_FIELDS},
            "flops_per_step": flops, "flops_ratio": ratio,
            "flops_tolerance": c.budget.flops_tolerance,
            "untrained": [n for n, rs in runs.items() if not rs[0].train]}
