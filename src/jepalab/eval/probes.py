"""State probes on frozen latents: closed-form ridge and a small MLP, plus their error metrics.

Everything takes pooled latents that are already computed (`Z [N, D]`, numpy or torch) and
ground-truth state in scene units (`Y [N, S]` or `[N]`). Predictions come back in scene units, so
RMSE/MAE read directly as "cm off" (or whatever the scene's state is measured in).

- `fit_linear_probe`: ridge regression on standardised inputs with an unpenalised bias, solved
  in closed form (float64). The penalty is scale-free: it minimises
  ``mean_n ||x_n W + b - y_n||^2 + ridge * ||W||^2`` with x standardised per dimension.
- `fit_mlp_probe`: GELU MLP on standardised inputs and targets, AdamW with cosine decay,
  mini-batches, early stopping on a held-out split (by episode when `groups` is given, since
  frames of one episode are near-duplicates and would leak across a row split).
- A `Probe` saves as a jepalab checkpoint directory (probe.safetensors + manifest.json with
  sha256, written atomically) and refuses to load a corrupt or foreign one.
- `probe_error` / `regression_metrics`: per-variable RMSE, MAE and R^2 plus their means.
- `rollout_errors` / `probed_rollout_errors`: per-horizon-step error of predicted latents
  against target latents, and of probe-decoded predicted latents against true states.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from jepalab.errors import JepalabError
from jepalab.models.mlp import mlp
from jepalab.train.checkpoint import load_checkpoint, save_checkpoint

ArrayLike = np.ndarray | Tensor
PROBE_KINDS = ("linear", "mlp")


def as_array(x: ArrayLike, name: str, ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
    """A float64 numpy copy of `x`, with its rank and finiteness checked (error names `name`)."""
    a = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    if not np.issubdtype(a.dtype, np.number) and a.dtype != np.bool_:
        raise JepalabError(f"{name}: expected a numeric array, got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if dims is not None and a.ndim not in dims:
        raise JepalabError(f"{name}: expected {' or '.join(map(str, dims))}-D, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise JepalabError(f"{name}: contains NaN or inf")
    return a


def _xy(Z: ArrayLike, Y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    z = as_array(Z, "Z", 2)
    y = as_array(Y, "Y", (1, 2))
    y = y[:, None] if y.ndim == 1 else y
    if len(z) != len(y):
        raise JepalabError(f"Z has {len(z)} rows but Y has {len(y)}")
    if len(z) < 2:
        raise JepalabError(f"Z: need at least 2 rows to fit a probe, got {len(z)}")
    return z, y


def _standardiser(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = a.mean(0), a.std(0)
    std = np.where(std > 1e-12, std, 1.0)  # constant columns: centre only, never divide by 0
    return mean, std


@dataclass(eq=False)  # tensors do not compare with ==
class Probe:
    """A fitted map from latents [N, D] to states [N, S].

    tensors: linear — x_mean, x_std [D], weight [D, S] (on standardised inputs), bias [S];
             mlp — x_mean, x_std [D], y_mean, y_std [S], net.* (the nn.Sequential's weights).
    config:  the fitting hyper-parameters (hidden, depth for an MLP; ridge for linear).
    fit:     what happened during fitting (rows, steps run, best held-out loss, ...).
    """

    kind: str
    tensors: dict[str, Tensor]
    in_dim: int
    out_dim: int
    names: list[str] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)
    _net: nn.Sequential | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in PROBE_KINDS:
            raise JepalabError(f"probe kind: unknown {self.kind!r} (choose from {PROBE_KINDS})")
        if self.names is not None and len(self.names) != self.out_dim:
            raise JepalabError(f"probe names: {len(self.names)} names for {self.out_dim} outputs")

    def predict(self, Z: ArrayLike, batch: int = 8192) -> np.ndarray:
        """Latents [N, D] -> predicted states [N, S] (float64, scene units)."""
        z = as_array(Z, "Z", 2)
        if z.shape[1] != self.in_dim:
            raise JepalabError(f"Z: probe expects {self.in_dim} dims, got shape {z.shape}")
        t = {k: v.double().numpy() for k, v in self.tensors.items() if not k.startswith("net.")}
        x = (z - t["x_mean"]) / t["x_std"]
        if self.kind == "linear":
            return x @ t["weight"] + t["bias"]
        net = self._module()
        with torch.no_grad():
            out = [net(torch.from_numpy(x[i : i + batch]).float()) for i in range(0, len(x), batch)]
        y = torch.cat(out).double().numpy() if out else np.zeros((0, self.out_dim))
        return y * t["y_std"] + t["y_mean"]

    def linear_map(self) -> tuple[np.ndarray, np.ndarray]:
        """For a linear probe, the equivalent map on raw latents: Y ≈ Z @ W [D, S] + b [S]."""
        if self.kind != "linear":
            raise JepalabError(f"linear_map: probe is {self.kind!r}, not linear")
        t = {k: v.double().numpy() for k, v in self.tensors.items()}
        w = t["weight"] / t["x_std"][:, None]
        return w, t["bias"] - t["x_mean"] @ w

    def _module(self) -> nn.Sequential:
        if self._net is None:
            net = mlp(self.in_dim, self.out_dim, int(self.config["hidden"]),
                       int(self.config["depth"]))
            net.load_state_dict({k[4:]: v for k, v in self.tensors.items() if k.startswith("net.")})
            self._net = net.eval()
        return self._net

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint directory (probe.safetensors + manifest.json), atomically."""
        meta = {"kind": "probe", "probe": {
            "type": self.kind, "in_dim": self.in_dim, "out_dim": self.out_dim,
            "names": self.names, "config": self.config, "fit": self.fit}}
        return save_checkpoint(path, {"probe": self.tensors}, meta)

    @classmethod
    def load(cls, path: str | Path) -> Probe:
        """Load a saved probe; the sha256 of every file is verified (JepalabError if corrupt)."""
        manifest, tensors = load_checkpoint(path, names=("probe",))
        if manifest.get("kind") != "probe" or "probe" not in tensors:
            raise JepalabError(f"{path}: not a probe checkpoint (kind={manifest.get('kind')!r})")
        m = manifest["probe"]
        probe = cls(kind=m["type"], tensors=tensors["probe"], in_dim=int(m["in_dim"]),
                    out_dim=int(m["out_dim"]), names=m.get("names"),
                    config=m.get("config", {}), fit=m.get("fit", {}))
        need = {"x_mean", "x_std"} | ({"weight", "bias"} if probe.kind == "linear"
                                      else {"y_mean", "y_std"})
        if missing := need - set(probe.tensors):
            raise JepalabError(f"{path}: probe tensors missing {sorted(missing)}")
        return probe


def fit_linear_probe(Z_train: ArrayLike, Y_train: ArrayLike, ridge: float = 1e-3,
                     names: list[str] | None = None) -> Probe:
    """Closed-form ridge regression Z [N, D] -> Y [N, S] (or [N]) on standardised inputs."""
    if ridge < 0:
        raise JepalabError(f"ridge: must be >= 0, got {ridge}")
    z, y = _xy(Z_train, Y_train)
    n, d = z.shape
    x_mean, x_std = _standardiser(z)
    x = (z - x_mean) / x_std
    y_mean = y.mean(0)
    gram = x.T @ x / n + ridge * np.eye(d)
    # lstsq rather than solve: with ridge=0 and N < D the system is singular; lstsq gives the
    # minimum-norm solution instead of failing.
    w = np.linalg.lstsq(gram, x.T @ (y - y_mean) / n, rcond=None)[0]
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in
               {"x_mean": x_mean, "x_std": x_std, "weight": w, "bias": y_mean}.items()}
    return Probe("linear", tensors, d, y.shape[1], names, {"ridge": ridge}, {"rows": n})


