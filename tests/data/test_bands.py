"""Band enums and the band-list resolver."""

from __future__ import annotations

import json

import pytest

from geofm.data.bands import (
    HLSBands,
    Sentinel1Bands,
    Sentinel2Bands,
    band_indices,
    resolve_band,
    resolve_bands,
)


def test_enums_are_plain_strings() -> None:
    assert HLSBands.RED == "RED"
    assert f"{HLSBands.NIR_NARROW}" == "NIR_NARROW"
    assert json.dumps([HLSBands.SWIR_1, Sentinel1Bands.VV]) == '["SWIR_1", "VV"]'
    assert {"RED": 1}[HLSBands.RED] == 1
    assert HLSBands("red") is HLSBands.RED
    for name in [
        "COASTAL_AEROSOL",
        "NIR_BROAD",
        "WATER_VAPOR",
        "CIRRUS",
        "THERMAL_INFRARED_1",
        "THERMAL_INFRARED_2",
        "RED_EDGE_1",
        "RED_EDGE_2",
        "RED_EDGE_3",
        "SWIR_2",
    ]:
        assert HLSBands[name] == name


def test_sentinel2_order_aliases_and_spellings() -> None:
    assert [b.value for b in Sentinel2Bands] == [
        "B01",
        "B02",
        "B03",
        "B04",
        "B05",
        "B06",
        "B07",
        "B08",
        "B8A",
        "B09",
        "B10",
        "B11",
        "B12",
    ]
    assert Sentinel2Bands.RED is Sentinel2Bands.B04
    assert Sentinel2Bands.NIR_NARROW == "B8A"
    assert Sentinel2Bands("B4") is Sentinel2Bands.B04
    assert Sentinel2Bands("b8a") is Sentinel2Bands.B8A
    assert Sentinel2Bands("swir_2") is Sentinel2Bands.B12
    assert [b.value for b in Sentinel1Bands][:2] == ["VV", "VH"]


def test_resolve_mixed_list() -> None:
    assert resolve_bands(["red", HLSBands.BLUE, 3, "B11", "vh"]) == ["RED", "BLUE", 3, "B11", "VH"]
    # HLS is searched first; restricting to Sentinel-2 turns the alias into its band.
    assert resolve_band("RED") == "RED"
    assert resolve_band("RED", enums=[Sentinel2Bands]) == "B04"
    resolved = resolve_bands([HLSBands.RED])
    assert type(resolved[0]) is str


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError) as info:
        resolve_bands(["BLUE", "NIR_NAROW"])
    message = str(info.value)
    assert "bands[1]" in message and "'NIR_NAROW'" in message
    assert "Did you mean 'NIR_NARROW'" in message
    assert "SWIR_1" in message and "B8A" in message and "VV" in message
    assert "integer identifier" in message


def test_bad_lists() -> None:
    with pytest.raises(ValueError, match=r"more than once"):
        resolve_bands(["RED", "red"])
    with pytest.raises(ValueError, match="empty"):
        resolve_bands([])
    with pytest.raises(TypeError, match="list of band names"):
        resolve_bands("RED")
    with pytest.raises(TypeError, match="neither"):
        resolve_bands([1.5])
    with pytest.raises(TypeError, match="neither"):
        resolve_bands([True])


def test_band_indices() -> None:
    reference = ["BLUE", "GREEN", "RED", "NIR_NARROW", 7]
    assert band_indices(["nir_narrow", HLSBands.BLUE, 7], reference) == [3, 0, 4]
    assert band_indices(["RED", "SWIR_1", 8], reference, missing="none") == [2, None, None]
    with pytest.raises(ValueError, match=r"\['SWIR_1'\] are not among"):
        band_indices(["RED", "SWIR_1"], reference)
    # Sentinel-2 file order with the friendly names.
    file_bands = list(Sentinel2Bands)
    assert band_indices(["B02", "B03", "B04", "B8A", "B11", "B12"], file_bands) == [
        1,
        2,
        3,
        8,
        11,
        12,
    ]
