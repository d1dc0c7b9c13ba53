"""Train an action-conditioned world model on a frozen encoder, and load it for planning.

    path = train_worldmodel(cfg)          # the one trainer (`fit`), WorldModelObjective
    wm = load_world_model(path)           # hashes verified, encoder sha256 checked
    with torch.inference_mode():
        z0 = wm.encode(pixels)            # uint8 [B, H, W, 3] -> [B, D] or [B, N, D]
        zs = wm.unroll_from(z0, actions)  # [S, H, A] -> [S, H, ...]

The checkpoint holds the predictor and the latent standardisation, not the encoder: its manifest
names the encoder checkpoint by path and sha256 (`encoder_checkpoint`), and records the data
fingerprint, the train/val episode split and the action/state dims. Loading refuses an encoder
whose sha256 differs from the recorded one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from jepalab.config import ValueConfig, WorldModelConfig, build, same_config, stored_config
from jepalab.errors import JepalabError
from jepalab.models.ac_predictor import ACPredictor, build_predictor
from jepalab.models.build import FrozenEncoder, load_encoder, normalize_pixels
from jepalab.models.value import GoalValue, draw_goal, layout_mates
from jepalab.objectives.worldmodel import LatentNorm, WorldModelObjective, encode_latents
from jepalab.planning.base import Cost
from jepalab.train.checkpoint import checkpoint_sha, load_checkpoint, read_manifest
from jepalab.train.loop import fit, pick_device

STATS_FRAMES = 2048  # training frames sampled for the latent standardisation


def _image_size(encoder: FrozenEncoder) -> int:
    return int(encoder.config["data"]["image_size"])


def train_worldmodel(
    cfg: WorldModelConfig, resume: bool = False, progress: bool = True, tracker: Any = None
) -> Path:
    """Train the predictor of `cfg` on its frozen encoder; returns the final checkpoint.
    With `resume`, a run that already finished with this exact config and encoder is returned
    as it is (no encoder pass over the data)."""
    from jepalab.data.loaders import TransitionDataset, split_episodes
    from jepalab.data.store import TrajectoryStore

    if resume and (done := _finished(cfg)) is not None:
        return done
    encoder = load_encoder(cfg.encoder)
    store = TrajectoryStore.open(cfg.data.path)
    if store.image_shape[0] != _image_size(encoder):
        raise JepalabError(
            f"data.path: frames of {cfg.data.path} are {store.image_shape[0]} px, the encoder "
            f"{cfg.encoder} was trained on {_image_size(encoder)} px"
        )
    train_eps, val_eps = split_episodes(store, cfg.data.val_fraction, cfg.seed)
    dataset: Any = TransitionDataset(store, cfg.rollout_steps, episodes=train_eps)
    torch.manual_seed(cfg.seed)  # the predictor's initialisation
    objective = WorldModelObjective(cfg, store.action_dim, store.state_dim)
    models = objective.build(encoder)
    device = pick_device(cfg.device)
    models.to(device)
    n_stats = fit_latent_norm(models, objective, store, train_eps, cfg.seed, device)
    if objective.pooled:  # the frozen encoder runs once per frame, not once per batch
        dataset = LatentCache(dataset, models, objective, device, progress,
                              value=cfg.value, seed=cfg.seed)
    dim = cfg.predictor.latent_dim(encoder.embed_dim)
    z_shape = [dim] if objective.pooled else [int(np.prod(encoder.grid)), dim]
    meta = {
        "encoder_checkpoint": {
            "path": str(cfg.encoder),
            "resolved_path": str(Path(cfg.encoder).resolve()),
            "sha256": encoder.sha256,
        },
        "data_path": str(cfg.data.path),
        "data_fingerprint": store.fingerprint(),
        "split": {
            "seed": cfg.seed,
            "val_fraction": cfg.data.val_fraction,
            "train_episodes": train_eps.tolist(),
            "val_episodes": val_eps.tolist(),
        },
        "action_dim": store.action_dim,
        "state_dim": store.state_dim,
        "latent": {
            "kind": "pooled" if objective.pooled else "tokens",
            "pool": objective.pool,
            "keypoints": objective.keypoints,
            "shape": z_shape,
            "layernorm": True,
            "standardised": {"frames": n_stats, "sampled_from": "train_episodes"},
            "image_size": _image_size(encoder),
        },
    }
    return fit(
        cfg,
        objective,
        models,
        dataset,
        None,
        meta,
        resume,
        progress,
        tracker,
        workers=cfg.data.workers,
    )


def _finished(cfg: WorldModelConfig) -> Path | None:
    """The final checkpoint of `cfg`'s run if it finished with this config and encoder."""
    from jepalab.train.checkpoint import latest_checkpoint

    last = latest_checkpoint(cfg.out_dir)
    if last is None:
        return None
    m = read_manifest(last)
    same = (m.get("step") == cfg.steps and same_config(cfg, m.get("config", {}))
            and m.get("encoder_checkpoint", {}).get("sha256") == checkpoint_sha(cfg.encoder))
    return last if same else None


