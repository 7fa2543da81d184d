"""Detections as GeoJSON / GeoPackage: map coordinates, CRS, masks and atomic writes."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio.transform
import torch
from rasterio.transform import Affine

from geofm.inference.vector_writer import (
    VectorPredictionWriter,
    detections_frame,
    mask_polygon,
    write_vector,
)

# A rotated, non-square grid: corners must go through the full affine, not origin + size.
TRANSFORM = Affine(10.0, 2.0, 500000.0, 1.5, -20.0, 4000000.0)
CRS = "EPSG:32633"


def _corners(x1, y1, x2, y2):
    """Map coordinates of a pixel box's corners by rasterio's own transform math."""
    xs, ys = rasterio.transform.xy(TRANSFORM, [y1, y1, y2, y2], [x1, x2, x2, x1], offset="ul")
    return list(zip(np.asarray(xs, float), np.asarray(ys, float), strict=True))


@pytest.mark.parametrize("suffix", [".geojson", ".gpkg"])
def test_pixel_box_lands_at_its_map_coordinates_in_the_crs(tmp_path, suffix):
    boxes = np.array([[3.0, 4.0, 9.0, 7.0], [0.0, 0.0, 1.0, 1.0]])
    frame = detections_frame(boxes, [0.8, 0.6], [1, 0], CRS, TRANSFORM, ["ship", "plane"])
    path = write_vector(frame, tmp_path / f"out{suffix}")
    back = gpd.read_file(path)
    assert back.crs.to_epsg() == 32633
    assert back["class_name"].tolist() == ["plane", "ship"] and back["class_id"].tolist() == [1, 0]
    assert back["score"].tolist() == pytest.approx([0.8, 0.6])
    for geometry, box in zip(back.geometry, boxes, strict=True):
        ring = list(geometry.exterior.coords)[:4]
        assert np.allclose(ring, _corners(*box))


def test_masks_become_polygons_of_their_pixels(tmp_path):
    mask = np.zeros((12, 12), dtype=bool)
    mask[2:5, 3:7] = True  # 12 pixels
    mask[8:10, 8:10] = True  # 4 more, apart: a multipolygon
    geometry = mask_polygon(mask, TRANSFORM)
    pixel_area = abs(TRANSFORM.determinant)
    assert geometry.geom_type == "MultiPolygon" and geometry.area == pytest.approx(16 * pixel_area)
    assert mask_polygon(np.zeros((4, 4), bool), TRANSFORM) is None
    frame = detections_frame([[3, 2, 10, 10]], [0.9], [0], CRS, TRANSFORM, geometries=[geometry])
    back = gpd.read_file(write_vector(frame, tmp_path / "m.gpkg"))
    assert back.geometry[0].area == pytest.approx(16 * pixel_area)
    assert back["class_name"].tolist() == ["class_0"]


def test_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "scene_pred.gpkg"
    frame = detections_frame([[0, 0, 2, 2]], [0.5], [0], CRS, TRANSFORM)
    write_vector(frame, target)
    before = target.read_bytes()
    original = gpd.GeoDataFrame.to_file

    def fail_midway(self, filename, *args, **kwargs):
        original(self, filename, *args, **kwargs)  # the temporary file is complete...
        raise OSError("disk full")  # ...but the write fails before the rename

    monkeypatch.setattr(gpd.GeoDataFrame, "to_file", fail_midway)
    bigger = detections_frame([[0, 0, 2, 2], [3, 3, 5, 5]], [0.5, 0.4], [0, 0], CRS, TRANSFORM)
    with pytest.raises(OSError, match="disk full"):
        write_vector(bigger, target)
    assert target.read_bytes() == before  # the old file untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene_pred.gpkg"]  # no partial left
    with pytest.raises(OSError):
        write_vector(bigger, tmp_path / "new.geojson")
    assert not (tmp_path / "new.geojson").exists()


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ValueError, match="not '.shp'"):
        write_vector(detections_frame([[0, 0, 1, 1]], [1.0], [0], CRS, TRANSFORM), tmp_path / "x.shp")
    with pytest.raises(ValueError, match="Class id 3 has no name"):
        detections_frame([[0, 0, 1, 1]], [1.0], [3], CRS, TRANSFORM, ["a", "b"])
    with pytest.raises(ValueError, match="2 boxes, 1 scores"):
        detections_frame([[0, 0, 1, 1], [1, 1, 2, 2]], [1.0], [0, 0], CRS, TRANSFORM)


def test_writer_names_classes_from_the_task_else_the_datamodule(tmp_path):
    from types import SimpleNamespace

    prediction = {
        "boxes": [torch.tensor([[0.0, 0.0, 2.0, 2.0], [3.0, 3.0, 4.0, 5.0]])],
        "scores": [torch.tensor([0.9, 0.8])],
        "labels": [torch.tensor([1, 0])],
        "filename": ["scene.tif"],
        "crs": [CRS],
        "transform": [TRANSFORM],
    }
    datamodule = SimpleNamespace(class_names=["pool", "roof"])
    for hparams, expected in (({"class_names": ["a", "b"]}, ["b", "a"]), ({}, ["roof", "pool"])):
        writer = VectorPredictionWriter(tmp_path / str(len(hparams)), "gpkg")
        writer.setup(None, None, "predict")
        writer.write_on_batch_end(
            SimpleNamespace(datamodule=datamodule), SimpleNamespace(hparams=hparams),
            prediction, None, None, 0, 0,
        )
        frame = gpd.read_file(tmp_path / str(len(hparams)) / "scene_pred.gpkg")
        assert frame["class_name"].tolist() == expected
