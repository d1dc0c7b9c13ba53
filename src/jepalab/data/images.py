"""Image sources that need no simulator: a procedural shapes set (offline, deterministic) and a
folder of PNG/JPEG files of any size (resized). Both yield uint8 tensors [3, H, W]."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from jepalab.errors import JepalabError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def render_shapes(rng: np.random.Generator, size: int) -> np.ndarray:
    """1-3 random circles / rectangles / triangles on a two-colour gradient -> uint8 [H, W, 3]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c0, c1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * xx + np.sin(angle) * yy + 1.5) / 3.0
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    for _ in range(rng.integers(1, 4)):
        cx, cy = rng.uniform(0.15, 0.85, 2)
        r = rng.uniform(0.08, 0.25)
        kind = rng.integers(3)
        if kind == 0:
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 < r**2
        elif kind == 1:
            a = rng.uniform(0.5, 1.5)
            inside = (np.abs(xx - cx) < r * a) & (np.abs(yy - cy) < r / a)
        else:
            inside = (yy - cy < r) & (np.abs(xx - cx) < (yy - cy + r) / 2)
            inside &= yy - cy > -r
        img[inside] = rng.uniform(0, 1, 3)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


class ShapesDataset(Dataset):
    """`num` procedurally generated images; item i depends only on (seed, i)."""

    def __init__(self, num: int, image_size: int, seed: int = 0) -> None:
        self.num, self.size, self.seed = num, image_size, seed

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, i: int) -> torch.Tensor:
        img = render_shapes(np.random.default_rng([self.seed, i]), self.size)
        return torch.from_numpy(img).permute(2, 0, 1).contiguous()

    def fingerprint(self) -> str:
        return hashlib.sha256(f"shapes:{self.seed}:{self.num}:{self.size}".encode()).hexdigest()


def _load_image(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))


class ImageFolderDataset(Dataset):
    """All images under a folder (recursively), checked when the set is opened.

    An unreadable file is an error naming it, unless `skip_bad`, which skips and counts it.
    """

    def __init__(self, root: str | Path, image_size: int, skip_bad: bool = False) -> None:
        root = Path(root)
        if not root.is_dir():
            raise JepalabError(f"data.path: image folder '{root}' does not exist")
        self.size = image_size
        self.files: list[Path] = []
        self.skipped: list[Path] = []
        for p in sorted(root.rglob("*")):
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(p) as im:
                    im.verify()
                self.files.append(p)
            except (OSError, UnidentifiedImageError, SyntaxError) as e:
                if not skip_bad:
                    raise JepalabError(
                        f"{p}: unreadable image ({type(e).__name__}); "
                        "fix or remove it, or set data.skip_bad=true to skip such files"
                    ) from None
                self.skipped.append(p)
        if not self.files:
            raise JepalabError(f"data.path: no readable images under '{root}'")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        try:
            img = _load_image(self.files[i], self.size)
        except (OSError, UnidentifiedImageError) as e:
            raise JepalabError(f"{self.files[i]}: unreadable image ({e})") from None
        return torch.from_numpy(img.copy()).permute(2, 0, 1).contiguous()

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for p in self.files:
            h.update(f"{p.name}:{p.stat().st_size}\n".encode())
        return h.hexdigest()
