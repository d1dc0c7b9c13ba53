"""Import Meta's released I-JEPA, V-JEPA and V-JEPA 2 checkpoints as jepalab pretrain checkpoints.

One mapping engine (`map_state`) and per-family key tables. Facts about the official checkpoints
(read from facebookresearch/ijepa, facebookresearch/jepa and facebookresearch/vjepa2):

- File: a `torch.save` dict with top-level keys "encoder", "predictor", "target_encoder", "opt",
  "scaler", "epoch", "loss", "batch_size", "world_size", "lr". Module keys carry DDP's "module."
  prefix; V-JEPA and V-JEPA 2 also wrap encoder and predictor in a multi-mask wrapper whose
  attribute adds "backbone." ("module.backbone.blocks.0.attn.qkv.weight"). Both are stripped.
- Encoder: "patch_embed.proj.{weight,bias}" (Conv2d [D, 3, p, p]; V-JEPA/V-JEPA 2: Conv3d
  [D, 3, 2, p, p], tubelet 2, input [B, C, T, H, W]); "pos_embed" [1, N, D], a parameter with
  requires_grad=False holding a fixed sin-cos table; "blocks.{i}.norm1", "blocks.{i}.attn.qkv"
  ([3D, D], output laid out (3, heads, head_dim), with bias), "blocks.{i}.attn.proj",
  "blocks.{i}.norm2", "blocks.{i}.mlp.fc1", "blocks.{i}.mlp.fc2" (GELU), "norm". Pre-norm blocks,
  LayerNorm eps 1e-6, no cls token, attention scale head_dim^-0.5.
- Sizes: large 1024/24/16 heads, huge 1280/32/16, giant 1408/40/16 with mlp_ratio 48/11 (hidden
  6144); V-JEPA 2's ViT-g is "vit_giant_xformers": 1408/40 with 22 heads.
- Predictor: "predictor_embed" (Linear D -> P), "mask_token" [1, 1, P] (I-JEPA) or
  "mask_tokens.{k}" [1, 1, P] (V-JEPA: 2, V-JEPA 2: 10; picked by mask_index % count),
  "predictor_pos_embed" [1, N, P] (fixed sin-cos), "predictor_blocks.{i}.*" (same block layout,
  mlp_ratio 4), "predictor_norm", "predictor_proj" (Linear P -> D). Heads: the encoder's
  (I-JEPA, V-JEPA), 12 (V-JEPA 2). P = 384 in every release.
- Position tables: I-JEPA's 2-D table puts the column (w) encoding in the first half and the
  row in the second (ours: row first); V-JEPA's 3-D table gives time D/2 channels and height and
  width D/4 each (ours: time D/4). Neither equals our sin-cos, so they are loaded into a
  persistent "stored" buffer (ViT/Predictor pos="stored"), exactly as saved.
- V-JEPA 2 uses RoPE and no additive table: per head, three chunks of 2*((head_dim//3)//2)
  channels are rotated by the token's frame, row and column index; the rest pass through. Its
  rotation repeats the frequency vector instead of interleaving it (see `jepalab.models.rope`,
  variant "rope_vjepa2"). A "pos_embed"/"predictor_pos_embed" key, if present, is unused there
  and ignored. The V-JEPA 2 predictor sorts tokens by position before its blocks; attention is
  permutation-equivariant and positions travel with tokens, so this does not change results.
- Inputs are normalised with ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).
  By default the conversion folds that into the patch embedding so the imported encoder takes
  jepalab's normalisation (`normalize_pixels`) and computes what the original computes.

Safety: files are opened only with `torch.load(..., weights_only=True)`; a file that needs
anything beyond tensors and plain containers is refused. Verify the file's sha256 against the
published one (pass `expected_sha256`; a mismatch is refused before loading).
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from jepalab.config import PretrainConfig, build
from jepalab.errors import JepalabError
from jepalab.io import sha256_file
from jepalab.models.build import PIXEL_MEAN, PIXEL_STD
from jepalab.models.vit import PRESETS
from jepalab.train.checkpoint import save_checkpoint

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WRAPPER_PREFIXES = ("module.", "backbone.")
NO_DATA = "(none: imported official weights, see manifest source)"


@dataclass(frozen=True)
class Family:
    repo: str
    pos: Literal["stored", "rope_vjepa2"]
    mask_tokens: Literal["single", "list"]
    loss: Literal["smooth_l1", "l1"]
    pred_heads: int | None  # None: the encoder's


FAMILIES: dict[str, Family] = {
    "ijepa": Family("facebookresearch/ijepa", "stored", "single", "smooth_l1", None),
    "vjepa": Family("facebookresearch/jepa", "stored", "list", "l1", None),
    "vjepa2": Family("facebookresearch/vjepa2", "rope_vjepa2", "list", "l1", 12),
}


@dataclass(frozen=True)
class Arch:
    """One released architecture: our preset plus what the state dict cannot tell (heads, grid)."""

    preset: str
    patch: int
    image_size: int
    frames: int = 1
    tubelet: int = 2
    num_heads: int | None = None  # None: the preset's
    pred_heads: int | None = None  # None: the family's rule


ARCHS: dict[str, dict[str, Arch]] = {
    "ijepa": {
        "vith14": Arch("huge", 14, 224),
        "vith16-448": Arch("huge", 16, 448),
        "vitg16": Arch("giant", 16, 224),
    },
    "vjepa": {
        "vitl16": Arch("large", 16, 224, frames=16),
        "vith16": Arch("huge", 16, 224, frames=16),
        "vith16-384": Arch("huge", 16, 384, frames=16),
    },
    "vjepa2": {
        "vitl16": Arch("large", 16, 256, frames=16),
        "vith16": Arch("huge", 16, 256, frames=16),
        "vitg16": Arch("giant", 16, 256, frames=16, num_heads=22),
        "vitg16-384": Arch("giant", 16, 384, frames=16, num_heads=22),
    },
}


def resolve(family: str, arch: str | Arch) -> tuple[Family, Arch]:
    """(family, arch spec) by name, with an error listing the choices."""
    if family not in FAMILIES:
        raise JepalabError(f"family: unknown '{family}' (choose from {', '.join(FAMILIES)})")
    if isinstance(arch, Arch):
        return FAMILIES[family], arch
    if arch not in ARCHS[family]:
        raise JepalabError(f"arch: unknown {family} arch '{arch}' "
                           f"(choose from {', '.join(ARCHS[family])})")
    return FAMILIES[family], ARCHS[family][arch]


# ---------------------------------------------------------------- key tables


@dataclass(frozen=True)
class Rule:
    """official key template <-> our key template; {i} block, {k} mask token, {p} weight|bias.

    layout: "same"; "squeeze0" ([1, N, D] -> [N, D]); "stack" (official {k} -> row k of ours).
    """

    official: str
    ours: str
    layout: Literal["same", "squeeze0", "stack"] = "same"


_FIELDS = {"i": r"(?P<i>\d+)", "k": r"(?P<k>\d+)", "p": r"(?P<p>weight|bias)"}


def _regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w)\}", template)
    return re.compile("".join(_FIELDS[s] if n % 2 else re.escape(s) for n, s in enumerate(parts)))


def _block_rules(official: str, ours: str) -> list[Rule]:
    names = [("norm1", "norm1"), ("attn.qkv", "attn.qkv"), ("attn.proj", "attn.proj"),
             ("norm2", "norm2"), ("mlp.fc1", "mlp.0"), ("mlp.fc2", "mlp.2")]
    return [Rule(f"{official}.{{i}}.{a}.{{p}}", f"{ours}.{{i}}.{b}.{{p}}") for a, b in names]


def encoder_rules(fam: Family) -> tuple[list[Rule], list[str]]:
    """(mapping rules, ignorable official keys) for an encoder of this family."""
    rules = [Rule("patch_embed.proj.{p}", "patch_embed.proj.{p}"),
             *_block_rules("blocks", "trunk.blocks"), Rule("norm.{p}", "trunk.norm.{p}")]
    pos = Rule("pos_embed", "pos_embed", "squeeze0")
    return (rules + [pos], []) if fam.pos == "stored" else (rules, ["pos_embed"])


def predictor_rules(fam: Family) -> tuple[list[Rule], list[str]]:
    rules = [Rule("predictor_embed.{p}", "proj_in.{p}"),
             *_block_rules("predictor_blocks", "trunk.blocks"),
             Rule("predictor_norm.{p}", "trunk.norm.{p}"),
             Rule("predictor_proj.{p}", "proj_out.{p}")]
    rules.append(Rule("mask_token", "mask_token") if fam.mask_tokens == "single"
                 else Rule("mask_tokens.{k}", "mask_token", "stack"))
    pos = Rule("predictor_pos_embed", "pos_embed", "squeeze0")
    return (rules + [pos], []) if fam.pos == "stored" else (rules, ["predictor_pos_embed"])


def _listing(keys: list[str], limit: int = 12) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def strip_wrappers(sd: Mapping[str, Any], where: str) -> dict[str, Tensor]:
    """Drop DDP's "module." and the multi-mask wrapper's "backbone." prefixes."""
    out: dict[str, Tensor] = {}
    for key, t in sd.items():
        name = key
        while name.startswith(WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        if not isinstance(t, Tensor):
            raise JepalabError(f"{where}: '{key}' is a {type(t).__name__}, not a tensor")
        if name in out:
            raise JepalabError(f"{where}: '{key}' duplicates '{name}' once wrappers are stripped")
        out[name] = t
    return out


def map_state(
    sd: Mapping[str, Tensor],
    rules: list[Rule],
    ignorable: list[str],
    expected: Mapping[str, torch.Size],
    where: str,
) -> tuple[dict[str, Tensor], list[str]]:
    """Official state dict -> (our state dict, ignored official keys), checked against `expected`.

    Every official key must match a rule or be ignorable, every expected key must be produced,
    and shapes must agree; otherwise a JepalabError lists the offending keys.
    """
    out: dict[str, Tensor] = {}
    stacks: dict[str, dict[int, Tensor]] = {}
    unknown: list[str] = []
    ignored: list[str] = []
    for key, t in sd.items():
        found = [(r, m) for r in rules if (m := _regex(r.official).fullmatch(key))]
        if not found:
            (ignored if key in ignorable else unknown).append(key)
            continue
        rule, m = found[0]
        ours = rule.ours.format(**m.groupdict())
        if rule.layout == "stack":
            stacks.setdefault(ours, {})[int(m["k"])] = t
            continue
        if rule.layout == "squeeze0":
            if t.ndim < 1 or t.shape[0] != 1:
                raise JepalabError(f"{where}: '{key}' is {tuple(t.shape)}, expected [1, ...]")
            t = t[0]
        out[ours] = t
    if unknown:
        raise JepalabError(f"{where}: unknown keys in the official state dict: {_listing(unknown)}")
    for ours, rows in stacks.items():
        gaps = [k for k in range(max(rows) + 1) if k not in rows]
        if gaps:
            rule = next(r for r in rules if r.layout == "stack" and r.ours == ours)
            _missing(where, [rule.official.format(k=k) for k in gaps])
        out[ours] = torch.cat([rows[k] for k in range(len(rows))], dim=0)
    missing = [k for k in expected if k not in out]
    if missing:
        _missing(where, [_official_name(k, rules) for k in missing])
    extra = [k for k in out if k not in expected]
    if extra:
        raise JepalabError(f"{where}: keys our model does not have: {_listing(extra)}")
    bad = [f"{k} {tuple(out[k].shape)} vs ours {tuple(expected[k])}"
           for k in expected if out[k].shape != expected[k]]
    if bad:
        raise JepalabError(f"{where}: shape mismatch: {_listing(bad, 6)}")
    return out, ignored


def _missing(where: str, names: list[str]) -> None:
    raise JepalabError(f"{where}: missing keys in the official state dict: {_listing(names)}")


def _official_name(ours: str, rules: list[Rule]) -> str:
    for r in rules:
        m = _regex(r.ours).fullmatch(ours)
        if m:
            fields = {"k": "0", **m.groupdict()}
            return r.official.format(**fields)
    return ours


# ---------------------------------------------------------------- architecture


def _require(sd: Mapping[str, Tensor], key: str, where: str) -> Tensor:
    if key not in sd:
        _missing(where, [key])
    return sd[key]


def _depth(sd: Mapping[str, Tensor], prefix: str) -> int:
    ids = {int(m[1]) for k in sd if (m := re.match(rf"{prefix}\.(\d+)\.", k))}
    return max(ids) + 1 if ids else 0


def official_config(
    family: str, arch: Arch, enc: Mapping[str, Tensor], pred: Mapping[str, Tensor],
    image_size: int | None = None, frames: int | None = None,
) -> PretrainConfig:
    """The PretrainConfig that rebuilds the official model, read from the weights' shapes."""
    fam = FAMILIES[family]
    w = _require(enc, "patch_embed.proj.weight", f"{family} encoder")
    dim, depth = int(w.shape[0]), _depth(enc, "blocks")
    preset = PRESETS[arch.preset]
    heads = arch.num_heads or preset.num_heads
    if (dim, depth) != (preset.embed_dim, preset.depth):
        raise JepalabError(f"{family} encoder: dim {dim}, depth {depth} do not match arch preset "
                           f"'{arch.preset}' ({preset.embed_dim}, {preset.depth})")
    if w.shape[1] != 3 or w.shape[-1] != arch.patch:
        raise JepalabError(f"{family} encoder: patch_embed.proj.weight {tuple(w.shape)} is not "
                           f"3-channel patch {arch.patch}")
    frames = frames or arch.frames
    if (w.ndim == 5) != (frames > 1) or (w.ndim == 5 and w.shape[2] != arch.tubelet):
        raise JepalabError(f"{family} encoder: patch_embed.proj.weight {tuple(w.shape)} does not "
                           f"fit frames={frames}, tubelet={arch.tubelet}")
    pw = _require(pred, "predictor_embed.weight", f"{family} predictor")
    n_tok = (len([k for k in pred if re.fullmatch(r"mask_tokens\.\d+", k)])
             if fam.mask_tokens == "list" else 1)
    video = frames > 1
    data: dict[str, Any] = {"image_size": image_size or arch.image_size, "frames": frames}
    if video:
        data.update(source="dataset", path=NO_DATA)
    model = {
        "arch": "vit", "preset": arch.preset, "patch_size": arch.patch, "tubelet": arch.tubelet,
        "embed_dim": dim, "depth": depth, "num_heads": heads,
        "pred_dim": int(pw.shape[0]), "pred_depth": max(_depth(pred, "predictor_blocks"), 1),
        "pred_heads": arch.pred_heads or fam.pred_heads or heads,
        "pos_embed": fam.pos, "pred_mask_tokens": max(n_tok, 1),
    }
    raw = {"data": data, "model": model, "mask": {"kind": "tube" if video else "multiblock"},
           "objective": {"name": "jepa", "loss": fam.loss}, "out_dir": "runs/imported"}
    return build(PretrainConfig, raw, source=f"{family} import")


