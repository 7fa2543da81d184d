"""ObjectDetectionTask: training, mAP wiring, target checks, predict outputs and vector files."""

from __future__ import annotations

import geopandas as gpd
import lightning as L
import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from torch import nn

from geofm.inference.vector_writer import VectorPredictionWriter
from geofm.tasks.detection import ObjectDetectionTask

SIZE = 64
BOXES = [torch.tensor([[6.0, 8.0, 26.0, 24.0], [34.0, 30.0, 58.0, 54.0]]), torch.tensor([[10.0, 40.0, 30.0, 60.0]])]
LABELS = [torch.tensor([0, 1]), torch.tensor([1])]


def _masks() -> list[torch.Tensor]:
    out = []
    for boxes in BOXES:
        m = torch.zeros(len(boxes), SIZE, SIZE, dtype=torch.uint8)
        for i, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
            m[i, y1:y2, x1:x2] = 1
        out.append(m)
    return out


def make_batch(masks: bool = False) -> dict:
    batch = {
        "image": torch.rand(2, 3, SIZE, SIZE),
        "boxes": [b.clone() for b in BOXES],
        "labels": [lab.clone() for lab in LABELS],
        "filename": ["a.tif", "b.tif"],
    }
    if masks:
        batch["masks"] = _masks()
    return batch


class Batches(torch.utils.data.Dataset):
    def __init__(self, make, count: int = 2):
        self.make, self.count = make, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        return self.make()


def loader(make, count: int = 2) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(Batches(make, count), batch_size=None)


class FixedDetector(nn.Module):
    """A stand-in model whose detections are given: the metric wiring under test, not a net."""

    framework = "faster-rcnn"

    def __init__(self, detections: list[dict[str, torch.Tensor]], returns_masks: bool = False):
        super().__init__()
        self.detections = detections
        self.returns_masks = returns_masks
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, x, targets=None):
        return [{k: v.clone() for k, v in det.items()} for det in self.detections]


def trainer(**kwargs) -> L.Trainer:
    return L.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, **kwargs
    )


def fixed_task(detections, masks: bool = False, **kwargs) -> ObjectDetectionTask:
    return ObjectDetectionTask(
        model=FixedDetector(detections, masks), num_classes=2, means=[0, 0, 0], stds=[1, 1, 1], **kwargs
    )


def _perfect(masks: bool = False) -> list[dict[str, torch.Tensor]]:
    dets = [{"boxes": b.clone(), "scores": torch.full((len(b),), 0.9), "labels": lab.clone()} for b, lab in zip(BOXES, LABELS)]
    if masks:
        for det, m in zip(dets, _masks()):
            det["masks"] = m.float()
    return dets


def test_map_is_one_when_predictions_equal_targets_and_lower_otherwise():
    t = trainer()
    t.validate(fixed_task(_perfect()), loader(make_batch), verbose=False)
    assert {k: round(float(v), 4) for k, v in t.callback_metrics.items()} == {
        "val/map": 1.0, "val/map_50": 1.0, "val/map_75": 1.0, "val/mar_100": 1.0
    }
    # The first box moved by half its width (IoU 1/3): a miss at every IoU threshold >= 0.5.
    shifted = _perfect()
    shifted[0]["boxes"][0] += torch.tensor([10.0, 0.0, 10.0, 0.0])
    t.validate(fixed_task(shifted), loader(make_batch), verbose=False)
    assert float(t.callback_metrics["val/map"]) < 1.0
    assert float(t.callback_metrics["val/map_50"]) < 1.0
    # Scores at or below score_threshold are dropped before the metric: nothing found.
    t.test(fixed_task(_perfect(), score_threshold=0.95), loader(make_batch), verbose=False)
    assert float(t.callback_metrics["test/map"]) == 0.0


def test_mask_metrics_for_instance_masks():
    t = trainer()
    t.validate(fixed_task(_perfect(masks=True), masks=True), loader(lambda: make_batch(masks=True)), verbose=False)
    assert float(t.callback_metrics["val/segm_map"]) == 1.0
    assert float(t.callback_metrics["val/map"]) == 1.0
    wrong = _perfect(masks=True)
    wrong[0]["masks"][0] = 0
    wrong[0]["masks"][0, 8:24, 6:12] = 1  # a sliver of its box
    t.validate(fixed_task(wrong, masks=True), loader(lambda: make_batch(masks=True)), verbose=False)
    assert float(t.callback_metrics["val/segm_map"]) < 1.0 and float(t.callback_metrics["val/map"]) == 1.0


