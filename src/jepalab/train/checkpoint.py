"""Checkpoints: safetensors weights + a JSON manifest, written atomically, verified on load.

A checkpoint is a directory:
    manifest.json        format, kind, step, resolved config, git, data fingerprint, and for every
                         file its sha256 and size
    model.safetensors    module weights, keys prefixed by module name ("encoder.trunk...")
    optim.safetensors    optimizer tensors (optional); scalar state lives in the manifest
The directory is written under a temporary name and renamed, so a crash never leaves a
half-written checkpoint. Loading re-hashes every file and refuses any mismatch. No pickles.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from jepalab import __version__
from jepalab.errors import JepalabError
from jepalab.io import atomic_write_text, git_info, now_iso, sha256_file

FORMAT = "jepalab.checkpoint/1"


def save_checkpoint(
    path: str | Path, tensors: dict[str, dict[str, Tensor]], meta: dict[str, Any]
) -> Path:
    """Write `{name}.safetensors` for each entry of `tensors` plus manifest.json, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        files = {}
        for name, tdict in tensors.items():
            fname = f"{name}.safetensors"
            save_file({k: v.detach().contiguous().cpu() for k, v in tdict.items()}, tmp / fname)
            files[fname] = {
                "sha256": sha256_file(tmp / fname),
                "bytes": (tmp / fname).stat().st_size,
            }
        manifest = {
            "format": FORMAT,
            "created_at": now_iso(),
            "jepalab_version": __version__,
            "git": git_info(),
            **meta,
            "files": files,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_manifest(path: str | Path) -> dict[str, Any]:
    mpath = Path(path) / "manifest.json"
    if not mpath.is_file():
        raise JepalabError(f"{path}: not a checkpoint (no manifest.json)")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise JepalabError(f"{mpath}: corrupt manifest ({e.msg})") from None
    if manifest.get("format") != FORMAT:
        raise JepalabError(f"{mpath}: unknown checkpoint format {manifest.get('format')!r}")
    return manifest


def load_checkpoint(
    path: str | Path, names: tuple[str, ...] | None = None
) -> tuple[dict[str, Any], dict[str, dict[str, Tensor]]]:
    """Verify hashes and load tensors -> (manifest, {name: {key: tensor}})."""
    path = Path(path)
    manifest = read_manifest(path)
    out = {}
    for fname, info in manifest["files"].items():
        name = fname.removesuffix(".safetensors")
        if names is not None and name not in names:
            continue
        fpath = path / fname
        if not fpath.is_file():
            raise JepalabError(f"{fpath}: checkpoint file missing")
        if sha256_file(fpath) != info["sha256"]:
            raise JepalabError(f"{fpath}: sha256 mismatch — the file is corrupt or truncated")
        try:
            out[name] = load_file(fpath)
        except SafetensorError as e:
            raise JepalabError(f"{fpath}: unreadable safetensors ({e})") from None
    return manifest, out


def checkpoint_sha(path: str | Path) -> str:
    """The identity of a checkpoint's weights: sha256 of model.safetensors (from the manifest)."""
    return read_manifest(path)["files"]["model.safetensors"]["sha256"]


def module_tensors(models: nn.ModuleDict) -> dict[str, Tensor]:
    return dict(models.state_dict())


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (safetensors) and JSON-able metadata."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for k, v in state.items():
            if isinstance(v, Tensor):
                tensors[f"{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def restore_optimizer(
    opt: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint under run_dir/checkpoints, by step."""
    ckdir = Path(run_dir) / "checkpoints"
    if not ckdir.is_dir():
        return None
    done = sorted(p for p in ckdir.glob("step_*") if (p / "manifest.json").is_file())
    return done[-1] if done else None


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    ckdir = Path(run_dir) / "checkpoints"
    done = sorted(p for p in ckdir.glob("step_*") if (p / "manifest.json").is_file())
    for p in done[:-keep]:
        shutil.rmtree(p, ignore_errors=True)
    atomic_write_text(ckdir / "latest", done[-1].name + "\n") if done else None
