"""Dates and locations from the data: file-name patterns, tags, the image centre."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from geofm.data import GenericNonGeoSegmentationDataModule
from geofm.data.coords import DateError, DatePattern, find_dates, location_coords, temporal_coords


def _doy(year: int, month: int, day: int) -> int:
    return dt.date(year, month, day).timetuple().tm_yday


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("YYYYMMDD", "LC08_L1TP_224078_20200518_20200518_01_RT.TIF", [(2020, 139), (2020, 139)]),
        ("YYYYDDD", "chip_2021032.tif", [(2021, 32)]),
        (".YYYYDDDT", "HLS.S30.T10SEG.2020156T185921.v2.0.tif", [(2020, 156)]),
        ("YYYY-MM-DD", "a_2019-12-31_b.tif", [(2019, 365)]),
        (r"d(?P<year>\d{4})_(?P<doy>\d{3})", "d2016_366.tif", [(2016, 366)]),
    ],
)
def test_patterns(pattern, name, expected):
    assert DatePattern(pattern).search(name) == expected


def test_patterns_reject_impossible_dates_and_longer_numbers():
    assert DatePattern("YYYYMMDD").search("x_20201341.tif") == []  # month 13
    assert DatePattern("YYYYMMDD").search("x_1202005180.tif") == []  # digits run on
    assert DatePattern("YYYYDDD").search("x_2021366.tif") == []  # 2021 has 365 days
    with pytest.raises(ValueError, match="year and a day of year"):
        DatePattern("MMDD")


def test_defaults_and_explicit_pattern(tmp_path):
    files = [Path("scene_20200518.tif"), Path("scene_20210101.tif")]
    dates, used = find_dates(files, None)
    assert used == "YYYYMMDD" and dates == [[(2020, 139)], [(2021, 1)]]
    assert find_dates([Path("a.tif"), Path("scene_20200518.tif")], None) == (None, None)
    with pytest.raises(DateError, match=r"date_pattern='YYYYMMDD'.*'a\.tif'"):
        find_dates([Path("scene_20200518.tif"), Path("a.tif")], "YYYYMMDD")


def test_one_date_per_time_step():
    path = Path("s_20200101_20200201_20200301.tif")
    dates = DatePattern("YYYYMMDD").search(path.name)
    coords = temporal_coords(dates, 3, path, "YYYYMMDD")
    np.testing.assert_array_equal(coords, [[2020, 1], [2020, 32], [2020, 61]])
    assert temporal_coords(dates, 1, path, "YYYYMMDD").tolist() == [[2020, 1]]
    with pytest.raises(DateError, match="2 time steps.*3 date"):
        temporal_coords(dates, 2, path, "YYYYMMDD")


def test_location_is_the_centre_in_degrees():
    # UTM 33N, 500 km easting is the central meridian (15 E); 4,200 km north is about 37.9 N.
    transform = (10.0, 0.0, 499_500.0, 0.0, -10.0, 4_200_500.0)
    lat, lon = location_coords("EPSG:32633", transform, 100, 100)
    assert lon == pytest.approx(15.0, abs=1e-6)
    assert lat == pytest.approx(37.94, abs=0.01)
    assert location_coords(None, transform, 100, 100) is None


def _write(path: Path, tags: dict[str, str] | None = None) -> None:
    profile = {
        "driver": "GTiff", "width": 8, "height": 8, "count": 2, "dtype": "uint16",
        "crs": "EPSG:32633", "transform": Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_200_000.0),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.ones((2, 8, 8), np.uint16))
        if tags:
            dst.update_tags(**tags)


def test_datasets_emit_coordinates(tmp_path):
    for name in ("x_20200518_img.tif", "y_20210101_img.tif"):
        _write(tmp_path / name)
    dm = GenericNonGeoSegmentationDataModule(
        batch_size=2, predict_data_root=tmp_path, img_grep="*_img.tif", dataset_bands=[1, 2]
    )
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert batch["temporal_coords"].shape == (2, 1, 2)
    assert batch["temporal_coords"][:, 0].tolist() == [[2020.0, 139.0], [2021.0, 1.0]]
    assert batch["location_coords"].shape == (2, 2) and batch["location_coords"].dtype == torch.float32
    assert batch["location_coords"][0, 1].item() == pytest.approx(15.0, abs=0.01)


def test_unparseable_date_names_the_file_and_pattern(tmp_path):
    _write(tmp_path / "x_20200518_img.tif")
    _write(tmp_path / "nodate_img.tif")
    with pytest.raises(DateError, match=r"date_pattern='YYYYMMDD'.*nodate_img\.tif"):
        GenericNonGeoSegmentationDataModule(
            predict_data_root=tmp_path, img_grep="*_img.tif", date_pattern="YYYYMMDD"
        ).setup("predict")


def test_dates_from_tags(tmp_path):
    _write(tmp_path / "a_img.tif", {"TIFFTAG_DATETIME": "2019:07:04 10:00:00"})
    dm = GenericNonGeoSegmentationDataModule(
        predict_data_root=tmp_path, img_grep="*_img.tif", date_pattern="tags"
    )
    dm.setup("predict")
    assert dm.predict_dataset[0]["temporal_coords"].tolist() == [[2019.0, float(_doy(2019, 7, 4))]]
