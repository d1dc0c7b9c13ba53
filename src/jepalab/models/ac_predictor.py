"""Action-conditioned latent predictors (V-JEPA 2-AC style) on top of a frozen encoder.

Three models share one interface (`ACPredictor`):

- `ACTransformer` works on the encoder's latent tokens z [B, T, N, D]. Each frame becomes
  [action token, (state token), N patch tokens] at the predictor width, plus a frame-time and a
  spatial sin-cos embedding; a transformer with a block-causal mask (frame t sees frames <= t)
  outputs, at frame t's patch positions, the latent tokens of frame t+1.
- `ACMLP` works on pooled latents z [B, T, D]: a residual MLP z_{t+1} = z_t + f([z_t, a_t, s_t]),
  applied per step (Markov, no attention across time). The fast CPU default.
- `ACConv` works on the same pooled latents read as their p x p grid of D-dim cells: a residual
  stack of 3 x 3 convolutions over [cell latent, action (, state)] per step. One local rule at
  every cell: an agent meets a wall the same way wherever the wall is, which an MLP over the
  flattened grid has to learn once per place.

All predict the change of the latent (residual output), so an untrained model is close to
"nothing moves", and all can also take a proprioceptive state s_t (then they predict s_{t+1}
too, which a rollout feeds back). Action t is the one taken after frame t.

    forward(z, a, s=None) -> (z_next, s_next | None)   teacher forcing over a whole history
    predict(z, a, s=None) -> z_next                     the same, latents only
    rollout(z0, actions, s0=None) -> [B, H, ...]        autoregressive, one batched call over B

The transformer attends to at most `context` frames (the history length it was trained on, the
k of the k-step loss): a rollout slides that window, so frame-time positions never exceed the
trained range and the cost per step stays bounded.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from jepalab.config import PredictorConfig
from jepalab.models.mlp import mlp
from jepalab.models.vit import (
    Transformer,
    _init_weights,
    _rescale_blocks,
    sincos_1d,
    sincos_pos_embed,
)


def block_causal_mask(
    frames: int, tokens_per_frame: int, device: torch.device | None = None
) -> Tensor:
    """bool [L, L], L = frames * tokens_per_frame, True = may attend (SDPA convention).

    Tokens are frame-major; a token of frame t attends to every token of frames <= t."""
    frame = torch.arange(frames, device=device).repeat_interleave(tokens_per_frame)
    return frame[:, None] >= frame[None, :]


class ACPredictor(nn.Module):
    """Shared interface: teacher forcing (`forward`/`predict`) and batched `rollout`."""

    action_dim: int
    state_dim: int
    context: int  # frames of history the model attends to

    def forward(
        self, z: Tensor, a: Tensor, s: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def predict(self, z: Tensor, a: Tensor, s: Tensor | None = None) -> Tensor:
        """z [B, T, ...], a [B, T, A] (s [B, T, S]) -> next latents [B, T, ...] (teacher forcing:
        entry t is the prediction of frame t+1 from the true frames <= t)."""
        return self.forward(z, a, s)[0]

    def rollout_states(
        self, z0: Tensor, actions: Tensor, s0: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """z0 [B, ...], actions [B, H, A] (s0 [B, S]) -> (latents [B, H, ...], states [B, H, S]
        or None): predicted frames are fed back as history (last `context` frames)."""
        self._check_rollout(z0, actions, s0)
        zs = [z0]
        ss = [s0] if s0 is not None else []
        for h in range(actions.shape[1]):
            lo = max(0, h + 1 - self.context)
            s_hist = torch.stack(ss[lo:], 1) if ss else None
            z_next, s_next = self.forward(torch.stack(zs[lo:], 1), actions[:, lo : h + 1], s_hist)
            zs.append(z_next[:, -1])
            if s_next is not None:
                ss.append(s_next[:, -1])
        return torch.stack(zs[1:], 1), torch.stack(ss[1:], 1) if ss else None

    def rollout(self, z0: Tensor, actions: Tensor, s0: Tensor | None = None) -> Tensor:
        """z0 [B, ...], actions [B, H, A] -> predicted latents [B, H, ...] of frames 1..H."""
        return self.rollout_states(z0, actions, s0)[0]

    def _check_inputs(self, z: Tensor, a: Tensor, s: Tensor | None, latent_ndim: int) -> None:
        if z.ndim != latent_ndim + 2:
            raise ValueError(
                f"{type(self).__name__}: latents must have {latent_ndim + 2} dims "
                f"[B, T, ...], got shape {tuple(z.shape)}"
            )
        if a.shape != (*z.shape[:2], self.action_dim):
            raise ValueError(
                f"{type(self).__name__}: actions must be [B, T, A] = "
                f"{[*z.shape[:2], self.action_dim]}, got {list(a.shape)}"
            )
        if (s is None) != (self.state_dim == 0):
            raise ValueError(
                f"{type(self).__name__}: built with state_dim={self.state_dim}, "
                f"got states={'None' if s is None else list(s.shape)}"
            )
        if s is not None and s.shape != (*z.shape[:2], self.state_dim):
            raise ValueError(
                f"{type(self).__name__}: states must be [B, T, S] = "
                f"{[*z.shape[:2], self.state_dim]}, got {list(s.shape)}"
            )

    def _check_rollout(self, z0: Tensor, actions: Tensor, s0: Tensor | None) -> None:
        if actions.ndim != 3 or actions.shape[0] != z0.shape[0]:
            raise ValueError(
                f"rollout: actions must be [B, H, A] with B = z0's {z0.shape[0]}, "
                f"got {list(actions.shape)}"
            )
        if s0 is not None and s0.shape[0] != z0.shape[0]:
            raise ValueError(
                f"rollout: s0 must be [B, S] with B = {z0.shape[0]}, got {list(s0.shape)}"
            )


class ACTransformer(ACPredictor):
    """Block-causal transformer over latent tokens: z [B, T, N, D] -> next tokens [B, T, N, D].

    grid: the encoder's token grid (h, w) with h * w = N. context: the most frames per call."""

    pos_embed: Tensor  # [N, W] spatial sin-cos (buffer)
    time_embed: Tensor  # [context, W] frame-time sin-cos (buffer)

    def __init__(
        self,
        latent_dim: int,
        grid: tuple[int, int],
        action_dim: int,
        state_dim: int = 0,
        width: int = 256,
        depth: int = 4,
        heads: int = 4,
        context: int = 2,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if len(grid) != 2:
            raise ValueError(f"ACTransformer needs a 2-D token grid (image encoder), got {grid}")
        self.latent_dim, self.grid = latent_dim, tuple(grid)
        self.action_dim, self.state_dim, self.context = action_dim, state_dim, context
        self.num_patches = grid[0] * grid[1]
        self.tokens_per_frame = self.num_patches + 1 + (state_dim > 0)
        self.proj_in = nn.Linear(latent_dim, width)
        self.action_embed = nn.Linear(action_dim, width)
        # learned type embeddings tell the action/state tokens from patch tokens
        self.action_type = nn.Parameter(torch.zeros(width))
        self.state_embed = nn.Linear(state_dim, width) if state_dim else None
        self.state_type = nn.Parameter(torch.zeros(width)) if state_dim else None
        self.state_out = nn.Linear(width, state_dim) if state_dim else None
        self.register_buffer("pos_embed", sincos_pos_embed(width, self.grid), persistent=False)
        self.register_buffer(
            "time_embed", sincos_1d(width, torch.arange(context)), persistent=False
        )
        self.trunk = Transformer(width, depth, heads, mlp_ratio, False)
        self.proj_out = nn.Linear(width, latent_dim)
        self.apply(_init_weights)
        _rescale_blocks(self.trunk)
        nn.init.trunc_normal_(self.action_type, std=0.02)
        if self.state_type is not None:
            nn.init.trunc_normal_(self.state_type, std=0.02)

    def forward(
        self, z: Tensor, a: Tensor, s: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """z [B, T, N, D], a [B, T, A], s [B, T, S] -> (z_next [B, T, N, D], s_next | None)."""
        self._check_inputs(z, a, s, 2)
        b, t, n, _ = z.shape
        if n != self.num_patches or t > self.context:
            raise ValueError(
                f"ACTransformer: got {n} tokens x {t} frames, built for "
                f"{self.num_patches} tokens x at most {self.context} frames"
            )
        dt = z.dtype
        parts = [(self.action_embed(a) + self.action_type)[:, :, None]]
        if s is not None:
            assert self.state_embed is not None and self.state_type is not None
            parts.append((self.state_embed(s) + self.state_type)[:, :, None])
        parts.append(self.proj_in(z) + self.pos_embed.to(dt))
        tok = torch.cat(parts, 2) + self.time_embed[:t, None].to(dt)  # [B, T, P, W]
        p = tok.shape[2]
        mask = block_causal_mask(t, p, z.device)
        h = self.trunk(tok.reshape(b, t * p, -1), mask).reshape(b, t, p, -1)
        z_next = z + self.proj_out(h[:, :, p - n :])
        s_next = None
        if s is not None:
            assert self.state_out is not None
            s_next = s + self.state_out(h[:, :, 1])
        return z_next, s_next


class ACMLP(ACPredictor):
    """Residual MLP on pooled latents: z [B, T, D] -> z + f([z, a(, s)]) per step ([B, T, D])."""

    def __init__(
        self, latent_dim: int, action_dim: int, state_dim: int = 0, width: int = 256,
        depth: int = 3, init: str = "trunc_normal"
    ) -> None:
        super().__init__()
        self.latent_dim, self.action_dim, self.state_dim = latent_dim, action_dim, state_dim
        self.context = 1  # Markov: the next latent depends on the current one only
        self.net = mlp(latent_dim + action_dim + state_dim, latent_dim + state_dim, width, depth)
        if init == "trunc_normal":  # else "torch": nn.Linear's own (Kaiming uniform)
            self.apply(_init_weights)

    def forward(
        self, z: Tensor, a: Tensor, s: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """z [B, T, D], a [B, T, A], s [B, T, S] -> (z_next [B, T, D], s_next [B, T, S] | None)."""
        self._check_inputs(z, a, s, 1)
        x = torch.cat([z, a.to(z.dtype)] + ([s.to(z.dtype)] if s is not None else []), -1)
        out = self.net(x)
        d = self.latent_dim
        s_next = s + out[..., d:] if s is not None else None
        return z + out[..., :d], s_next


class ACConv(ACPredictor):
    """Residual 3 x 3 conv net on pooled latents z [B, T, D*p*p] (D-major, as `encode_latents`
    flattens them) -> z + f(grid of z, with the action (and state) as channels at every cell) per
    step. The next state is the state plus f's extra channels averaged over the grid."""

    def __init__(self, latent_dim: int, action_dim: int, side: int, state_dim: int = 0,
                 width: int = 64, depth: int = 3) -> None:
        super().__init__()
        if latent_dim % (side * side):
            raise ValueError(f"ACConv: latent_dim {latent_dim} is not D * {side}^2")
        self.latent_dim, self.action_dim, self.state_dim = latent_dim, action_dim, state_dim
        self.side, self.channels, self.context = side, latent_dim // side**2, 1
        layers: list[nn.Module] = []
        c = self.channels + action_dim + state_dim
        for _ in range(depth):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.GELU()]
            c = width
        layers.append(nn.Conv2d(c, self.channels + state_dim, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(
        self, z: Tensor, a: Tensor, s: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """z [B, T, D*p*p], a [B, T, A], s [B, T, S] -> (z_next, s_next | None), shaped alike."""
        self._check_inputs(z, a, s, 1)
        b, t, p = z.shape[0], z.shape[1], self.side
        cells = [z.reshape(b * t, self.channels, p, p)]
        for extra in [a] + ([s] if s is not None else []):
            cells.append(extra.to(z.dtype).reshape(b * t, -1, 1, 1).expand(-1, -1, p, p))
        out = self.net(torch.cat(cells, 1))
        dz = out[:, : self.channels].reshape(b, t, -1)
        if s is None:
            return z + dz, None
        return z + dz, s + out[:, self.channels :].mean((2, 3)).reshape(b, t, -1)


def build_predictor(
    cfg: PredictorConfig,
    latent_dim: int,
    grid: tuple[int, ...],
    action_dim: int,
    state_dim: int,
    context: int,
) -> ACPredictor:
    """The predictor named by `cfg.arch` ('mlp', 'conv': pooled latents; 'transformer': tokens).

    state_dim is used only with cfg.use_state (else the model takes no state)."""
    sdim = state_dim if cfg.use_state else 0
    if cfg.arch == "mlp":
        return ACMLP(latent_dim, action_dim, sdim, width=cfg.dim, depth=cfg.depth, init=cfg.init)
    if cfg.arch == "conv":
        return ACConv(latent_dim, action_dim, cfg.pool, sdim, width=cfg.dim, depth=cfg.depth)
    if len(grid) != 2:
        raise ValueError(
            f"predictor.arch 'transformer' needs an image encoder (2-D token grid), got grid {grid}"
        )
    return ACTransformer(
        latent_dim,
        (grid[0], grid[1]),
        action_dim,
        sdim,
        width=cfg.dim,
        depth=cfg.depth,
        heads=cfg.heads,
        context=context,
    )
