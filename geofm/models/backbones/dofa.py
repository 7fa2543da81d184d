"""DOFA backbones (wavelength-conditioned ViT), on TorchGeo's model code, as in TerraTorch.

==========================  =====  =====  =====  =====  ====================================
name                        dim    depth  heads  patch  official weights (HF ``torchgeo/dofa``)
==========================  =====  =====  =====  =====  ====================================
``dofa_small_patch16_224``  384    12     6      16     none (``ckpt_path`` or random only)
``dofa_base_patch16_224``   768    12     12     16     ``dofa_base_patch16_224-a0275954.pth``
``dofa_large_patch16_224``  1024   24     16     16     ``dofa_large_patch16_224-0ff904d3.pth``
==========================  =====  =====  =====  =====  ====================================

DOFA (Xiong et al., https://arxiv.org/abs/2403.15356) generates its patch-embedding kernel
from the wavelength of each input band, so one model takes any number of bands in any order.
The model code is TorchGeo's (``torchgeo.models.DOFA``, an optional extra: ``pip install
'geofm[torchgeo]'``); :class:`DOFAEncoder` runs its layers itself because TorchGeo's forward
returns only a pooled vector. The module is held as ``dofa_model``, TerraTorch's name, so the
keys of a fine-tuned model are TerraTorch's too.

Wavelengths come from band names (``model_bands``, TerraTorch's keyword, or ``bands``) through
:data:`DOFA_WAVELENGTHS`, or are given in micrometres (``wavelengths``).

Features: the output of each chosen block (default only the last), tokens ``(B, 1 + N, D)``
with the class token first and no norm; the patch grid is ``(H + 2 - 16) // 16 + 1`` per side
(DOFA's patch convolution has stride 16 and padding 1), 14 x 14 for 224. Inputs of another
size than ``img_size`` get the position embedding interpolated (TerraTorch's would fail).
Decoders need the necks ``ReshapeTokensToImage`` (drops the class token) and e.g.
``LearnedInterpolateToPyramidal``.

``extra_inputs`` is ``()`` and ``pretrained_stats`` is ``None``: TorchGeo defines no
normalisation for DOFA (it depends on the sensor), so give the datamodule ``means``/``stds``.

Example:
    >>> backbone = dofa_base_patch16_224(
    ...     pretrained=True, ckpt_path="dofa_base_patch16_224-a0275954.pth",
    ...     model_bands=["BLUE", "GREEN", "RED", "NIR_NARROW", "VV", "VH"],
    ...     out_indices=[3, 5, 7, 11])
    >>> [f.shape for f in backbone(x)]  # x: (B, 6, 224, 224)
    [(B, 197, 768)] * 4
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Mapping, Sequence
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from geofm.models.backbones.checkpoints import (
    backbone_tensors,
    check_state_dict,
    read_checkpoint,
)
from geofm.models.backbones.out_indices import check_out_indices
from geofm.models.backbones.pretrained import (
    PretrainedConfig,
    find_cached_file,
    hf_cache_dir,
    resolve_weights,
)
from geofm.registry import GEOFM_BACKBONE_REGISTRY
from geofm.registry.errors import MissingDependencyError

if TYPE_CHECKING:
    from geofm.models.catalog import BackboneInfo

__all__ = [
    "DOFA_WAVELENGTHS",
    "DOFAVariant",
    "VARIANTS",
    "DOFA_PRETRAINED_CONFIGS",
    "band_wavelengths",
    "resize_dofa_pos_embed",
    "DOFAEncoder",
    "load_dofa_checkpoint",
    "build_dofa",
    "dofa_small_patch16_224",
    "dofa_base_patch16_224",
    "dofa_large_patch16_224",
]

log = logging.getLogger(__name__)

# fmt: off
DOFA_WAVELENGTHS: dict[str, float] = {
    "COASTAL_AEROSOL": 0.44, "BLUE": 0.49, "GREEN": 0.56, "RED": 0.665,
    "RED_EDGE_1": 0.705, "RED_EDGE_2": 0.74, "RED_EDGE_3": 0.783,
    "NIR_BROAD": 0.832, "NIR_NARROW": 0.864, "WATER_VAPOR": 0.945, "CIRRUS": 1.373,
    "SWIR_1": 1.61, "SWIR_2": 2.20, "THERMAL_INFRARED_1": 10.90, "THERMAL_INFRARED_12": 12.00,
    "VV": 5.405, "VH": 5.405, "ASC_VV": 5.405, "ASC_VH": 5.405,
    "DSC_VV": 5.405, "DSC_VH": 5.405, "VV-VH": 5.405,
}
# fmt: on
"""Centre wavelength of each band name in micrometres: TerraTorch's table, unchanged
(SAR bands share the C-band wavelength 5.405)."""

# geofm spellings of the same bands: HLSBands' second thermal band, Sentinel-2 codes.
_ALIASES: dict[str, str] = {
    "THERMAL_INFRARED_2": "THERMAL_INFRARED_12",
    "B01": "COASTAL_AEROSOL", "B02": "BLUE", "B03": "GREEN", "B04": "RED",
    "B05": "RED_EDGE_1", "B06": "RED_EDGE_2", "B07": "RED_EDGE_3", "B08": "NIR_BROAD",
    "B8A": "NIR_NARROW", "B09": "WATER_VAPOR", "B10": "CIRRUS", "B11": "SWIR_1", "B12": "SWIR_2",
}  # fmt: skip

# Classifier layers of TorchGeo's DOFA that its files lack (its own loader allows exactly these).
_CLASSIFIER_PREFIXES = ("fc_norm.", "head.")
_FILE_IMG_SIZE = 224  # the image size the official files' pos_embed was made for


@dataclass(frozen=True)
class DOFAVariant:
    """The architecture of one DOFA model (TorchGeo's function of the same name builds it).

    Attributes:
        name: Registry name, also TorchGeo's builder name.
        embed_dim: Token size ``D``.
        depth: Number of transformer blocks.
        num_heads: Attention heads.
        patch_size: Patch side (the stride of the patch convolution).
    """

    name: str
    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int = 16

    @property
    def pretrained_cfg(self) -> PretrainedConfig | None:
        """Its entry of :data:`DOFA_PRETRAINED_CONFIGS`."""
        return DOFA_PRETRAINED_CONFIGS.get(self.name)


VARIANTS: dict[str, DOFAVariant] = {v.name: v for v in (
    DOFAVariant("dofa_small_patch16_224", 384, 12, 6),
    DOFAVariant("dofa_base_patch16_224", 768, 12, 12),
    DOFAVariant("dofa_large_patch16_224", 1024, 24, 16),
)}  # fmt: skip
"""Architecture of every DOFA variant, by registry name."""

_HUB = "torchgeo/dofa"
# TorchGeo's DOFABase16_Weights.DOFA_MAE / DOFALarge16_Weights.DOFA_MAE (file names as in their
# URLs, which is also the name torch.hub caches them under). DOFA takes any band: no band list,
# and no normalisation statistics.
DOFA_PRETRAINED_CONFIGS: dict[str, PretrainedConfig] = {
    "dofa_small_patch16_224": PretrainedConfig(None, None, bands=()),
    "dofa_base_patch16_224": PretrainedConfig(
        _HUB, "dofa_base_patch16_224-a0275954.pth", bands=()
    ),
    "dofa_large_patch16_224": PretrainedConfig(
        _HUB, "dofa_large_patch16_224-0ff904d3.pth", bands=()
    ),
}
"""Official weight file of every DOFA variant (small has none), by registry name."""


# ------------------------------------------------------------------------------ wavelengths
def band_wavelengths(bands: Sequence[Any]) -> list[float]:
    """Centre wavelengths (micrometres) of band names, in their order.

    A prefix before a dot is ignored (``"HLSBands.RED"`` is ``RED``), as in TerraTorch; case is
    ignored, and Sentinel-2 codes (``B04``, ``B8A``) and ``THERMAL_INFRARED_2`` are accepted too.

    Args:
        bands: Band names or str enum members (``HLSBands.RED``).

    Raises:
        ValueError: for an empty list or a band without a known wavelength (the message names
            it, the known names, and ``wavelengths=`` for other bands).
    """
    if isinstance(bands, (str, bytes)) or not isinstance(bands, Sequence) or len(bands) == 0:
        raise ValueError(
            f"DOFA needs a non-empty list of band names (model_bands=[...]), got {bands!r}."
        )
    out = []
    for position, band in enumerate(bands):
        key = str(band).split(".")[-1].strip().upper() if isinstance(band, str) else None
        key = _ALIASES.get(key, key) if key is not None else None
        if key not in DOFA_WAVELENGTHS:
            raise ValueError(
                f"model_bands[{position}]={band!r} has no known wavelength. Known band names: "
                f"{', '.join(DOFA_WAVELENGTHS)} (and Sentinel-2 codes B01..B12, B8A). For other "
                "bands give wavelengths=[...] in micrometres, one per input channel."
            )
        out.append(DOFA_WAVELENGTHS[key])
    return out


def _check_wavelengths(wavelengths: Sequence[float]) -> list[float]:
    if isinstance(wavelengths, (str, bytes)) or not isinstance(wavelengths, Sequence):
        raise ValueError(
            f"wavelengths must be a list of numbers (micrometres), got {wavelengths!r}."
        )
    values = []
    for w in wavelengths:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
            raise ValueError(
                f"wavelengths must be positive numbers in micrometres, got {list(wavelengths)!r}."
            )
        values.append(float(w))
    if not values:
        raise ValueError("wavelengths is empty; give one wavelength (micrometres) per channel.")
    return values


# ------------------------------------------------------------------------------ pos_embed
def resize_dofa_pos_embed(
    pos_embed: torch.Tensor, grid: int | tuple[int, int], mode: str = "bilinear"
) -> torch.Tensor:
    """A ``pos_embed`` for another patch grid, as TerraTorch's DOFA loader resizes a file's.

    The class-token entry is kept; the ``g x g`` grid entries are interpolated to ``grid``
    with ``F.interpolate(mode=mode, align_corners=False)`` (TerraTorch's
    ``pos_interpolation_mode``, default ``"bilinear"``), in float32.

    Args:
        pos_embed: ``(1, 1 + g * g, D)``.
        grid: New grid side, or ``(Hg, Wg)``.
        mode: Interpolation mode (``"bilinear"``, ``"bicubic"``, ``"nearest"``...).

    Returns:
        ``(1, 1 + Hg * Wg, D)`` in ``pos_embed``'s dtype.
    """
    side = math.isqrt(pos_embed.shape[1] - 1)
    if pos_embed.ndim != 3 or side * side != pos_embed.shape[1] - 1:
        raise ValueError(
            f"pos_embed of shape {tuple(pos_embed.shape)} is not (1, 1 + g * g, D) for a "
            "square grid."
        )
    cls, tokens = pos_embed[:, :1], pos_embed[:, 1:]
    maps = tokens.reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    size = (grid, grid) if isinstance(grid, int) else tuple(grid)
    maps = F.interpolate(maps, size=size, mode=mode, align_corners=False)
    tokens = maps.flatten(2).transpose(1, 2).to(pos_embed.dtype)
    return torch.cat([cls, tokens], dim=1)


# ------------------------------------------------------------------------------ module
class DOFAEncoder(nn.Module):
    """Per-block token features of a TorchGeo DOFA model, for fixed input wavelengths.

    Args:
        dofa_model: A ``torchgeo.models.DOFA``.
        wavelengths: Centre wavelength (micrometres) of each input channel, in order.
        out_indices: Blocks whose outputs are returned, in this order (negative counts from
            the end); default ``[-1]``, the last block. Blocks after the largest index are not
            run (their parameters then get no gradient: use DDP's ``find_unused_parameters``).
        bands: The band names the wavelengths came from (for messages and the preprocessing).
        pos_interpolation_mode: How ``pos_embed`` is resized for inputs of another grid.

    Attributes:
        out_channels: ``[D] * len(out_indices)``.
        extra_inputs: ``()``: :meth:`forward` takes only the image.
        pretrained_stats: ``None``: TorchGeo defines no normalisation for DOFA.
        wavelengths: As given (micrometres).
        bands: As given (empty when only wavelengths were).
        variant: The :class:`DOFAVariant` built, set by :func:`build_dofa`.
        image_necks: The necks that turn the tokens into maps (class token dropped); the
            factory inserts them when a config gives no necks.
    """

    image_necks: tuple[dict[str, Any], ...] = (
        {"name": "ReshapeTokensToImage", "remove_cls_token": True},
    )

    def __init__(
        self,
        dofa_model: nn.Module,
        wavelengths: Sequence[float],
        out_indices: Sequence[int] | None = None,
        bands: Sequence[str] | None = None,
        pos_interpolation_mode: str = "bilinear",
    ):
        super().__init__()
        self.pos_interpolation_mode = pos_interpolation_mode
        self.dofa_model = dofa_model
        self.wavelengths: list[float] = _check_wavelengths(wavelengths)
        self.bands: list[str] = [str(b) for b in bands] if bands is not None else []
        self.depth = len(dofa_model.blocks)
        self.embed_dim = int(dofa_model.embed_dim)
        self.patch_size = int(dofa_model.patch_size)
        self.out_indices = check_out_indices(
            [-1] if out_indices is None else out_indices, self.depth, unit="block"
        )
        self.out_channels: list[int] = [self.embed_dim] * len(self.out_indices)
        self.extra_inputs: tuple[str, ...] = ()
        self.pretrained_stats: dict[str, list[Any]] | None = None
        self.variant: DOFAVariant | None = None

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Token grid ``(Hg, Wg)`` of an input: stride-16 convolution with padding 1."""
        p = self.patch_size
        return (height + 2 - p) // p + 1, (width + 2 - p) // p + 1

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Tokens after each selected block.

        Args:
            x: ``(B, C, H, W)`` with ``C = len(wavelengths)``, channels in the bands' order.

        Returns:
            One ``(B, 1 + Hg * Wg, D)`` tensor per ``out_indices`` entry, class token first,
            no norm (``Hg = (H + 2 - 16) // 16 + 1``, 14 for 224).

        An input whose patch grid differs from ``img_size``'s gets the position embedding
        interpolated to its grid (``pos_interpolation_mode``, as the loader resizes a file's;
        TerraTorch's forward would fail instead): for tiles of another size than training.

        Raises:
            ValueError: for another channel count.
        """
        model = self.dofa_model
        if x.ndim != 4 or x.shape[1] != len(self.wavelengths):
            raise ValueError(
                f"DOFA expects (B, C, H, W) with C = {len(self.wavelengths)} channels, one per "
                f"band {self.bands or self.wavelengths}; got shape {tuple(x.shape)}. Set "
                "model_bands (or wavelengths) to the input's bands."
            )
        pos_embed = model.pos_embed
        side = math.isqrt(pos_embed.shape[1] - 1)
        grid = self.grid_size(x.shape[-2], x.shape[-1])
        # Under torch.export the grid is symbolic: always resize (to the same grid it is exact),
        # so that the exported model takes any size instead of the traced one.
        if torch.compiler.is_exporting() or grid != (side, side):
            pos_embed = resize_dofa_pos_embed(pos_embed, grid, self.pos_interpolation_mode)
        # Float32 wavelengths, as TorchGeo and TerraTorch: their code is in nanometres.
        waves = torch.tensor(self.wavelengths, device=x.device, dtype=torch.float32)
        tokens, _ = model.patch_embed(x, waves)
        tokens = tokens + pos_embed[:, 1:]
        cls_token = (model.cls_token + pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        hidden = torch.cat([cls_token, tokens], dim=1)
        wanted = set(self.out_indices)
        outputs: dict[int, torch.Tensor] = {}
        for index, block in enumerate(model.blocks[: max(wanted) + 1]):
            hidden = block(hidden)
            if index in wanted:
                outputs[index] = hidden
        return [outputs[i] for i in self.out_indices]


# ------------------------------------------------------------------------------ weights
def _resolve_dofa_weights(
    name: str, pretrained: bool | None, ckpt_path: str | Path | None
) -> Path | None:
    """``ckpt_path``; else with ``pretrained=True`` the official file from the torch hub
    cache (where TorchGeo's own download puts it) or the Hugging Face cache; else ``None``.

    Raises:
        FileNotFoundError: when ``ckpt_path`` or the official file is missing (the message
            names the file, the repository and ``ckpt_path``).
        ValueError: for ``pretrained=True`` on ``dofa_small_patch16_224`` without a file.
    """
    cfg = DOFA_PRETRAINED_CONFIGS.get(name)
    if ckpt_path is not None or not pretrained or cfg is None or cfg.hub_file is None:
        return resolve_weights(name, cfg, pretrained, ckpt_path)
    hub_file = Path(torch.hub.get_dir()) / "checkpoints" / cfg.hub_file
    if hub_file.is_file():
        return hub_file
    found = find_cached_file(cfg.hub_repo, cfg.hub_file)  # type: ignore[arg-type]
    if found is not None:
        return found
    raise FileNotFoundError(
        f"{name}: pretrained=True, but the weight file '{cfg.hub_file}' is neither in the torch "
        f"hub cache ({hub_file.parent}) nor in the local Hugging Face cache ({hf_cache_dir()}); "
        f"geofm never downloads. Obtain '{cfg.hub_file}' from the repository '{cfg.hub_repo}' "
        f"({cfg.url}; e.g. `huggingface-cli download {cfg.hub_repo} {cfg.hub_file}` on a machine "
        f"with network access) and pass ckpt_path=<path to {cfg.hub_file}> (backbone_ckpt_path "
        "in a model factory config). pretrained=False builds random weights instead."
    )


def load_dofa_checkpoint(
    dofa_model: nn.Module,
    checkpoint: str | Path | Mapping[str, Any],
    pos_interpolation_mode: str = "bilinear",
    model: str = "DOFA",
) -> None:
    """Load a DOFA weight file (TorchGeo's state-dict layout) into a TorchGeo DOFA, in place.

    Strict: one report (:func:`~geofm.models.backbones.checkpoints.check_state_dict`) of every
    missing, unexpected or mis-shaped key, except that ``fc_norm.*`` and ``head.*`` may be
    missing (TorchGeo's loader allows exactly these; the features do not use them) and a
    ``head.*`` of another class count is dropped (as TerraTorch). A ``pos_embed`` made for
    another grid is resized (:func:`resize_dofa_pos_embed`), as TerraTorch does for
    ``img_size`` other than 224. The file may also be a Lightning or TerraTorch checkpoint
    holding the DOFA model under a prefix (``model.encoder.dofa_model.``).

    Args:
        dofa_model: A ``torchgeo.models.DOFA``.
        checkpoint: Path of a weight file, or its loaded mapping.
        pos_interpolation_mode: ``F.interpolate`` mode for the ``pos_embed`` resize.
        model: What ``dofa_model`` is, for the key report.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when it is unreadable or its tensors do not fit.
    """
    if isinstance(checkpoint, (str, Path)):
        source = f"ckpt_path='{checkpoint}'"
        raw: Mapping[str, Any] = read_checkpoint(checkpoint)
    else:
        source, raw = "checkpoint", checkpoint
    _, state = backbone_tensors(
        raw, source, what="DOFA model", anchor="patch_embed.weight_generator.weight_tokens"
    )
    expected = dofa_model.state_dict()
    for key in [k for k in state if k.startswith("head.") and k in expected]:
        if state[key].shape != expected[key].shape:
            shape = tuple(state[key].shape)
            log.info("%s: dropping %s %s (another class count).", source, key, shape)
            del state[key]
    pos = state.get("pos_embed")
    target = expected["pos_embed"]
    if pos is not None and pos.ndim == 3 and pos.shape[1] != target.shape[1]:
        grid = math.isqrt(target.shape[1] - 1)
        log.info(
            "%s: resizing pos_embed %s to a %dx%d grid (%s).",
            source, tuple(pos.shape), grid, grid, pos_interpolation_mode,
        )  # fmt: skip
        state["pos_embed"] = resize_dofa_pos_embed(pos, grid, pos_interpolation_mode)
    allowed = {k for k in expected if k.startswith(_CLASSIFIER_PREFIXES) and k not in state}
    check_state_dict({k: v for k, v in expected.items() if k not in allowed}, state, source, model)
    # The classifier keeps its own initialisation, so the load itself can be strict.
    state.update({k: expected[k] for k in allowed})
    dofa_model.load_state_dict(state, strict=True)
    log.info("Loaded %d tensors into the %s from %s.", len(state) - len(allowed), model, source)


# ------------------------------------------------------------------------------ building
def build_dofa(
    variant: str | DOFAVariant,
    pretrained: bool | None = None,
    ckpt_path: str | Path | None = None,
    model_bands: Sequence[str] | None = None,
    bands: Sequence[str] | None = None,
    wavelengths: Sequence[float] | None = None,
    img_size: int | None = None,
    out_indices: Sequence[int] | None = None,
    pos_interpolation_mode: str | None = None,
) -> DOFAEncoder:
    """Build a DOFA variant on TorchGeo's model, with weights when asked. ``None``: default.

    Args:
        variant: A :data:`VARIANTS` name or a :class:`DOFAVariant`.
        pretrained: Load the official weights (base, large) from the torch hub cache or the
            local Hugging Face cache (never downloaded); an error names the file to obtain.
            ``dofa_small_patch16_224`` has none: ``pretrained=True`` needs ``ckpt_path``.
        ckpt_path: Weight file to load instead (TorchGeo's DOFA state dict, or a checkpoint
            holding one); loaded whatever ``pretrained`` says.
        model_bands: Input band names in channel order (TerraTorch's keyword); their
            wavelengths come from :data:`DOFA_WAVELENGTHS`.
        bands: The same, under geofm's keyword (give one of the two).
        wavelengths: Centre wavelength of each channel in micrometres, instead of or with
            band names (then one per band).
        img_size: Square image side the position embedding is made for (default 224; a
            file's 14 x 14 embedding is resized to it, see :func:`load_dofa_checkpoint`).
        out_indices: Blocks whose outputs are returned, in order (default ``[-1]``).
        pos_interpolation_mode: Mode of that resize, and of the one for inputs of another
            grid than ``img_size``'s (default ``"bilinear"``, TerraTorch's).

    Raises:
        MissingDependencyError: when TorchGeo is not installed.
        ValueError: for an unknown variant, bad band arguments, or weights that do not fit.
        FileNotFoundError: when the weight file is missing.
    """
    if isinstance(variant, str):
        if variant not in VARIANTS:
            raise ValueError(f"Unknown DOFA variant {variant!r}; choose from {list(VARIANTS)}.")
        variant = VARIANTS[variant]
    if model_bands is not None and bands is not None and list(model_bands) != list(bands):
        raise ValueError(
            f"{variant.name}: model_bands={list(model_bands)} and bands={list(bands)} disagree; "
            "give one of them."
        )
    names = model_bands if model_bands is not None else bands
    if names is None and wavelengths is None:
        raise ValueError(
            f"{variant.name} needs the input bands: model_bands=[...] (names such as "
            f"{', '.join(list(DOFA_WAVELENGTHS)[:4])}, ...) or wavelengths=[...] in micrometres."
        )
    if wavelengths is not None:
        waves = _check_wavelengths(wavelengths)
        if names is not None and len(names) != len(waves):
            raise ValueError(
                f"{variant.name}: {len(waves)} wavelengths for {len(names)} bands {list(names)}; "
                "give one wavelength per band."
            )
    else:
        waves = band_wavelengths(names)  # type: ignore[arg-type]
    img_size = _FILE_IMG_SIZE if img_size is None else img_size
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < variant.patch_size:
        raise ValueError(
            f"{variant.name}: img_size must be one int (square images) of at least "
            f"{variant.patch_size}, got {img_size!r}."
        )
    mode = pos_interpolation_mode or "bilinear"
    # Files are checked before building: a missing one should not cost a 300M-parameter init.
    weights = _resolve_dofa_weights(variant.name, pretrained, ckpt_path)
    try:
        from torchgeo.models import dofa as torchgeo_dofa
    except ImportError as err:
        raise MissingDependencyError(
            f"The DOFA backbone '{variant.name}'", "torchgeo", "torchgeo"
        ) from err
    dofa_model = getattr(torchgeo_dofa, variant.name)(img_size=img_size)
    if (dofa_model.embed_dim, len(dofa_model.blocks)) != (variant.embed_dim, variant.depth):
        raise ValueError(  # only a changed TorchGeo could get here
            f"torchgeo's {variant.name} has D={dofa_model.embed_dim}, depth "
            f"{len(dofa_model.blocks)}; geofm expects {variant.embed_dim}, {variant.depth}."
        )
    if weights is not None:
        description = f"DOFA {variant.name} (embed_dim={variant.embed_dim}, depth={variant.depth})"
        load_dofa_checkpoint(dofa_model, weights, mode, description)
    encoder = DOFAEncoder(
        dofa_model,
        waves,
        out_indices,
        bands=[str(b) for b in names] if names else None,
        pos_interpolation_mode=mode,
    )
    encoder.variant = variant
    return encoder


_BUILD_ARGS = [p for p in inspect.signature(build_dofa).parameters if p != "variant"]


def _build(
    name: str,
    pretrained: bool,
    ckpt_path: str | Path | None,
    model_bands: Sequence[str] | None,
    kwargs: dict[str, Any],
) -> DOFAEncoder:
    """What every registered variant function does: check its keywords, then build."""
    if "ckpt_data" in kwargs:
        raise TypeError(
            f"{name}: TerraTorch's ckpt_data is ckpt_path in geofm (a local weight file)."
        )
    unknown = sorted(set(kwargs) - set(_BUILD_ARGS))
    if unknown:
        raise TypeError(f"{name} got unknown arguments {unknown}; valid arguments: {_BUILD_ARGS}.")
    # None values are dropped so that config defaults never override the variant's.
    options = {k: v for k, v in kwargs.items() if v is not None}
    return build_dofa(
        name, pretrained=pretrained, ckpt_path=ckpt_path, model_bands=model_bands, **options
    )


# ------------------------------------------------------------------------------ variants
# Arguments of every function: pretrained (official weights from a local cache), ckpt_path (a
# local weight file, loaded whatever pretrained says), model_bands (input band names, in
# channel order; or bands=, or wavelengths=), and the other build_dofa arguments as keywords.
@GEOFM_BACKBONE_REGISTRY.register
def dofa_small_patch16_224(
    pretrained: bool = False,
    ckpt_path: str | Path | None = None,
    model_bands: Sequence[str] | None = None,
    **kwargs: Any,
) -> DOFAEncoder:
    """DOFA small (D 384, depth 12, 6 heads, patch 16): no official weights (``ckpt_path``).

    Args: see :func:`build_dofa`.
    """
    return _build("dofa_small_patch16_224", pretrained, ckpt_path, model_bands, kwargs)


@GEOFM_BACKBONE_REGISTRY.register
def dofa_base_patch16_224(
    pretrained: bool = False,
    ckpt_path: str | Path | None = None,
    model_bands: Sequence[str] | None = None,
    **kwargs: Any,
) -> DOFAEncoder:
    """DOFA base (D 768, depth 12, 12 heads, patch 16): TorchGeo's ``DOFABase16_Weights.DOFA_MAE``.

    Args: see :func:`build_dofa`.
    """
    return _build("dofa_base_patch16_224", pretrained, ckpt_path, model_bands, kwargs)


@GEOFM_BACKBONE_REGISTRY.register
def dofa_large_patch16_224(
    pretrained: bool = False,
    ckpt_path: str | Path | None = None,
    model_bands: Sequence[str] | None = None,
    **kwargs: Any,
) -> DOFAEncoder:
    """DOFA large (D 1024, depth 24, 16 heads, patch 16): ``DOFALarge16_Weights.DOFA_MAE``.

    Args: see :func:`build_dofa`.
    """
    return _build("dofa_large_patch16_224", pretrained, ckpt_path, model_bands, kwargs)


def describe(name: str) -> BackboneInfo:
    """The catalog entry of a DOFA variant (see :mod:`geofm.models.catalog`)."""
    entry = DOFA_PRETRAINED_CONFIGS[name].info(name, "DOFA", "multi-sensor MAE")
    return dataclasses.replace(entry, bands="any, by wavelength")
