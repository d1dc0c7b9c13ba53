"""The `jepalab` command: parses arguments, loads config, calls one library function per verb.

Any `JepalabError` is printed as one line and exits with status 2; nothing half-written remains
because every writer below is atomic or append-only.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from jepalab.errors import JepalabError

VERBS: dict[str, Callable[[argparse.Namespace, list[str]], int]] = {}


def verb(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None]):
    def deco(fn):
        VERBS[name] = fn
        fn.cli = (help, configure)
        return fn

    return deco


def _pretrain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML config (defaults apply when omitted)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@verb("pretrain", "pretrain an encoder (JEPA or a baseline objective)", _pretrain_args)
def _pretrain(args: argparse.Namespace, overrides: list[str]) -> int:
    from jepalab.config import PretrainConfig, load
    from jepalab.eval.tracking import tracked_training
    from jepalab.train.loop import pretrain

    cfg = load(PretrainConfig, args.config, overrides)
    path = tracked_training(
        cfg, lambda tr: pretrain(cfg, resume=args.resume, progress=not args.quiet, tracker=tr))
    print(f"checkpoint: {path}")
    return 0


def _diagnose_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="pretraining checkpoint directory")
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--top", type=int, default=10, help="dimensions to list")
    p.add_argument("--out", help="also write the report as JSON here")


@verb("diagnose", "latent residuals: which dimensions the predictor still misses", _diagnose_args)
def _diagnose(args: argparse.Namespace, overrides: list[str]) -> int:
    from jepalab.io import atomic_write_json
    from jepalab.train.diagnose import diagnose

    _no_overrides(overrides)
    report = diagnose(args.checkpoint, batches=args.batches).to_dict(top=args.top)
    print(f"latent loss (mean squared residual): {report['loss']:.6f}")
    print(f"spiking dimensions: {report['spikes'] or 'none'}")
    print(f"{'dim':>6} {'sq_error':>10} {'residual':>10} {'z':>7}")
    for row in report["worst"]:
        print(f"{row['dim']:>6} {row['sq_error']:>10.5f} {row['residual']:>10.5f} {row['z']:>7.2f}")
    if args.out:
        atomic_write_json(args.out, report)
    return 0


def _collect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("scene", help="two-rooms | tabletop-push | tabletop-reach | pusht | gym:<id>")
    p.add_argument("--episodes", type=int, required=True)
    p.add_argument("--out", required=True, help="dataset directory (appended to if it exists)")
    p.add_argument("--policy", default="mixture:0.5", help="random | expert | mixture:P")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--perturb", default=None, help="e.g. lighting_shift+distractors")
    p.add_argument("--severity", type=int, default=1)
    p.add_argument("--quiet", action="store_true")


@verb("collect", "collect an offline trajectory dataset in a scene", _collect_args)
def _collect(args: argparse.Namespace, overrides: list[str]) -> int:
    from jepalab.config import parse_overrides
    from jepalab.data.collect import collect

    path = collect(args.scene, args.episodes, args.out, policy=args.policy, workers=args.workers,
                   seed=args.seed, image_size=args.image_size, max_steps=args.max_steps,
                   scene_kwargs=parse_overrides(overrides), perturb=args.perturb,
                   severity=args.severity, progress=not args.quiet)
    print(f"dataset: {path}")
    return 0


def _show_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", help="dataset directory")
    p.add_argument("--out", default=None, help="output folder (default: DATASET/preview)")
    p.add_argument("--episodes", type=int, default=4)


@verb("show", "contact sheet PNG and GIF of a dataset's episodes", _show_args)
def _show(args: argparse.Namespace, overrides: list[str]) -> int:
    from jepalab.data.show import show

    _no_overrides(overrides)
    png, gif = show(args.dataset, args.out, episodes=args.episodes)
    print(f"contact sheet: {png}\nanimation: {gif}")
    return 0


@verb("worldmodel", "train an action-conditioned latent predictor on a frozen encoder",
      _pretrain_args)
def _worldmodel(args: argparse.Namespace, overrides: list[str]) -> int:
    from jepalab.config import WorldModelConfig, load
    from jepalab.eval.tracking import tracked_training
    from jepalab.train.worldmodel import train_worldmodel

    cfg = load(WorldModelConfig, args.config, overrides)
    path = tracked_training(cfg, lambda tr: train_worldmodel(
        cfg, resume=args.resume, progress=not args.quiet, tracker=tr))
    print(f"checkpoint: {path}")
    return 0


def _plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="plan config (kind: plan); or flags only")
    p.add_argument("--scene", default=None, help="override scene.name")
    p.add_argument("--episodes", type=int, default=None)
    p.add_argument("--perturb", default=None)
    p.add_argument("--quiet", action="store_true")


@verb("plan", "goal-conditioned MPC episodes with a world model", _plan_args)
def _plan(args: argparse.Namespace, overrides: list[str]) -> int:
    from jepalab.config import PlanConfig, load
    from jepalab.eval.control import plan

    extra = [f"--{k}={v}" for k, v in (("scene.name", args.scene), ("episodes", args.episodes),
                                       ("perturb", args.perturb)) if v is not None]
    cfg = load(PlanConfig, args.config, [*extra, *overrides])
    s = plan(cfg, progress=not args.quiet)
    lo, hi = s["success_ci95"]
    print(f"success {s['success_rate']:.1%} (95% CI {lo:.1%}-{hi:.1%}) over {s['episodes']} "
          f"episodes; final distance {s['final_distance']:.3f}; "
          f"{s['plan_time_per_step_s'] * 1e3:.0f} ms planning per step\nresults: {cfg.out_dir}")
    return 0


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("contract", help="contract YAML (kind: contract)")
    p.add_argument("--workers", type=int, default=None, help="episodes in parallel processes")
    p.add_argument("--quiet", action="store_true")


@verb("evaluate", "run a contract's panel and decide acceptance", _evaluate_args)
def _evaluate(args: argparse.Namespace, overrides: list[str]) -> int:
    from jepalab.config import ContractConfig, load
    from jepalab.eval.panel import evaluate

    extra = [f"--workers={args.workers}"] if args.workers else []
    cfg = load(ContractConfig, args.contract, [*extra, *overrides])
    record, card = evaluate(cfg, progress=not args.quiet)
    print(f"accepted: {record.decision.accepted} ({record.decision.rule})")
    for reason in record.decision.reasons:
        print(f"  - {reason}")
    print(f"evidence: {Path(cfg.out_dir) / 'evidence.json'}\ncard: {card}")
    return 0


def _compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="comparison YAML (kind: compare)")
    p.add_argument("--quiet", action="store_true")


@verb("compare", "matched objective comparison (JEPA vs baselines) measured on control",
      _compare_args)
def _compare(args: argparse.Namespace, overrides: list[str]) -> int:
    from jepalab.config import CompareConfig, load
    from jepalab.eval.compare import compare

    cfg = load(CompareConfig, args.config, overrides)
    summary, card = compare(cfg, progress=not args.quiet)
    for other, pair in summary["pairs"].items():
        word = "accepted" if pair["accepted"] else "rejected"
        print(f"{summary['reference']} vs {other}: {word} ({pair['rule']})")
    print(f"summary: {Path(cfg.out_dir) / 'compare.json'}\ncard: {card}")
    return 0


def _card_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="an evaluate run directory")


@verb("card", "regenerate the evaluation card of a run from its store", _card_args)
def _card(args: argparse.Namespace, overrides: list[str]) -> int:
    from jepalab.eval.card import card_from_run_dir

    _no_overrides(overrides)
    html, md = card_from_run_dir(args.run_dir)
    print(f"card: {html}\nmarkdown: {md}")
    return 0


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--quick", action="store_true", help="a much smaller run (minutes)")
    p.add_argument("--wm-set", action="append", default=[], metavar="KEY=VALUE",
                   help="set a field of both world models' config (predictor.keypoints=null)")


@verb("demo", "the whole path on two-rooms: collect, pretrain, world model, plan, evidence",
      _demo_args)
def _demo(args: argparse.Namespace, overrides: list[str]) -> int:
    from jepalab.demo import demo

    _no_overrides(overrides)
    demo(args.out, quick=args.quick, wm_overrides=tuple(args.wm_set))
    return 0


def _import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="an official .pth/.pth.tar file (opened with weights_only=True)")
    p.add_argument("--family", required=True, choices=("ijepa", "vjepa", "vjepa2"))
    p.add_argument("--arch", required=True,
                   help="release name, e.g. vith14 (ijepa), vitl16 (vjepa, vjepa2)")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--sha256", default=None, help="refuse the file unless it has this digest")
    p.add_argument("--which", default="target_encoder", help="target_encoder | encoder")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--frames", type=int, default=None)


@verb("import", "convert an official I-JEPA / V-JEPA / V-JEPA 2 checkpoint (safetensors)",
      _import_args)
def _import(args: argparse.Namespace, overrides: list[str]) -> int:
    from jepalab.models.import_official import import_official

    _no_overrides(overrides)
    out = import_official(args.src, args.family, args.arch, args.out, args.sha256, args.which,
                          image_size=args.image_size, frames=args.frames)
    print(f"checkpoint: {out}")
    return 0


def _no_overrides(overrides: list[str]) -> None:
    if overrides:
        raise JepalabError(f"unexpected arguments: {' '.join(overrides)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jepalab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, fn in VERBS.items():
        help_text, configure = fn.cli
        configure(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    try:
        return VERBS[args.verb](args, rest)
    except JepalabError as e:
        print(f"jepalab {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jepalab {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
