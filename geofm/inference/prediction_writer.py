"""Lightning callback that writes ``predict_step`` outputs as GeoTIFFs on each input's grid."""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from rasterio.crs import CRS
from rasterio.transform import Affine

from geofm.inference.blending import output_type
from geofm.inference.writer import GeoTiffSink, geotiff_profile

__all__ = ["GeoTiffPredictionWriter", "require_outputs"]


def require_outputs(prediction: Mapping[str, Any], keys: Sequence[str], why: str) -> None:
    """Refuse a ``predict_step`` output without ``keys``, naming them and ``why`` the writer
    needs them (the prediction writers' one check)."""
    missing = [key for key in keys if key not in prediction]
    if missing:
        raise KeyError(f"predict_step output has no {missing}: {why}")

log = logging.getLogger(__name__)

# predict_step keys that hold per-pixel values, and the file suffix of each.
PIXEL_OUTPUTS = {"prediction": "pred", "probabilities": "prob", "logits": "logits"}


def _grid(crs: Any, transform: Any) -> tuple[Any, Affine]:
    """A batch's CRS (WKT) and transform (6-tuple) as rasterio objects."""
    crs = CRS.from_user_input(crs) if crs is not None else None
    return crs, transform if isinstance(transform, Affine) else Affine(*transform[:6])


class GeoTiffPredictionWriter(BasePredictionWriter):
    """Write one GeoTIFF per input and output kind into ``output_dir``.

    Pixel outputs are named ``<input stem>_pred.tif`` (class map: uint8, int16 beyond 255
    classes; regression values: float32), ``<stem>_prob.tif`` and ``<stem>_logits.tif``
    (float32, one band per class). Each file has its input's CRS, transform, width and height,
    nodata where the input was nodata, and is written under a temporary name then renamed.
    Scalar outputs (classification) go to ``predictions.csv`` (one file per process under DDP).

    Args:
        output_dir: Folder for the outputs (created).
    """

    def __init__(self, output_dir: str | Path):
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self._written: set[Path] = set()
        self._rows: list[dict[str, Any]] = []

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._written.clear()
        self._rows.clear()

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
        require_outputs(prediction, ["filename"], "the writer names outputs after their inputs.")
        filenames = prediction["filename"]
        regression = getattr(pl_module, "model_task", None) == "regression"
        for key, suffix in PIXEL_OUTPUTS.items():
            values = prediction.get(key)
            if not isinstance(values, torch.Tensor):
                continue
            if values.ndim <= 2:  # (B,) or (B, C): one value per image
                self._add_rows(key, filenames, values)
                continue
            for i, filename in enumerate(filenames):
                self._write_pixels(prediction, i, filename, suffix, values[i], regression, pl_module)

    def _write_pixels(
        self,
        prediction: Mapping[str, Any],
        index: int,
        filename: str,
        suffix: str,
        values: torch.Tensor,
        regression: bool,
        pl_module: Any,
    ) -> None:
        data = values.detach().cpu()
        if data.ndim == 2:
            data = data.unsqueeze(0)
        width, height = int(prediction["width"][index]), int(prediction["height"][index])
        if tuple(data.shape[-2:]) != (height, width):
            raise ValueError(
                f"Prediction for '{filename}' is {tuple(data.shape[-2:])} but the input is "
                f"{height} x {width}; predict without cropping transforms."
            )
        if suffix == "pred" and not regression:
            dtype, nodata, _ = output_type("class", getattr(pl_module, "num_classes", None) or 2)
            array = data.numpy().astype(dtype)
        else:
            dtype, nodata = np.dtype("float32"), float("nan")
            array = data.float().numpy()
        mask = prediction.get("nodata_mask")
        if mask is not None:
            array[:, mask[index].cpu().numpy().astype(bool)] = nodata
        target = self.output_dir / f"{Path(filename).stem}_{suffix}.tif"
        if target in self._written:
            raise ValueError(
                f"Two inputs named '{Path(filename).stem}' would both write {target}; rename one."
            )
        # Small chips get one block; GeoTIFF blocks are multiples of 16.
        block = 256 if min(width, height) >= 256 else 16 * -(-min(width, height) // 16)
        crs, transform = _grid(prediction["crs"][index], prediction["transform"][index])
        profile = geotiff_profile(width, height, array.shape[0], dtype, crs, transform, nodata, block=block)
        # Not exclusive: under DDP two ranks may write the same padded sample, each whole.
        sink = GeoTiffSink(
            target, width, height, fingerprint={"input": str(filename)}, exclusive=False
        )
        sink.open(profile)
        try:
            sink.write(0, array)
            sink.finish()
        finally:
            sink.close()
        self._written.add(target)

    def _add_rows(self, key: str, filenames: Sequence[str], values: torch.Tensor) -> None:
        values = values.detach().cpu()
        for filename, value in zip(filenames, values, strict=True):
            self._rows.append({"filename": filename, key: value.tolist()})

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        if not self._rows:
            return
        merged: dict[str, dict[str, Any]] = {}
        for row in self._rows:
            merged.setdefault(row["filename"], {}).update(row)
        name = "predictions.csv" if trainer.world_size == 1 else f"predictions_rank{trainer.global_rank}.csv"
        target = self.output_dir / name
        temp = target.with_name(f".{name}.partial")
        with temp.open("w", newline="") as handle:
            fields = ["filename", *sorted({k for r in merged.values() for k in r} - {"filename"})]
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(merged.values())
        temp.replace(target)
        log.info("Wrote %s", target)
