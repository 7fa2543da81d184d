"""Detection labels: vector files on the chip's grid, COCO JSON, batches and augmentation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
import torch
from affine import Affine

from geofm.data.coco_labels import CocoLabels
from geofm.data.collate import collate_detection
from geofm.data.datamodules.detection import GenericNonGeoDetectionDataModule
from geofm.data.datasets.detection import GenericNonGeoDetectionDataset
from geofm.data.detection_transforms import (
    apply_symmetry,
    build_detection_augmentation,
    symmetry_boxes,
)
from geofm.data.raster import GridInfo
from geofm.data.vector_labels import LabelFileError, read_vector_objects
from geofm.errors import ConfigError
from tests.data.fixtures import CRS, PIXEL, write_tif


ORIGIN = (440280.0, 3159720.0)
SIZE = 64
CHIP = Affine(PIXEL, 0.0, ORIGIN[0], 0.0, -PIXEL, ORIGIN[1])
GRID = GridInfo(crs=None, transform=tuple(CHIP)[:6], height=SIZE, width=SIZE, count=3)


def _grid() -> GridInfo:
    from rasterio.crs import CRS as RioCRS

    return GridInfo(RioCRS.from_string(CRS).to_wkt(), tuple(CHIP)[:6], SIZE, SIZE, 3)


def _map_box(x0: float, y0: float, x1: float, y1: float):
    """A rectangle given in pixel-edge coordinates, as a polygon in the chip's CRS."""
    return shapely.box(*(CHIP @ (x0, y1)), *(CHIP @ (x1, y0)))


def _write_vector(path: Path, geometries, crs: str = CRS, **columns) -> Path:
    gpd.GeoDataFrame(columns, geometry=list(geometries), crs=crs).to_file(path)
    return path


def _empty_geojson(path: Path) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    return path


def test_same_crs_gives_exact_pixel_boxes_labels_and_masks(tmp_path):
    l_shape = shapely.Polygon(  # an L of pixels: columns 40-50 of rows 5-25, plus 50-60 of 20-25
        [CHIP @ xy for xy in [(40, 5), (50, 5), (50, 20), (60, 20), (60, 25), (40, 25)]]
    )
    path = _write_vector(
        tmp_path / "a.geojson",
        [_map_box(10, 20, 30, 40), l_shape],
        cls=["building", "pool"],
    )
    objects = read_vector_objects(
        path, _grid(), class_column="cls", class_names=["pool", "building"], return_masks=True
    )
    np.testing.assert_allclose(objects["boxes"], [[10, 20, 30, 40], [40, 5, 60, 25]], atol=1e-4)
    assert objects["boxes"].dtype == np.float32
    assert objects["labels"].tolist() == [1, 0] and objects["labels"].dtype == np.int64
    expected = np.zeros((2, SIZE, SIZE), dtype=np.uint8)
    expected[0, 20:40, 10:30] = 1
    expected[1, 5:25, 40:50] = 1
    expected[1, 20:25, 50:60] = 1
    assert objects["masks"].dtype == np.uint8
    np.testing.assert_array_equal(objects["masks"], expected)


def test_other_crs_is_reprojected_and_logged_once(tmp_path, caplog):
    from pyproj import Transformer

    to_wgs84 = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    box = _map_box(12, 8, 44, 30)
    lonlat = shapely.transform(box, lambda xy: np.column_stack(to_wgs84.transform(*xy.T)))
    path = _write_vector(tmp_path / "wgs84.geojson", [lonlat], crs="EPSG:4326")
    with caplog.at_level(logging.INFO, logger="geofm.data.vector_labels"):
        first = read_vector_objects(path, _grid())
        second = read_vector_objects(path, _grid())
    np.testing.assert_allclose(first["boxes"], [[12, 8, 44, 30]], atol=0.01)
    np.testing.assert_array_equal(first["boxes"], second["boxes"])
    lines = [r.getMessage() for r in caplog.records if "reprojecting" in r.getMessage()]
    assert len(lines) == 1, lines
    assert str(path) in lines[0] and "EPSG:4326" in lines[0] and CRS in lines[0]


