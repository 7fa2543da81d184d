"""``ObjectDetectionTask``: boxes (and instance masks) from a torchvision detector.

Batches (what a detection datamodule yields)::

    {"image": (B, C, H, W) float raw band values (NaN = nodata),
     "boxes": list of B (N_i, 4) float xyxy pixel coordinates,
     "labels": list of B (N_i,) int64 0-based class ids,
     "masks": optional list of B (N_i, H, W) uint8 (Mask R-CNN),
     "filename": list of B str}

Predict batches carry no boxes nor labels. The task owns the preprocessing as every geofm task
does (:class:`~geofm.tasks.base.BaseTask`: statistics from the task, the datamodule or the
backbone, checkpoint band checks, freezing, optimizer and scheduler).

Training loss: the sum of torchvision's loss dict; each part is logged as ``train/<part>``.
Validation and test: detections above ``score_threshold``, per-class non-maximum suppression
at ``iou_threshold``, then ``torchmetrics``' ``MeanAveragePrecision`` (pycocotools):
``val/map``, ``val/map_50``, ``val/map_75``, ``val/mar_100`` (and ``val/segm_map``... for
Mask R-CNN). torchvision's detectors compute no loss in eval mode, so there is no
``val/loss``: checkpoints monitor ``val/map`` (highest best; :attr:`checkpoint_monitor`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn
from torchmetrics import MetricCollection

from geofm.tasks.base import BaseTask, _few

__all__ = ["ObjectDetectionTask", "DETECTION_METRICS", "filter_detections"]

log = logging.getLogger(__name__)

#: MeanAveragePrecision results logged per stage (Mask R-CNN adds ``segm_`` versions).
DETECTION_METRICS = ("map", "map_50", "map_75", "mar_100")

# BaseTask arguments that have no meaning for detection: refused rather than ignored.
_REFUSED = {
    "loss": "the loss is the detector's own (torchvision's loss dict, summed)",
    "aux_loss": "detectors have no auxiliary heads",
    "aux_heads": "detectors have no auxiliary heads",
    "class_weights": "torchvision's detector losses take no class weights",
    "tiled_inference": "whole scenes go through geofm predict --streaming "
    "(geofm.inference.detection_scenes.predict_scene_detections)",
    "tiled_inference_parameters": "whole scenes go through geofm predict --streaming "
    "(geofm.inference.detection_scenes.predict_scene_detections)",
    "plot_on_val": "validation plots are drawn for pixel-wise and classification tasks only",
}


def filter_detections(
    detections: Mapping[str, torch.Tensor], score_threshold: float, iou_threshold: float
) -> dict[str, torch.Tensor]:
    """Detections scoring above ``score_threshold``, after per-class non-maximum suppression.

    Args:
        detections: ``{"boxes": (N, 4) xyxy, "scores": (N,), "labels": (N,), ["masks": (N, H,
            W)]}``.
        score_threshold: Scores at or below it are dropped.
        iou_threshold: Of two boxes of one class overlapping by more (IoU), the lower-scored
            is dropped.

    Returns:
        The kept detections, highest score first, same keys.
    """
    from torchvision.ops import batched_nms

    keep = detections["scores"] > score_threshold
    kept = {key: value[keep] for key, value in detections.items()}
    boxes, scores = kept["boxes"].float(), kept["scores"].float()
    order = batched_nms(boxes, scores, kept["labels"], iou_threshold)
    return {key: value[order] for key, value in kept.items()}


class ObjectDetectionTask(BaseTask):
    """Object detection and instance segmentation with torchvision's detectors.

    Args:
        model_factory: ``"ObjectDetectionModelFactory"`` (or another that builds a model
            returning torchvision-style losses and detections).
        model_args: The factory's arguments: ``framework`` (``faster-rcnn``, ``retinanet``,
            ``fcos``, ``mask-rcnn``), ``backbone``, ``backbone_*``, ``necks``,
            ``framework_*``, ``anchor_sizes``...
        model: A ready model instead (its ``forward(x, targets)`` as
            :class:`~geofm.models.factories.object_detection.ObjectDetectionModel`).
        num_classes: Object classes, without background (else ``len(class_names)``).
        class_names: Names of the classes, written as ``class_name`` in predicted vectors.
        iou_threshold: Per-class non-maximum suppression IoU of validation, test and predict
            outputs (and of cross-tile suppression on whole scenes).
        score_threshold: Detections scoring at or below it are dropped from validation, test
            and predict outputs (as TerraTorch does, mAP is computed on the kept ones).
        boxes_field: Batch key of the boxes (TerraTorch's setting).
        labels_field: Batch key of the labels.
        masks_field: Batch key of the instance masks.
        ignore_index: Objects of this label are dropped from the targets (TerraTorch's
            ``-1`` default means none; ``None`` too).
        prediction_format: ``"geojson"`` or ``"gpkg"``: the vector files ``geofm predict``
            writes (one per input, ``<stem>_pred.<format>``).
        loss: Refused (as ``aux_loss``, ``aux_heads``, ``class_weights``,
            ``tiled_inference``, ``tiled_inference_parameters`` and ``plot_on_val``): a value
            other than unset raises, naming what to do instead.
        **kwargs: The other :class:`~geofm.tasks.base.BaseTask` arguments (optimizer,
            scheduler, ``freeze_backbone``, ``freeze_decoder`` (necks and FPN),
            ``freeze_head``, ``means``/``stds``, ``lr_overrides``...).
    """

    model_task = "object_detection"
    plot_mode = "detection"
    loss_kind = "detection"
    #: The checkpoint monitor and its mode (there is no val/loss, see the module docstring).
    checkpoint_monitor: ClassVar[tuple[str, str]] = ("val/map", "max")

    def __init__(
        self,
        model_factory: str = "ObjectDetectionModelFactory",
        model_args: dict[str, Any] | None = None,
        model: nn.Module | None = None,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        iou_threshold: float = 0.5,
        score_threshold: float = 0.5,
        boxes_field: str = "boxes",
        labels_field: str = "labels",
        masks_field: str = "masks",
        ignore_index: int | None = None,
        prediction_format: str = "geojson",
        loss: Any = None,
        aux_loss: dict[str, float] | None = None,
        aux_heads: list[dict[str, Any]] | None = None,
        class_weights: list[float] | None = None,
        tiled_inference: dict[str, Any] | None = None,
        tiled_inference_parameters: dict[str, Any] | None = None,
        plot_on_val: bool | int = 0,
        **kwargs: Any,
    ) -> None:
        # Declared here (not left to BaseTask's **kwargs) so that the CLI's defaults for them
        # are "unset" and a value a config gives is refused, not silently ignored.
        refused = {
            "loss": loss,
            "aux_loss": aux_loss,
            "aux_heads": aux_heads,
            "class_weights": class_weights,
            "tiled_inference": tiled_inference,
            "tiled_inference_parameters": tiled_inference_parameters,
            "plot_on_val": plot_on_val,
        }
        for key, value in refused.items():
            if value is not None and value is not False and value != 0:
                raise ValueError(f"ObjectDetectionTask does not take {key}: {_REFUSED[key]}.")
        if not 0.0 <= float(iou_threshold) <= 1.0 or not 0.0 <= float(score_threshold) <= 1.0:
            raise ValueError(
                f"iou_threshold={iou_threshold} and score_threshold={score_threshold} must lie "
                "in [0, 1]."
            )
        if prediction_format not in ("geojson", "gpkg"):
            raise ValueError(
                f"prediction_format={prediction_format!r}; choose 'geojson' or 'gpkg'."
            )
        super().__init__(
            model_factory=model_factory,
            model_args=model_args,
            model=model,
            num_classes=num_classes,
            class_names=class_names,
            ignore_index=ignore_index,
            **kwargs,
        )

    # ------------------------------------------------------------------ configuration
    @property
    def framework(self) -> str | None:
        return getattr(self.model, "framework", (self.hparams.model_args or {}).get("framework"))

    @property
    def with_masks(self) -> bool:
        """Whether the model predicts instance masks (Mask R-CNN)."""
        return bool(getattr(self.model, "returns_masks", self.framework == "mask-rcnn"))

    def configure_losses(self, loss: nn.Module | None = None) -> None:
        """No criterion: the detector computes its own losses."""
        self.criterion = None

    def build_metrics(self) -> MetricCollection:
        """``MeanAveragePrecision`` on boxes (and masks for Mask R-CNN), pycocotools backend."""
        from torchmetrics.detection import MeanAveragePrecision

        iou_type = ("bbox", "segm") if self.with_masks else "bbox"
        try:
            metric = MeanAveragePrecision(iou_type=iou_type, backend="pycocotools")
        except ModuleNotFoundError as err:
            raise ImportError(
                "Object detection metrics need pycocotools: pip install 'geofm[detection]'."
            ) from err
        return MetricCollection({"mAP": metric})

    # ------------------------------------------------------------------ targets
    def _objects(self, batch: Mapping[str, Any], key: str) -> Sequence[torch.Tensor]:
        field = getattr(self.hparams, f"{key}_field")
        if field not in batch:
            # Mask R-CNN's masks come only when the datamodule is asked for them.
            hint = " and the datamodule's return_masks: true" if key == "masks" else ""
            raise KeyError(
                f"The batch has no '{field}' key (keys: {sorted(batch)}); detection batches hold "
                f"a list of per-image {key} (set the task's {key}_field if it has another "
                f"name{hint})."
            )
        values = batch[field]
        count = batch["image"].shape[0]
        if isinstance(values, torch.Tensor) and values.ndim >= 2 and key != "masks":
            values = list(values)  # a padded (B, N, ...) tensor of equal counts
        if len(values) != count:
            raise ValueError(
                f"The batch has {count} images but {len(values)} entries of '{field}'."
            )
        return values

    def targets(self, batch: Mapping[str, Any]) -> list[dict[str, torch.Tensor]]:
        """One ``{"boxes", "labels"[, "masks"]}`` per image, checked, ignored labels dropped.

        Raises:
            ValueError: boxes that are not ``(N, 4)`` finite with ``x2 > x1`` and ``y2 > y1``,
                labels outside ``[0, num_classes)``, or masks of another shape; naming the
                batch's file.
        """
        boxes = self._objects(batch, "boxes")
        labels = self._objects(batch, "labels")
        masks = self._objects(batch, "masks") if self.with_masks else None
        names = batch.get("filename")
        height, width = batch["image"].shape[-2:]
        ignore = self.hparams.ignore_index
        out = []
        for i in range(len(boxes)):
            named = isinstance(names, Sequence) and len(names) > i
            where = f"'{names[i]}'" if named else f"sample {i}"
            box = torch.as_tensor(boxes[i], dtype=torch.float32, device=self.device).reshape(-1, 4)
            label = torch.as_tensor(labels[i], device=self.device).long().reshape(-1)
            if box.shape[0] != label.shape[0]:
                raise ValueError(f"{where} has {box.shape[0]} boxes but {label.shape[0]} labels.")
            target = {"boxes": box, "labels": label}
            if masks is not None:
                mask = torch.as_tensor(masks[i], device=self.device).to(torch.uint8)
                if tuple(mask.shape) != (box.shape[0], height, width):
                    raise ValueError(
                        f"{where}: masks of shape {tuple(mask.shape)}, expected (N, H, W) = "
                        f"({box.shape[0]}, {height}, {width}) for its {box.shape[0]} objects."
                    )
                target["masks"] = mask
            if ignore is not None:
                keep = label != ignore
                target = {key: value[keep] for key, value in target.items()}
            self._check_objects(target, where)
            out.append(target)
        return out

    def _check_objects(self, target: Mapping[str, torch.Tensor], where: str) -> None:
        box, label = target["boxes"], target["labels"]
        if not bool(torch.isfinite(box).all()):
            bad = box[~torch.isfinite(box).all(1)].tolist()[:3]
            raise ValueError(f"{where} has non-finite box coordinates: {bad}.")
        flat = (box[:, 2] <= box[:, 0]) | (box[:, 3] <= box[:, 1])
        if bool(flat.any()):
            raise ValueError(
                f"{where} has boxes without area (xyxy needs x2 > x1 and y2 > y1): "
                f"{box[flat].tolist()[:3]}. Drop or widen them in the labels."
            )
        bad = (label < 0) | (label >= self.num_classes)
        if bool(bad.any()):
            values = torch.unique(label[bad]).tolist()
            raise ValueError(
                f"{where} has labels {_few(values)} outside [0, {self.num_classes}) for "
                f"num_classes={self.num_classes} (0-based object classes, no background). Raise "
                "num_classes, or set ignore_index to drop objects of that label."
            )

    # BaseTask's pixel-wise hooks, answered for detection.
    def target(  # type: ignore[override]
        self, batch: Mapping[str, Any]
    ) -> list[dict[str, torch.Tensor]]:
        return self.targets(batch)

    def metric_inputs(self, prediction: Any, target: Any) -> tuple[Any, Any]:
        return prediction, target

    def decode(self, prediction: Any) -> Any:
        return prediction

    def prediction_outputs(
        self, logits: torch.Tensor, probabilities: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError("ObjectDetectionTask predicts with detect(), not pixel outputs.")

    # ------------------------------------------------------------------ inference
    def detect(self, image: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Detections for raw images ``(B, C, H, W)`` (NaN = nodata): preprocess, the model in
        eval mode, ``score_threshold`` and per-class NMS at ``iou_threshold``.

        Returns:
            One ``{"boxes": (N, 4) xyxy pixels, "scores": (N,), "labels": (N,) 0-based[,
            "masks": (N, H, W) bool]}`` per image. The model's train/eval mode is restored.
        """
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                raw = self.model(self.preprocess(image))
        finally:
            self.model.train(was_training)
        out = []
        for det in raw:
            det = filter_detections(det, self.hparams.score_threshold, self.hparams.iou_threshold)
            if "masks" in det:
                det["masks"] = det["masks"] > 0.5
            out.append(det)
        return out

    # ------------------------------------------------------------------ steps
    def _step(self, batch: Mapping[str, Any], stage: str) -> tuple[torch.Tensor | None, Any]:
        self._check_batch(batch)
        targets = self.targets(batch)
        size = batch["image"].shape[0]
        if stage == "train":
            losses = self.model(self.preprocess(batch["image"]), targets)
            loss = sum(losses.values())
            self.log(
                "train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size
            )
            self.log_dict(
                {f"train/{name}": value.detach() for name, value in losses.items()},
                on_step=False,
                on_epoch=True,
                batch_size=size,
            )
            return loss, losses
        detections = self.detect(batch["image"])
        self._metrics(stage).update(detections, targets)
        self._updated_stages.add(stage)
        return None, detections

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[0]

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(
        self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Any]:
        """``boxes``, ``scores``, ``labels`` (and ``masks``): lists with one tensor per image,
        plus every batch key other than the inputs and targets (``filename``, ``crs``,
        ``transform``...)."""
        self._check_batch(batch)
        detections = self.detect(batch["image"])
        result: dict[str, Any] = {
            key: [det[key] for det in detections] for key in ("boxes", "scores", "labels")
        }
        if self.with_masks:
            result["masks"] = [det["masks"] for det in detections]
        hp = self.hparams
        skip = {"image", hp.boxes_field, hp.labels_field, hp.masks_field, *result}
        result.update({key: value for key, value in batch.items() if key not in skip})
        return result

    def _log_epoch_metrics(self, stage: str) -> dict[str, torch.Tensor] | None:
        """Log ``map``, ``map_50``, ``map_75``, ``mar_100`` (boxes; ``segm_*`` for masks)."""
        if stage not in self._updated_stages:
            return None
        metrics = self._metrics(stage)
        values = metrics.compute()
        prefix = f"{stage}/"
        logged = {}
        for kind in ("bbox", "segm") if self.with_masks else ("bbox",):
            for name in DETECTION_METRICS:
                key = f"{prefix}{kind}_{name}" if self.with_masks else f"{prefix}{name}"
                if key in values:
                    label = f"{prefix}{name}" if kind == "bbox" else f"{prefix}segm_{name}"
                    logged[label] = values[key].float()
        self.log_dict(logged)
        metrics.reset()
        self._updated_stages.discard(stage)
        return logged