class LatentCache(torch.utils.data.Dataset):
    """A TransitionDataset with each frame replaced by its raw pooled latent, computed once:
    items {"obs": float [k+1, D], "actions", "states"}. Same windows; with `value`, each window
    appears `value.goals` times, each with its own hindsight goals, one per value update of a
    step ("goals" [value.updates, D], "goal_steps" [value.updates]; `draw_goal`: from the
    window's episode or another of its layout among these episodes), drawn from a generator
    seeded by (seed, index), so a resumed run sees the same goals."""

    def __init__(self, base: Any, models: nn.ModuleDict, objective: WorldModelObjective,
                 device: torch.device, progress: bool = True, batch: int = 256,
                 value: ValueConfig | None = None, seed: int = 0) -> None:
        from tqdm import tqdm

        self.base, self.value, self.seed = base, value, seed
        store, episodes = base.store, base.episodes.tolist()
        # Every long-lived tensor is allocated before the encoder's large per-episode
        # temporaries, or is one block: a small tensor kept per episode between them pins the
        # freed memory (glibc heap), and the process grew by ~4 MB per episode (1.2 GB for 270).
        # Actions and states are kept too, so an item reads no frame.
        self.actions: dict[int, Tensor] = {}
        self.states: dict[int, Tensor] = {}
        for e in episodes:
            self.actions[e] = torch.from_numpy(store.series(e, "actions"))
            self.states[e] = torch.from_numpy(store.series(e, "states"))
        self.lengths = {e: len(self.states[e]) for e in episodes}
        self.mates: dict[int, list[int]] = {}
        if value is not None and value.p_layout > 0:
            self.mates = layout_mates(store.layout_ids(), episodes)
            if not any(self.mates.values()):
                raise JepalabError(
                    f"value.p_layout={value.p_layout}: no two training episodes of "
                    f"{store.path} share a layout (collect with the scene's layout_every > 1)")
        ends = np.cumsum(list(self.lengths.values())).tolist()
        z_all: Tensor | None = None
        self.z: dict[int, Tensor] = {}
        for e, end in zip(tqdm(episodes, desc="encode frames", unit="ep", disable=not progress),
                          ends):
            x = normalize_pixels(torch.from_numpy(store.series(e, "frames")).movedim(-1, -3))
            z = torch.cat([
                objective.latents(x[i : i + batch, None].to(device), models, standardise=False)
                [:, 0].cpu() for i in range(0, len(x), batch)])
            if z_all is None:
                z_all = torch.empty(ends[-1], *z.shape[1:])
            self.z[e] = z_all[end - len(z) : end]
            self.z[e].copy_(z)

    def __len__(self) -> int:
        return len(self.base) * (self.value.goals if self.value is not None else 1)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        window = i // self.value.goals if self.value is not None else i
        e, t = self.base.locate(window)
        k = self.base.k
        item = {"obs": self.z[e][t : t + k + 1], "actions": self.actions[e][t : t + k],
                "states": self.states[e][t : t + k + 1]}
        if self.value is not None:
            rng = np.random.default_rng((self.seed, i))
            draws = [draw_goal(rng, e, t, self.lengths, self.mates.get(e, ()), self.value)
                     for _ in range(self.value.updates)]
            item["goals"] = torch.stack([self.z[ge][goal] for ge, goal in draws])
            item["goal_steps"] = torch.tensor([goal - t if ge == e and goal >= t else -1
                                               for ge, goal in draws])
        return item


