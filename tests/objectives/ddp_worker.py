"""Run under torchrun: pretrain several objectives in one process group (one launch for all).

usage: ddp_worker.py OUT_ROOT NAME [NAME ...] -- OVERRIDES..."""

import sys

from jepalab.config import PretrainConfig, load
from jepalab.train.loop import pretrain

if __name__ == "__main__":
    sep = sys.argv.index("--")
    root, names, overrides = sys.argv[1], sys.argv[2:sep], sys.argv[sep + 1 :]
    for name in names:
        cfg = load(PretrainConfig, None,
                   [*overrides, f"--objective.name={name}", f"--out_dir={root}/{name}"])
        pretrain(cfg, progress=False)