def build_models(cfg: PretrainConfig) -> nn.ModuleDict:
    """encoder / predictor / target_encoder exactly as pretraining builds them."""
    from jepalab.models.build import build_encoder
    from jepalab.objectives.base import build_objective

    return build_objective(cfg).build(build_encoder(cfg))


def fold_input_normalization(weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """Patch-embedding weights for ImageNet-normalised input -> for jepalab-normalised input.

    With x' = (x - m)/s (ours) and u_c = (x - m_c)/s_c (theirs): u_c = (s/s_c) x' + (m - m_c)/s_c,
    so W'_c = W_c s/s_c and b' = b + sum_c W_c (m - m_c)/s_c (exact: the conv has no padding).
    """
    shape = (1, 3) + (1,) * (weight.ndim - 2)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(shape)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(shape)
    w = weight.double()
    new_w = w * (PIXEL_STD / std)
    new_b = bias.double() + (w * ((PIXEL_MEAN - mean) / std)).flatten(1).sum(1)
    return new_w.to(weight.dtype), new_b.to(bias.dtype)


def convert(
    ckpt: Mapping[str, Any],
    family: str,
    arch: str | Arch,
    which: str = "target_encoder",
    fold_normalization: bool = True,
    image_size: int | None = None,
    frames: int | None = None,
) -> tuple[PretrainConfig, dict[str, Tensor], dict[str, Any]]:
    """An official checkpoint dict -> (config, our "model" tensors, source info).

    Our "target_encoder" (the downstream encoder) comes from `ckpt[which]`; our "encoder" from
    `ckpt["encoder"]` when present (else the same weights); "predictor" from `ckpt["predictor"]`.
    """
    fam, spec = resolve(family, arch)
    if not isinstance(ckpt, Mapping):
        raise JepalabError(f"{family} checkpoint: expected a dict, got {type(ckpt).__name__}")
    for key in (which, "predictor"):
        if key not in ckpt:
            raise JepalabError(f"{family} checkpoint: no '{key}' entry (top-level keys: "
                               f"{_listing([str(k) for k in ckpt])})")
    target = strip_wrappers(ckpt[which], f"{family} {which}")
    online = strip_wrappers(ckpt["encoder"], f"{family} encoder") if "encoder" in ckpt else target
    pred = strip_wrappers(ckpt["predictor"], f"{family} predictor")
    cfg = official_config(family, spec, target, pred, image_size, frames)
    with torch.device("meta"):  # shapes only: nothing is allocated
        models = build_models(cfg)
    expected = {k: v.shape for k, v in models.state_dict().items()}
    tensors: dict[str, Tensor] = {}
    ignored: list[str] = []
    enc_rules, enc_ign = encoder_rules(fam)
    pred_rules, pred_ign = predictor_rules(fam)
    parts = [("encoder", online, enc_rules, enc_ign),
             ("target_encoder", target, enc_rules, enc_ign),
             ("predictor", pred, pred_rules, pred_ign)]
    source = {"encoder": "encoder" if "encoder" in ckpt else which,
              "target_encoder": which, "predictor": "predictor"}
    for name, sd, rules, ign in parts:
        exp = {k[len(name) + 1 :]: s for k, s in expected.items() if k.startswith(name + ".")}
        where = f"{family} {source[name]}"
        mapped, skipped = map_state(sd, rules, ign, exp, where)
        ignored += [f"{name}:{k}" for k in skipped]
        for k, t in mapped.items():
            t = t.detach().to(torch.float32, copy=True).contiguous()  # own storage per tensor
            if not bool(torch.isfinite(t).all()):
                raise JepalabError(f"{where}: '{k}' holds NaN or inf values")
            tensors[f"{name}.{k}"] = t
        if fold_normalization and name != "predictor":
            w, b = f"{name}.patch_embed.proj.weight", f"{name}.patch_embed.proj.bias"
            tensors[w], tensors[b] = fold_input_normalization(tensors[w], tensors[b])
    epoch = ckpt.get("epoch")
    info = {
        "repo": fam.repo, "family": family, "arch": arch if isinstance(arch, str) else str(spec),
        "which": which, "epoch": epoch if isinstance(epoch, int) else None,
        "ignored_keys": ignored,
        "input_normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                                "folded_into_patch_embed": fold_normalization},
    }
    return cfg, tensors, info


# ---------------------------------------------------------------- files


def load_official(path: str | Path, expected_sha256: str | None = None) -> tuple[Any, str]:
    """(the loaded object, sha256 of the file). Weights-only unpickling; sha256 checked first."""
    path = Path(path)
    if not path.is_file():
        raise JepalabError(f"{path}: file not found")
    sha = sha256_file(path)
    if expected_sha256 is not None and sha != expected_sha256.strip().lower():
        raise JepalabError(f"{path}: sha256 mismatch (expected {expected_sha256.strip()}, file has "
                           f"{sha}); refusing to load it")
    try:
        try:  # mmap: the optimizer state of a large release never has to fit in memory
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message also suggests weights_only=False; only its diagnosis is passed on.
        detail = str(e).split("WeightsUnpickler error:")[-1].strip().splitlines()[0].split(". ")[0]
        if "Unsupported global" in detail:
            raise JepalabError(f"{path}: refused: not a weights-only checkpoint, it needs code to "
                               f"unpickle ({detail})") from None
        raise JepalabError(f"{path}: unreadable torch checkpoint ({detail})") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise JepalabError(f"{path}: unreadable torch checkpoint ({e})") from None
    return obj, sha


def import_official(
    src: str,
    family: Literal["ijepa", "vjepa", "vjepa2"],
    arch: str | Arch,
    out: str,
    expected_sha256: str | None = None,
    which: str = "target_encoder",
    *,
    image_size: int | None = None,
    frames: int | None = None,
    fold_normalization: bool = True,
) -> Path:
    """Convert an official checkpoint file into a jepalab pretraining checkpoint directory `out`.

    arch: a release name of `ARCHS[family]` (or an `Arch`, for other sizes).

    image_size / frames override the release's defaults (RoPE models run at any grid; models with
    a stored position table only at the one it was saved for).
    """
    resolve(family, arch)  # before hashing a multi-GB file
    ckpt, sha = load_official(src, expected_sha256)
    cfg, tensors, info = convert(ckpt, family, arch, which, fold_normalization, image_size, frames)
    del ckpt
    meta = {
        "kind": "pretrain",
        "step": 0,
        "config": json.loads(cfg.model_dump_json()),
        "data_fingerprint": None,
        "mask_policy": None,
        "source": {"repo": info["repo"], "file": Path(src).name, "sha256": sha, **info},
        "note": f"converted from the official {family} {info['arch']} release ({which})",
    }
    return save_checkpoint(out, {"model": tensors}, meta)
