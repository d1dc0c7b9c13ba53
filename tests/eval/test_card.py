"""Evaluation card: self-contained HTML, markdown with PNGs beside it, rebuilt from a run dir."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from evidence_helpers import episode_rows, make_record

from jepalab.errors import JepalabError
from jepalab.eval.card import card_from_run_dir, load_extras, save_extras, write_card
from jepalab.eval.rules import describe
from jepalab.eval.store import EpisodeStore

SPEC = {("clean", 1): (32, 12), ("lighting_shift", 2): (24, 22), ("distractors", 2): (14, 12)}


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.imgs: list[str] = []
        self.text: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a["src"])
        for k in ("src", "href"):
            if k in a and not a[k].startswith("data:"):
                self.external.append(a[k])

    def handle_data(self, data):
        self.text.append(data)


def _extras(rng):
    frame = lambda v: np.full((16, 16, 3), v, np.uint8)  # noqa: E731
    z = rng.normal(size=(300, 8))
    return {"label_efficiency": {"candidate": [(10, 0.3), (100, 0.6)],
                                 "baseline": [(10, 0.2), (100, 0.4)]},
            "rollout_error": {"candidate": [(1, 0.1), (4, 0.3)], "baseline": [(1, 0.2), (4, 0.5)]},
            "latents": {"candidate": (z, z[:, 0]), "baseline": (z * 2, z[:, 1])},
            "latent_colour_name": "agent x",
            "frames": {"clean": [frame(10), frame(200)], "distractors@2": [frame(90)] * 3},
            "failure_residuals": {"dims": [3, 7], "names": ["door", "agent y"]}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    rows = episode_rows(SPEC)
    store = EpisodeStore(run_dir / "episodes.sqlite")
    store.add_many(rows)
    record = make_record(store.to_records())
    record.save(run_dir / "evidence.json")
    extras = _extras(np.random.default_rng(0))
    html_path, md_path = write_card(run_dir, record, store, extras)
    return run_dir, record, html_path, md_path, extras


def test_html_parses_self_contained_with_rule_and_badge(run):
    run_dir, record, html_path, _, _ = run
    assert html_path == run_dir / "card.html"
    p = _Collect()
    p.feed(html_path.read_text())
    p.close()
    text = " ".join(" ".join(p.text).split())
    assert record.decision.accepted
    assert 'class="badge accepted"' in html_path.read_text() and "ACCEPTED" in text
    assert " ".join(describe(record.decision.rule, record.decision.rule_params).split()) in text
    for reason in record.decision.reasons:
        assert reason in text
    assert p.external == []  # no external assets
    assert len(p.imgs) >= 6  # success, label efficiency, rollout, PCA, best/worst frames
    for src in p.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for field in ("Context crop", "Target crop", "Latent loss", "Intervention budget",
                  "Seed panel", "Perturbation panel", "Rollout horizon", "Baseline",
                  record.encoder_checkpoint.sha256, "mpc-cem", "19200 env interactions"):
        assert field in text, field
    assert "3 blocks" not in text and "4 blocks, each [0.15, 0.2]" in text


def test_failure_case_from_data(run):
    _, record, html_path, _, _ = run
    text = " ".join(html_path.read_text().split())
    # candidate: clean 0.80, lighting 0.60, distractors 0.35 -> distractors is the largest drop
    assert "largest drop from clean is under distractors@2" in text
    assert "latent dimensions 3 (door), 7 (agent y)" in text
    assert "failed" in text and "Example: episode" in text


def test_markdown_references_existing_pngs(run):
    run_dir, _, _, md_path, _ = run
    md = md_path.read_text()
    assert "**Decision: ACCEPTED**" in md
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(refs) >= 6
    for ref in refs:
        f = run_dir / ref
        assert f.is_file() and f.read_bytes()[:4] == b"\x89PNG"
    assert "| clean | candidate | 0.800 |" in md


def test_rejected_card_without_extras_or_store(tmp_path):
    rows = episode_rows({("clean", 1): (14, 12), ("fog", 1): (20, 20)})
    record = make_record(rows)
    assert not record.decision.accepted
    html_path, md_path = write_card(tmp_path, record, None)
    html_text = html_path.read_text()
    assert 'class="badge rejected"' in html_text and "REJECTED" in html_text
    assert "No residual diagnostics were available" in html_text
    assert html_text.count("data:image/png;base64,") == 1  # just the success plot


def test_extras_round_trip_and_card_from_run_dir(run, tmp_path):
    run_dir, record, _, _, extras = run
    save_extras(run_dir, extras)
    back = load_extras(run_dir)
    assert back["latent_colour_name"] == "agent x"
    assert np.array_equal(back["latents"]["baseline"][0], extras["latents"]["baseline"][0])
    assert [f.tolist() for f in back["frames"]["clean"]] == \
        [f.tolist() for f in extras["frames"]["clean"]]
    assert back["label_efficiency"]["candidate"] == [[10.0, 0.3], [100.0, 0.6]]
    (run_dir / "card.html").unlink()
    html_path, md_path = card_from_run_dir(run_dir)
    assert html_path.is_file() and "agent x" in html_path.read_text()
    with pytest.raises(JepalabError, match="no evidence.json"):
        card_from_run_dir(tmp_path)
    with pytest.raises(JepalabError, match="unknown key 'latent'"):
        save_extras(tmp_path, {"latent": {}})
    with pytest.raises(JepalabError, match=r"extras\['frames'\]\['clean'\]\[0\]"):
        save_extras(tmp_path, {"frames": {"clean": [np.zeros((4, 4), np.float32)]}})