def fit_latent_norm(
    models: nn.ModuleDict,
    objective: WorldModelObjective,
    store: Any,
    episodes: np.ndarray,
    seed: int,
    device: torch.device,
    frames: int = STATS_FRAMES,
    batch: int = 256,
) -> int:
    """Set models["latent_norm"] from up to `frames` training frames drawn with `seed`;
    returns the number of frames used."""
    from jepalab.data.loaders import FrameDataset

    ds = FrameDataset(store, episodes=episodes)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(ds), size=min(frames, len(ds)), replace=False))
    parts = []
    for i in range(0, len(pick), batch):
        x = torch.stack([ds[int(j)] for j in pick[i : i + batch]]).to(device)
        parts.append(objective.latents(normalize_pixels(x)[:, None], models, standardise=False))
    cast(LatentNorm, models["latent_norm"]).fit(torch.cat(parts))
    return len(pick)


class WorldModel(nn.Module):
    """A frozen encoder + an action-conditioned predictor: the planner's model.

    Inputs and outputs stay on the module's device (no moves inside); call under
    `torch.inference_mode()`. Latents are [B, D] (mlp, conv) or [B, N, D] (transformer)."""

    def __init__(
        self,
        encoder: FrozenEncoder,
        latent_norm: LatentNorm,
        predictor: ACPredictor,
        pooled: bool,
        manifest: dict[str, Any],
        value: GoalValue | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        self.latent_norm = latent_norm.eval()
        self.predictor = predictor.eval().requires_grad_(False)
        self.value = value.eval().requires_grad_(False) if value is not None else None
        self.pooled = pooled
        self.manifest = manifest

    @property
    def encoder_sha256(self) -> str:
        return self.encoder.sha256

    @property
    def action_dim(self) -> int:
        return self.predictor.action_dim

    @property
    def state_dim(self) -> int:
        """Dims of the state the predictor takes (0: pixels only, the planner's case)."""
        return self.predictor.state_dim

    @property
    def device(self) -> torch.device:
        return self.latent_norm.mean.device

    @property
    def val_episodes(self) -> list[int]:
        return list(self.manifest["split"]["val_episodes"])

    def encode(self, pixels: Tensor) -> Tensor:
        """uint8 [B, H, W, 3] -> latents [B, D] or [B, N, D]."""
        if pixels.dtype != torch.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
            raise JepalabError(
                f"WorldModel.encode: needs uint8 [B, H, W, 3], got "
                f"{pixels.dtype} {list(pixels.shape)}"
            )
        x = normalize_pixels(pixels.movedim(-1, -3))
        latent = self.manifest["latent"]
        pool = int(latent.get("pool", 1)) if self.pooled else 0
        return encode_latents(self.encoder.tokens, x, pool, self.latent_norm,
                              latent.get("keypoints"))

    def encode_frames(self, frames: np.ndarray, batch: int = 256, flat: bool = False) -> Tensor:
        """Many frames, uint8 numpy [..., H, W, 3] -> latents [..., D] or [..., N, D] on the
        module's device, `batch` frames per encoder call (inference mode). flat: token latents
        averaged to one vector [..., D] (what probes and retrieval take)."""
        lead = frames.shape[:-3]
        x = torch.from_numpy(np.ascontiguousarray(frames.reshape(-1, *frames.shape[-3:])))
        with torch.inference_mode():
            z = torch.cat([self.encode(x[i : i + batch].to(self.device))
                           for i in range(0, len(x), batch)])
            if flat and z.ndim == 3:
                z = z.mean(1)
        return z.reshape(*lead, *z.shape[1:])

    def predict(self, z: Tensor, a: Tensor, s: Tensor | None = None) -> Tensor:
        """One step: z [B, ...], a [B, A] (s [B, S]) -> z_next [B, ...]."""
        s_hist = s[:, None] if s is not None else None
        return self.predictor.predict(z[:, None], a[:, None], s_hist)[:, 0]

    def rollout(self, z0: Tensor, actions: Tensor, s0: Tensor | None = None) -> Tensor:
        """z0 [B, ...], actions [B, H, A] (s0 [B, S]) -> latents [B, H, ...] of frames 1..H."""
        self._check_actions(actions)
        return self.predictor.rollout(z0, actions.to(z0.dtype), s0)

    def unroll_from(self, z0: Tensor, actions: Tensor) -> Tensor:
        """The planner's call: z0 [1 or S, ...], actions [S, H, A] -> latents [S, H, ...]."""
        if self.state_dim:
            raise JepalabError(
                "this world model was trained with predictor.use_state; the "
                "planner gives pixels only (use rollout(z0, actions, s0))"
            )
        self._check_actions(actions)
        if z0.shape[0] == 1:
            z0 = z0.expand(actions.shape[0], *z0.shape[1:])
        elif z0.shape[0] != actions.shape[0]:
            raise JepalabError(
                f"unroll_from: z0 has {z0.shape[0]} rows, actions "
                f"{actions.shape[0]} (need 1 or equal)"
            )
        return self.predictor.rollout(z0, actions.to(z0.dtype))

    def value_energy(self, weights: str = "final") -> Callable[[Tensor], Cost]:
        """The learned cost-to-go as the planner's energy (`GoalValue.energy`)."""
        if self.value is None:
            raise JepalabError("controller.metric: 'value' needs a world model trained with "
                               "`value` (a learned cost-to-go); this one has none")
        return self.value.energy(weights, "controller")

    def _check_actions(self, actions: Tensor) -> None:
        if actions.ndim != 3 or actions.shape[-1] != self.action_dim:
            raise JepalabError(
                f"world model: actions must be [B, H, {self.action_dim}], got {list(actions.shape)}"
            )


def load_world_model(path: str | Path, encoder: str | Path | None = None) -> WorldModel:
    """A world-model checkpoint -> WorldModel (eval mode, CPU), every hash verified.

    encoder: where to find the encoder checkpoint if it moved (default: the recorded path); it
    must have the recorded sha256 either way."""
    manifest = read_manifest(path)
    if manifest.get("kind") != "worldmodel":
        raise JepalabError(f"{path}: not a world-model checkpoint (kind={manifest.get('kind')})")
    manifest, tensors = load_checkpoint(path, names=("model",))
    cfg = build(WorldModelConfig, stored_config(manifest["config"]),
                source=f"{path}/manifest.json")
    rec = manifest["encoder_checkpoint"]
    if encoder is not None:
        enc_path = Path(encoder)
    else:  # the path as given at training time (relative to that cwd), else its resolved form
        found = [
            p
            for p in (Path(rec["path"]), Path(rec["resolved_path"]))
            if (p / "manifest.json").is_file()
        ]
        enc_path = found[0] if found else Path(rec["path"])
    sha = checkpoint_sha(enc_path)
    if sha != rec["sha256"]:
        raise JepalabError(
            f"{path}: encoder checkpoint {enc_path} has sha256 {sha[:12]}, but this world model "
            f"was trained on {rec['sha256'][:12]}; refusing to pair them"
        )
    enc = load_encoder(enc_path)
    if enc.sha256 != rec["sha256"]:  # re-read after the verified load (no race with a rewrite)
        raise JepalabError(f"{path}: encoder checkpoint {enc_path} changed while loading")
    pooled = manifest["latent"]["kind"] == "pooled"
    latent_dim = cfg.predictor.latent_dim(enc.embed_dim)
    predictor = build_predictor(
        cfg.predictor,
        latent_dim,
        tuple(enc.grid),
        manifest["action_dim"],
        manifest["state_dim"],
        context=cfg.rollout_steps,
    )
    norm = LatentNorm(latent_dim)
    value = (GoalValue.from_config(latent_dim, cfg.value, cfg.predictor.pool)
             if cfg.value is not None else None)

    def part(prefix: str) -> dict[str, Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors["model"].items() if k.startswith(prefix)}

    try:
        predictor.load_state_dict(part("predictor."))
        norm.load_state_dict(part("latent_norm."))
        if value is not None:
            value.load_state_dict(part("value."))
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise JepalabError(f"{path}: predictor weights do not match its config ({first})") from None
    return WorldModel(enc, norm, predictor, pooled, manifest, value)
