"""``geofm embed -c config.yaml``: embeddings of chips or whole scenes, from a config.

The config's ``model`` is an :class:`~geofm.tasks.embedding.EmbeddingTask`; its ``data``
section (optional) gives the input files (``predict_data_root``), the band selection
(``dataset_bands``/``output_bands`` or their ``predict_`` forms), the statistics and the date
pattern, exactly as for ``geofm predict``. ``--input`` replaces the predict root, ``--bands``
selects 1-based bands when the config has no data section.

Chips (default): every file whole, one GeoParquet row each
(:func:`~geofm.inference.embedding.embed_chips`).
``--scenes``: each file streamed tile by tile
(:func:`~geofm.inference.embedding_scenes.embed_scenes`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

__all__ = ["add_embed_parser", "embed_from_config"]

log = logging.getLogger(__name__)


def embed_from_config(
    config: str | Path,
    *,
    input: str | Path | None = None,
    output: str | Path | None = None,
    scenes: bool = False,
    bands: list[int] | None = None,
    tile_size: int | None = None,
    overlap: int | None = None,
    batch_size: int = 8,
    patch_rows: bool = False,
    resume: bool = False,
    device: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> list[Path]:
    """Run ``geofm embed``: build the config's EmbeddingTask and embed its inputs.

    Returns:
        The files written (or found finished with ``resume``).

    Raises:
        ConfigError: the model is not an EmbeddingTask, or no input is given.
        FileNotFoundError: the config or the input does not exist.
    """
    from geofm.cli_lightning import run_lightning_cli
    from geofm.errors import ConfigError
    from geofm.tasks.embedding import EmbeddingTask

    config = Path(config)
    if not config.is_file():
        raise FileNotFoundError(2, "Config file does not exist", str(config))
    cli = run_lightning_cli(["-c", str(config), "--trainer.logger", "false", *overrides], run=False)
    task, datamodule = cli.model, cli.datamodule
    if not isinstance(task, EmbeddingTask):
        raise ConfigError(
            f"geofm embed needs model.class_path: EmbeddingTask in {config}, got "
            f"{type(task).__name__}; a fine-tuned checkpoint goes to EmbeddingTask's ckpt_path."
        )
    if bands is not None and datamodule is not None:
        raise ConfigError(
            "--bands selects bands when the config has no data section; this config's data "
            "section selects them (dataset_bands/output_bands)."
        )
    if input is not None and not Path(input).exists():
        raise FileNotFoundError(2, "--input does not exist", str(input))
    if not scenes:
        flags = (("--tile-size", tile_size), ("--overlap", overlap), ("--patch-rows", patch_rows))
        for flag, value in flags:
            if value is not None and value is not False:
                raise ConfigError(
                    f"{flag} applies to --scenes (streamed tiles); chips are embedded whole."
                )
        settings: dict[str, Any] = {}
    else:
        settings = {"tile_size": tile_size or 224, "overlap": overlap, "patch_rows": patch_rows}
    out = Path(output) if output is not None else Path("runs") / config.stem / "embeddings"
    return task.embed_files(
        datamodule,
        out,
        input=input,
        bands=bands,
        scenes=scenes,
        device=device,
        batch_size=batch_size,
        resume=resume,
        **settings,
    )


def _embed(args: argparse.Namespace) -> int:
    written = embed_from_config(
        args.config,
        input=args.input,
        output=args.output,
        scenes=args.scenes,
        bands=args.bands,
        tile_size=args.tile_size,
        overlap=args.overlap,
        batch_size=args.batch_size,
        patch_rows=args.patch_rows,
        resume=args.resume,
        device=args.device,
        overrides=args.overrides,
    )
    for path in written:
        print(path)
    return 0


def add_embed_parser(sub: Any) -> None:
    """Add ``geofm embed`` to the command's subparsers."""
    embed = sub.add_parser(
        "embed",
        help="embeddings of chips (one GeoParquet row each) or streamed scenes (tiles, patch "
        "grids)",
        description="Embed the inputs of a config whose model is an EmbeddingTask: chips whole "
        "(GeoParquet, one row per chip; grids per chip), or with --scenes whole scenes streamed "
        "tile by tile (tile rows, a patch-grid GeoTIFF, optional patch rows), resumable.",
    )
    embed.add_argument(
        "-c", "--config", required=True,
        help="config with model.class_path: EmbeddingTask",
    )
    embed.add_argument(
        "--input",
        help="a folder of GeoTIFFs or one file (default: data.init_args.predict_data_root)",
    )
    embed.add_argument(
        "-o", "--output",
        help="output folder (default: runs/<config name>/embeddings)",
    )
    embed.add_argument("--scenes", action="store_true", help="stream whole scenes tile by tile")
    embed.add_argument(
        "--bands", type=int, nargs="+",
        help="1-based bands to read (configs without a data section)",
    )
    embed.add_argument(
        "--tile-size", "--tile_size", type=int,
        help="scene tile side (multiple of the patch size; default 224)",
    )
    embed.add_argument(
        "--overlap", type=int,
        help="scene tile overlap (multiple of the patch size; default 0)",
    )
    embed.add_argument(
        "--batch-size", "--batch_size", type=int, default=8,
        help="inputs per forward pass (default 8)",
    )
    embed.add_argument(
        "--patch-rows", "--patch_rows", action="store_true",
        help="scenes: one GeoParquet row per patch too",
    )
    embed.add_argument(
        "--resume", action="store_true",
        help="continue an interrupted run; skip finished outputs",
    )
    embed.add_argument("--device", help="cpu, cuda, cuda:1... (default: the first GPU, else cpu)")
    embed.epilog = (
        "Any --data.init_args.NAME VALUE / --model.init_args.NAME VALUE pairs after these "
        "override the config."
    )
    embed.set_defaults(func=_embed)