def test_geometry_crossing_the_edge_is_clipped_and_outside_dropped(tmp_path):
    # A self-intersecting "bowtie" (two triangles meeting at a point) crossing the top edge.
    bowtie = shapely.Polygon([CHIP @ xy for xy in [(20, -4), (30, 6), (30, -4), (20, 6)]])
    assert not bowtie.is_valid
    path = _write_vector(
        tmp_path / "edge.gpkg",
        [_map_box(-10, 5, 10, 15), _map_box(70, 70, 80, 80), _map_box(50, 50, 70, 64), bowtie],
        cls=[0, 1, 2, 3],
    )
    objects = read_vector_objects(path, _grid(), class_column="cls", return_masks=True)
    np.testing.assert_allclose(
        objects["boxes"], [[0, 5, 10, 15], [50, 50, 64, 64], [20, 0, 30, 6]], atol=1e-4
    )
    assert objects["labels"].tolist() == [0, 2, 3]  # the one outside is gone, with its class
    assert int(objects["masks"][0].sum()) == 10 * 10


def test_polygons_sharing_only_the_chip_edge_are_dropped(tmp_path):
    """Neighbours of a tile (as a whole scene's polygons are for each of its tiles) meet its
    edge in slivers of rounding error; none may become a box without width or height."""
    from rasterio.crs import CRS as RioCRS

    # The Sen1Floods11 chip's degree grid (its steps are not exact in binary), and the tile of
    # it that starts at pixel (SIZE, SIZE), as a tiler writes it.
    scene = Affine(8.983152841195215e-05, 0.0, -0.7818936232976315, 0.0, -8.983152841195215e-05,
                   38.12881257139627)
    tile = scene * Affine.translation(SIZE, SIZE)
    grid = GridInfo(RioCRS.from_epsg(4326).to_wkt(), tuple(tile)[:6], SIZE, SIZE, 1)

    def box(x0, y0, x1, y1):  # in the tile's pixels, placed through the scene's grid
        return shapely.box(*(scene @ (SIZE + x0, SIZE + y1)), *(scene @ (SIZE + x1, SIZE + y0)))

    neighbours = [box(SIZE, y, SIZE + 2, y + 1) for y in range(0, SIZE, 4)]
    neighbours += [box(x, SIZE, x + 1, SIZE + 2) for x in range(0, SIZE, 4)]
    neighbours += [box(-2, y, 0, y + 1) for y in range(0, SIZE, 4)]
    crossing = box(SIZE - 1, 3, SIZE + 7, 9)
    path = _write_vector(tmp_path / "neighbours.geojson", [*neighbours, crossing], crs="EPSG:4326")
    objects = read_vector_objects(path, grid, return_masks=True)
    np.testing.assert_allclose(objects["boxes"], [[SIZE - 1, 3, SIZE, 9]], atol=1e-6)
    assert int(objects["masks"].sum()) == 6


@pytest.mark.parametrize("kind", ["no features", "zero bytes"])
def test_empty_label_file_is_a_chip_without_objects(tmp_path, kind):
    path = tmp_path / "empty.geojson"
    if kind == "zero bytes":
        path.write_bytes(b"")
    else:
        _empty_geojson(path)
    objects = read_vector_objects(path, _grid(), class_column="cls", return_masks=True)
    assert objects["boxes"].shape == (0, 4) and objects["labels"].shape == (0,)
    assert objects["masks"].shape == (0, SIZE, SIZE)


def test_missing_column_and_unknown_class_name_the_file(tmp_path):
    path = _write_vector(tmp_path / "bad.geojson", [_map_box(1, 1, 5, 5)], kind=["tree"])
    with pytest.raises(LabelFileError, match=r"bad\.geojson.*no column 'cls'.*\['kind'\]"):
        read_vector_objects(path, _grid(), class_column="cls")
    with pytest.raises(LabelFileError, match=r"bad\.geojson.*'kind'.*'tree'.*\['building'\]"):
        read_vector_objects(path, _grid(), class_column="kind", class_names=["building"])
    with pytest.raises(LabelFileError, match=r"bad\.geojson.*'tree' is not a class id"):
        read_vector_objects(path, _grid(), class_column="kind")
    ids = _write_vector(tmp_path / "ids.geojson", [_map_box(1, 1, 5, 5)], cls=[3])
    with pytest.raises(LabelFileError, match=r"ids\.geojson.*'cls'.*class id 3.*\[0, 2\)"):
        read_vector_objects(ids, _grid(), class_column="cls", num_classes=2)
    assert read_vector_objects(ids, _grid(), class_column="cls")["labels"].tolist() == [3]
    with pytest.raises(LabelFileError, match=r"bad\.geojson.*EPSG:32614.*'x\.tif' has no CRS"):
        read_vector_objects(path, GRID, image="x.tif")
    points = _write_vector(tmp_path / "points.geojson", [shapely.Point(CHIP @ (3, 3))])
    with pytest.raises(LabelFileError, match=r"points\.geojson.*\['Point'\].*polygons"):
        read_vector_objects(points, _grid())


