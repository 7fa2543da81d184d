"""Export a trained task for deployment: ONNX, ``torch.export`` or safetensors.

``geofm export -c config.yaml --ckpt_path best.ckpt --format onnx -o model.onnx`` (or
:func:`export_from_config`, or :func:`export_task` on a task in hand) writes the file and
``<file>.json`` beside it (:mod:`geofm.export.metadata`).

The contract of an exported graph (``onnx`` and ``torch-export``):

- one input, ``image``: float32 ``(B, C_file, H, W)``, the raw values of **every** band of
  the GeoTIFF in file order (``input.bands``); for multi-temporal models the file's
  ``T x C`` bands, time-major, as the datamodule reads them with
  ``expand_temporal_dimension``. NaN, ±inf and ``input.nodata`` pixels are nodata;
- inside the graph: the model's bands are selected (``output_bands``), then the task's
  :class:`~geofm.models.preprocess.Preprocess` runs as in training (``constant_scale``, nodata
  filled with ``no_data_replace`` or the band mean, normalisation), then the model;
- one output, ``logits``: float32 ``(B, K, H, W)`` for segmentation (regression:
  ``(B, 1, H, W)`` values), ``(B, K)`` for classification; no activation
  (``output.activation`` says which to apply);
- batch is dynamic; height and width are dynamic multiples of ``input.size_multiple`` (the
  model's patch size and coarsest stride; pad a tile up to one, reflecting, and crop the
  logits back, as geofm's models do), unless the architecture fixes them: then
  ``input.fixed_size`` is ``[h, w]`` (the tile size), logged at export;
- at export the file runs (onnxruntime, ``torch.export.load``) on random raw inputs with NaN,
  ±inf and nodata pixels at two sizes and is compared with the task's own logits; above
  ``1e-4`` nothing is written and :class:`ExportCheckError` says by how much
  (``check.max_abs_diff`` records the difference).

``safetensors`` writes the task's state dict (``model.*`` and ``preprocess.*``, the
preprocessing's settings in the file's metadata) and the same JSON; :func:`load_safetensors`
loads it into a task built from the same config.
"""

from __future__ import annotations

from geofm._lazy import lazy_exports

_LAZY: dict[str, str] = {
    "ExportCheckError": "geofm.export.errors",
    "ExportError": "geofm.export.errors",
    "MissingDependencyError": "geofm.export.errors",
    "ExportGraph": "geofm.export.graph",
    "ExportResult": "geofm.export.core",
    "FORMATS": "geofm.export.core",
    "export_task": "geofm.export.core",
    "load_safetensors": "geofm.export.core",
    "export_from_config": "geofm.export.config",
    "build_metadata": "geofm.export.metadata",
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_exports(globals(), _LAZY)
