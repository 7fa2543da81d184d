"""Streamed prediction of a task's predict files: ``geofm predict --streaming``.

The task's :class:`~geofm.inference.predictor.Predictor` (its preprocessing and model, the
function per-chip prediction and in-memory tiling use) runs over each scene with
:func:`~geofm.inference.streaming.predict_scenes`, with the scene's ``temporal_coords`` and
``location_coords`` when the model takes them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from geofm.inference.streaming import predict_scenes

__all__ = ["load_task_checkpoint", "predict_task_scenes"]

log = logging.getLogger(__name__)

_OUTPUT_KIND = {"probabilities": "class", "values": "regression"}


def load_task_checkpoint(task: Any, ckpt_path: str | Path) -> None:
    """Load a Lightning checkpoint's weights and preprocessing into ``task``, in Lightning's
    order (the task's ``on_load_checkpoint`` hook, then the state dict).

    The file is read with ``weights_only=True``: a checkpoint never runs code. A missing,
    truncated or corrupt file is a :class:`~geofm.errors.CheckpointError` naming it.
    """
    from geofm.checkpoint_io import load_checkpoint_file
    from geofm.errors import CheckpointError

    path = Path(ckpt_path)
    checkpoint = load_checkpoint_file(path, map_location="cpu", weights_only=True)
    if "state_dict" not in checkpoint:
        raise CheckpointError(
            f"'{path}' is not a Lightning checkpoint (no 'state_dict'; keys {sorted(checkpoint)[:8]})."
        )
    task.on_load_checkpoint(checkpoint)
    task.load_state_dict(checkpoint["state_dict"])


def predict_task_scenes(
    task: Any,
    datamodule: Any,
    ckpt_path: str | Path | None,
    output_dir: str | Path,
    settings: dict[str, Any],
    device: str | torch.device | None = None,
) -> list[Path]:
    """Predict the datamodule's predict files scene by scene with the streaming tiler.

    Under ``torchrun`` (``RANK`` and ``WORLD_SIZE`` set) each process takes its share of the
    scenes.

    Args:
        task: A pixel-wise geofm task (segmentation or regression), or an
            ``ObjectDetectionTask``, whose scenes go to
            :func:`~geofm.inference.detection_scenes.predict_task_scene_detections`.
        datamodule: A geofm datamodule with ``predict_data_root``.
        ckpt_path: The checkpoint to predict with (its preprocessing included).
        output_dir: Where ``<scene>_pred.tif`` files go.
        settings: Settings of :func:`~geofm.inference.streaming.predict_scene` (``tile_size``,
            ``overlap``, ``batch_size``, ``resume``, ``output``...).
        device: Where the model runs; the first GPU when available by default.

    Returns:
        The GeoTIFFs (detection: vector files) this process wrote.
    """
    if getattr(task, "model_task", None) == "object_detection":  # vector files, not rasters
        from geofm.inference.detection_scenes import predict_task_scene_detections

        return predict_task_scene_detections(task, datamodule, ckpt_path, output_dir, settings, device)
    settings = dict(settings)
    kind = _OUTPUT_KIND.get(task.predictor.kind)
    if kind is None or getattr(task, "model_task", None) == "classification":
        raise ValueError(f"--streaming predicts pixel-wise tasks, not {type(task).__name__}.")
    datamodule.setup("predict")
    # Lightning's order: the datamodule's settings, then the checkpoint replaces them.
    task.configure_preprocess(datamodule, stage="predict")
    if ckpt_path:
        load_task_checkpoint(task, ckpt_path)
    dataset = datamodule.predict_dataset
    if dataset is None or not len(dataset):
        raise ValueError("--streaming found no scenes: set data.init_args.predict_data_root.")
    if dataset.expand_temporal_dimension:
        raise NotImplementedError(
            "--streaming reads single-frame scenes; expand_temporal_dimension is not supported."
        )
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    task.to(device).eval()
    index = {path.resolve(): i for i, path in enumerate(dataset.image_files)}
    wanted = task.predictor.extra_inputs

    def scene_inputs(scene: Path) -> dict[str, torch.Tensor]:
        coords = dataset.coordinates(index[scene.resolve()])
        return {k: torch.from_numpy(v)[None] for k, v in coords.items() if k in wanted}

    indexes = dataset.selection.indexes
    return predict_scenes(
        task.predictor,
        dataset.image_files,
        output_dir,
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        output=settings.pop("output", kind),
        bands=list(indexes) if indexes is not None else None,
        scene_inputs=scene_inputs,
        device=device,
        **settings,
    )