def _chip_folder(root: Path, boxes: dict[str, list[tuple[int, int, int, int]]]) -> None:
    """One 3-band chip per name, bright (1000) inside its boxes, and its GeoJSON."""
    for name, pixel_boxes in boxes.items():
        image = np.full((3, SIZE, SIZE), 10, dtype=np.int16)
        for x0, y0, x1, y1 in pixel_boxes:
            image[:, y0:y1, x0:x1] = 1000
        write_tif(root / "images" / f"{name}.tif", image, origin=ORIGIN)
        label = root / "labels" / f"{name}.geojson"
        label.parent.mkdir(parents=True, exist_ok=True)
        if pixel_boxes:
            _write_vector(label, [_map_box(*b) for b in pixel_boxes])
        else:
            _empty_geojson(label)


def test_datamodule_batches_vector_labels_with_an_empty_chip(tmp_path):
    _chip_folder(tmp_path, {"a": [(4, 6, 20, 30), (30, 30, 40, 50)], "b": []})
    dm = GenericNonGeoDetectionDataModule(
        batch_size=2,
        train_data_root=tmp_path / "images",
        train_label_data_root=tmp_path / "labels",
        predict_data_root=tmp_path / "images",
        img_grep="*.tif",
        label_grep="*.geojson",
        return_masks=True,
        num_classes=1,
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, SIZE, SIZE)
    by_name = {Path(f).stem: i for i, f in enumerate(batch["filename"])}
    a, b = by_name["a"], by_name["b"]
    expected = torch.tensor([[4.0, 6, 20, 30], [30, 30, 40, 50]])
    torch.testing.assert_close(batch["boxes"][a], expected)
    assert batch["boxes"][b].shape == (0, 4) and batch["labels"][b].shape == (0,)
    assert batch["masks"][b].shape == (0, SIZE, SIZE)
    assert batch["labels"][a].tolist() == [0, 0]
    dm.setup("predict")
    predict = next(iter(dm.predict_dataloader()))
    assert "boxes" not in predict and predict["image"].shape == (2, 3, SIZE, SIZE)


