"""``import geofm.data`` stays light; public names load on first use."""

from __future__ import annotations

import subprocess
import sys

import geofm.data


def test_import_geofm_data_is_light():
    code = (
        "import sys, geofm.data\n"
        "heavy = ['rasterio', 'lightning', 'kornia', 'torch']\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_lazy_names_resolve():
    from geofm.data.datamodules.segmentation import GenericNonGeoSegmentationDataModule

    assert geofm.data.GenericNonGeoSegmentationDataModule is GenericNonGeoSegmentationDataModule
    assert "compute_statistics" in dir(geofm.data)
