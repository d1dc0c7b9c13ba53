"""Episode conditions shared by the 2-D scenes (two-rooms, pusht): palette, distractors, view.

``Conditions2D.sample`` turns the reset-time perturbations into concrete values for one
episode; scenes draw with ``colors`` and finish each frame with ``finish``:

- color_shift: every palette entry blended towards its own random colour by ``amount``;
- distractors: ``count`` discs / squares drifting (and bouncing) across the view, drawn under
  the task entities and never colliding with them;
- lighting_shift: brightness, contrast and hue of the whole palette (distractors included);
- camera_shift: a fixed translation / rotation / zoom of the view (bilinear resampling);
- physics_shift: ``physics`` holds two factors exp(±U[m/2, m]) the scene interprets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from jepalab.envs import raster
from jepalab.envs.perturb import Perturbation, signed_uniform


@dataclass
class Distractor:
    pos: np.ndarray  # [2] in [0, 1] view units at t = 0
    vel: np.ndarray  # [2] view units per step
    radius: float  # view units
    square: bool

    def position(self, t: int) -> np.ndarray:
        # Straight path reflected at the borders (triangle wave): no state to carry.
        return np.abs((self.pos + self.vel * t + 1.0) % 2.0 - 1.0)


@dataclass
class Conditions2D:
    colors: np.ndarray  # [K + D, 3] in [0, 255]: K palette entries then D distractors
    n_palette: int
    distractors: list[Distractor] = field(default_factory=list)
    warp: raster.ViewWarp | None = None
    physics: np.ndarray = field(default_factory=lambda: np.ones(2))

    @classmethod
    def sample(
        cls,
        perturbation: Perturbation,
        episode_seed: int,
        palette: np.ndarray,
        image_size: int,
        distractor_radius: float,
    ) -> Conditions2D:
        """palette [K, 3] in [0, 1]; distractor_radius: size of a task object in view units."""
        palette = np.array(palette, np.float64)
        distractors: list[Distractor] = []
        d_colors = []
        if c := perturbation.get("color_shift"):
            rng = c.rng(episode_seed)
            for i in range(len(palette)):
                palette[i] += c.params["amount"] * (raster.random_color(rng) - palette[i])
        if c := perturbation.get("distractors"):
            rng = c.rng(episode_seed)
            for _ in range(int(c.params["count"])):
                distractors.append(
                    Distractor(
                        pos=rng.uniform(0.05, 0.95, size=2),
                        vel=rng.normal(0, 0.012, size=2),
                        radius=c.params["size"] * distractor_radius * rng.uniform(0.8, 1.25),
                        square=bool(rng.integers(2)),
                    )
                )
                d_colors.append(raster.random_color(rng))
        colors = np.concatenate([palette, np.reshape(d_colors, (len(d_colors), 3))])
        if c := perturbation.get("lighting_shift"):
            rng = c.rng(episode_seed)
            p = c.params
            colors = raster.adjust_colors(
                colors,
                brightness=signed_uniform(rng, p["brightness"]),
                contrast=signed_uniform(rng, p["contrast"]),
                hue_deg=signed_uniform(rng, p["hue_deg"]),
            )
        warp = None
        if c := perturbation.get("camera_shift"):
            rng = c.rng(episode_seed)
            p = c.params
            warp = raster.ViewWarp.make(
                image_size,
                signed_uniform(rng, p["translate"]),
                signed_uniform(rng, p["translate"]),
                signed_uniform(rng, p["rotate_deg"]),
                signed_uniform(rng, p["zoom"]),
            )
        physics = np.ones(2)
        if c := perturbation.get("physics_shift"):
            physics = np.exp(signed_uniform(c.rng(episode_seed), c.params["log_scale"], size=2))
        return cls(colors * 255.0, len(palette), distractors, warp, physics)

    def draw_distractors(self, img: np.ndarray, t: int) -> None:
        """In place on float32 [N, N, 3] (0..255)."""
        n = img.shape[0]
        for i, d in enumerate(self.distractors):
            cx, cy = d.position(t) * n
            r = d.radius * n
            if d.square:
                cov = raster.box_coverage(cx - r, cy - r, cx + r, cy + r, n, n)
            else:
                cov = raster.disc_coverage(cx, cy, r, n, n)
            raster.blend(img, *cov, self.colors[self.n_palette + i])

    def finish(self, img: np.ndarray) -> np.ndarray:
        """float32 [N, N, 3] (0..255) -> uint8 frame, view shift applied."""
        out = (img + 0.5).astype(np.uint8)
        return self.warp.apply(out) if self.warp is not None else out