def test_coco_file_gives_boxes_labels_and_masks(tmp_path):
    for name in ("a", "b"):
        write_tif(tmp_path / "images" / f"{name}.tif", np.ones((3, SIZE, SIZE), np.int16))
    coco = {
        "images": [
            {"id": 1, "file_name": "a.tif", "height": SIZE, "width": SIZE},
            {"id": 2, "file_name": "sub/b.tif", "height": SIZE, "width": SIZE},
        ],
        "categories": [{"id": 7, "name": "pool"}, {"id": 3, "name": "building"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 20, 5, 8],
             "segmentation": [[10, 20, 15, 20, 15, 28, 10, 28]], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [60, 0, 10, 4],
             "segmentation": [[60, 0, 70, 0, 70, 4, 60, 4]]},
            {"id": 3, "image_id": 1, "category_id": 3, "bbox": [0, 0, 30, 30],
             "segmentation": {"counts": [0, 10], "size": [SIZE, SIZE]}, "iscrowd": 1},
        ],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    dataset = GenericNonGeoDetectionDataset(
        tmp_path / "images", img_grep="*.tif", coco_file=tmp_path / "coco.json", return_masks=True
    )
    assert dataset.class_names == ["building", "pool"]  # by category id: 3, then 7
    sample = dataset[[Path(p).name for p in dataset.image_files].index("a.tif")]
    # xywh -> xyxy; the second box is clipped at the right edge; the crowd region left out.
    torch.testing.assert_close(sample["boxes"], torch.tensor([[10.0, 20, 15, 28], [60, 0, 64, 4]]))
    assert sample["labels"].tolist() == [1, 0]
    expected = torch.zeros(SIZE, SIZE, dtype=torch.uint8)
    expected[20:28, 10:15] = 1
    torch.testing.assert_close(sample["masks"][0], expected)
    assert int(sample["masks"][1].sum()) == 4 * 4
    other = dataset[[Path(p).name for p in dataset.image_files].index("b.tif")]
    assert other["boxes"].shape == (0, 4) and other["masks"].shape == (0, SIZE, SIZE)

    coco["images"].pop(1)
    (tmp_path / "partial.json").write_text(json.dumps(coco))
    with pytest.raises(LabelFileError, match=r"partial\.json.*does not list.*b\.tif"):
        GenericNonGeoDetectionDataset(
            tmp_path / "images", img_grep="*.tif", coco_file=tmp_path / "partial.json"
        )
    with pytest.raises(ConfigError, match="class_column='kind' is for vector label files"):
        GenericNonGeoDetectionDataset(
            tmp_path / "images", img_grep="*.tif", coco_file=tmp_path / "coco.json",
            class_column="kind",
        )
    with pytest.raises(ConfigError, match="coco_file=.*label_data_root and label_grep"):
        GenericNonGeoDetectionDataset(
            tmp_path / "images", tmp_path / "images", img_grep="*.tif",
            coco_file=tmp_path / "coco.json",
        )
    twice = {**coco, "images": [*coco["images"], {"id": 9, "file_name": "a.tif"}]}
    (tmp_path / "twice.json").write_text(json.dumps(twice))
    with pytest.raises(LabelFileError, match=r"twice\.json' lists file_name 'a\.tif' twice"):
        CocoLabels(tmp_path / "twice.json")
    twice["images"][-1] = {"id": 1, "file_name": "c.tif"}
    (tmp_path / "twice.json").write_text(json.dumps(twice))
    with pytest.raises(LabelFileError, match=r"lists id 1 twice"):
        CocoLabels(tmp_path / "twice.json")
    with pytest.raises(LabelFileError, match=r"class_names \['pool', 'building'\] differ"):
        GenericNonGeoDetectionDataset(
            tmp_path / "images", img_grep="*.tif", coco_file=tmp_path / "coco.json",
            class_names=["pool", "building"],
        )


def _bright_box(image: torch.Tensor) -> list[float]:
    """xyxy pixel-edge box of the pixels above 500 in band 0 of ``image`` ``(C, H, W)``."""
    rows, cols = torch.nonzero(image[0] > 500, as_tuple=True)
    return [float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)]


@pytest.mark.parametrize("element", range(8))
def test_each_symmetry_moves_box_and_mask_with_the_image(element):
    image = torch.zeros(1, 40, 40)
    image[:, 3:11, 25:38] = 1000  # rows 3-10, columns 25-37: off every axis of symmetry
    box = torch.tensor([[25.0, 3, 38, 11]])
    moved = apply_symmetry(image, element)
    assert symmetry_boxes(box, element, 40, 40)[0].tolist() == _bright_box(moved)


def test_augmentation_moves_boxes_and_masks_in_a_batch():
    augment = build_detection_augmentation(
        [{"class_path": "albumentations.HorizontalFlip", "init_args": {"p": 1.0}},
         {"class_path": "kornia.augmentation.RandomVerticalFlip", "init_args": {"p": 1.0}},
         {"class_path": "albumentations.RandomRotate90", "init_args": {"p": 1.0}}],
        "train_transform",
    )
    image = torch.zeros(2, 2, 32, 32)
    image[0, :, 2:9, 20:30] = 1000
    image[1, :, 15:31, 1:5] = 1000
    torch.manual_seed(0)
    outputs = set()
    # RandomRotate90 draws 0-3 quarter turns, so one draw may undo the two flips (identity):
    # several draws, each checked, and together they must move the image somewhere.
    for _ in range(8):
        boxes = [torch.tensor([[20.0, 2, 30, 9]]), torch.tensor([[1.0, 15, 5, 31]])]
        masks = [(image[i, :1] > 500).to(torch.uint8) for i in range(2)]
        batch = {"image": image.clone(), "nodata_mask": image[:, 0] > 500, "boxes": boxes,
                 "masks": masks}
        out = augment(batch)
        for i in range(2):
            assert out["boxes"][i][0].tolist() == _bright_box(out["image"][i])
            torch.testing.assert_close(out["masks"][i][0].bool(), out["image"][i, 0] > 500)
            torch.testing.assert_close(out["nodata_mask"][i], out["image"][i, 0] > 500)
            outputs.add(tuple(out["boxes"][i][0].tolist()))
    # Not a no-op: the boxes went to several places, not only where they started.
    assert len(outputs - {(20.0, 2.0, 30.0, 9.0), (1.0, 15.0, 5.0, 31.0)}) >= 2


