"""Pretraining objectives: one interface, chosen by name in the config."""

from jepalab.objectives.base import OBJECTIVES, Batch, Objective, build_objective, register

__all__ = ["OBJECTIVES", "Batch", "Objective", "build_objective", "register"]

# Importing the modules registers them.
from jepalab.objectives import contrastive as _contrastive  # noqa: E402,F401
from jepalab.objectives import jepa as _jepa  # noqa: E402,F401
from jepalab.objectives import mae as _mae  # noqa: E402,F401
from jepalab.objectives import pldm as _pldm  # noqa: E402,F401
from jepalab.objectives import sigreg as _sigreg  # noqa: E402,F401
from jepalab.objectives import supervised as _supervised  # noqa: E402,F401
from jepalab.objectives import vicreg as _vicreg  # noqa: E402,F401