def split_rows(n: int, val_frac: float, rng: np.random.Generator,
               groups: ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx): a random held-out split, whole groups (episodes) at a time when
    `groups` [N] is given. Empty val when there is too little data to hold any out."""
    if groups is None:
        n_val = int(round(n * val_frac))
        if n_val < 1 or n - n_val < 2:
            return np.arange(n), np.arange(0)
        perm = rng.permutation(n)
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])
    g = np.asarray(groups)
    if g.shape != (n,):
        raise JepalabError(f"groups: expected shape ({n},), got {g.shape}")
    uniq = np.unique(g)
    n_val = int(round(len(uniq) * val_frac))
    if n_val < 1 or len(uniq) - n_val < 1:
        return np.arange(n), np.arange(0)
    is_val = np.isin(g, rng.permutation(uniq)[:n_val])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def fit_mlp_probe(Z_train: ArrayLike, Y_train: ArrayLike, hidden: int = 256, depth: int = 2,
                  steps: int = 2000, lr: float = 1e-3, weight_decay: float = 1e-4,
                  batch_size: int = 256, val_frac: float = 0.15, eval_every: int = 50,
                  patience: int = 10, seed: int = 0, groups: ArrayLike | None = None,
                  names: list[str] | None = None, num_threads: int | None = 1) -> Probe:
    """An MLP probe Z [N, D] -> Y [N, S] (or [N]): `depth` hidden GELU layers of width `hidden`.

    Trains on (1 - val_frac) of the rows (or of the episodes, given `groups` [N]); every
    `eval_every` steps the held-out MSE is measured and the best weights are kept; training stops
    after `patience` evaluations without improvement. With too few rows to hold any out, it
    trains for `steps` and keeps the last weights. Deterministic for a given `seed`.

    num_threads: torch intra-op threads while training, restored afterwards. A head this small
    gains nothing from more threads, and on a shared 2-core machine a second OpenMP thread that
    waits for a busy core made steps 5-20x slower (1.5 ms vs 8-34 ms measured); None leaves
    torch's setting alone.
    """
    prev = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _fitmlp(Z_train, Y_train, hidden, depth, steps, lr, weight_decay, batch_size,
                        val_frac, eval_every, patience, seed, groups, names)
    finally:
        torch.set_num_threads(prev)


def _fitmlp(Z_train: ArrayLike, Y_train: ArrayLike, hidden: int, depth: int, steps: int,
             lr: float, weight_decay: float, batch_size: int, val_frac: float, eval_every: int,
             patience: int, seed: int, groups: ArrayLike | None, names: list[str] | None
             ) -> Probe:
    if hidden < 1 or depth < 1 or steps < 1 or batch_size < 1 or eval_every < 1:
        raise JepalabError("fit_mlp_probe: hidden, depth, steps, batch_size, eval_every must be"
                           f" >= 1 (got {hidden}, {depth}, {steps}, {batch_size}, {eval_every})")
    z, y = _xy(Z_train, Y_train)
    rng = np.random.default_rng(seed)
    tr, va = split_rows(len(z), val_frac, rng, groups)
    x_mean, x_std = _standardiser(z[tr])
    y_mean, y_std = _standardiser(y[tr])
    xt = torch.from_numpy((z - x_mean) / x_std).float()
    yt = torch.from_numpy((y - y_mean) / y_std).float()
    x_tr, y_tr, x_va, y_va = xt[tr], yt[tr], xt[va], yt[va]

    gen = torch.Generator().manual_seed(seed)
    net = mlp(z.shape[1], y.shape[1], hidden, depth)
    with torch.no_grad():  # init from our generator, not the global RNG
        for p in net.parameters():
            if p.dim() > 1:
                bound = 1.0 / math.sqrt(p.shape[1])
                p.uniform_(-bound, bound, generator=gen)
            else:
                p.zero_()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0))))

    n_tr, bs = len(x_tr), min(batch_size, len(x_tr))
    best, best_state, bad, step, perm, pos = math.inf, None, 0, 0, torch.arange(0), n_tr
    for step in range(1, steps + 1):
        if pos + bs > n_tr:  # new epoch: reshuffle
            perm, pos = torch.randperm(n_tr, generator=gen), 0
        idx = perm[pos : pos + bs]
        pos += bs
        loss = nn.functional.mse_loss(net(x_tr[idx]), y_tr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if len(va) and (step % eval_every == 0 or step == steps):
            with torch.no_grad():
                v = nn.functional.mse_loss(net(x_va), y_va).item()
            if v < best - 1e-9:
                best, bad = v, 0
                best_state = {k: t.clone() for k, t in net.state_dict().items()}
            else:
                bad += 1
                if bad >= patience:
                    break
    if best_state is not None:
        net.load_state_dict(best_state)
    tensors = {"x_mean": x_mean, "x_std": x_std, "y_mean": y_mean, "y_std": y_std}
    out = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}
    out |= {f"net.{k}": v.detach().clone() for k, v in net.state_dict().items()}
    config = {"hidden": hidden, "depth": depth, "lr": lr, "weight_decay": weight_decay,
              "batch_size": batch_size, "steps": steps, "val_frac": val_frac, "seed": seed}
    fit = {"rows": len(z), "train_rows": int(n_tr), "val_rows": int(len(va)), "steps_run": step,
           "best_val_mse_std": None if best == math.inf else best}
    return Probe("mlp", out, z.shape[1], y.shape[1], names, config, fit)


def _names(n: int, names: list[str] | None) -> list[str]:
    if names is None:
        return [f"y{i}" for i in range(n)]
    if len(names) != n:
        raise JepalabError(f"names: {len(names)} names for {n} variables")
    return list(names)


def regression_metrics(pred: ArrayLike, Y: ArrayLike, names: list[str] | None = None
                       ) -> dict[str, Any]:
    """Per-variable and mean error of predictions [N, S] vs truth [N, S] (or [N]).

    Returns {"rmse": {name: v}, "mae": {...}, "r2": {...}, "rmse_mean", "mae_mean", "r2_mean",
    "n"}. R^2 of a constant variable is NaN (undefined) and left out of r2_mean.
    """
    p = as_array(pred, "pred", (1, 2))
    y = as_array(Y, "Y", (1, 2))
    p, y = (p[:, None] if p.ndim == 1 else p), (y[:, None] if y.ndim == 1 else y)
    if p.shape != y.shape:
        raise JepalabError(f"pred shape {p.shape} != Y shape {y.shape}")
    err = p - y
    rmse = np.sqrt((err**2).mean(0))
    mae = np.abs(err).mean(0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_tot > 0, 1 - (err**2).sum(0) / ss_tot, np.nan)
    labels = _names(y.shape[1], names)
    finite_r2 = r2[np.isfinite(r2)]
    return {
        "rmse": dict(zip(labels, rmse.tolist())),
        "mae": dict(zip(labels, mae.tolist())),
        "r2": dict(zip(labels, r2.tolist())),
        "rmse_mean": float(rmse.mean()),
        "mae_mean": float(mae.mean()),
        "r2_mean": float(finite_r2.mean()) if len(finite_r2) else math.nan,
        "n": int(len(y)),
    }


def probe_error(probe: Probe, Z: ArrayLike, Y: ArrayLike, names: list[str] | None = None
                ) -> dict[str, Any]:
    """`regression_metrics` of the probe's predictions on Z [N, D] vs true states Y [N, S]."""
    return regression_metrics(probe.predict(Z), Y, names if names is not None else probe.names)


