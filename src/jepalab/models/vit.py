"""Vision Transformer encoder and JEPA predictor (image and video, one code path).

Tokens are patches (2-D) or tubelets (3-D); pre-norm blocks with `scaled_dot_product_attention`.
Masked inputs are index lists into the flattened token grid plus a keep-mask for padding, so
samples in a batch may keep different numbers of tokens.

Positions (`pos`): "sincos" (default) adds fixed sin-cos embeddings; "stored" adds a fixed table
that is saved with the weights (for imported models whose table differs from ours); "rope" and
"rope_vjepa2" add nothing and rotate q and k in every attention layer by each token's grid
position (see `jepalab.models.rope`), using the kept tokens' positions for masked inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from jepalab.models.rope import Rotary, apply_rope

PosKind = Literal["sincos", "stored", "rope", "rope_vjepa2"]
POS_KINDS = ("sincos", "stored", "rope", "rope_vjepa2")
Rope = tuple[Tensor, Tensor]  # (cos, sin) [B or 1, N, head_dim]


def sincos_1d(dim: int, pos: Tensor) -> Tensor:
    """[N] positions -> [N, dim] (half sin, half cos)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = pos.double()[:, None] * omega[None]
    return torch.cat([out.sin(), out.cos()], dim=1).float()


def sincos_pos_embed(dim: int, grid: tuple[int, ...]) -> Tensor:
    """Fixed sin-cos embeddings for a 2-D (H, W) or 3-D (T, H, W) grid -> [prod(grid), dim].

    2-D: half the channels encode the row, half the column. 3-D: a quarter encodes time, and the
    remaining channels split between row and column (each part a multiple of 2).
    """
    coords = torch.meshgrid(*[torch.arange(g) for g in grid], indexing="ij")
    if len(grid) == 2:
        dims = [dim // 2, dim - dim // 2]
    else:
        dt = (dim // 4) // 2 * 2
        dh = ((dim - dt) // 2) // 2 * 2
        dims = [dt, dh, dim - dt - dh]
    parts = [sincos_1d(d, c.flatten()) for d, c in zip(dims, coords)]
    return torch.cat(parts, dim=1)


class PatchEmbed(nn.Module):
    """[B, C, H, W] -> [B, N, D] (Conv2d) or [B, T, C, H, W] -> [B, N, D] (Conv3d over tubelets)."""

    def __init__(self, in_chans: int, dim: int, patch: int, tubelet: int | None) -> None:
        super().__init__()
        self.video = tubelet is not None
        if self.video:
            k = (tubelet, patch, patch)
            self.proj: nn.Module = nn.Conv3d(in_chans, dim, kernel_size=k, stride=k)
        else:
            self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:
        if self.video:
            x = rearrange(x, "b t c h w -> b c t h w")
        return self.proj(x).flatten(2).transpose(1, 2)


def key_mask(keep: Tensor | None) -> Tensor | None:
    """[B, N] keep -> [B, 1, 1, N] bool mask (True = attend); None if nothing is padded."""
    if keep is None or bool(keep.all()):
        return None
    return keep[:, None, None, :]


def additive_mask(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """A bool key mask [B, 1, 1, N] -> the same mask as 0 / -inf in `dtype` (other masks as given).

    Same maths; CPU SDPA is ~2x faster with an additive key mask than with a boolean one."""
    if mask is None or mask.dtype != torch.bool or mask.ndim != 4 or mask.shape[1:3] != (1, 1):
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, -math.inf)


class _Rows(torch.autograd.Function):
    """x [R, C] -> x[sel] for unique `sel`: the backward is a copy into zeros (index_copy), not
    the accumulating scatter autograd uses for index_select (~2x slower on CPU)."""

    @staticmethod
    def forward(ctx, x: Tensor, sel: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(sel)
        ctx.rows = x.shape[0]
        return x.index_select(0, sel)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (sel,) = ctx.saved_tensors
        return g.new_zeros(ctx.rows, g.shape[1]).index_copy_(0, sel, g.contiguous()), None


class _Scatter(torch.autograd.Function):
    """x [T, C] -> zeros [R, C] with row sel[i] = x[i] (unique sel); backward: a row gather."""

    @staticmethod
    def forward(ctx, x: Tensor, sel: Tensor, rows: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(sel)
        return x.new_zeros(rows, x.shape[1]).index_copy_(0, sel, x.contiguous())

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (sel,) = ctx.saved_tensors
        return g.index_select(0, sel), None, None


@dataclass(frozen=True)
class Packing:
    """Where the real tokens of a padded batch [B, N, ...] are: `sel` [T] flat row indices.

    Per-token layers (norms, qkv, projections, MLP) run on the packed real tokens [T, C] only;
    attention unpacks them into [B, N, C] (zeros at the padding, masked as keys). Padding costs
    no matmul work and the real tokens' outputs are the same as without packing."""

    sel: Tensor
    keep: Tensor  # [B, N]

    @staticmethod
    def of(keep: Tensor | None) -> Packing | None:
        if keep is None or bool(keep.all()):
            return None
        return Packing(keep.reshape(-1).nonzero().squeeze(1), keep)

    def pack(self, x: Tensor) -> Tensor:
        """[B, N, C] -> [T, C]."""
        return _Rows.apply(x.reshape(-1, x.shape[-1]), self.sel)

    def unpack(self, x: Tensor) -> Tensor:
        """[T, C] -> [B, N, C] with zeros at the padding."""
        b, n = self.keep.shape
        return _Scatter.apply(x, self.sel, b * n).view(b, n, -1)

    def tail(self, start: int) -> Packing:
        """The packing of rows [start:] of every sequence."""
        return Packing(self.keep[:, start:].reshape(-1).nonzero().squeeze(1), self.keep[:, start:])

    def tail_rows(self, start: int) -> Tensor:
        """Indices into the packed [T] of the tokens at rows >= start (same order as `tail`)."""
        return ((self.sel % self.keep.shape[1]) >= start).nonzero().squeeze(1)


def rows_from(x: Tensor, pack: Packing | None, start: int) -> Tensor:
    """Rows [start:] of every sequence of x ([B, N, C], or packed [T, C] under `pack`)."""
    if not start:
        return x
    return x[:, start:] if pack is None else _Rows.apply(x, pack.tail_rows(start))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"embed dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        rope: Rope | None = None,
        pack: Packing | None = None,
        q_from: int = 0,
    ) -> Tensor:
        """x [B, N, D] (or packed [T, D]) -> [B, N - q_from, D] (packed likewise): only the
        queries of rows >= q_from are computed; every row is a key and a value."""
        qkv = self.qkv(x)
        if pack is not None:
            qkv = pack.unpack(qkv)
        q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=self.heads)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if q_from:
            q = q[:, :, q_from:]
        if mask is not None and mask.is_floating_point() and mask.dtype != q.dtype:
            mask = mask.to(q.dtype)  # autocast: the additive mask follows q
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = rearrange(out, "b h n d -> b n (h d)")
        if pack is not None:
            out = pack.tail(q_from).pack(out) if q_from else pack.pack(out)
        return self.proj(out)


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        rope: Rope | None = None,
        pack: Packing | None = None,
        q_from: int = 0,
    ) -> Tensor:
        """x [B, N, D] (or packed [T, D]) -> rows >= q_from of the output (see `Attention`)."""
        h = self.attn(self.norm1(x), mask, rope, pack, q_from)
        x = rows_from(x, pack, q_from) + h
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """A stack of blocks with optional activation checkpointing (for large presets)."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float, ckpt: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.grad_checkpointing = ckpt

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None,
        rope: Rope | None = None,
        keep: Tensor | None = None,
        tail: int = 0,
    ) -> Tensor:
        """x [B, N, D] -> [B, N - tail, D].

        keep [B, N]: the real tokens (with padding they are packed, see `Packing`; outputs at
        padded rows are then 0). tail: only rows >= tail are returned, so the last block
        computes queries, projection and MLP for those rows only (the predictor's targets).
        """
        pack = Packing.of(keep)
        mask = additive_mask(mask, x.dtype)
        if pack is not None:
            x = pack.pack(x)
        last = len(self.blocks) - 1
        for i, blk in enumerate(self.blocks):
            q_from = tail if i == last else 0
            if self.grad_checkpointing and self.training:
                x = checkpoint(blk, x, mask, rope, pack, q_from, use_reentrant=False)
            else:
                x = blk(x, mask, rope, pack, q_from)
        if not self.blocks and tail:
            x = rows_from(x, pack, tail)
        x = self.norm(x)
        if pack is not None:
            x = (pack.tail(tail) if tail else pack).unpack(x)
        return x


def gather_tokens(x: Tensor, idx: Tensor) -> Tensor:
    """x [B, N, D], idx [B, K] -> [B, K, D]."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _positions(
    module: nn.Module, pos: str, grid: tuple[int, ...], dim: int, heads: int
) -> Rotary | None:
    """Register `module.pos_embed` (None for RoPE) and return the RoPE tables (None otherwise)."""
    if pos not in POS_KINDS:
        raise ValueError(f"unknown position scheme '{pos}' (choose from {', '.join(POS_KINDS)})")
    if pos in ("sincos", "stored"):
        # "stored" starts from our sin-cos table so a fresh model still knows positions; it is
        # persistent so an imported table is saved and loaded with the weights.
        table = sincos_pos_embed(dim, grid)
        module.register_buffer("pos_embed", table, persistent=pos == "stored")
        return None
    module.register_buffer("pos_embed", None)
    return Rotary(grid, dim // heads, pos)  # type: ignore[arg-type]


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class ViT(nn.Module):
    """ViT encoder. `forward(x, idx=None, keep=None) -> tokens [B, N|K, D]`.

    x: images [B, C, H, W], or clips [B, T, C, H, W] when built with `frames > 1`.
    idx/keep: optional [B, K] token indices to keep (the context) and their padding mask.
    pos: position scheme (module docstring); with RoPE, kept tokens keep their grid positions.
    """

    pos_embed: Tensor | None

    def __init__(
        self,
        img_size: int = 64,
        patch_size: int = 8,
        in_chans: int = 3,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        frames: int = 1,
        tubelet: int = 2,
        grad_checkpointing: bool = False,
        pos: PosKind = "sincos",
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.pos = pos
        side = img_size // patch_size
        self.frames = frames
        self.grid: tuple[int, ...] = (
            (side, side) if frames == 1 else (frames // tubelet, side, side)
        )
        self.patch_embed = PatchEmbed(
            in_chans, embed_dim, patch_size, None if frames == 1 else tubelet
        )
        self.rope = _positions(self, pos, self.grid, embed_dim, num_heads)
        self.trunk = Transformer(embed_dim, depth, num_heads, mlp_ratio, grad_checkpointing)
        self.apply(_init_weights)
        _rescale_blocks(self.trunk)

    @property
    def num_tokens(self) -> int:
        return math.prod(self.grid)

    def forward(self, x: Tensor, idx: Tensor | None = None, keep: Tensor | None = None) -> Tensor:
        tokens = self.patch_embed(x)
        if self.pos_embed is not None:
            tokens = tokens + self.pos_embed.to(x.dtype)
        if idx is not None:
            tokens = gather_tokens(tokens, idx)
        rope = self.rope(idx) if self.rope is not None else None
        return self.trunk(tokens, key_mask(keep), rope, keep=keep)

    encode = forward

    def pooled(self, x: Tensor) -> Tensor:
        """[B, D]: mean over tokens."""
        return self.forward(x).mean(1)


def _rescale_blocks(trunk: Transformer) -> None:
    """Scale residual-branch outputs by depth (as in the ViT/I-JEPA init) for stable deep stacks."""
    for i, blk in enumerate(trunk.blocks, start=1):
        blk.attn.proj.weight.data.div_(math.sqrt(2.0 * i))
        blk.mlp[2].weight.data.div_(math.sqrt(2.0 * i))


class Predictor(nn.Module):
    """JEPA predictor g(z_c, m_t): context tokens + mask tokens at the target positions.

    forward(z [B, Nc, D], ctx_idx [B, Nc], ctx_keep [B, Nc], tgt_idx [B, M, Nt],
            tgt_keep [B, M, Nt]) -> predicted target embeddings [B, M, Nt, D].
    Each of the M target blocks is predicted in its own sequence (the blocks do not see each
    other), as in I-JEPA. `num_mask_tokens` > 1 keeps one learned mask token per mask kind
    (V-JEPA); `mask_index` picks it (modulo their number). `pos` as for `ViT`.
    """

    pos_embed: Tensor | None

    def __init__(
        self,
        grid: tuple[int, ...],
        embed_dim: int,
        pred_dim: int = 96,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        pos: PosKind = "sincos",
        num_mask_tokens: int = 1,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.grid = grid
        self.pos = pos
        self.proj_in = nn.Linear(embed_dim, pred_dim)
        self.mask_token = nn.Parameter(torch.zeros(num_mask_tokens, 1, pred_dim))  # [K, 1, P]
        self.rope = _positions(self, pos, grid, pred_dim, num_heads)
        self.trunk = Transformer(pred_dim, depth, num_heads, mlp_ratio, grad_checkpointing)
        self.proj_out = nn.Linear(pred_dim, embed_dim)
        self.apply(_init_weights)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        _rescale_blocks(self.trunk)

    def forward(
        self,
        z: Tensor,
        ctx_idx: Tensor,
        ctx_keep: Tensor,
        tgt_idx: Tensor,
        tgt_keep: Tensor,
        mask_index: int = 0,
    ) -> Tensor:
        b, m, nt = tgt_idx.shape
        ctx = self.proj_in(z)
        tgt = self.mask_token[mask_index % len(self.mask_token)].expand(b * m, nt, -1)
        if self.pos_embed is not None:
            pos = self.pos_embed.to(z.dtype)
            ctx = ctx + pos[ctx_idx]
            tgt = tgt + pos[tgt_idx.reshape(b * m, nt)]  # [B*M, Nt, P]
        ctx = ctx.repeat_interleave(m, dim=0)  # [B*M, Nc, P]
        keep = torch.cat([ctx_keep.repeat_interleave(m, dim=0), tgt_keep.reshape(b * m, nt)], 1)
        rope = None
        if self.rope is not None:
            idx = torch.cat([ctx_idx.repeat_interleave(m, dim=0), tgt_idx.reshape(b * m, nt)], 1)
            rope = self.rope(idx)
        # only the target rows leave the trunk: its last block skips the context rows' queries,
        # projection and MLP (their outputs are never used)
        out = self.trunk(torch.cat([ctx, tgt], dim=1), key_mask(keep), rope, keep, ctx.shape[1])
        return self.proj_out(out).reshape(b, m, nt, -1)


# ---------------------------------------------------------------- presets


@dataclass(frozen=True)
class Preset:
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0


# The I-JEPA family (vit_tiny ... vit_giant) plus a micro size for tests.
PRESETS: dict[str, Preset] = {
    "micro": Preset(64, 2, 2),
    "tiny": Preset(192, 12, 3),
    "small": Preset(384, 12, 6),
    "base": Preset(768, 12, 12),
    "large": Preset(1024, 24, 16),
    "huge": Preset(1280, 32, 16),
    "giant": Preset(1408, 40, 16, 48 / 11),
}


def vit(preset: str, **kwargs) -> ViT:
    """The one builder: `vit("tiny", img_size=224, patch_size=16)`; kwargs override the preset."""
    if preset not in PRESETS:
        raise ValueError(f"unknown ViT preset '{preset}' (choose from {', '.join(PRESETS)})")
    p = PRESETS[preset]
    args = {
        "embed_dim": p.embed_dim,
        "depth": p.depth,
        "num_heads": p.num_heads,
        "mlp_ratio": p.mlp_ratio,
    }
    args.update({k: v for k, v in kwargs.items() if v is not None})
    return ViT(**args)
