"""The world-model objective: train an action-conditioned predictor on a frozen encoder's latents.

Not a pretraining objective (not in OBJECTIVES): `jepalab.train.worldmodel` builds it and hands
it to the one trainer, `fit`.

Latent space (targets, encoder outputs at planning time and predictions all live in it, so the
planner's energy is a plain distance there): the frozen encoder's tokens, layer-normed over D
without affine parameters (as JEPA targets) -> [B, N, D] for the transformer predictor, or averaged
onto a p x p grid -> [B, D*p*p] for the pooled ones (MLP, conv); then standardised per dimension
with the mean and std of training frames (`LatentNorm`, saved with the predictor). Why: consecutive
frames differ by ~0.1 of a dimension's spread (an agent is a few pixels), far below the spread of
what never moves in an episode. Measured on two-rooms (80 episodes, a 300-step I-JEPA micro ViT,
MLP, 1,500 steps at lr 1e-3): unstandardised, the model stayed at the "nothing moves" error and
ranked the true action at chance (mean normalised rank 0.48 among 64 random actions); standardised,
it reached 0.72 of that error and a mean rank of 0.05.

Loss over a window of k+1 frames, actions a_0..a_{k-1}:
    teacher forcing  tf = d(predict(z_0..z_{k-1}, a), z_1..z_k)
    rollout          ro = d(rollout(z_0, a), z_1..z_k)      (predictions fed back)
    loss = teacher_forcing * tf + rollout_weight * ro   (weights 1, 1 by default)
with d the cfg.loss distance averaged over latent dims, tokens and steps (plus the same distance
on states when the predictor uses them). With k = 1 the two terms are identical; the rollout's
first step is teacher-forced, so teacher_forcing = 0 (which skips its forward pass) still learns
every transition from encoded frames, as the first step of the windows that start there.

With `value` (pooled latents only), a learned cost-to-go is trained alongside on the same
windows: value.weight * `value_loss` (or `quasimetric_loss`, value.learning) of the transition
z_0 -> z_1 towards the window's hindsight goal (`jepalab.models.value`); TD's slow target copy
follows by EMA after each step. The value reads the standardised latents and never moves the
predictor (separate parameters). With k >= 2 the same loss is also taken at the predictor's own
one-step prediction of z_1 (detached; the transition to the real z_2), averaged with the first:
the planner scores *predicted* latents, and a value fitted on encoded frames only ranked them no
better than the L1 distance did. With `value.updates` m > 1, each step then takes m - 1 more
optimizer steps of the value alone (`extra_steps`), update j on the batch's goal draw j and the
window's transition j mod k: a value step costs a fraction of the predictor's, and at a fixed
training budget the value is what falls short first (`docs/findings.md`).

With `value.consistency` c > 0 (form "metric"), the predictor is also trained in the value's
units: loss += c * mean d(rollout(z_0, a), z_1..z_k), the learned steps between each predicted
and encoded frame, through the value's embedding held fixed (its parameters get no gradient
from this term). The L1 loss weighs every latent dimension alike, most of which hold the layout;
this term weighs a prediction's error by the steps to go it misreads (a world model that lets
the agent through a wall reads progress that is not there: `benchmarks/value_planning.py`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from typing import cast

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from jepalab.config import ValueConfig, WorldModelConfig
from jepalab.errors import JepalabError
from jepalab.models.ac_predictor import ACPredictor, build_predictor
from jepalab.models.build import FrozenEncoder
from jepalab.models.value import GoalValue, quasimetric_loss, value_loss
from jepalab.objectives.base import Batch, Objective
from jepalab.objectives.jepa import ema_update, latent_distance

FROZEN = "encoder"  # the ModuleDict entry left out of checkpoints (named by hash instead)


class LatentNorm(nn.Module):
    """Per-dimension standardisation z -> (z - mean) / std over the last dim (D); statistics are
    persistent buffers (identity until `fit`)."""

    mean: Tensor
    std: Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def forward(self, z: Tensor) -> Tensor:
        return (z - self.mean) / self.std

    @torch.no_grad()
    def fit(self, z: Tensor) -> None:
        """Statistics of raw latents z [..., D]; the variance floor (1e-6) keeps a dimension that
        never changes from being blown up into noise."""
        flat = z.reshape(-1, z.shape[-1]).double()
        self.mean.copy_(flat.mean(0))
        self.std.copy_((flat.var(0, unbiased=False) + 1e-6).sqrt())


def encode_latents(
    encoder: Callable[[Tensor], Tensor], x: Tensor, pool: int, norm: LatentNorm | None = None,
    keypoints: float | None = None,
) -> Tensor:
    """Normalised images [B, C, H, W] -> latents, float32, standardised by `norm` when given:
    pool 0: layer-normed tokens [B, N, D]; pool p >= 1: those tokens averaged onto a p x p grid
    and flattened, [B, D * p * p] (p = 1: the mean token); with `keypoints` (a temperature T),
    followed by each channel's soft-argmax over the token grid, [B, D] of x then [B, D] of y in
    (0, 1): sum_n softmax_n(h_nd / T) * position_n (`PredictorConfig.keypoints`)."""
    h = encoder(x).float()
    h = F.layer_norm(h, h.shape[-1:])
    if pool:
        side = math.isqrt(h.shape[1])
        if side * side != h.shape[1]:
            raise JepalabError(f"latent pooling needs a square token grid, got {h.shape[1]}")
        grid = rearrange(h, "b (y x) d -> b d y x", y=side)
        parts = [F.adaptive_avg_pool2d(grid, pool).flatten(1)]
        if keypoints is not None:
            w = torch.softmax(grid.flatten(2) / keypoints, -1)  # [B, D, N], tokens row-major
            at = (torch.arange(side, device=h.device, dtype=h.dtype) + 0.5) / side
            parts += [w @ at.repeat(side), w @ at.repeat_interleave(side)]  # x, y
        h = torch.cat(parts, 1)
    return norm(h) if norm is not None else h


def _fixed_distance(value: GoalValue, z: Tensor, target: Tensor) -> Tensor:
    """Mean learned steps between z and target, with gradients to z only (the value's
    parameters are treated as constants while the graph is built, then get back the flags
    they had)."""
    flags = [p.requires_grad for p in value.parameters()]
    value.requires_grad_(False)
    try:
        return value.distance(z, target).mean()
    finally:
        for p, flag in zip(value.parameters(), flags):
            p.requires_grad_(flag)


def _drop_frozen(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """state_dict post-hook: the frozen encoder's weights are not saved with the predictor."""
    for key in [k for k in state_dict if k.startswith(f"{prefix}{FROZEN}.")]:
        del state_dict[key]


