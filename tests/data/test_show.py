from __future__ import annotations

import numpy as np
from PIL import Image

from jepalab.data.show import show


def test_show_writes_contact_sheet_and_gif(fake_dataset, tmp_path):
    png, gif = show(fake_dataset.path, tmp_path / "preview", episodes=3, max_frames=5)
    assert png.name == "contact_sheet.png" and gif.name == "episodes.gif"
    sheet = np.asarray(Image.open(png))
    n = 16  # frame size of the fixture
    assert sheet.shape == (3 * (n + 4), 5 * (n + 1) - 1 + 4, 3)
    # Row 0, column 0 is episode 0's first frame.
    np.testing.assert_array_equal(sheet[2 : 2 + n, 2 : 2 + n], fake_dataset.frame(0))
    with Image.open(gif) as im:
        assert im.n_frames == int(fake_dataset.episode_lengths[[0, 4, 8]].max())
        assert im.size == (3 * (n + 2), n)
    assert not list((tmp_path / "preview").glob("*.tmp"))
