"""`jepalab diagnose`: per-dimension latent residuals of a JEPA checkpoint on its own data."""

from __future__ import annotations

from pathlib import Path

import torch

from jepalab.errors import JepalabError
from jepalab.eval.residuals import ResidualReport, latent_residuals
from jepalab.masks import build_mask_policy
from jepalab.models.build import load_pretrain
from jepalab.train.loop import batch_indices, make_batch, make_dataset, pick_device


@torch.inference_mode()
def diagnose(ckpt: str | Path, batches: int = 4, seed: int = 12345) -> ResidualReport:
    """Predicted vs target embeddings at masked positions over `batches` fresh draws."""
    cfg, objective, models = load_pretrain(ckpt)
    if not hasattr(objective, "pairs"):
        raise JepalabError(f"{ckpt}: objective '{cfg.objective.name}' has no latent predictor")
    device = pick_device(cfg.device)
    models.to(device)
    dataset = make_dataset(cfg)
    policy = build_mask_policy(cfg.mask.kind, models["encoder"].grid, **cfg.mask.params)
    diag_cfg = cfg.model_copy(update={"seed": seed})
    preds, tgts = [], []
    for b in range(batches):
        x = torch.stack([dataset[i] for i in batch_indices(b, cfg.batch_size, len(dataset), seed)])
        for p, t, keep in objective.pairs(make_batch(x, b, diag_cfg, policy, device), models):
            preds.append(p[keep].float().cpu())
            tgts.append(t[keep].float().cpu())
    return latent_residuals(torch.cat(preds), torch.cat(tgts))
