"""Tiled inference: in-memory ``tiled_forward`` and streamed prediction of whole scenes.

Importing this package is cheap; each name loads its module (torch, rasterio) on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "plan_tiles": "geofm.inference.tiling",
    "blend_window": "geofm.inference.tiling",
    "blend_weights": "geofm.inference.tiling",
    "TileGrid": "geofm.inference.tiling",
    "Tile": "geofm.inference.tiling",
    "tiled_forward": "geofm.inference.in_memory",
    "RasterTileSource": "geofm.inference.reader",
    "GeoTiffSink": "geofm.inference.writer",
    "predict_scene": "geofm.inference.streaming",
    "predict_scenes": "geofm.inference.streaming",
    "Predictor": "geofm.inference.predictor",
    "predict_task_scenes": "geofm.inference.task_scenes",
    "list_scenes": "geofm.inference.streaming",
    "default_tile_size": "geofm.inference.streaming",
    "OnnxRuntimeModel": "geofm.inference.onnx_engine",
    "detect_scene": "geofm.inference.detection_scenes",
    "predict_scene_detections": "geofm.inference.detection_scenes",
    "VectorPredictionWriter": "geofm.inference.vector_writer",
    "embed_chips": "geofm.inference.embedding",
    "embed_scene": "geofm.inference.embedding_scenes",
    "embed_scenes": "geofm.inference.embedding_scenes",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'geofm.inference' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
