"""Pretrained-weight facts of geofm's backbones, as data, and the one way to find their files.

Every Prithvi variant, ViT or Swin, has one :class:`PretrainedConfig` in
:data:`PRETRAINED_CONFIGS`: where its official weight file lives on the Hugging Face hub, the
bands it was pretrained on and their normalisation statistics. Builders read it for three
things:

- :func:`resolve_weights`: the weight file to load (``ckpt_path``, or with ``pretrained=True``
  the official file from the local Hugging Face cache: geofm never downloads);
- the checkpoint's bands, so that ``bands=`` can pick and reorder patch-embedding channels;
- :meth:`PretrainedConfig.stats`: the normalisation of the model's input bands
  (``pretrained_stats`` on the backbone module).

Example:
    >>> cfg = PRETRAINED_CONFIGS["prithvi_eo_v2_300"]
    >>> cfg.hub_repo, cfg.hub_file
    ('ibm-nasa-geospatial/Prithvi-EO-2.0-300M', 'Prithvi_EO_V2_300M.pt')
    >>> cfg.stats(["RED", "BLUE"])["mean"]
    [1433.0, 1087.0]
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geofm.data.bands import Band, band_indices, resolve_bands

if TYPE_CHECKING:
    from geofm.models.catalog import BackboneInfo

__all__ = [
    "PRITHVI_BANDS",
    "PretrainedConfig",
    "PRETRAINED_CONFIGS",
    "hf_cache_dir",
    "find_cached_file",
    "resolve_weights",
]

log = logging.getLogger(__name__)

PRITHVI_BANDS: tuple[str, ...] = ("BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2")
"""HLS bands of every Prithvi pretraining (ViT and Swin), in input-channel order."""


@dataclass(frozen=True)
class PretrainedConfig:
    """Facts of one pretrained weight set.

    Attributes:
        hub_repo: Hugging Face model repository of the official file (``None``: none is
            published, the weights can only be given with ``ckpt_path``).
        hub_file: File name in ``hub_repo``.
        bands: Pretraining bands, in the checkpoint's input-channel order.
        mean: Normalisation mean per band of ``bands``, in the file's units (HLS reflectance
            x 10000 for Prithvi); ``None`` when not published.
        std: Normalisation standard deviation per band, likewise.
        img_size: Image side the file's position embedding was computed for.
        num_frames: Frames the file's position embedding was computed for.
    """

    hub_repo: str | None
    hub_file: str | None
    bands: tuple[str, ...] = PRITHVI_BANDS
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    img_size: int = 224
    num_frames: int = 1

    def __post_init__(self) -> None:
        # Mistakes in the table should fail at import, not when a user asks for statistics.
        if (self.hub_repo is None) != (self.hub_file is None):
            raise ValueError(f"{self}: give both hub_repo and hub_file, or neither.")
        if (self.mean is None) != (self.std is None):
            raise ValueError(f"{self}: give both mean and std, or neither.")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None and len(values) != len(self.bands):
                raise ValueError(
                    f"{self}: {name} has {len(values)} values for {len(self.bands)} bands."
                )

    @property
    def url(self) -> str | None:
        """Web page of the official weights (for messages)."""
        return None if self.hub_repo is None else f"https://huggingface.co/{self.hub_repo}"

    def info(self, name: str, family: str, data: str) -> BackboneInfo:
        """This weight set as a catalog entry (``geofm registry list``, the README's zoo).

        Args:
            name: The backbone's registry name.
            family: The model family.
            data: What the weights were pretrained on.
        """
        from geofm.models.catalog import BackboneInfo

        pretraining = (
            f"{data}: `{self.hub_repo}` / `{self.hub_file}`"
            if self.hub_repo
            else "none published (`ckpt_path` only)"
        )
        return BackboneInfo(name, "geofm", family, ", ".join(self.bands) or "any", pretraining)

    def stats(self, bands: Sequence[Band]) -> dict[str, list[Any]] | None:
        """Normalisation statistics of ``bands``, in their order.

        Args:
            bands: A model's input bands (names, enum members or integer identifiers), in
                channel order.

        Returns:
            ``{"bands": [...], "mean": [...], "std": [...]}`` with the canonical band names,
            or ``None`` when this config has no statistics, ``bands`` is empty, or a band is
            not among the pretraining bands (a new band, an integer identifier).
        """
        if self.mean is None or self.std is None or len(bands) == 0:
            return None
        positions = band_indices(bands, self.bands, missing="none")
        if any(p is None for p in positions):
            return None
        return {
            "bands": resolve_bands(bands),
            "mean": [self.mean[p] for p in positions],  # type: ignore[index]
            "std": [self.std[p] for p in positions],  # type: ignore[index]
        }


_HUB = "ibm-nasa-geospatial/"
# Pretraining statistics from the Prithvi spec (reflectance x 10000, PRITHVI_BANDS order).
_V1 = {
    "mean": (775.0, 1081.0, 1229.0, 2497.0, 2204.0, 1611.0),
    "std": (1282.0, 1270.0, 1399.0, 1368.0, 1292.0, 1155.0),
}
_V2 = {
    "mean": (1087.0, 1342.0, 1433.0, 2734.0, 1958.0, 1363.0),
    "std": (2248.0, 2179.0, 2178.0, 1850.0, 1242.0, 1049.0),
}

# fmt: off
PRETRAINED_CONFIGS: dict[str, PretrainedConfig] = {
    # Never pretrained; V2's statistics so that it normalises like the family it stands in for.
    "prithvi_eo_tiny": PretrainedConfig(None, None, **_V2),
    "prithvi_eo_v1_100": PretrainedConfig(
        _HUB + "Prithvi-EO-1.0-100M", "Prithvi_EO_V1_100M.pt", **_V1),
    "prithvi_eo_v2_tiny_tl": PretrainedConfig(
        _HUB + "Prithvi-EO-2.0-tiny-TL", "Prithvi_EO_V2_tiny_TL.pt", **_V2),
    "prithvi_eo_v2_100_tl": PretrainedConfig(
        _HUB + "Prithvi-EO-2.0-100M-TL", "Prithvi_EO_V2_100M_TL.pt", **_V2),
    "prithvi_eo_v2_300": PretrainedConfig(
        _HUB + "Prithvi-EO-2.0-300M", "Prithvi_EO_V2_300M.pt", **_V2),
    "prithvi_eo_v2_300_tl": PretrainedConfig(
        _HUB + "Prithvi-EO-2.0-300M-TL", "Prithvi_EO_V2_300M_TL.pt", **_V2),
    "prithvi_eo_v2_600": PretrainedConfig(
        _HUB + "Prithvi-EO-2.0-600M", "Prithvi_EO_V2_600M.pt", **_V2),
    "prithvi_eo_v2_600_tl": PretrainedConfig(
        _HUB + "Prithvi-EO-2.0-600M-TL", "Prithvi_EO_V2_600M_TL.pt", **_V2),
    # The Swin weights have no public hub file nor published statistics: ckpt_path only.
    "prithvi_swin_B": PretrainedConfig(None, None),
    "prithvi_swin_L": PretrainedConfig(None, None),
}
# fmt: on
"""Pretrained config of every registered Prithvi backbone, by registry name."""


# ------------------------------------------------------------------------------ finding files
def hf_cache_dir() -> Path:
    """The Hugging Face hub cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else the default."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def find_cached_file(repo_id: str, filename: str, cache_dir: Path | None = None) -> Path | None:
    """The local copy of ``filename`` of the Hugging Face model ``repo_id``, without network.

    Asks ``huggingface_hub`` (the ``hub`` extra) when installed, then looks for
    ``models--<owner>--<name>/snapshots/*/<filename>`` itself (newest snapshot first), which
    also finds files copied there by hand.
    """
    cache_dir = cache_dir or hf_cache_dir()
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        pass
    else:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=str(cache_dir))
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    snapshots = cache_dir / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    candidates = [p for p in snapshots.glob(f"*/{filename}") if p.is_file()]
    if not candidates:
        return None
    return max(candidates, key=lambda p: p.stat().st_mtime)


