"""Listing, pairing and split files; band selection settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from geofm.data.band_selection import select_bands
from geofm.data.bands import Sentinel2Bands
from geofm.data.files import (
    check_root,
    find_files,
    grep_to_regex,
    pair_files,
    read_split_file,
    select_split,
)


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


# ---------------------------------------------------------------------------- files
def test_grep_regex_captures_wildcards():
    assert grep_to_regex("*_S2Hand.tif").fullmatch("Spain_7370579_S2Hand.tif").groups() == (
        "Spain_7370579",
    )
    assert grep_to_regex("sub/*_[ab]?.tif").fullmatch("sub/x_b7.tif").groups() == ("x", "b", "7")
    assert grep_to_regex("*.tif").fullmatch("dir/x.tif") is None  # '*' stays in one folder
    assert grep_to_regex("**/*.tif").fullmatch("d1/d2/x.tif").groups() == ("d1/d2/", "x")


def test_find_files_common_names_and_sidecars(tmp_path):
    for name in [
        "a_1_img.tif",
        "a_10_img.tif",
        "a_1_img.tif.aux.xml",
        ".hidden_img.tif",
        "notes.txt",
    ]:
        touch(tmp_path / name)
    (tmp_path / "folder_img.tif").mkdir()
    found = find_files(tmp_path, "*_img.tif")
    assert [f.name for f in found] == ["a_1", "a_10"]
    assert [f.path.name for f in found] == ["a_1_img.tif", "a_10_img.tif"]
    # Sidecars, hidden files, other files and folders are not samples.
    assert [f.name for f in find_files(tmp_path, "*")] == ["a_10_img.tif", "a_1_img.tif"]


def test_pairing_uses_common_name_not_sort_order(tmp_path):
    names = ["a_1", "a_2", "a_10"]
    for n in names:
        touch(tmp_path / "img" / f"{n}_img.tif")
        touch(tmp_path / "lbl" / f"lbl_{n}.tif")
    images = find_files(tmp_path / "img", "*_img.tif")
    labels = find_files(tmp_path / "lbl", "lbl_*.tif")
    # The folders sort differently ...
    assert sorted(p.path.name for p in images)[0] == "a_10_img.tif"
    assert sorted(p.path.name for p in labels)[0] == "lbl_a_1.tif"
    # ... and every pair still shares its name.
    pairs = pair_files(images, labels, img_desc="i", label_desc="l")
    assert all(i.name == lab.name and lab.path.name == f"lbl_{i.name}.tif" for i, lab in pairs)


def test_orphans_raise_one_error_naming_files(tmp_path):
    touch(tmp_path / "img" / "x_img.tif")
    touch(tmp_path / "img" / "y_img.tif")
    touch(tmp_path / "lbl" / "lbl_x.tif")
    touch(tmp_path / "lbl" / "lbl_z.tif")
    images = find_files(tmp_path / "img", "*_img.tif")
    labels = find_files(tmp_path / "lbl", "lbl_*.tif")
    with pytest.raises(FileNotFoundError, match=r"No label found for 1 image\(s\): '.*y_img.tif'"):
        pair_files(images, labels, img_desc="i", label_desc="l")
    with pytest.raises(FileNotFoundError, match=r"No image found for 1 label\(s\): '.*lbl_z.tif'"):
        pair_files(images[:1], labels, img_desc="i", label_desc="l")


def test_split_is_exact_never_substring(tmp_path):
    for n in ["a_1", "a_10", "a_11", "b_1"]:
        touch(tmp_path / f"{n}_img.tif")
    files = find_files(tmp_path, "*_img.tif")
    split = tmp_path / "split.txt"
    split.write_text("a_1\n\n# comment\nb_1.tif\n")
    selected = select_split(files, read_split_file(split))
    assert [f.name for f in selected] == ["a_1", "b_1"]
    # File names are accepted too; extensions count when asked to.
    assert [f.name for f in select_split(files, ["a_10_img.tif"])] == ["a_10"]
    assert select_split(files, ["a_1.tif"], ignore_extensions=False, strict=False) == []
    with pytest.raises(ValueError, match="None of the 1 names in split matches"):
        select_split(files, ["zzz"])


def test_missing_root_names_argument(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train_data_root='.*nowhere' does not exist"):
        check_root(tmp_path / "nowhere", "train_data_root")
    with pytest.raises(FileNotFoundError, match=r"val_split='.*none.txt' does not exist"):
        read_split_file(tmp_path / "none.txt", "val_split")


# ---------------------------------------------------------------------------- bands
def test_bands_by_name_number_and_range():
    sel = select_bands(
        ["COASTAL", "BLUE", "GREEN", "RED", [5, 7], "SWIR"], ["RED", 2, [5, 6], "SWIR"]
    )
    assert sel.indexes == (4, 2, 5, 6, 8)
    assert sel.names == ("RED", "BLUE", "band_5", "band_6", "SWIR")
    assert sel.dataset_count == 8
    assert select_bands(None, [[1, 3], 6]).indexes == (1, 2, 3, 6)
    everything = select_bands(None, None)
    assert everything.indexes is None and everything.num_bands is None
    assert select_bands([[1, 4]], None).indexes == (1, 2, 3, 4)


def test_band_enums_aliases_and_case():
    from enum import StrEnum

    class Bands(StrEnum):
        RED = "RED"
        NIR = "NIR"

    assert select_bands([Bands.RED, Bands.NIR], [Bands.NIR, "red"]).indexes == (2, 1)
    s2 = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]
    sel = select_bands(s2, ["b04", "B8A"])
    assert sel.indexes == (4, 9) and sel.names == ("B4", "B8A")  # as dataset_bands spells them
    assert select_bands(s2, [Sentinel2Bands.B04]).indexes == (4,)
    with pytest.raises(ValueError, match=r"names band 'B1' twice \('B01'\)"):
        select_bands(["B1", "B01"], None)


@pytest.mark.parametrize(
    ("dataset_bands", "output_bands", "message"),
    [
        (["BLUE", "GREEN", "RED"], ["REDD"], r"output_bands names band 'REDD'.*Did you mean 'RED'"),
        (None, ["RED"], r"names band 'RED', but dataset_bands is not set"),
        (["BLUE", "GREEN"], [3], r"band number 3 is beyond the 2 bands that dataset_bands"),
        (None, [0], r"band numbers are 1-based"),
        (["A", "A"], None, r"names band 'A' twice"),
        ([[3, 1]], None, r"not an inclusive range \[first, last\] with first <= last"),
        (["A"], [1.5], r"not a band name"),
        ([[0, 5]], [6], r"integer 6 is ambiguous: dataset_bands does not list it .*\(0..5\).*identifier \(5\)"),
    ],
)
def test_band_errors(dataset_bands, output_bands, message):
    with pytest.raises(ValueError, match=message):
        select_bands(dataset_bands, output_bands)
