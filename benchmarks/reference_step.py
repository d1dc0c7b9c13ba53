"""Our I-JEPA training step vs a reference-style one, side by side (ViT-tiny, 224 px, batch 16).

The reference side is a REFERENCE-STYLE RE-IMPLEMENTATION, NOT THE OFFICIAL CODE. It is written
here from the published description of facebookresearch/ijepa (src/train.py, the ViT and its
predictor, the multi-block collator), with the same maths and step composition:

- attention written out by hand: softmax((q @ k^T) * scale) @ v;
- masks applied in Python: one `torch.gather` per mask tensor [B, K], results concatenated along
  the batch ("apply masks"), then a per-chunk `repeat_interleave_batch`;
- the predictor embeds the context, adds gathered positional embeddings, builds mask tokens plus
  the targets' positional embeddings, repeats the context once per target mask, concatenates,
  runs its blocks, keeps the target rows and projects them back;
- target = layer-normed target-encoder output gathered at the target masks; smooth-L1 loss;
- backward, AdamW (weight decay off for biases/norms), zero_grad, then EMA of the target encoder
  in a Python loop over parameter pairs (`mul_` then `add_`), learning-rate/weight-decay
  schedules stepped per iteration;
- masks from a Python multi-block collator: one block size per batch, per-sample placement
  loops, every mask truncated to the batch minimum (so nothing is padded).

Ours is `jepalab.train.loop.train_step` + `objective.after_step` (the code `jepalab pretrain`
runs), with `objective.loss=smooth_l1` and fp32. Both sides time one optimizer step from
ready-made masks (the official code samples masks in data-loader workers, outside its step
timer); mask sampling is timed separately. Steps are interleaved (ours, reference, ours, ...)
in one process and the median is reported: the machine is shared, so single steps are noisy.

"same masks" feeds both sides the reference collator's masks (no padding), so both compute the
same function; the first step checks it (same weights -> same loss and gradients). "own masks"
(`--own-masks`) additionally times ours on its own policy, which pads to the batch maximum
instead of truncating to the minimum, i.e. it trains on more tokens than the reference.

    python benchmarks/reference_step.py [--repeats 3] [--own-masks] [--out PATH]
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jepalab.config import PretrainConfig, build
from jepalab.io import atomic_write_json
from jepalab.masks import MaskSet, build_mask_policy
from jepalab.models.build import build_encoder
from jepalab.models.vit import sincos_pos_embed
from jepalab.objectives import Batch, build_objective
from jepalab.train.loop import (
    compile_trainable,
    make_batch,
    make_optimizer,
    set_schedules,
    train_step,
)

LABEL = "reference-style re-implementation (written here), not the official I-JEPA code"
PRESET = {"name": "vit_tiny", "dim": 192, "depth": 12, "heads": 3}
PRED = {"pred_depth": 6, "pred_dim": 384, "pred_heads": 12}
MASKS = {"npred": 4, "target_scale": (0.15, 0.2), "target_aspect": (0.75, 1.5),
         "context_scale": (0.85, 1.0), "context_aspect": (1.0, 1.0), "min_keep": 10}


# ---------------------------------------------------------------- reference-style model


class RefAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, n, c))


class RefMLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class RefBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), RefAttention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), RefMLP(dim, 4 * dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def gather_masks(x: Tensor, masks: list[Tensor]) -> Tensor:
    """x [B, N, D], masks: list of [B, K] -> [len(masks) * B, K, D] (mask-major)."""
    out = []
    for m in masks:
        out.append(torch.gather(x, 1, m.unsqueeze(-1).repeat(1, 1, x.size(-1))))
    return torch.cat(out, dim=0)


def repeat_chunks(x: Tensor, b: int, repeat: int) -> Tensor:
    """Each consecutive chunk of b rows repeated `repeat` times (repeat_interleave_batch)."""
    chunks = [x[i * b : (i + 1) * b] for i in range(len(x) // b)]
    return torch.cat([torch.cat([c] * repeat, dim=0) for c in chunks], dim=0)


class RefEncoder(nn.Module):
    def __init__(self, img: int, patch: int, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.register_buffer("pos_embed", sincos_pos_embed(dim, (img // patch,) * 2)[None])
        self.blocks = nn.ModuleList(RefBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: Tensor, masks: list[Tensor] | None = None) -> Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        if masks is not None:
            x = gather_masks(x, masks)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


class RefPredictor(nn.Module):
    def __init__(self, grid: int, dim: int, pdim: int, depth: int, heads: int) -> None:
        super().__init__()
        self.predictor_embed = nn.Linear(dim, pdim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, pdim))
        self.register_buffer("pos_embed", sincos_pos_embed(pdim, (grid, grid))[None])
        self.blocks = nn.ModuleList(RefBlock(pdim, heads) for _ in range(depth))
        self.predictor_norm = nn.LayerNorm(pdim, eps=1e-6)
        self.predictor_proj = nn.Linear(pdim, dim)

    def forward(self, x: Tensor, masks_x: list[Tensor], masks: list[Tensor]) -> Tensor:
        b = len(x) // len(masks_x)
        x = self.predictor_embed(x)
        x = x + gather_masks(self.pos_embed.repeat(b, 1, 1), masks_x)
        n_ctx = x.shape[1]
        pos = gather_masks(self.pos_embed.repeat(b, 1, 1), masks)
        pos = repeat_chunks(pos, b, repeat=len(masks_x))
        tokens = self.mask_token.repeat(pos.size(0), pos.size(1), 1) + pos
        x = torch.cat([x.repeat(len(masks), 1, 1), tokens], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.predictor_proj(self.predictor_norm(x)[:, n_ctx:])


class RefStep:
    """The reference-style step: target, context, predictor, smooth-L1, backward, AdamW, EMA."""

    def __init__(self, img: int, patch: int, steps: int) -> None:
        d, h, depth = PRESET["dim"], PRESET["heads"], PRESET["depth"]
        self.encoder = RefEncoder(img, patch, d, depth, h)
        self.target = RefEncoder(img, patch, d, depth, h)
        self.target.load_state_dict(self.encoder.state_dict())
        self.target.requires_grad_(False)
        self.predictor = RefPredictor(img // patch, d, PRED["pred_dim"], PRED["pred_depth"],
                                      PRED["pred_heads"])
        groups = []
        for mod in (self.encoder, self.predictor):
            named = list(mod.named_parameters())
            groups.append({"params": [p for n, p in named if "bias" not in n and p.ndim != 1]})
            groups.append({"params": [p for n, p in named if "bias" in n or p.ndim == 1],
                           "weight_decay": 0.0, "no_wd": True})
        self.opt = torch.optim.AdamW(groups, lr=1e-3)
        self.steps = steps

    def loss(self, imgs: Tensor, masks_enc: list[Tensor], masks_pred: list[Tensor]) -> Tensor:
        with torch.no_grad():
            h = self.target(imgs)
            h = F.layer_norm(h, (h.size(-1),))
            b = len(h)
            h = repeat_chunks(gather_masks(h, masks_pred), b, repeat=len(masks_enc))
        z = self.predictor(self.encoder(imgs, masks_enc), masks_enc, masks_pred)
        return F.smooth_l1_loss(z, h)

    def step(self, it: int, imgs: Tensor, masks_enc: list[Tensor], masks_pred: list[Tensor]
             ) -> float:
        frac = it / self.steps  # schedules stepped per iteration (cosine lr, linear wd / EMA)
        lr = 1e-6 + 0.5 * (1e-3 - 1e-6) * (1 + math.cos(math.pi * frac))
        for g in self.opt.param_groups:
            g["lr"] = lr
            if not g.get("no_wd"):
                g["weight_decay"] = 0.04 + 0.36 * frac
        loss = self.loss(imgs, masks_enc, masks_pred)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()
        m = 0.996 + 0.004 * frac
        with torch.no_grad():
            for q, k in zip(self.encoder.parameters(), self.target.parameters()):
                k.data.mul_(m).add_((1.0 - m) * q.detach().data)
        return float(loss)


# ---------------------------------------------------------------- reference-style collator


def ref_masks(gen: torch.Generator, b: int, side: int) -> tuple[list[Tensor], list[Tensor]]:
    """Multi-block masks as the reference collator draws them: one size per batch, placement
    loops per sample, the context cut by the targets, every mask truncated to the batch min."""

    def size(scale: tuple[float, float], aspect: tuple[float, float]) -> tuple[int, int]:
        r = torch.rand(1, generator=gen).item()
        s = scale[0] + r * (scale[1] - scale[0])  # one draw sets scale and aspect (as there)
        a = aspect[0] + r * (aspect[1] - aspect[0])
        n = int(side * side * s)
        bh, bw = int(round(math.sqrt(n * a))), int(round(math.sqrt(n / a)))
        return min(max(bh, 1), side - 1), min(max(bw, 1), side - 1)

    def place(bh: int, bw: int, forbid: Tensor | None) -> Tensor:
        for _ in range(1000):
            top = int(torch.randint(0, side - bh, (1,), generator=gen))
            left = int(torch.randint(0, side - bw, (1,), generator=gen))
            m = torch.zeros(side, side, dtype=torch.int32)
            m[top : top + bh, left : left + bw] = 1
            if forbid is not None:
                m *= forbid
            idx = torch.nonzero(m.flatten()).squeeze(1)
            if len(idx) > MASKS["min_keep"]:
                return idx
        raise RuntimeError("no valid mask found")

    ph, pw = size(MASKS["target_scale"], MASKS["target_aspect"])
    eh, ew = size(MASKS["context_scale"], MASKS["context_aspect"])
    enc, pred = [], []
    for _ in range(b):
        blocks = [place(ph, pw, None) for _ in range(MASKS["npred"])]
        allowed = torch.ones(side * side, dtype=torch.int32)
        for idx in blocks:
            allowed[idx] = 0
        pred.append(blocks)
        enc.append([place(eh, ew, allowed.view(side, side))])
    kp = min(len(i) for blocks in pred for i in blocks)
    ke = min(len(m[0]) for m in enc)
    masks_pred = [torch.stack([blocks[j][:kp] for blocks in pred]) for j in range(MASKS["npred"])]
    return [torch.stack([m[0][:ke] for m in enc])], masks_pred


def to_maskset(masks_enc: list[Tensor], masks_pred: list[Tensor]) -> MaskSet:
    c, t = masks_enc[0], torch.stack(masks_pred, dim=1)  # [B, Kc], [B, M, Kt]
    return MaskSet(c, torch.ones_like(c, dtype=torch.bool), t, torch.ones_like(t, dtype=torch.bool))


# ---------------------------------------------------------------- ours, weights copied across


def ours(img: int, patch: int, batch: int, steps: int):
    cfg = build(PretrainConfig, {
        "steps": steps, "batch_size": batch, "precision": "fp32",
        "data": {"image_size": img},
        "model": {"preset": "tiny", "patch_size": patch, **PRED},
        "mask": {"kind": "multiblock", "params": {"min_keep": MASKS["min_keep"]}},
        "objective": {"loss": "smooth_l1"},
    })
    torch.manual_seed(0)
    obj = build_objective(cfg)
    models = obj.build(build_encoder(cfg))
    policy = build_mask_policy("multiblock", models["encoder"].grid, **cfg.mask.params)
    opt = make_optimizer(models, obj.trainable(models), cfg.optim.lr)
    return cfg, obj, models, policy, opt


def copy_weights(models: nn.ModuleDict, ref: RefStep) -> None:
    """Load our weights into the reference-style modules (same maths, different names)."""
    def enc_map(sd: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for k, v in sd.items():
            k = k.replace("trunk.", "").replace("patch_embed.proj", "patch_embed")
            out[k.replace("mlp.0", "mlp.fc1").replace("mlp.2", "mlp.fc2")] = v
        return out
    for ours_name, mod in (("encoder", ref.encoder), ("target_encoder", ref.target)):
        mod.load_state_dict(enc_map(models[ours_name].state_dict()), strict=False)
    p = {}
    for k, v in models["predictor"].state_dict().items():
        k = k.replace("proj_in", "predictor_embed").replace("proj_out", "predictor_proj")
        k = k.replace("trunk.norm", "predictor_norm").replace("trunk.", "")
        p[k.replace("mlp.0", "mlp.fc1").replace("mlp.2", "mlp.fc2")] = v
    p["mask_token"] = p["mask_token"].reshape(1, 1, -1)
    ref.predictor.load_state_dict(p, strict=False)
    ref.encoder.pos_embed.copy_(models["encoder"].pos_embed[None])
    ref.target.pos_embed.copy_(models["encoder"].pos_embed[None])
    ref.predictor.pos_embed.copy_(models["predictor"].pos_embed[None])


def check_same_function(obj, models, ref: RefStep, batch: Batch, me, mp) -> dict[str, float]:
    """Same weights and masks: losses and the qkv-weight gradient of block 0 must agree."""
    copy_weights(models, ref)
    models.train()
    loss, _ = obj.loss(batch, models)
    loss.backward()
    r = ref.loss(batch.x, me, mp)
    r.backward()
    g_ours = models["encoder"].trunk.blocks[0].attn.qkv.weight.grad
    g_ref = ref.encoder.blocks[0].attn.qkv.weight.grad
    rel = float((g_ours - g_ref).norm() / g_ref.norm().clamp_min(1e-30))
    for m in (models, ref.encoder, ref.predictor):
        m.zero_grad(set_to_none=True)
    return {"loss_ours": float(loss), "loss_reference": float(r), "grad_rel_diff": rel}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="timed steps per side (median)")
    ap.add_argument("--own-masks", action="store_true",
                    help="also time ours on its own (padded, untruncated) masks")
    ap.add_argument("--compile", action="store_true",
                    help="ours with `compile: true` (torch.compile of the trained modules, as "
                         "`jepalab pretrain` does; the warm-up round then includes compiling)")
    ap.add_argument("--out", default="benchmarks/results/reference_step.json")
    args = ap.parse_args()
    img, patch, batch = 224, 16, 16
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}")
    print(f"# reference side: {LABEL}")
    print(f"# config: preset {PRESET['name']} (dim {PRESET['dim']}, depth {PRESET['depth']}, "
          f"heads {PRESET['heads']}), img {img}, patch {patch}, batch {batch}, predictor depth "
          f"{PRED['pred_depth']} / dim {PRED['pred_dim']} / heads {PRED['pred_heads']}, masks "
          f"npred {MASKS['npred']} target_scale {MASKS['target_scale']} target_aspect "
          f"{MASKS['target_aspect']} context_scale {MASKS['context_scale']} min_keep "
          f"{MASKS['min_keep']}; step = target fwd + context fwd + predictor + smooth-L1 + "
          "backward + AdamW + EMA, fp32; ours also clips gradients (norm 1.0, its default)")
    steps = 1000
    cfg, obj, models, policy, opt = ours(img, patch, batch, steps)
    ref = RefStep(img, patch, steps)
    x = torch.randint(0, 256, (batch, 3, img, img), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(0)
    me, mp = ref_masks(gen, batch, img // patch)
    same = make_batch(x, 0, cfg, None, torch.device("cpu"))
    same.masks = [to_maskset(me, mp)]
    own = make_batch(x, 0, cfg, policy, torch.device("cpu"))
    check = check_same_function(obj, models, ref, same, me, mp)
    if args.compile:  # after the check, which copies weights by parameter name
        compile_trainable(obj, models)
    print(f"# same function: loss ours {check['loss_ours']:.6f} vs reference-style "
          f"{check['loss_reference']:.6f}; block-0 qkv grad rel. diff {check['grad_rel_diff']:.1e}")
    tokens = {"same": (int(me[0].shape[1]), int(mp[0].shape[1])),
              "own": (int(own.masks[0].context_keep.sum(1).float().mean()),
                      int(own.masks[0].target_keep.sum(2).float().mean()))}

    def t_ours(b: Batch, s: int) -> float:
        t = time.perf_counter()
        set_schedules(opt, s, cfg)
        train_step(models, obj, opt, b, cfg)
        obj.after_step(models, s + 1, cfg.steps)
        return time.perf_counter() - t

    def t_ref(s: int) -> float:
        t = time.perf_counter()
        ref.step(s, same.x, me, mp)
        return time.perf_counter() - t

    times: dict[str, list[float]] = {"ours": [], "reference": [], "ours_own_masks": []}
    for r in range(args.repeats + 1):  # the first round is a warm-up
        a, b_ = t_ours(same, r), t_ref(r)
        c = t_ours(own, r) if args.own_masks else None
        if r:
            times["ours"].append(a)
            times["reference"].append(b_)
            if c is not None:
                times["ours_own_masks"].append(c)
        print(f"# round {r}{' (warm-up)' if not r else ''}: ours {a:.2f} s, reference-style "
              f"{b_:.2f} s" + (f", ours own masks {c:.2f} s" if c is not None else ""),
              flush=True)
    med = {k: statistics.median(v) for k, v in times.items() if v}
    mask_t = {"ours": [], "reference": []}
    for s in range(3):
        t = time.perf_counter()
        policy.sample(torch.Generator().manual_seed(s), batch)
        mask_t["ours"].append(time.perf_counter() - t)
        t = time.perf_counter()
        ref_masks(torch.Generator().manual_seed(s), batch, img // patch)
        mask_t["reference"].append(time.perf_counter() - t)
    mask_med = {k: statistics.median(v) for k, v in mask_t.items()}
    if args.compile:
        print("# ours: torch.compile (inductor, dynamic shapes) of the trained modules")
    print(f"\n| implementation | masks (context / target tokens) | step s (median of "
          f"{args.repeats}) | images/s |")
    print("|---|---|---|---|")
    rows = [("ours", "ours", "same"), ("reference", "reference-style", "same")]
    if "ours_own_masks" in med:
        rows.append(("ours_own_masks", "ours (own masks: padded to batch max)", "own"))
    for key, name, m in rows:
        print(f"| {name} | {m} ({tokens[m][0]} / {tokens[m][1]}) | {med[key]:.2f} | "
              f"{batch / med[key]:.2f} |")
    ratio = med["reference"] / med["ours"]
    print(f"\nratio ours/reference-style throughput (same masks, same function): {ratio:.2f}x "
          f"(median of {args.repeats} interleaved steps; shared machine, noisy)")
    print(f"mask sampling per batch (outside both step timers): ours "
          f"{1000 * mask_med['ours']:.1f} ms, reference-style collator "
          f"{1000 * mask_med['reference']:.1f} ms")
    out = {
        "label": LABEL, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "config": {"preset": PRESET, "img": img, "patch": patch, "batch": batch, **PRED,
                   "masks": MASKS, "tokens": tokens, "compile": args.compile},
        "same_function_check": check, "step_s": times, "median_step_s": med,
        "images_per_s": {k: batch / v for k, v in med.items()},
        "ratio_ours_over_reference": ratio, "mask_sampling_s": mask_med,
    }
    atomic_write_json(Path(args.out), out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
