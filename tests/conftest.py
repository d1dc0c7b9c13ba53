import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
# Tests import with --import-mode=importlib (same-named test files in different folders);
# shared helper modules (tiny.py, scene_checks.py, ...) are found through these paths.
_here = Path(__file__).parent
for _d in [_here, *sorted(p for p in _here.iterdir() if p.is_dir() and p.name[0] not in "._")]:
    sys.path.insert(0, str(_d))
