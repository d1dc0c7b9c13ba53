"""Look at a trajectory dataset: a contact sheet PNG and an animated GIF.

Contact sheet: one row per shown episode, ``max_frames`` columns sampled evenly over the episode
(short episodes repeat frames), each row framed green when the episode ended in success.
GIF: the same episodes side by side, played in time (an episode that ends early holds its last
frame), strided to at most ``GIF_MAX_FRAMES`` frames.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from jepalab.data.store import TrajectoryStore
from jepalab.errors import JepalabError
from jepalab.io import atomic_path

GIF_MAX_FRAMES = 200
PAD = 2
SUCCESS_RGB = (40, 180, 70)
OTHER_RGB = (90, 90, 90)


def _pick_episodes(store: TrajectoryStore, count: int) -> list[int]:
    """``count`` episodes spread evenly over the dataset (first and last included)."""
    n = store.num_episodes
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, min(count, n))})


def contact_sheet(store: TrajectoryStore, episodes: list[int], max_frames: int) -> np.ndarray:
    """uint8 [rows * (H + 2 PAD), cols * (W + 1) - 1 + 2 PAD, 3]."""
    h, w, _ = store.image_shape
    lengths = store.episode_lengths
    cols = int(min(max_frames, max(lengths[e] for e in episodes)))
    rows = []
    for e in episodes:
        ts = np.round(np.linspace(0, lengths[e] - 1, cols)).astype(int)
        ep = store.episode(e)
        ok = ep["terminated"] or bool(ep["success"][-1])
        # Frames 1 px apart on the row's colour, so scene edges do not merge across frames.
        row = np.empty((h + 2 * PAD, cols * (w + 1) - 1 + 2 * PAD, 3), np.uint8)
        row[:] = SUCCESS_RGB if ok else OTHER_RGB
        for c, t in enumerate(ts):
            x = PAD + c * (w + 1)
            row[PAD : PAD + h, x : x + w] = ep["frames"][t]
        rows.append(row)
    return np.concatenate(rows, axis=0)


def side_by_side(store: TrajectoryStore, episodes: list[int]) -> list[np.ndarray]:
    """GIF frames: uint8 [H, len(episodes) * (W + PAD), 3] per time step."""
    lengths = store.episode_lengths
    longest = int(max(lengths[e] for e in episodes))
    step = max(1, -(-longest // GIF_MAX_FRAMES))
    clips = [store.clip(e, 0, int(lengths[e])) for e in episodes]
    out = []
    for t in range(0, longest, step):
        tiles = []
        for c in clips:
            tile = np.pad(c[min(t, len(c) - 1)], ((0, 0), (0, PAD), (0, 0)), constant_values=255)
            tiles.append(tile)
        out.append(np.concatenate(tiles, axis=1))
    return out


def show(
    path: str | Path, out_dir: str | Path | None = None, episodes: int = 4, max_frames: int = 32
) -> tuple[Path, Path]:
    """Write ``contact_sheet.png`` and ``episodes.gif`` for the dataset at ``path`` into
    ``out_dir`` (default ``<path>/preview``); returns (png path, gif path)."""
    if episodes < 1 or max_frames < 1:
        raise JepalabError(
            f"show: episodes and max_frames must be >= 1, got {episodes}, {max_frames}"
        )
    store = TrajectoryStore.open(path, verify=False)
    if store.num_episodes == 0:
        raise JepalabError(f"{path}: the dataset has no episodes to show")
    out = Path(out_dir) if out_dir is not None else Path(path) / "preview"
    eps = _pick_episodes(store, episodes)
    png, gif = out / "contact_sheet.png", out / "episodes.gif"
    with atomic_path(png) as tmp:
        Image.fromarray(contact_sheet(store, eps, max_frames)).save(tmp, format="PNG")
    frames = [Image.fromarray(f) for f in side_by_side(store, eps)]
    with atomic_path(gif) as tmp:
        frames[0].save(
            tmp, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0
        )
    return png, gif


def show_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``jepalab show`` (see ``show_from_args``)."""
    p.add_argument("path", help="trajectory dataset directory")
    p.add_argument("--out-dir", default=None, help="default: <path>/preview")
    p.add_argument("--episodes", type=int, default=4)
    p.add_argument("--max-frames", type=int, default=32)


def show_from_args(args: argparse.Namespace) -> tuple[Path, Path]:
    return show(args.path, args.out_dir, episodes=args.episodes, max_frames=args.max_frames)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jepalab.data.show", description=__doc__)
    show_arguments(p)
    try:
        png, gif = show_from_args(p.parse_args(argv))
    except JepalabError as e:
        print(f"show: error: {e}", file=sys.stderr)
        return 2
    print(f"contact sheet: {png}\nanimation: {gif}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