def test_fit_with_a_real_detector_logs_losses_and_map():
    task = ObjectDetectionTask(
        model_args={
            "framework": "fcos",
            "backbone": "timm_resnet18",
            "backbone_in_chans": 3,
            "fpn_out_channels": 64,
            "necks": [{"name": "SelectIndices", "indices": [2, 3, 4]}],
        },
        num_classes=2,
        means=[0.5] * 3,
        stds=[0.25] * 3,
        score_threshold=0.0,
    )
    first = next(p for p in task.model.encoder.parameters() if p.ndim == 4)
    before = first.detach().clone()
    t = trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    t.fit(task, loader(make_batch), loader(make_batch, 1))
    metrics = t.callback_metrics
    assert torch.isfinite(metrics["train/loss"])
    assert {"train/classification", "train/bbox_regression", "train/bbox_ctrness", "val/map"} <= set(metrics)
    assert not torch.equal(before, first)
    assert task.checkpoint_monitor == ("val/map", "max")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b["boxes"][0].__setitem__((0, 2), 6.0), r"'a.tif' has boxes without area"),
        (lambda b: b["labels"][1].__setitem__(0, 2), r"'b.tif' has labels 2 outside \[0, 2\)"),
        (lambda b: b["labels"].__setitem__(0, torch.tensor([0])), r"'a.tif' has 2 boxes but 1 labels"),
        (lambda b: b.pop("boxes"), r"The batch has no 'boxes' key"),
    ],
)
def test_bad_targets_name_the_file(change, message):
    task = fixed_task(_perfect())
    batch = make_batch()
    change(batch)
    with pytest.raises((ValueError, KeyError), match=message):
        task.targets(batch)


def test_mask_task_without_masks_points_to_return_masks():
    task = fixed_task(_perfect(masks=True), masks=True)
    with pytest.raises(KeyError, match=r"no 'masks' key.*return_masks: true"):
        task.targets(make_batch(masks=False))


def test_ignore_index_drops_objects_and_refused_arguments():
    task = fixed_task(_perfect(), ignore_index=1)
    targets = task.targets(make_batch())
    assert [t["labels"].tolist() for t in targets] == [[0], []]
    assert targets[0]["boxes"].tolist() == [BOXES[0][0].tolist()]
    for key, value in (("loss", "focal"), ("tiled_inference", {"tile_size": 32}), ("class_weights", [1.0, 2.0])):
        with pytest.raises(ValueError, match=f"does not take {key}"):
            fixed_task(_perfect(), **{key: value})


def test_predict_writes_one_vector_file_per_input_in_its_crs(tmp_path):
    transform = from_origin(300000.0, 5000000.0, 10.0, 10.0)
    paths = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.tif"
        with rasterio.open(
            path, "w", driver="GTiff", width=SIZE, height=SIZE, count=3, dtype="float32",
            crs="EPSG:32632", transform=transform,
        ) as dst:
            dst.write(np.zeros((3, SIZE, SIZE), dtype=np.float32))
        paths.append(str(path))

    def predict_batch():  # no crs/transform in the batch: the writer reads them from the files
        return {"image": torch.rand(2, 3, SIZE, SIZE), "filename": paths}

    task = fixed_task(_perfect(), class_names=["car", "tree"], prediction_format="gpkg")
    out = tmp_path / "out"
    trainer(callbacks=[VectorPredictionWriter(out, "gpkg")]).predict(
        task, loader(predict_batch, 1), return_predictions=False
    )
    frame = gpd.read_file(out / "a_pred.gpkg")
    assert frame.crs.to_epsg() == 32632
    assert frame["class_name"].tolist() == ["car", "tree"] and frame["class_id"].tolist() == [0, 1]
    x1, y1, x2, y2 = BOXES[0][0].tolist()
    # Box corners through the raster's transform: x = 300000 + 10 col, y = 5000000 - 10 row.
    assert frame.geometry[0].bounds == pytest.approx(
        (300000 + 10 * x1, 5000000 - 10 * y2, 300000 + 10 * x2, 5000000 - 10 * y1)
    )
    assert len(gpd.read_file(out / "b_pred.gpkg")) == 1
