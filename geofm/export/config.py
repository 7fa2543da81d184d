"""``export_from_config``: build a config's task, load a checkpoint, export it.

What ``geofm export`` runs. The task and datamodule come from the config as ``geofm fit``
builds them (:func:`geofm.cli_lightning.run_lightning_cli` with ``run=False``); the
datamodule's settings complete the task's preprocessing, then the checkpoint's replace them
(as ``geofm predict`` does); the datamodule says which bands the files hold
(``dataset_bands``, ``predict_dataset_bands``) and which the model takes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geofm.export.core import ExportResult, export_task

__all__ = ["export_from_config"]

log = logging.getLogger(__name__)


def _chip_size(datamodule: Any) -> tuple[int, int] | None:
    """Height and width of the first training (else validation, predict) image, when readable."""
    import rasterio

    for split, stage in (("train", "fit"), ("val", "validate"), ("predict", "predict")):
        try:
            dataset = getattr(datamodule, f"{split}_dataset", None)
            if dataset is None:
                datamodule.setup(stage)
                dataset = getattr(datamodule, f"{split}_dataset", None)
            files = getattr(dataset, "image_files", None)
            if not files:
                continue
            first = files[0]
            if isinstance(first, dict):  # multimodal: {modality: path}
                first = next(iter(first.values()))
            with rasterio.open(first) as src:
                return int(src.height), int(src.width)
        except Exception as exc:  # noqa: BLE001 - the tile size is a hint; none is fine
            log.debug("No chip size from the %s split: %s", split, exc)
    return None


def export_from_config(
    config: str | Path,
    ckpt_path: str | Path | None,
    output: str | Path,
    format: str = "onnx",
    *,
    overrides: Sequence[str] = (),
    nodata: float | None = None,
    tile_size: int | Sequence[int] | None = None,
    tile_overlap: int | None = None,
    opset: int = 18,
    tolerance: float = 1e-4,
    dynamic: bool = True,
) -> ExportResult:
    """Export the task of a fit config with a checkpoint's weights.

    Args:
        config: The fit config (a run's saved ``config.yaml`` is the safest).
        ckpt_path: The checkpoint, or ``last``/``best`` of the config's run directory;
            ``None`` exports the config's initial weights (logged as a warning).
        output: The file to write; its metadata goes to ``<output>.json``.
        format: ``"onnx"``, ``"torch-export"`` or ``"safetensors"``.
        overrides: ``--key value`` pairs applied to the config (``--data.init_args.x 1``).
        nodata: The input files' nodata value (pixels equal to it are nodata).
        tile_size: Tile side the model predicts on; default: the task's ``tiled_inference``,
            else the size of the first training image.
        tile_overlap: Tile overlap recorded in the metadata.
        opset: ONNX opset.
        tolerance: Largest accepted difference between the file's logits and the task's.
        dynamic: Try dynamic height and width first; ``False`` fixes them to the tile size.

    Returns:
        What :func:`~geofm.export.core.export_task` returns.
    """
    from geofm.cli_lightning import run_lightning_cli
    from geofm.errors import CheckpointNotFoundError
    from geofm.inference.task_scenes import load_task_checkpoint

    config = Path(config)
    if not config.is_file():
        raise FileNotFoundError(2, "Config file does not exist", str(config))
    cli = run_lightning_cli(["-c", str(config), "--trainer.logger", "false", *overrides], run=False)
    task, datamodule = cli.model, cli.datamodule
    config_text = cli.parser.dump(cli.config)
    if datamodule is not None:
        task.configure_preprocess(datamodule, stage="predict")
    else:
        task.configure_preprocess(None)
    if ckpt_path is not None:
        resolved = cli._resolve_checkpoint(str(ckpt_path))
        if resolved is None:
            raise CheckpointNotFoundError(
                f"--ckpt_path {ckpt_path}: the run directory {cli._run_dir()} has no such checkpoint."
            )
        load_task_checkpoint(task, resolved)
    else:
        log.warning("No checkpoint: exporting the config's initial weights.")
    selection_keys = ("predict_dataset_bands", "dataset_bands"), ("predict_output_bands", "output_bands")
    dataset_bands, output_bands = (
        next((getattr(datamodule, k) for k in keys if getattr(datamodule, k, None) is not None), None)
        for keys in selection_keys
    )
    if getattr(datamodule, "expand_temporal_dimension", False):
        frames = int(getattr(getattr(task.model, "encoder", None), "num_frames", 1) or 1)
    else:
        frames = 1
    if tile_size is None and not getattr(task, "_tiled", None) and datamodule is not None:
        tile_size = _chip_size(datamodule)
    return export_task(
        task,
        output,
        format,  # type: ignore[arg-type]
        dataset_bands=dataset_bands,
        output_bands=output_bands,
        nodata=nodata,
        tile_size=tile_size,
        tile_overlap=tile_overlap,
        num_frames=frames,
        dynamic=dynamic,
        opset=opset,
        tolerance=tolerance,
        config_text=config_text,
    )