def resolve_weights(
    name: str,
    config: PretrainedConfig | None,
    pretrained: bool | None,
    ckpt_path: str | Path | None,
) -> Path | None:
    """The weight file a backbone builder must load, or ``None`` for random weights.

    ``ckpt_path`` wins whatever ``pretrained`` says; otherwise ``pretrained=True`` takes the
    official file from the local Hugging Face cache. Called before the model is built, so that
    a missing file costs no 600M-parameter initialisation.

    Args:
        name: The backbone's registry name, for messages.
        config: Its pretrained config (``None``: no official weights).
        pretrained: Whether the official weights are wanted.
        ckpt_path: A local weight file.

    Raises:
        FileNotFoundError: when ``ckpt_path`` does not exist, or the official file is not in
            the cache (the message names the file, the repository and ``ckpt_path``).
        ValueError: for ``pretrained=True`` on a backbone without official weights.
    """
    if ckpt_path is not None:
        path = Path(ckpt_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{name}: ckpt_path='{ckpt_path}' does not exist.")
        return path
    if not pretrained:
        log.info("%s: random initial weights (pretrained=False, no ckpt_path).", name)
        return None
    if config is None or config.hub_repo is None or config.hub_file is None:
        raise ValueError(
            f"{name}: pretrained=True, but {name} has no official pretrained weights on the "
            "Hugging Face hub; pass ckpt_path=<your weight file> (backbone_ckpt_path in a model "
            "factory config), or set pretrained=False for random weights."
        )
    found = find_cached_file(config.hub_repo, config.hub_file)
    if found is None:
        raise FileNotFoundError(
            f"{name}: pretrained=True, but the weights are not in the local Hugging Face cache "
            f"({hf_cache_dir()}); geofm never downloads. Obtain the file '{config.hub_file}' "
            f"from the repository '{config.hub_repo}' ({config.url}; e.g. `huggingface-cli "
            f"download {config.hub_repo} {config.hub_file}` on a machine with network access) "
            f"and pass ckpt_path=<path to {config.hub_file}> (backbone_ckpt_path in a model "
            "factory config). pretrained=False builds random weights instead."
        )
    return found