def _allow_missing_frozen(module: nn.Module, incompatible: object) -> None:
    """load_state_dict post-hook: a checkpoint without the frozen encoder's weights is complete.
    (Keys are full names; the ModuleDict is the root module wherever it is loaded.)"""
    missing = incompatible.missing_keys  # type: ignore[attr-defined]
    missing[:] = [k for k in missing if not k.startswith(f"{FROZEN}.")]


class WorldModelObjective(Objective):
    """Teacher-forcing + k-step rollout loss of an action-conditioned predictor."""

    name = "worldmodel"
    needs_masks = False

    def __init__(self, run: WorldModelConfig, action_dim: int, state_dim: int) -> None:
        # not Objective.__init__: a world model has its own config, not a pretraining one
        self.wm = run
        self.action_dim, self.state_dim = action_dim, state_dim
        self.pooled = run.predictor.pooled
        self.pool = run.predictor.pool if self.pooled else 0
        self.keypoints = run.predictor.keypoints
        self.use_state = run.predictor.use_state

    def build(self, encoder: nn.Module) -> nn.ModuleDict:
        """encoder: a FrozenEncoder (or any module with `.encoder`, `.embed_dim`, `.grid`).

        Returns {"encoder": the frozen encoder, "latent_norm": LatentNorm (fit it before
        training), "predictor": the AC model}; state_dict() of the result leaves the encoder out
        (it is recorded by path and sha256)."""
        enc = cast(FrozenEncoder, encoder)
        grid = tuple(enc.grid)  # per-frame tokens (a video encoder reads static clips)
        enc.eval().requires_grad_(False)
        latent_dim = self.wm.predictor.latent_dim(enc.embed_dim)
        predictor = build_predictor(
            self.wm.predictor,
            latent_dim,
            grid,
            self.action_dim,
            self.state_dim,
            context=self.wm.rollout_steps,
        )
        norm = LatentNorm(latent_dim)
        models = nn.ModuleDict({FROZEN: enc, "latent_norm": norm, "predictor": predictor})
        if self.wm.value is not None:
            models["value"] = GoalValue.from_config(latent_dim, self.wm.value,
                                                   self.wm.predictor.pool)
            if self.wm.value.learning == "td":  # only TD bootstraps from a slow target copy
                models["value_target"] = copy.deepcopy(models["value"]).requires_grad_(False)
        models.register_state_dict_post_hook(_drop_frozen)
        models.register_load_state_dict_post_hook(_allow_missing_frozen)
        return models

    def trainable(self, models: nn.ModuleDict) -> list[str]:
        return ["predictor", "value"] if "value" in models else ["predictor"]

    def after_step(self, models: nn.ModuleDict, step: int, total_steps: int) -> dict[str, float]:
        if "value_target" in models:
            v = cast(ValueConfig, self.wm.value)
            ema_update(models["value_target"], models["value"], v.target_momentum)
        return {}

    def latents(self, x: Tensor, models: nn.ModuleDict, standardise: bool = True) -> Tensor:
        """x [B, T, C, H, W] normalised -> latents [B, T, N, D] or [B, T, D] (no gradient).
        x [B, T, D] (float) is taken as raw pooled latents, precomputed (`LatentCache`)."""
        norm = cast(LatentNorm, models["latent_norm"]) if standardise else None
        if x.ndim == 3:
            return norm(x) if norm is not None else x
        enc = cast(FrozenEncoder, models[FROZEN])
        enc.eval()  # train_step calls models.train(); the frozen encoder must stay in eval mode
        b, t = x.shape[:2]
        with torch.no_grad():
            z = encode_latents(enc.tokens, x.flatten(0, 1), self.pool, norm, self.keypoints)
        return z.reshape(b, t, *z.shape[1:])

    def _distance(self, pred: Tensor, target: Tensor) -> Tensor:
        return latent_distance(pred, target, self.wm.loss).mean()

    def loss(self, batch: Batch, models: nn.ModuleDict) -> tuple[Tensor, dict[str, float]]:
        if batch.actions is None or batch.x.ndim not in (3, 5):
            raise JepalabError("world-model batches need obs [B, k+1, C, H, W] (or latents "
                               "[B, k+1, D]) and actions")
        k = batch.actions.shape[1]
        if batch.x.shape[1] != k + 1:
            raise JepalabError(f"world-model batch: {batch.x.shape[1]} frames for {k} actions")
        z = self.latents(batch.x, models)
        pred = cast(ACPredictor, models["predictor"])
        a, s = self._inputs(batch)
        # The predictor runs in fp32 even under bf16 autocast: latent changes between
        # consecutive frames are small next to bf16's resolution at |z| ~ 1.
        with torch.autocast(batch.x.device.type, enabled=False):
            metrics: dict[str, float] = {}
            z_ro, s_ro = pred.rollout_states(z[:, 0], a, s[:, 0] if s is not None else None)
            target = z[:, 1:]
            ro = self._term("rollout", z_ro, s_ro, z, s, metrics)
            loss = self.wm.rollout_weight * ro
            if self.wm.teacher_forcing > 0:
                tf = self._term("tf", *self._teacher_forced(models, z, a, s), z, s, metrics)
                loss = loss + self.wm.teacher_forcing * tf
                metrics["tf_loss"] = float(tf.detach())
            if "value" in models:
                v = cast(ValueConfig, self.wm.value)
                v_loss, v_metrics = self._value_loss(batch, z, z_ro[:, 0].detach(), models)
                loss = loss + v.weight * v_loss
                metrics.update(v_metrics)
                if v.consistency > 0:
                    steps = _fixed_distance(cast(GoalValue, models["value"]), z_ro, target)
                    loss = loss + v.consistency * steps
                    metrics["value_consistency"] = float(steps.detach())
            # reference: the error of predicting "nothing moves" (z_{t+1} = z_t)
            copy = self._distance(z[:, :k], target)
        metrics.update(
            {"loss": float(loss.detach()), "rollout_loss": float(ro.detach()),
             "copy_loss": float(copy)})
        return loss, metrics

    def extra_steps(self, batch: Batch, models: nn.ModuleDict
                    ) -> Iterator[tuple[Tensor, dict[str, float]]]:
        """`value.updates` - 1 steps of the value alone: update j on the batch's goal draw j and
        the window's transition t = j mod k (its one-step prediction from the predictor, no
        gradient to it)."""
        v = self.wm.value
        if v is None or v.updates == 1:
            return
        a, s = self._inputs(batch)
        pred = cast(ACPredictor, models["predictor"])
        k = a.shape[1]
        with torch.no_grad(), torch.autocast(batch.x.device.type, enabled=False):
            z = self.latents(batch.x, models)
            z_next: dict[int, Tensor] = {}  # the one-step predictions the updates use, only
            for t in sorted({j % k for j in range(1, v.updates)} - {k - 1}):
                lo = max(0, t + 1 - pred.context)  # the history the predictor reads
                z_next[t] = pred(z[:, lo : t + 1], a[:, lo : t + 1],
                                 s[:, lo : t + 1] if s is not None else None)[0][:, -1]
        for j in range(1, v.updates):
            t = j % k
            with torch.autocast(batch.x.device.type, enabled=False):
                loss, metrics = self._value_loss(batch, z, z_next.get(t), models, j, t)
            yield v.weight * loss, {"loss": float(loss.detach()), **metrics}

    def _term(self, name: str, z_hat: Tensor, s_hat: Tensor | None, z: Tensor, s: Tensor | None,
              metrics: dict[str, float]) -> Tensor:
        """Distance of predicted frames 1..k (and their states, logged as state_{name}_loss) to
        the window's."""
        d = self._distance(z_hat, z[:, 1:])
        if s is not None and s_hat is not None:
            ds = self._distance(s_hat, s[:, 1:])
            metrics[f"state_{name}_loss"] = float(ds.detach())
            d = d + ds
        return d

    def _inputs(self, batch: Batch) -> tuple[Tensor, Tensor | None]:
        """The batch's actions and, for a predictor that reads them, its states (float)."""
        s = batch.states.float() if self.use_state and batch.states is not None else None
        if self.use_state and s is None:
            raise JepalabError("predictor.use_state is set but the batch has no states")
        return cast(Tensor, batch.actions).float(), s

    def _teacher_forced(self, models: nn.ModuleDict, z: Tensor, a: Tensor, s: Tensor | None
                        ) -> tuple[Tensor, Tensor | None]:
        """The predictor's one-step predictions of frames 1..k (and their states) from the
        encoded frames 0..k-1."""
        k = a.shape[1]
        pred = cast(ACPredictor, models["predictor"])
        return pred(z[:, :k], a, s[:, :k] if s is not None else None)

    def _value_loss(self, batch: Batch, z: Tensor, z_pred: Tensor | None, models: nn.ModuleDict,
                    draw: int = 0, t: int = 0) -> tuple[Tensor, dict[str, float]]:
        """On goal draw `draw` of the batch: the transition from the encoded frame t and, with
        a frame t + 2 in the window, from the predicted frame t + 1 (module docstring);
        z_pred [B, D]: the predictor's frame t + 1 from the encoded frames up to t."""
        if batch.goals is None or batch.goal_steps is None:
            raise JepalabError("value: world-model batches need hindsight goals (goals, "
                               "goal_steps); train with the latent cache (pooled latents)")
        goal = self.latents(batch.goals[:, draw : draw + 1].float(), models)[:, 0]
        value = cast(GoalValue, models["value"])
        v, steps = cast(ValueConfig, self.wm.value), batch.goal_steps[:, draw]

        def learn(z0: Tensor, z1: Tensor, shift: int) -> tuple[Tensor, dict[str, float]]:
            if v.learning == "quasimetric":
                return quasimetric_loss(value, z0, z1, goal, v.penalty, v.cap)
            k = torch.where(steps >= shift, steps - shift, torch.full_like(steps, -1))
            target = cast(GoalValue, models["value_target"])
            return value_loss(value, target, z0, z1, goal, k, v.expectile)

        loss, metrics = learn(z[:, t], z[:, t + 1], t)
        if z.shape[1] >= t + 3:
            assert z_pred is not None
            pred_loss, _ = learn(z_pred, z[:, t + 2], t + 1)
            metrics["value_pred_loss"] = float(pred_loss.detach())
            loss = (loss + pred_loss) / 2
            metrics["value_loss"] = float(loss.detach())
        return loss, metrics