def test_augmentations_that_cannot_move_boxes_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"train_transform.*RandomCrop.*boxes"):
        build_detection_augmentation(
            [{"class_path": "kornia.augmentation.RandomCrop", "init_args": {"size": [16, 16]}}],
            "train_transform",
        )
    with pytest.raises(ConfigError, match="no_label_replace"):
        GenericNonGeoDetectionDataModule(train_data_root=tmp_path, no_label_replace=-1)
    augment = build_detection_augmentation(
        [{"class_path": "albumentations.RandomRotate90", "init_args": {"p": 1.0}}]
    )
    with pytest.raises(ValueError, match="square"):
        augment({"image": torch.zeros(1, 1, 8, 16), "boxes": [torch.zeros(0, 4)]})


def test_collate_keeps_objects_per_sample():
    samples = [
        {"image": torch.zeros(2, 4, 4), "boxes": torch.zeros(n, 4), "labels": torch.zeros(n),
         "filename": f"{n}.tif"}
        for n in (3, 0)
    ]
    batch = collate_detection(samples)
    assert batch["image"].shape == (2, 2, 4, 4)
    assert [b.shape[0] for b in batch["boxes"]] == [3, 0]
    assert batch["filename"] == ["3.tif", "0.tif"]


def test_mask_rcnn_trains_on_augmented_vector_labels(tmp_path):
    """The batch contract end to end: masks and boxes, flipped and turned, train Mask R-CNN."""
    import lightning.pytorch as pl

    from geofm.tasks.detection import ObjectDetectionTask

    _chip_folder(tmp_path, {"a": [(4, 6, 20, 30), (30, 30, 40, 50)], "b": [(40, 2, 60, 12)]})
    roots = {"data_root": tmp_path / "images", "label_data_root": tmp_path / "labels"}
    dm = GenericNonGeoDetectionDataModule(
        batch_size=2,
        **{f"{split}_{key}": root for split in ("train", "val") for key, root in roots.items()},
        img_grep="*.tif",
        label_grep="*.geojson",
        return_masks=True,
        train_transform=[
            {"class_path": "albumentations.HorizontalFlip", "init_args": {"p": 1.0}},
            {"class_path": "albumentations.RandomRotate90", "init_args": {"p": 1.0}},
        ],
    )
    task = ObjectDetectionTask(
        model_args={
            "framework": "mask-rcnn", "backbone": "timm_resnet18", "backbone_in_chans": 3,
            "backbone_pretrained": False, "fpn_out_channels": 32, "num_classes": 1,
            # Few proposals and detections: a CPU step in seconds.
            "framework_rpn_pre_nms_top_n_train": 64, "framework_rpn_post_nms_top_n_train": 32,
            "framework_rpn_pre_nms_top_n_test": 64, "framework_rpn_post_nms_top_n_test": 32,
            "framework_box_batch_size_per_image": 32, "framework_box_detections_per_img": 8,
        },
        num_classes=1,
        score_threshold=0.0,
    )
    seen: list[dict] = []
    step = task.training_step

    def spy(batch, batch_idx):
        seen.append({k: batch[k] for k in ("image", "boxes", "masks")})
        return step(batch, batch_idx)

    task.training_step = spy  # type: ignore[method-assign]
    trainer = pl.Trainer(
        max_epochs=1, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0,
        accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(task, dm)
    batch = seen[0]
    for i in range(2):  # what the model trained on: boxes and masks moved with the image
        bright = batch["image"][i, 0] > 500
        assert torch.equal(batch["masks"][i].bool().any(0), bright)
        for box, mask in zip(batch["boxes"][i], batch["masks"][i], strict=True):
            rows, cols = torch.nonzero(mask, as_tuple=True)
            expected = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
            assert box.tolist() == [float(v) for v in expected]
    metrics = trainer.callback_metrics
    assert np.isfinite(float(metrics["train/loss_epoch"]))
    assert "val/segm_map" in metrics and np.isfinite(float(metrics["val/segm_map"]))
