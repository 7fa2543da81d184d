"""Lightning tasks: segmentation, pixel-wise regression, classification, object detection,
MAE pretraining.

Light on import: the task classes (which need Lightning) load on first access (PEP 562).
"""

from __future__ import annotations

from geofm._lazy import lazy_exports

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "BaseTask": "geofm.tasks.base",
    "SemanticSegmentationTask": "geofm.tasks.segmentation",
    "PixelwiseRegressionTask": "geofm.tasks.regression",
    "ClassificationTask": "geofm.tasks.classification",
    "MultiLabelClassificationTask": "geofm.tasks.classification",
    "ObjectDetectionTask": "geofm.tasks.detection",
    "MAEPretrainingTask": "geofm.tasks.mae",
    "EmbeddingTask": "geofm.tasks.embedding",
    "build_loss": "geofm.tasks.losses",
    "build_optimizer": "geofm.tasks.optim",
    "build_scheduler": "geofm.tasks.optim",
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_exports(globals(), _LAZY)
