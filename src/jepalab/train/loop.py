"""Pretraining: plain step functions and one short orchestrating loop.

All randomness of step s (batch indices, masks, augmentations) comes from generators seeded by
(seed, s), and every schedule is a function of s, so a resumed run replays nothing and produces
the same losses, step for step, as an uninterrupted one.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from jepalab.config import PretrainConfig, TrainConfig, dump, same_config
from jepalab.data.images import ImageFolderDataset, ShapesDataset
from jepalab.errors import JepalabError
from jepalab.io import atomic_write_text
from jepalab.masks import build_mask_policy
from jepalab.models.build import build_encoder, normalize_pixels
from jepalab.objectives import Batch, Objective, build_objective
from jepalab.train import distributed
from jepalab.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    optimizer_tensors,
    prune_checkpoints,
    restore_optimizer,
    save_checkpoint,
)
from jepalab.train.monitors import collapse_warning
from jepalab.train.schedules import lr_at, wd_at


def step_generator(seed: int, step: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 16 + salt)


def batch_indices(step: int, batch_size: int, n: int, seed: int) -> list[int]:
    """Indices of step `step`: consecutive slices of per-epoch permutations (no replacement)."""
    pos = torch.arange(step * batch_size, (step + 1) * batch_size)
    out = torch.empty_like(pos)
    for epoch in pos.div(n, rounding_mode="floor").unique().tolist():
        perm = torch.randperm(n, generator=step_generator(seed, epoch, 1))
        sel = pos // n == epoch
        out[sel] = perm[pos[sel] % n]
    return out.tolist()


class StepBatches:
    """A batch sampler yielding the index lists of steps start..total-1."""

    def __init__(
        self, n: int, batch_size: int, seed: int, start: int, total: int, part: slice = slice(None)
    ) -> None:
        self.n, self.bs, self.seed, self.start, self.total = n, batch_size, seed, start, total
        self.part = part  # this rank's share of each global batch

    def __iter__(self) -> Iterator[list[int]]:
        for s in range(self.start, self.total):
            yield batch_indices(s, self.bs, self.n, self.seed)[self.part]

    def __len__(self) -> int:
        return self.total - self.start


def make_dataset(cfg: PretrainConfig) -> Dataset:
    d = cfg.data
    if d.source == "shapes":
        return ShapesDataset(d.num_images, d.image_size, seed=cfg.seed)
    if d.source == "folder":
        return ImageFolderDataset(d.path, d.image_size, skip_bad=d.skip_bad)
    from jepalab.data.store import TrajectoryStore
    from jepalab.objectives import OBJECTIVES, Objective

    store = TrajectoryStore.open(d.path)
    if store.image_shape[0] != d.image_size:
        raise JepalabError(
            f"data.image_size ({d.image_size}) differs from the dataset's frames "
            f"({store.image_shape[0]}) in {d.path}"
        )
    return OBJECTIVES.get(cfg.objective.name, Objective).dataset(store, cfg)


@functools.cache
def native_bf16(device_type: str) -> bool:
    """Whether bf16 matmuls run natively: CUDA, or a CPU with AVX512-BF16 or AMX-BF16."""
    if device_type == "cuda":
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16(precision: str, device_type: str) -> bool:
    return precision == "bf16" or (precision == "auto" and native_bf16(device_type))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise JepalabError("device: 'cuda' requested but no CUDA device is available")
    if name == "cuda":
        # cuDNN's SDPA builds a plan for every new sequence length, and masked pretraining
        # changes the context length every step: on an H200, ViT-L/16 steps took 200 ms at a
        # seen length and 0.4-3.5 s at a new one (benchmarks/gpu_throughput.py --cudnn-sdp).
        # Flash and memory-efficient attention need no plan.
        torch.backends.cuda.enable_cudnn_sdp(False)
    return torch.device(name)


def make_optimizer(models: nn.ModuleDict, names: list[str], lr: float) -> torch.optim.AdamW:
    """AdamW with norms, biases (and other 1-D parameters) excluded from weight decay."""
    decay, no_decay = [], []
    for name in names:
        for p in models[name].parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "decay": True},
        {"params": no_decay, "weight_decay": 0.0, "decay": False},
    ]
    return torch.optim.AdamW(groups, lr=lr)


def set_schedules(opt: torch.optim.Optimizer, step: int, cfg: TrainConfig) -> tuple[float, float]:
    lr, wd = lr_at(step, cfg.steps, cfg.optim), wd_at(step, cfg.steps, cfg.optim)
    for g in opt.param_groups:
        g["lr"] = lr
        if g["decay"]:
            g["weight_decay"] = wd
    return lr, wd


def train_step(
    models: nn.ModuleDict,
    objective: Objective,
    opt: torch.optim.Optimizer,
    batch: Batch,
    cfg: TrainConfig,
    loss_fn: Callable[[Batch], tuple[torch.Tensor, dict[str, float]]] | None = None,
) -> dict[str, float]:
    """One optimizer step: forward under autocast, backward, clip, AdamW; then the objective's
    `extra_steps`, if any (their gradients averaged over ranks by hand: DDP syncs only the
    wrapped loss's).

    loss_fn: the (possibly DDP-wrapped) loss; defaults to `objective.loss(batch, models)`."""
    models.train()
    dev = batch.x.device.type
    bf16 = use_bf16(cfg.precision, dev)
    params = [p for g in opt.param_groups for p in g["params"]]

    def step(loss: torch.Tensor, sync: bool = False) -> float | None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if sync:
            distributed.average_grads(params)
        norm = (float(torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip_grad))
                if cfg.optim.clip_grad else None)
        opt.step()
        return norm

    with torch.autocast(dev, dtype=torch.bfloat16, enabled=bf16):
        loss, metrics = loss_fn(batch) if loss_fn else objective.loss(batch, models)
    if not math.isfinite(metrics["loss"]):
        raise JepalabError(f"loss is {metrics['loss']} — training diverged (lower optim.lr?)")
    if (norm := step(loss)) is not None:
        metrics["grad_norm"] = norm
    extra = []
    with torch.autocast(dev, dtype=torch.bfloat16, enabled=bf16):
        for loss, m in objective.extra_steps(batch, models):
            if not math.isfinite(m["loss"]):
                raise JepalabError(f"extra-step loss is {m['loss']} — training diverged")
            step(loss, sync=True)
            extra.append(m["loss"])
    if extra:
        metrics["extra_loss"] = sum(extra) / len(extra)
    return metrics


TRANSITION_KEYS = ("actions", "states", "goals", "goal_steps")  # item keys that become Batch fields


def compile_trainable(objective: Any, models: nn.ModuleDict) -> None:
    """`compile: true`: torch.compile the trained modules in place (parameter names, hence
    checkpoints, are unchanged), with dynamic shapes: mask sizes change from step to step."""
    for name in objective.trainable(models):
        models[name].compile(dynamic=True)


def make_batch(
    item: torch.Tensor | dict[str, torch.Tensor],
    step: int,
    cfg: TrainConfig,
    policy: Any,
    device: torch.device,
    part: slice | None = None,
) -> Batch:
    """A loader item (uint8 pixels, or a transition dict with obs/actions/states) -> Batch.

    part: this rank's rows of the global batch; masks are drawn for the global batch and sliced,
    so every sample gets the same masks whatever the world size."""
    x = (item if isinstance(item, torch.Tensor) else item["obs"]).to(device, non_blocking=True)
    extra = (
        {}
        if isinstance(item, torch.Tensor)
        else {k: item[k].to(device, non_blocking=True) for k in TRANSITION_KEYS if k in item}
    )
    gen = step_generator(cfg.seed, step, 2)
    masks = policy.sample(gen, x.shape[0] if part is None else cfg.batch_size) if policy else []
    if part is not None:
        masks = [distributed.shard_masks(m, part) for m in masks]
    return Batch(
        # uint8 pixels travel as bytes and are normalised on the device; float items are
        # precomputed latents, used as they are
        x=(normalize_pixels(x) if x.dtype == torch.uint8 else x),
        masks=[m.to(device) for m in masks],
        generator=gen,
        monitor=(step + 1) % cfg.monitor_every == 0,
        **extra,
    )


class MetricsLog:
    """Append-only JSONL of metrics; on resume, rows past the checkpoint are dropped first."""

    def __init__(self, path: Path, resume_step: int) -> None:
        self.path = path
        if path.exists():
            rows = [
                ln
                for ln in path.read_text().splitlines()
                if ln.strip() and json.loads(ln).get("step", 0) <= resume_step
            ]
            atomic_write_text(path, "".join(r + "\n" for r in rows))
        self.f = open(path, "a")  # noqa: SIM115 (held open for the run)

    def write(self, row: dict[str, Any]) -> None:
        self.f.write(json.dumps(row) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def save(
    run_dir: Path,
    step: int,
    models: nn.ModuleDict,
    opt: torch.optim.Optimizer,
    cfg: TrainConfig,
    meta: dict[str, Any],
) -> Path:
    otensors, ometa = optimizer_tensors(opt)
    meta = {
        "kind": cfg.kind,
        "step": step,
        "config": json.loads(cfg.model_dump_json()),
        **meta,
        "optimizer": {"file": "optim.safetensors", **ometa},
        "rng": {"scheme": "per-step generators seeded by (seed, step)", "seed": cfg.seed},
    }
    path = save_checkpoint(
        run_dir / "checkpoints" / f"step_{step:07d}",
        {"model": dict(models.state_dict()), "optim": otensors},
        meta,
    )
    prune_checkpoints(run_dir, cfg.keep_ckpts)
    return path


class ObjectiveLoss(nn.Module):
    """The objective's loss as one module, so DDP sees a single forward per step (JEPA runs the
    context encoder once per mask set; a wrapped encoder alone would see several)."""

    def __init__(self, objective: Objective, models: nn.ModuleDict) -> None:
        super().__init__()
        self.objective, self.models = objective, models

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        return self.objective.loss(batch, self.models)


def fit(
    cfg: TrainConfig,
    objective: Objective,
    models: nn.ModuleDict,
    dataset: Dataset,
    policy: Any,
    meta: dict[str, Any],
    resume: bool = False,
    progress: bool = True,
    tracker: Any = None,
    workers: int = 0,
) -> Path:
    """The one training loop (pretraining and world models); returns the final checkpoint.

    Under torchrun it trains data-parallel: each rank takes its slice of every global batch,
    rank 0 alone writes the log and checkpoints."""
    run_dir = Path(cfg.out_dir)
    last = latest_checkpoint(run_dir)
    if last is not None and not resume:
        raise JepalabError(
            f"out_dir '{run_dir}' already has checkpoints; pass --resume to continue "
            "or choose another --out_dir"
        )
    device = pick_device(cfg.device)
    ctx = distributed.init(device.type)
    if device.type == "cuda" and ctx.world > 1:
        device = torch.device("cuda", ctx.local_rank)
    part = ctx.shard(cfg.batch_size) if ctx.world > 1 else None
    models.to(device)
    opt = make_optimizer(models, objective.trainable(models), cfg.optim.lr)
    start = 0
    if resume and last is not None:
        manifest, tensors = load_checkpoint(last)
        if not same_config(cfg, manifest["config"]):
            raise JepalabError(f"--resume: the config differs from the one in {last}/manifest.json")
        models.load_state_dict(tensors["model"])
        restore_optimizer(opt, tensors["optim"], manifest["optimizer"])
        start = manifest["step"]
    if cfg.compile:
        compile_trainable(objective, models)
    loss_fn = None
    if ctx.world > 1:
        loss_fn = torch.nn.parallel.DistributedDataParallel(
            ObjectiveLoss(objective, models),
            broadcast_buffers=False,
            device_ids=[device.index] if device.type == "cuda" else None,
        )
    if ctx.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", dump(cfg))
    log = MetricsLog(run_dir / "metrics.jsonl", start) if ctx.main else None
    loader = DataLoader(
        dataset,
        batch_sampler=StepBatches(
            len(dataset), cfg.batch_size, cfg.seed, start, cfg.steps, part or slice(None)
        ),
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    bar = tqdm(
        total=cfg.steps,
        initial=start,
        disable=not (progress and ctx.main),
        desc=cfg.kind,
        unit="step",
    )
    path, warned, t0 = last, False, time.perf_counter()
    try:
        for step, item in enumerate(loader, start=start):
            lr, wd = set_schedules(opt, step, cfg)
            batch = make_batch(item, step, cfg, policy, device, part)
            metrics = distributed.mean_metrics(
                train_step(models, objective, opt, batch, cfg, loss_fn)
            )
            metrics.update(objective.after_step(models, step + 1, cfg.steps))
            dt, t0 = time.perf_counter() - t0, time.perf_counter()
            row = {
                "step": step + 1,
                "lr": lr,
                "wd": wd,
                "samples_per_s": batch.x.shape[0] * ctx.world / dt,
                **metrics,
            }
            if log is not None:
                log.write(row)
            if tracker is not None and ctx.main:
                tracker.log_metrics({k: v for k, v in row.items() if k != "step"}, step + 1)
            if "rankme" in metrics and (
                msg := collapse_warning(metrics, models["encoder"].embed_dim)
            ):
                bar.write(f"warning (step {step + 1}): {msg}")
                warned = True
            bar.set_postfix(
                loss=f"{metrics['loss']:.4f}", lr=f"{lr:.2e}", per_s=f"{row['samples_per_s']:.0f}"
            )
            bar.update(1)
            if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps:
                if ctx.main:
                    path = save(run_dir, step + 1, models, opt, cfg, meta)
                distributed.barrier()
    finally:
        bar.close()
        if log is not None:
            log.close()
    if warned and ctx.main:
        print("warning: collapse monitors fired during training; see metrics.jsonl")
    path = path or latest_checkpoint(run_dir)
    if path is None:
        raise JepalabError(f"{run_dir}: nothing to train (steps={cfg.steps})")
    return path


def _pretrain_setup(cfg: PretrainConfig) -> tuple[Dataset, Objective, nn.ModuleDict, Any]:
    dataset = make_dataset(cfg)
    torch.manual_seed(cfg.seed)
    objective = build_objective(cfg)
    models = objective.build(build_encoder(cfg))
    policy = None
    if objective.needs_masks and cfg.mask.kind != "none":
        policy = build_mask_policy(cfg.mask.kind, models["encoder"].grid, **cfg.mask.params)
    return dataset, objective, models, policy


def _pretrain_meta(dataset: Dataset, policy: Any) -> dict[str, Any]:
    return {
        "data_fingerprint": dataset.fingerprint(),
        "mask_policy": policy.config if policy is not None else None,
    }


def pretrain(
    cfg: PretrainConfig, resume: bool = False, progress: bool = True, tracker: Any = None
) -> Path:
    """Pretrain an encoder per `cfg`; returns the final checkpoint directory."""
    dataset, objective, models, policy = _pretrain_setup(cfg)
    return fit(
        cfg,
        objective,
        models,
        dataset,
        policy,
        _pretrain_meta(dataset, policy),
        resume,
        progress,
        tracker,
        workers=cfg.data.workers,
    )


def init_checkpoint(cfg: PretrainConfig, path: str | Path) -> Path:
    """The step-0 checkpoint of `cfg`: the random-init baseline, initialised exactly as `pretrain`
    initialises the run it is compared with (same seed, same architecture, no training)."""
    dataset, objective, models, policy = _pretrain_setup(cfg)
    meta = {
        "kind": "pretrain",
        "step": 0,
        "config": json.loads(cfg.model_dump_json()),
        **_pretrain_meta(dataset, policy),
        "note": "random initialisation (no pretraining)",
    }
    return save_checkpoint(path, {"model": dict(models.state_dict())}, meta)
