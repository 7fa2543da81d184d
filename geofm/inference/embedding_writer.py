"""Lightning callback that writes an ``EmbeddingTask``'s ``predict_step`` outputs.

``geofm predict -c embed.yaml --predict_output_dir out/`` (with a config whose model is an
:class:`~geofm.tasks.embedding.EmbeddingTask`) writes what ``geofm embed`` writes for chips
(:class:`~geofm.inference.chip_rows.ChipRows`): ``embeddings.parquet``, and for grids
``<chip>_emb.tif`` and ``patches.parquet``. Under DDP each process writes its own files,
``embeddings_rank<r>.parquet`` and ``patches_rank<r>.parquet``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import BasePredictionWriter

from geofm.inference.chip_rows import ChipRows
from geofm.inference.embedding import file_date
from geofm.inference.prediction_writer import _grid, require_outputs

__all__ = ["EmbeddingPredictionWriter"]

log = logging.getLogger(__name__)


class EmbeddingPredictionWriter(BasePredictionWriter):
    """Write chip embeddings (GeoParquet rows, grid GeoTIFFs) into ``output_dir``.

    Args:
        output_dir: Folder for the outputs (created).
    """

    def __init__(self, output_dir: str | Path):
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self._rows: ChipRows | None = None
        self._date_pattern: str | None = None

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        suffix = "" if trainer.world_size == 1 else f"_rank{trainer.global_rank}"
        kind = pl_module.output_kind
        self._rows = ChipRows(
            self.output_dir,
            pooled=kind in ("pooled", "both"),
            grid=kind in ("grid", "both"),
            name=f"embeddings{suffix}",
            patches=f"patches{suffix}",
        )
        self._date_pattern = getattr(getattr(trainer, "datamodule", None), "date_pattern", None)

    def write_on_batch_end(
        self,
        trainer: Any,
        pl_module: Any,
        prediction: Mapping[str, Any],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        assert self._rows is not None
        require_outputs(
            prediction,
            ("filename", "crs", "transform", "height", "width"),
            "embedding rows need each chip's file and grid (geofm datamodules give them).",
        )
        pooled, grid = prediction.get("embedding"), prediction.get("grid")
        if grid is not None and self._rows.stride is None:  # the model's stride, once
            from geofm.inference.embedding import feature_stride

            image = batch["image"]
            self._rows.stride = feature_stride(
                pl_module.predictor, image.shape[1], (224, 224), image.device
            )
        masks = prediction.get("nodata_mask")
        for i, filename in enumerate(prediction["filename"]):
            crs, transform = _grid(prediction["crs"][i], prediction["transform"][i])
            valid = None if masks is None else ~masks[i].cpu().numpy().astype(bool)
            self._rows.add(
                filename,
                crs,
                transform,
                int(prediction["height"][i]),
                int(prediction["width"][i]),
                pooled=None if pooled is None else pooled[i].float().cpu().numpy(),
                grid=None if grid is None else grid[i].float().cpu().numpy(),
                valid=valid,
                date=file_date(filename, self._date_pattern),
            )

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        if self._rows is not None:
            for path in self._rows.finish():
                log.info("Wrote %s", path)
            self._rows = None

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if self._rows is not None:
            self._rows.close()  # nothing half-written stays under an output's name
            self._rows = None
