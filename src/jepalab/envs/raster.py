"""Small numpy rasterisation helpers shared by the 2-D scenes and the pixel-level perturbations.

Coordinates are pixel coordinates (x right, y down, pixel centres at integer + 0.5). Images are
uint8 [H, W, 3]; masks are float32 coverage in [0, 1]. Edges are anti-aliased with a one-pixel
signed-distance ramp, which keeps sub-pixel motion visible at 64x64.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np


def disc_coverage(
    cx: float, cy: float, radius: float, h: int, w: int
) -> tuple[slice, slice, np.ndarray]:
    """Anti-aliased disc coverage on its bounding box: (rows, cols, mask [h', w'])."""
    x0, x1 = max(int(np.floor(cx - radius - 1)), 0), min(int(np.ceil(cx + radius + 1)), w)
    y0, y1 = max(int(np.floor(cy - radius - 1)), 0), min(int(np.ceil(cy + radius + 1)), h)
    if x1 <= x0 or y1 <= y0:
        return slice(0, 0), slice(0, 0), np.zeros((0, 0), np.float32)
    xs = np.arange(x0, x1, dtype=np.float32) + 0.5 - cx
    ys = np.arange(y0, y1, dtype=np.float32) + 0.5 - cy
    dist = np.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)
    mask = np.clip(radius + 0.5 - dist, 0.0, 1.0)
    return slice(y0, y1), slice(x0, x1), mask


def box_coverage(
    x0: float, y0: float, x1: float, y1: float, h: int, w: int
) -> tuple[slice, slice, np.ndarray]:
    """Anti-aliased coverage of an axis-aligned box (separable: one outer product)."""
    c0, c1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)), w)
    r0, r1 = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)), h)
    if c1 <= c0 or r1 <= r0:
        return slice(0, 0), slice(0, 0), np.zeros((0, 0), np.float32)
    xs = np.arange(c0, c1, dtype=np.float32) + 0.5
    ys = np.arange(r0, r1, dtype=np.float32) + 0.5
    cx = np.clip(np.minimum(xs - x0, x1 - xs) + 0.5, 0.0, 1.0)
    cy = np.clip(np.minimum(ys - y0, y1 - ys) + 0.5, 0.0, 1.0)
    return slice(r0, r1), slice(c0, c1), cy[:, None] * cx[None, :]


def convex_coverage(verts: np.ndarray, h: int, w: int) -> tuple[slice, slice, np.ndarray]:
    """Anti-aliased coverage of a convex polygon (verts [K, 2] pixel xy, any winding)."""
    v = np.asarray(verts, np.float64)
    x0, x1 = max(int(np.floor(v[:, 0].min() - 1)), 0), min(int(np.ceil(v[:, 0].max() + 1)), w)
    y0, y1 = max(int(np.floor(v[:, 1].min() - 1)), 0), min(int(np.ceil(v[:, 1].max() + 1)), h)
    if x1 <= x0 or y1 <= y0:
        return slice(0, 0), slice(0, 0), np.zeros((0, 0), np.float32)
    e = np.roll(v, -1, axis=0) - v
    n = np.stack([e[:, 1], -e[:, 0]], axis=1)
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    # Whatever the winding, make every edge normal point away from the centroid.
    n *= np.sign(np.sum(n * (v - v.mean(axis=0)), axis=1))[:, None]
    c = np.sum(n * v, axis=1)
    xs = np.arange(x0, x1, dtype=np.float32) + 0.5
    ys = np.arange(y0, y1, dtype=np.float32) + 0.5
    sd = np.full((y1 - y0, x1 - x0), -np.inf, np.float32)
    for k in range(len(v)):
        d = ys[:, None] * np.float32(n[k, 1]) + xs[None, :] * np.float32(n[k, 0]) - np.float32(c[k])
        np.maximum(sd, d, out=sd)
    return slice(y0, y1), slice(x0, x1), np.clip(0.5 - sd, 0.0, 1.0)


def blend(img: np.ndarray, rows: slice, cols: slice, mask: np.ndarray, color: np.ndarray) -> None:
    """In place: img[rows, cols] = mix(img, color, mask). img float32 [H, W, 3], color [3]."""
    if mask.size == 0:
        return
    patch = img[rows, cols]
    patch += mask[..., None] * (np.asarray(color, np.float32) - patch)


def adjust_colors(
    colors: np.ndarray, brightness: float = 0.0, contrast: float = 0.0, hue_deg: float = 0.0
) -> np.ndarray:
    """Palette lighting: colours [K, 3] in [0, 1] -> shifted colours [K, 3].

    Contrast scales around mid-grey (factor 1 + contrast), brightness adds, hue rotates in HSV.
    """
    out = np.empty_like(np.asarray(colors, np.float64))
    for i, (r, g, b) in enumerate(np.asarray(colors, np.float64)):
        hh, ss, vv = colorsys.rgb_to_hsv(r, g, b)
        out[i] = colorsys.hsv_to_rgb((hh + hue_deg / 360.0) % 1.0, ss, vv)
    out = (out - 0.5) * (1.0 + contrast) + 0.5 + brightness
    return np.clip(out, 0.0, 1.0)


@dataclass
class ViewWarp:
    """A fixed view shift (translation, rotation, zoom) as a precomputed bilinear resampling.

    ``apply(img)`` costs four gathers per frame. Samples outside the frame replicate the border
    (a camera that moved still sees floor there).
    """

    idx: np.ndarray  # [4, H*W] flat source indices
    weights: np.ndarray  # [4, H*W, 1]

    @classmethod
    def make(cls, size: int, dx: float, dy: float, rot_deg: float, zoom: float) -> ViewWarp:
        """dx, dy: fractions of the view; rot_deg: degrees; zoom > 0 zooms in."""
        c = size / 2.0
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
        th = np.deg2rad(rot_deg)
        s = 1.0 / (1.0 + zoom)
        u, v = (xs - c) * s, (ys - c) * s
        src_x = np.cos(th) * u - np.sin(th) * v + c - dx * size - 0.5
        src_y = np.sin(th) * u + np.cos(th) * v + c - dy * size - 0.5
        x0, y0 = np.floor(src_x), np.floor(src_y)
        fx, fy = (src_x - x0).ravel(), (src_y - y0).ravel()
        idx, w = [], []
        for oy, ox, wt in (
            (0, 0, (1 - fy) * (1 - fx)),
            (0, 1, (1 - fy) * fx),
            (1, 0, fy * (1 - fx)),
            (1, 1, fy * fx),
        ):
            ix = np.clip(x0 + ox, 0, size - 1).astype(np.intp).ravel()
            iy = np.clip(y0 + oy, 0, size - 1).astype(np.intp).ravel()
            idx.append(iy * size + ix)
            w.append(wt)
        return cls(np.stack(idx), np.stack(w).astype(np.float32)[..., None])

    def apply(self, img: np.ndarray) -> np.ndarray:
        """uint8 [H, W, 3] -> warped uint8 [H, W, 3]."""
        h, w, ch = img.shape
        # Channel planes + np.take: several times faster than fancy-indexing [HW, 3] rows.
        planes = img.reshape(h * w, ch).T.astype(np.float32)
        taps = planes.take(self.idx.ravel(), axis=1).reshape(ch, 4, h * w)
        out = np.einsum("ckp,kp->pc", taps, self.weights[..., 0])
        return (out + 0.5).astype(np.uint8).reshape(h, w, ch)


def random_color(rng: np.random.Generator) -> np.ndarray:
    """A saturated random colour [3] in [0, 1]."""
    h = rng.uniform()
    return np.array(colorsys.hsv_to_rgb(h, rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0)))


def _capsule_sd(
    px: np.ndarray, py: np.ndarray, a: np.ndarray, b: np.ndarray, r: float
) -> np.ndarray:
    ab = b - a
    t = np.clip(((px - a[0]) * ab[0] + (py - a[1]) * ab[1]) / float(ab @ ab), 0.0, 1.0)
    return np.hypot(px - a[0] - t * ab[0], py - a[1] - t * ab[1]) - r


@dataclass
class HandOccluder:
    """A hand-like occluder (forearm, palm, four fingers, thumb) entering from one image edge.

    The shape is rasterised once per episode on a 3x canvas; each step a window of it slides
    (integer pixels) along a smooth Lissajous path, so the per-step cost is one blend.
    """

    canvas: np.ndarray  # [3N, 3N] coverage
    size: int
    center: np.ndarray  # [2] mean fingertip offset (canvas window origin), pixels
    amp: np.ndarray  # [2]
    omega: np.ndarray  # [2]
    phase: np.ndarray  # [2]
    color: np.ndarray  # [3] in [0, 255]

    @classmethod
    def sample(
        cls, size: int, length: float, speed: float, rng: np.random.Generator
    ) -> HandOccluder:
        """length: hand length as a fraction of the view; speed: max motion (fraction/step)."""
        n = size
        big = 3 * n
        ys, xs = np.mgrid[0:big, 0:big].astype(np.float32) + 0.5
        L = length * n
        # Hand pointing in +y (down) with the palm centre at the canvas centre; rotated below.
        ang = rng.uniform(-0.4, 0.4) + rng.integers(4) * np.pi / 2
        rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        cen = np.array([big / 2, big / 2])

        def p(x: float, y: float) -> np.ndarray:
            return cen + rot @ np.array([x, y]) * L

        sd = _capsule_sd(xs, ys, p(0, -2.0), p(0, -0.1), 0.16 * L)  # forearm, off to the edge
        sd = np.minimum(sd, _capsule_sd(xs, ys, p(0, -0.05), p(0, 0.12), 0.22 * L))  # palm
        for i, fx in enumerate((-0.15, -0.05, 0.05, 0.15)):
            tip = 0.5 - 0.06 * abs(i - 1.5)
            sd = np.minimum(sd, _capsule_sd(xs, ys, p(fx, 0.15), p(fx * 1.2, tip), 0.045 * L))
        sd = np.minimum(sd, _capsule_sd(xs, ys, p(0.2, 0.0), p(0.38, 0.22), 0.05 * L))  # thumb
        canvas = np.clip(0.5 - sd, 0.0, 1.0).astype(np.float32)
        # Window origin such that the palm sits near a point inside the view, close to the edge
        # the forearm comes from.
        inward = rot @ np.array([0.0, 1.0])
        target = np.array([n / 2, n / 2]) - inward * n * rng.uniform(0.1, 0.25)
        center = cen - target
        amp = np.array([0.25, 0.25]) * n
        omega = np.full(2, speed * n) / amp * rng.uniform(0.6, 1.0, size=2)
        phase = rng.uniform(0, 2 * np.pi, size=2)
        tone = rng.uniform(0.0, 1.0)
        color = np.array([224.0, 172.0, 135.0]) * (1 - tone) + np.array([141.0, 85.0, 60.0]) * tone
        return cls(canvas, n, center, amp, omega, phase, color.astype(np.float32))

    def mask(self, t: int) -> np.ndarray:
        """Coverage [N, N] at step t."""
        off = self.center + self.amp * np.sin(self.omega * t + self.phase)
        ox = int(np.clip(round(off[0]), 0, 2 * self.size))
        oy = int(np.clip(round(off[1]), 0, 2 * self.size))
        return self.canvas[oy : oy + self.size, ox : ox + self.size]

    def apply(self, img: np.ndarray, t: int) -> np.ndarray:
        """New uint8 image with the hand blended over ``img`` (uint8 [N, N, 3])."""
        m = self.mask(t)[..., None]
        out = img.astype(np.float32)
        out += m * (self.color - out)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)
