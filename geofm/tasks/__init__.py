"""Lightning tasks: segmentation, pixel-wise regression, classification.

Light on import: the task classes (which need Lightning) load on first access (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "BaseTask": "geofm.tasks.base",
    "SemanticSegmentationTask": "geofm.tasks.segmentation",
    "PixelwiseRegressionTask": "geofm.tasks.regression",
    "ClassificationTask": "geofm.tasks.classification",
    "MultiLabelClassificationTask": "geofm.tasks.classification",
    "build_loss": "geofm.tasks.losses",
    "build_optimizer": "geofm.tasks.optim",
    "build_scheduler": "geofm.tasks.optim",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'geofm.tasks' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