def rollout_errors(pred: ArrayLike, target: ArrayLike, metric: str = "l1") -> np.ndarray:
    """Latent error per horizon step: pred, target [N, H, D] (or [N, H, ..., D]) -> [H].

    metric: "l1"  mean |pred - target| over samples and latent elements,
            "l2"  mean (pred - target)^2 over samples and elements (the JEPA MSE),
            "dist" mean over samples of the Euclidean norm ||pred - target|| over all elements.
    """
    p, t = as_array(pred, "pred"), as_array(target, "target")
    if p.shape != t.shape or p.ndim < 3:
        raise JepalabError(f"rollout_errors: pred {p.shape} and target {t.shape} must be equal "
                           "[N, H, D] shapes")
    e = (p - t).reshape(p.shape[0], p.shape[1], -1)
    if metric == "l1":
        return np.abs(e).mean(axis=(0, 2))
    if metric == "l2":
        return (e**2).mean(axis=(0, 2))
    if metric == "dist":
        return np.linalg.norm(e, axis=2).mean(0)
    raise JepalabError(f"rollout_errors metric: unknown {metric!r} (choose l1, l2, dist)")


def probed_rollout_errors(probe: Probe, pred: ArrayLike, target_states: ArrayLike,
                          metric: str = "rmse", dims: list[int] | None = None) -> np.ndarray:
    """State error per horizon step of probe-decoded predicted latents: pred [N, H, D],
    target_states [N, H, S] -> [H], in scene units, on state dims `dims` (default all).

    metric: "rmse" sqrt of the mean squared error over samples and dims,
            "mae"  mean absolute error over samples and dims,
            "dist" mean over samples of the Euclidean distance over `dims` (e.g. position error).
    """
    p = as_array(pred, "pred", 3)
    s = as_array(target_states, "target_states", 3)
    if p.shape[:2] != s.shape[:2]:
        raise JepalabError(f"pred {p.shape} and target_states {s.shape} differ in [N, H]")
    n, h, d = p.shape
    decoded = probe.predict(p.reshape(n * h, d)).reshape(n, h, -1)
    if decoded.shape[2] != s.shape[2]:
        raise JepalabError(f"probe outputs {decoded.shape[2]} state dims, target_states have "
                           f"{s.shape[2]}")
    e = decoded - s
    if dims is not None:
        e = e[:, :, list(dims)]
    if metric == "rmse":
        return np.sqrt((e**2).mean(axis=(0, 2)))
    if metric == "mae":
        return np.abs(e).mean(axis=(0, 2))
    if metric == "dist":
        return np.linalg.norm(e, axis=2).mean(0)
    raise JepalabError(f"probed_rollout_errors metric: unknown {metric!r} (choose rmse, mae, dist)")
