"""Water bodies as objects: detection on the real Sentinel-2 flood chip (``python -m
geofm.demo_detection``).

1. Vectorise the chip's label (water = 1) into polygons, one per water body of at least
   ``--min-pixels`` pixels, written as ``water_bodies.geojson`` in the label's CRS (EPSG:4326
   for Sen1Floods11): real objects with real geometry.
2. Carve the chip into 128 x 128 tiles by spatial blocks (as ``make demo`` does, see
   :func:`geofm.demo.carve_tiles`), and give each tile ``<tile>_water.geojson``: a copy of the
   whole chip's file, which the datamodule reprojects (when needed) and clips to the tile as it
   reads it.
3. ``geofm compute-statistics`` on the training tiles, ``geofm fit`` with
   ``examples/detection_flood_water_bodies.yaml`` (Faster R-CNN on a ResNet-18), then
   ``geofm predict`` on the whole chip: ``<chip>_pred.geojson`` in the chip's CRS, one box
   polygon per detected water body.

Everything goes under ``runs/detection_demo`` (``--run-dir``).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

from geofm.demo import CHIP, REPO, STEM, carve_tiles
from geofm.registry.errors import MissingDependencyError

__all__ = ["CONFIG", "detection_tiles", "vectorise_water"]

CONFIG = REPO / "examples" / "detection_flood_water_bodies.yaml"
LABEL_GREP = "*_water.geojson"

log = logging.getLogger("geofm.demo_detection")


def vectorise_water(label: Path, out: Path, min_pixels: int = 20, value: int = 1) -> int:
    """Write the connected regions of ``value`` in the raster ``label`` as polygons.

    Args:
        label: A single-band label GeoTIFF.
        out: The GeoJSON to write, in the label's CRS, with a ``class`` column (``water``).
        min_pixels: Regions smaller than this many pixels are left out.
        value: The label value of the objects.

    Returns:
        The number of polygons written.
    """
    import rasterio
    from rasterio.features import shapes

    try:
        import geopandas
        import shapely.geometry
    except ImportError as err:
        raise MissingDependencyError(
            "Vectorising labels", err.name or "geopandas", "vector"
        ) from err
    with rasterio.open(label) as src:
        data, transform, crs = src.read(1), src.transform, src.crs
    pixel_area = abs(transform.a * transform.e - transform.b * transform.d)
    polygons = [
        shapely.geometry.shape(geometry)
        for geometry, v in shapes(data, mask=data == value, transform=transform)
        if v == value
    ]
    polygons = [p for p in polygons if p.area >= min_pixels * pixel_area]
    frame = geopandas.GeoDataFrame({"class": ["water"] * len(polygons)}, geometry=polygons, crs=crs)
    from geofm.inference.vector_writer import write_vector

    write_vector(frame, out)  # temp name, then renamed: no half-written label file
    return len(polygons)


def detection_tiles(
    chip_dir: Path, out_dir: Path, block: int = 128, min_pixels: int = 20
) -> dict[str, int]:
    """Tiles of the chip's S2 image under ``out_dir/{train,val}``, each with its water bodies.

    Returns:
        Tiles per split, and ``objects``: the water bodies of the whole chip.
    """
    counts = carve_tiles(chip_dir, out_dir, block=block)
    chip_file = out_dir / "water_bodies.geojson"
    counts["objects"] = vectorise_water(chip_dir / f"{STEM}_LabelHand.tif", chip_file, min_pixels)
    for split in ("train", "val"):
        for tile in sorted((out_dir / split).glob("*_S2Hand.tif")):
            stem = tile.name.removesuffix("_S2Hand.tif")
            shutil.copyfile(chip_file, tile.with_name(LABEL_GREP.replace("*", stem)))
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-root", type=Path, default=REPO.parent / "shared" / "data",
        help="folder holding sen1floods11_sample/",
    )
    parser.add_argument("--run-dir", type=Path, default=Path("runs/detection_demo"))
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument(
        "--min-pixels", type=int, default=20, help="smallest water body kept, in pixels"
    )
    args = parser.parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("geofm").addHandler(handler)
    logging.getLogger("geofm").setLevel(logging.INFO)
    sys.argv = sys.argv[:1]  # the geofm commands below take their arguments from here

    from geofm.cli import main as geofm

    chip_dir = (args.data_root / CHIP).resolve()
    run = args.run_dir.resolve()
    tiles = run / "tiles"
    counts = detection_tiles(chip_dir, tiles, min_pixels=args.min_pixels)
    log.info(
        "%d water bodies; %d training and %d validation tiles under %s",
        counts["objects"], counts["train"], counts["val"], tiles,
    )
    common = [
        "-c", str(args.config),
        "--trainer.default_root_dir", str(run / "train"),
        "--data.init_args.train_data_root", str(tiles / "train"),
        "--data.init_args.val_data_root", str(tiles / "val"),
        "--data.init_args.predict_data_root", str(chip_dir),
        "--data.init_args.means", str(run / "statistics.yaml"),
        "--data.init_args.stds", str(run / "statistics.yaml"),
    ]
    geofm([
        "compute-statistics", "-c", str(args.config), "-o", str(run / "statistics.yaml"),
        "--data.init_args.train_data_root", str(tiles / "train"),
    ])
    epochs = ["--trainer.max_epochs", str(args.max_epochs)] if args.max_epochs else []
    shutil.rmtree(run / "train" / "checkpoints", ignore_errors=True)
    geofm(["fit", *common, *epochs])
    geofm([
        "predict", *common, "--ckpt_path", "last",
        "--predict_output_dir", str(run / "predictions"),
    ])
    output = run / "predictions" / f"{STEM}_S2Hand_pred.geojson"
    print(f"water bodies detected on the whole chip: {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
