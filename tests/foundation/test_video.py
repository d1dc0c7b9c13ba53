"""Video JEPA: the same trainer, encoder and objective with tubelets and V-JEPA tube masks."""

import json

from jepalab.cli import main
from jepalab.data.collect import collect
from tiny import TINY


def test_video_jepa_on_clips(tmp_path):
    data = collect("two-rooms", 4, tmp_path / "data", max_steps=12, progress=False,
                   image_size=32)
    run = tmp_path / "run"
    over = [a for a in TINY if not a.startswith(("--mask.params", "--data.num_images"))]
    rc = main(["pretrain", "--quiet", f"--out_dir={run}", "--data.source=dataset",
               f"--data.path={data}", "--data.frames=4", "--model.tubelet=2", "--mask.kind=tube",
               "--steps=20", "--optim.lr=2e-3", "--mask.params.min_keep=2", *over])
    assert rc == 0
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < rows[0]["loss"]
    manifest = json.loads((run / "checkpoints" / "step_0000020" / "manifest.json").read_text())
    assert manifest["mask_policy"]["kind"] == "tube" and len(manifest["mask_policy"]["grid"]) == 3
    # wrong pairing of mask and data is refused with the field named
    assert main(["pretrain", "--quiet", f"--out_dir={tmp_path / 'x'}", "--data.source=dataset",
                 f"--data.path={data}", "--data.frames=4", "--mask.kind=multiblock", *over]) == 2
