"""The `jepalab` command: parses arguments, loads config, calls one library function per verb.

Any `JepalabError` is printed as one line and exits with status 2; nothing half-written remains
because every writer below is atomic or append-only.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

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
    from jepalab.train.loop import pretrain

    cfg = load(PretrainConfig, args.config, overrides)
    path = pretrain(cfg, resume=args.resume, progress=not args.quiet)
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
