"""On-disk trajectory datasets: a directory with ``manifest.json`` and memory-mapped chunks.

Layout::

    dataset/
      manifest.json                      schema, meta (scene, config, policy, seed), episode
                                         table, per-chunk file list with sha256 and byte sizes
      chunks/chunk-000000.frames.npy     uint8   [n, H, W, 3]
      chunks/chunk-000000.actions.npy    float32 [n, A]  action taken at each frame; the last
                                                         frame of an episode has a zero action
      chunks/chunk-000000.states.npy     float32 [n, S]  ground-truth state (probes only)
      chunks/chunk-000000.index.npy      structured [n]: per-frame episode (int64, global
                                         episode index), step (int32, time in the episode),
                                         last (bool, the episode's final frame), success
                                         (bool, info["is_success"]), distance (float32)

A chunk holds whole episodes (n = their total frames). Why plain ``.npy`` rather than zarr or
HDF5: ``np.load(mmap_mode="r")`` gives random access to one frame without reading the rest, with
no extra dependency; a chunk is a handful of ordinary files whose sha256 is the hash of the
bytes on disk (no codec or library version in the loop), and a memory map survives fork in
DataLoader workers. The cost is no compression (64x64 frames: 12 KiB each), which is acceptable
for the dataset sizes a CPU can train on.

Crash safety: every file is written to a temp file in the same directory and renamed
(``os.replace``); the manifest is rewritten (also atomically) only after all of a chunk's files
are on disk. A kill therefore leaves at worst temp files or unregistered chunk files, which are
removed the next time the store is opened while no writer holds the lock (``.lock``, flock).
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import jepalab
from jepalab.errors import JepalabError
from jepalab.io import atomic_path, now_iso, sha256_file

SCHEMA_VERSION = 1
FORMAT = "jepalab-trajectories"
MANIFEST = "manifest.json"
CHUNK_DIR = "chunks"
LOCK = ".lock"
FILE_MODE = 0o644  # mkstemp's 0600 would make a shared dataset unreadable to others
ARRAYS = ("frames", "actions", "states", "index")
# Small per-frame fields share one file: every file costs an fsync, open and rename per chunk.
INDEX_DTYPE = np.dtype(
    [("episode", "<i8"), ("step", "<i4"), ("last", "?"), ("success", "?"), ("distance", "<f4")]
)


@dataclass
class Episode:
    """One episode of T steps: T + 1 observations and the T actions taken between them.

    frames uint8 [T+1, H, W, 3]; actions float32 [T, A]; states float32 [T+1, S];
    success bool [T+1] and distance float32 [T+1] (from ``info`` after each reset/step);
    seed: the reset seed; terminated: ended by success (else by the time limit / step cap);
    policy: which (sub-)policy acted, e.g. "expert" or "random".
    """

    frames: np.ndarray
    actions: np.ndarray
    states: np.ndarray
    success: np.ndarray
    distance: np.ndarray
    seed: int
    terminated: bool = False
    policy: str = ""

    def __len__(self) -> int:
        return len(self.frames)


def _check_episode(ep: Episode, i: int, shapes: dict[str, Any]) -> None:
    """Raise naming episode ``i`` if its arrays are inconsistent or differ from ``shapes``."""
    where, n = f"episode {i} (seed {ep.seed})", len(ep.frames)
    if ep.frames.dtype != np.uint8 or ep.frames.ndim != 4 or ep.frames.shape[-1] != 3 or n < 1:
        raise JepalabError(
            f"{where}: frames must be uint8 [T+1, H, W, 3] with T >= 0, got "
            f"{ep.frames.dtype} {ep.frames.shape}"
        )
    rows = {"actions": (n - 1, 2), "states": (n, 2), "success": (n, 1), "distance": (n, 1)}
    for name, (count, ndim) in rows.items():
        shape = np.shape(getattr(ep, name))
        if len(shape) != ndim or shape[0] != count:
            raise JepalabError(
                f"{where}: {name} must have {ndim} dim(s) and {count} rows "
                f"({n} frames), got shape {shape}"
            )
    got = _shapes(ep)
    for key, want in shapes.items():
        if got[key] != want:
            raise JepalabError(f"{where}: {key} {got[key]} differs from the dataset's {want}")


def _episode_arrays(eps: list[Episode], first: int) -> dict[str, np.ndarray]:
    """Concatenate episodes into the per-frame chunk arrays (zero action on final frames)."""
    out: dict[str, list[np.ndarray]] = {k: [] for k in ARRAYS}
    for j, ep in enumerate(eps):
        n, a_dim = len(ep.frames), ep.actions.shape[1]
        out["frames"].append(ep.frames)
        out["actions"].append(
            np.concatenate([ep.actions.astype(np.float32), np.zeros((1, a_dim), np.float32)])
        )
        out["states"].append(ep.states.astype(np.float32))
        index = np.zeros(n, INDEX_DTYPE)
        index["episode"] = first + j
        index["step"] = np.arange(n)
        index["last"][-1] = True
        index["success"] = ep.success
        index["distance"] = ep.distance
        out["index"].append(index)
    return {k: np.ascontiguousarray(np.concatenate(v)) for k, v in out.items()}


class TrajectoryStore:
    """A trajectory dataset directory. Reads are memory-mapped and lazy: opening hashes the
    chunk files once (``verify``) but loads no array; a chunk's maps are opened on first use and
    cached. Pickling (DataLoader workers) drops the cached maps; each process reopens its own.

    Indices: global frame i in [0, num_frames); episode e in [0, num_episodes); time t inside
    an episode in [0, episode_lengths[e]). An episode of length L has L frames and L - 1 actions.
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self._maps: dict[tuple[int, str], np.ndarray] = {}
        self._lock_fd: int | None = None
        self._build_index()

    # ------------------------------------------------------------------ open / create

    @classmethod
    def create(cls, path: str | Path, meta: dict[str, Any]) -> TrajectoryStore:
        """A new, empty dataset at ``path`` (which must not exist or be an empty directory)."""
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise JepalabError(f"{path}: already exists and is not empty; choose another path")
        (path / CHUNK_DIR).mkdir(parents=True, exist_ok=True)
        json.dumps(meta)  # fail early (TypeError) on a meta that cannot be recorded
        now = now_iso()
        manifest = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "jepalab_version": jepalab.__version__,
            "created": now,
            "updated": now,
            "meta": meta,
            "shapes": None,
            "counts": {"episodes": 0, "frames": 0, "chunks": 0},
            "episodes": {"seeds": [], "lengths": [], "terminated": [], "policy": []},
            "chunks": [],
        }
        _write_manifest(path, manifest)
        return cls(path, manifest)

    @classmethod
    def open(cls, path: str | Path, verify: bool = True) -> TrajectoryStore:
        """Open an existing dataset; ``verify`` checks every chunk file's size and sha256."""
        path = Path(path)
        mpath = path / MANIFEST
        if not mpath.is_file():
            raise JepalabError(f"{path}: not a jepalab dataset (no {MANIFEST})")
        try:
            manifest = json.loads(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise JepalabError(f"{mpath}: unreadable manifest ({e})") from None
        if manifest.get("format") != FORMAT:
            raise JepalabError(f"{mpath}: format is {manifest.get('format')!r}, not {FORMAT!r}")
        if manifest.get("schema_version") != SCHEMA_VERSION:
            raise JepalabError(
                f"{mpath}: schema_version {manifest.get('schema_version')!r} is "
                f"not supported (this jepalab reads {SCHEMA_VERSION})"
            )
        for rec in manifest["chunks"]:
            missing = [k for k in ARRAYS if k not in rec.get("files", {})]
            if missing:
                raise JepalabError(f"{mpath}: chunk {rec.get('name')!r} lists no {missing} file")
        store = cls(path, manifest)
        store._clean_orphans()
        if verify:
            store.verify()
        return store

    def verify(self) -> None:
        """Raise JepalabError naming the first missing, truncated or altered chunk file."""
        for rec in self.manifest["chunks"]:
            for entry in rec["files"].values():
                f = self.path / entry["path"]
                if not f.is_file():
                    raise JepalabError(f"{f}: chunk file is missing")
                size = f.stat().st_size
                if size != entry["bytes"]:
                    raise JepalabError(
                        f"{f}: chunk file has {size} bytes, the manifest "
                        f"records {entry['bytes']} (truncated or damaged)"
                    )
                if sha256_file(f) != entry["sha256"]:
                    raise JepalabError(
                        f"{f}: chunk file sha256 differs from the manifest (damaged or modified)"
                    )

    def _clean_orphans(self) -> None:
        """Remove temp files and unregistered chunk files, unless a writer holds the lock."""
        try:
            if not self._try_lock():
                return
        except OSError:  # read-only location: nothing can be cleaned anyway
            return
        try:
            registered = {e["path"] for r in self.manifest["chunks"] for e in r["files"].values()}
            for d in (self.path, self.path / CHUNK_DIR):
                for f in d.glob(".*.tmp"):
                    f.unlink(missing_ok=True)
            for f in (self.path / CHUNK_DIR).glob("chunk-*.npy"):
                if f"{CHUNK_DIR}/{f.name}" not in registered:
                    f.unlink(missing_ok=True)
        finally:
            self.unlock()

    # ------------------------------------------------------------------ writer lock

    def _try_lock(self) -> bool:
        if self._lock_fd is not None:
            return True
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def lock(self) -> None:
        """Become the dataset's only writer (released by ``unlock`` or process exit)."""
        if not self._try_lock():
            raise JepalabError(f"{self.path}: another process is writing this dataset")

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------------ writing

    def append_episodes(self, episodes: list[Episode]) -> None:
        """Write ``episodes`` as one new chunk, then register it in the manifest."""
        if not episodes:
            return
        held = self._lock_fd is not None
        self.lock()
        try:
            on_disk = json.loads((self.path / MANIFEST).read_text())
            if on_disk["counts"] != self.manifest["counts"]:
                raise JepalabError(
                    f"{self.path}: the dataset changed on disk since it was "
                    "opened; reopen it before appending"
                )
            first = self.num_episodes
            shapes = self.manifest["shapes"]
            for j, ep in enumerate(episodes):
                _check_episode(ep, first + j, shapes or {})
                shapes = shapes or _shapes(ep)  # the first episode ever sets the shapes
            arrays = _episode_arrays(episodes, first)
            cid = len(self.manifest["chunks"])
            name = f"chunk-{cid:06d}"
            files = {}
            for key in ARRAYS:
                rel = f"{CHUNK_DIR}/{name}.{key}.npy"
                with atomic_path(self.path / rel) as tmp:
                    with open(tmp, "wb") as f:  # a file object: np.save would add ".npy"
                        np.save(f, arrays[key], allow_pickle=False)
                    os.chmod(tmp, FILE_MODE)
                    digest, size = sha256_file(tmp), tmp.stat().st_size
                files[key] = {"path": rel, "sha256": digest, "bytes": size}
            m = copy.deepcopy(self.manifest)  # adopted only once it is on disk
            m["shapes"] = shapes
            m["chunks"].append(
                {
                    "name": name,
                    "first_episode": first,
                    "episodes": len(episodes),
                    "frames": int(len(arrays["frames"])),
                    "files": files,
                }
            )
            table = m["episodes"]
            for ep in episodes:
                table["seeds"].append(int(ep.seed))
                table["lengths"].append(len(ep.frames))
                table["terminated"].append(bool(ep.terminated))
                table["policy"].append(ep.policy)
            m["counts"] = {
                "episodes": len(table["seeds"]),
                "frames": sum(table["lengths"]),
                "chunks": len(m["chunks"]),
            }
            m["updated"] = now_iso()
            _write_manifest(self.path, m)
            self.manifest = m
            self._build_index()
        finally:
            if not held:
                self.unlock()

    # ------------------------------------------------------------------ properties

    def _build_index(self) -> None:
        lengths = np.asarray(self.manifest["episodes"]["lengths"], np.int64)
        self._lengths = lengths
        self._ep_start = np.concatenate([[0], np.cumsum(lengths)])  # global frame of episode e
        chunks = self.manifest["chunks"]
        self._chunk_first_ep = np.asarray([c["first_episode"] for c in chunks], np.int64)
        self._chunk_start = np.asarray(  # global frame index of each chunk's first frame
            [self._ep_start[c["first_episode"]] for c in chunks], np.int64
        )

    @property
    def meta(self) -> dict[str, Any]:
        return self.manifest["meta"]

    @property
    def num_episodes(self) -> int:
        return len(self._lengths)

    @property
    def num_frames(self) -> int:
        return int(self._ep_start[-1])

    @property
    def episode_lengths(self) -> np.ndarray:
        """Frames per episode, int64 [num_episodes] (a copy)."""
        return self._lengths.copy()

    @property
    def episode_seeds(self) -> list[int]:
        return list(self.manifest["episodes"]["seeds"])

    def layout_ids(self) -> np.ndarray:
        """Per episode, an id that the episodes collected in one layout share (scene keyword
        `layout_every` K: reset seed // K), int64 [num_episodes]; without it, the seeds."""
        kwargs = self.meta.get("scene_config", {}).get("scene_kwargs", {})
        return np.asarray(self.episode_seeds, np.int64) // int(kwargs.get("layout_every", 1))

    def _shape(self, key: str) -> Any:
        if self.manifest["shapes"] is None:
            raise JepalabError(f"{self.path}: the dataset is empty (no episodes yet)")
        return self.manifest["shapes"][key]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, 3)."""
        return tuple(self._shape("image"))  # type: ignore[return-value]

    @property
    def action_dim(self) -> int:
        return int(self._shape("action_dim"))

    @property
    def state_dim(self) -> int:
        return int(self._shape("state_dim"))

    def fingerprint(self) -> str:
        """sha256 over the chunk file hashes in order: names the exact data a model saw."""
        h = hashlib.sha256()
        for rec in self.manifest["chunks"]:
            for key in ARRAYS:
                h.update(f"{key}:{rec['files'][key]['sha256']}\n".encode())
        return h.hexdigest()

    # ------------------------------------------------------------------ reading

    def _array(self, cid: int, key: str) -> np.ndarray:
        arr = self._maps.get((cid, key))
        if arr is None:
            f = self.path / self.manifest["chunks"][cid]["files"][key]["path"]
            try:
                arr = np.load(f, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise JepalabError(f"{f}: unreadable chunk file ({e})") from None
            self._maps[(cid, key)] = arr
        return arr

    def _locate_episode(self, e: int) -> tuple[int, int]:
        """(chunk id, offset of the episode's first frame inside that chunk)."""
        if not 0 <= e < self.num_episodes:
            raise IndexError(f"episode {e} out of range [0, {self.num_episodes})")
        cid = int(np.searchsorted(self._chunk_first_ep, e, side="right") - 1)
        return cid, int(self._ep_start[e] - self._chunk_start[cid])

    def _rows(self, e: int, idx: np.ndarray | slice, key: str) -> np.ndarray:
        """Rows of one chunk array (or of one field of the index) for episode e's frames."""
        cid, off = self._locate_episode(e)
        arr = self._array(cid, key) if key in ARRAYS else self._array(cid, "index")[key]
        if isinstance(idx, slice):
            return np.array(arr[off + idx.start : off + idx.stop : idx.step])
        return np.array(arr[off + idx])

    def _window(self, e: int, start: int, count: int, stride: int, what: str) -> slice:
        n = int(self._lengths[e]) if 0 <= e < self.num_episodes else 0
        self._locate_episode(e)
        last = start + (count - 1) * stride
        if count < 1 or stride < 1 or start < 0 or last >= n:
            raise IndexError(
                f"{what}: frames {start}..{last} (stride {stride}) are outside "
                f"episode {e} of {n} frames"
            )
        return slice(start, last + 1, stride)

    def frame(self, i: int) -> np.ndarray:
        """Global frame ``i`` -> uint8 [H, W, 3]."""
        if not 0 <= i < self.num_frames:
            raise IndexError(f"frame {i} out of range [0, {self.num_frames})")
        cid = int(np.searchsorted(self._chunk_start, i, side="right") - 1)
        return np.array(self._array(cid, "frames")[i - self._chunk_start[cid]])

    def locate_frame(self, i: int) -> tuple[int, int]:
        """Global frame ``i`` -> (episode, t)."""
        if not 0 <= i < self.num_frames:
            raise IndexError(f"frame {i} out of range [0, {self.num_frames})")
        e = int(np.searchsorted(self._ep_start, i, side="right") - 1)
        return e, int(i - self._ep_start[e])

    def clip(self, episode: int, start: int, length: int, stride: int = 1) -> np.ndarray:
        """Frames start, start + stride, ... of ``episode`` -> uint8 [length, H, W, 3]."""
        sl = self._window(episode, start, length, stride, "clip")
        return self._rows(episode, sl, "frames")

    def transition(self, episode: int, t: int, k: int) -> dict[str, np.ndarray]:
        """k steps from time t: obs uint8 [k+1, H, W, 3], actions float32 [k, A],
        states float32 [k+1, S] (actions[j] moves obs[j] to obs[j+1])."""
        sl = self._window(episode, t, k + 1, 1, f"transition(k={k})")
        return {
            "obs": self._rows(episode, sl, "frames"),
            "actions": self._rows(episode, slice(t, t + k), "actions"),
            "states": self._rows(episode, sl, "states"),
        }

    def series(self, e: int, key: str) -> np.ndarray:
        """One per-step field of episode ``e``, whole (``frames``, ``states``, ``success``,
        ``distance``: one row per frame; ``actions``: one fewer), without reading the others."""
        n = int(self._lengths[e]) if 0 <= e < self.num_episodes else 0
        self._locate_episode(e)
        return self._rows(e, slice(0, n - 1 if key == "actions" else n, 1), key)

    def episode(self, e: int) -> dict[str, Any]:
        """Episode ``e`` with the fields of ``Episode`` (``Episode(**store.episode(e))``)."""
        table = self.manifest["episodes"]
        return {
            **{key: self.series(e, key)
               for key in ("frames", "actions", "states", "success", "distance")},
            "seed": int(table["seeds"][e]),
            "terminated": bool(table["terminated"][e]),
            "policy": table["policy"][e],
        }

    # ------------------------------------------------------------------ pickling

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps and the lock are per-process: a worker reopens maps lazily.
        state = self.__dict__.copy()
        state["_maps"] = {}
        state["_lock_fd"] = None
        return state

    def __repr__(self) -> str:
        return (
            f"TrajectoryStore({str(self.path)!r}, episodes={self.num_episodes}, "
            f"frames={self.num_frames})"
        )


def _to_json(obj: Any, indent: int = 0) -> str:
    """Indented JSON with lists of scalars on one line (the episode table stays readable)."""
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(str(k))}: {_to_json(v, indent + 2)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        return "[\n" + ",\n".join(inner + _to_json(v, indent + 2) for v in obj) + f"\n{pad}]"
    return json.dumps(obj, default=str)


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    with atomic_path(path / MANIFEST) as tmp:
        tmp.write_text(_to_json(manifest) + "\n")
        os.chmod(tmp, FILE_MODE)


def _shapes(ep: Episode) -> dict[str, Any]:
    return {
        "image": list(ep.frames.shape[1:]),
        "action_dim": int(ep.actions.shape[1]),
        "state_dim": int(ep.states.shape[1]),
    }
