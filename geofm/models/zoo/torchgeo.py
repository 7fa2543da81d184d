"""TorchGeo as a backbone zoo: its pretrained ResNets, ViTs and Satlas Swin V2s (``geofm[torchgeo]``).

Registers :class:`TorchGeoBackboneSource` in ``BACKBONE_REGISTRY`` under the prefix ``torchgeo``.
Two kinds of names build the same backbones:

- TorchGeo's model names, with a weights enum member: ``torchgeo_resnet50`` with
  ``weights="ResNet50_Weights.SENTINEL2_ALL_MOCO"`` (or the member itself, or
  ``"SENTINEL2_ALL_MOCO"``); without ``weights`` the architecture has random weights;
- the names TerraTorch users know, one per weights member, **generated from TorchGeo's enums**
  (:func:`weight_names`): ``<dataset>_<model>_<member>``, where ``<dataset>`` is the first word
  of the member's ``meta["dataset"]`` in lower case without punctuation and without a trailing
  "pretrain" (``SSL4EO-S12`` -> ``ssl4eos12``, ``SatlasPretrain`` -> ``satlas``, ``fMoW
  Dataset`` -> ``fmow``), ``<model>`` the TorchGeo builder (``swin_v2_t`` spelt ``swin_t``, as
  TerraTorch does) and ``<member>`` the member's name in lower case:
  ``ssl4eos12_resnet50_sentinel2_all_moco``, ``seco_resnet18_sentinel2_rgb_seco``,
  ``ssl4eol_vit_small_patch16_224_landsat_oli_sr_moco``. A Satlas member (``..._SATLAS``)
  also gets Satlas's own spelling, as TerraTorch names most of them: suffix dropped, then sensor,
  ``mi``/``si``, ``rgb``/``ms`` (``ms`` added to an optical multi-band member that lacks it):
  ``satlas_swin_t_sentinel2_si_ms``, ``satlas_swin_b_naip_mi_rgb``.

Features (``forward`` always returns a list):

==========  =====================================================  ======================
family      features                                               default ``out_indices``
==========  =====================================================  ======================
ResNet      timm ``forward_intermediates``: 0 the stem (before      ``[-1]`` (last stage)
            the max-pool, stride 2), 1-4 the stages; NCHW
ViT         every block's output, class token dropped, no final     all blocks
            norm, NCHW ``(B, D, H/p, W/p)``
Swin V2     torchvision's ``features`` entries (odd: stages, even   ``[-1]`` (entry 7)
            > 0: patch merging), **channels-last** ``(B, H, W, C)``
==========  =====================================================  ======================

``out_indices`` select in the order given, negatives from the end. TerraTorch ignores
``out_indices`` for the ViTs and always returns every block; geofm's default is the same and an
explicit list selects from them. Swin maps need a ``PermuteDims`` neck (``[0, 3, 1, 2]``) before
a decoder.

Weights come from ``ckpt_path``, else (``pretrained=True``) from the local torch hub cache
(``torch.hub.get_dir()/checkpoints/<file of the member's URL>``, where TorchGeo's own download
puts them) or the Hugging Face cache; geofm never downloads. Official files load unchanged,
strictly, allowing what TorchGeo's loader allows to be missing or extra: ``fc.*`` (ResNet),
``norm.*`` and ``head.*`` (ViT), nothing (Swin).

``bands`` (or TerraTorch's ``model_bands``) name the input bands: known bands keep their
first-layer weights, new ones start from a Xavier-uniform init. Weights whose bands geofm
cannot name (Landsat codes, NDVI, unlabelled RGB) are taken by position. ``pretrained_stats``
gives the weights' normalisation (TorchGeo's ``transforms``, composed) for the input bands.

TorchGeo's other models (DOFA, CROMA, Scale-MAE, ...) have their own feature contracts and are
not in this source.
"""

from __future__ import annotations

import enum
import functools
import importlib.util
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from geofm.data.bands import Band, Sentinel1Bands, Sentinel2Bands, resolve_band, resolve_bands
from geofm.models.backbones.checkpoints import adapt_input_channels, check_state_dict, read_checkpoint
from geofm.models.backbones.out_indices import check_out_indices
from geofm.registry import BACKBONE_REGISTRY
from geofm.registry.errors import MissingDependencyError, UnknownNameError, close_names
from geofm.registry.external import ExternalSource

if TYPE_CHECKING:
    from geofm.models.catalog import BackboneInfo

__all__ = [
    "TorchGeoBackbone",
    "TorchGeoBackboneSource",
    "build_torchgeo_backbone",
    "weight_names",
    "weight_stats",
    "weight_bands",
    "find_weights_file",
    "torchgeo_available",
    "torchgeo_missing_error",
]

log = logging.getLogger(__name__)

# The model families this source wraps, by TorchGeo builder name.
_FAMILY_PATTERNS = {"resnet": r"resnet\d+", "vit": r"vit_\w+", "swin_v2": r"swin_v2_\w+"}


def _family(builder: str) -> str | None:
    return next((f for f, p in _FAMILY_PATTERNS.items() if re.fullmatch(p, builder)), None)


def torchgeo_available() -> bool:
    """Whether torchgeo can be imported (checked without importing it)."""
    if "torchgeo" in sys.modules:
        return sys.modules["torchgeo"] is not None
    return importlib.util.find_spec("torchgeo") is not None


def torchgeo_missing_error() -> MissingDependencyError:
    """The error a TorchGeo backbone name raises when torchgeo is not installed."""
    return MissingDependencyError("A TorchGeo backbone ('torchgeo_' names)", "torchgeo", "torchgeo")


# ------------------------------------------------------------------------------ the name table
def _dataset_tag(member: enum.Enum) -> str:
    words = str(member.value.meta.get("dataset", "")).split()
    tag = re.sub(r"[^a-z0-9]", "", words[0].lower()) if words else ""
    return tag.removesuffix("pretrain") or "torchgeo"


def _satlas_spelling(member: enum.Enum, tag: str) -> str:
    """``NAIP_RGB_MI_SATLAS`` -> ``naip_mi_rgb``: sensor, then mi/si, then rgb/ms."""
    tokens = member.name.lower().split("_")[:-1]
    temporal = [t for t in tokens if t in ("mi", "si")]
    spectral = [t for t in tokens if t in ("rgb", "ms")]
    sensor = [t for t in tokens if t not in temporal + spectral]
    meta = member.value.meta
    optical = not {"VV", "VH"} & set(meta.get("bands", ()))
    if not spectral and optical and meta.get("in_chans", 3) > 3:
        spectral = ["ms"]
    return "_".join(sensor + temporal + spectral)


@functools.cache
def weight_names() -> dict[str, tuple[str, str | None]]:
    """Every name of the source: ``{name: (TorchGeo builder, weights member name or None)}``.

    Built once, on first use, from TorchGeo's model list and weights enums (see the module
    docstring for the rule); TorchGeo is imported here.

    Raises:
        RuntimeError: when two weights members would get the same name.
    """
    from torchgeo.models import api

    table: dict[str, tuple[str, str | None]] = {}

    def add(name: str, entry: tuple[str, str | None]) -> None:
        if table.setdefault(name, entry) != entry:
            raise RuntimeError(f"TorchGeo weights {table[name]} and {entry} share the name {name}.")

    for builder in api.list_models():
        if _family(builder) is None:
            continue
        add(builder, (builder, None))
        try:
            weights_enum = api.get_model_weights(builder)
        except (KeyError, ValueError):
            continue  # a model without pretrained weights
        model_tag = builder.replace("swin_v2_", "swin_")
        for member in weights_enum:
            tag = _dataset_tag(member)
            add(f"{tag}_{model_tag}_{member.name.lower()}", (builder, member.name))
            if member.name.endswith("_SATLAS"):
                add(f"{tag}_{model_tag}_{_satlas_spelling(member, tag)}", (builder, member.name))
    return table


def _weights_member(builder: str, weights: Any) -> enum.Enum | None:
    """The member of ``builder``'s enum that ``weights`` names (a member, or its name)."""
    if weights is None:
        return None
    from torchgeo.models import api

    try:
        weights_enum = api.get_model_weights(builder)
    except (KeyError, ValueError):
        raise ValueError(f"TorchGeo's {builder} has no pretrained weights; leave weights out.") from None
    if isinstance(weights, enum.Enum):
        if weights not in list(weights_enum):
            raise ValueError(f"weights={weights} are not weights of {builder} ({weights_enum.__name__}).")
        return weights
    member = str(weights).rpartition(".")[2]  # "ResNet50_Weights.SENTINEL2_ALL_MOCO" or the member
    if member not in weights_enum.__members__:
        raise ValueError(
            f"weights={weights!r} is not a member of {weights_enum.__name__}; choose from "
            f"{list(weights_enum.__members__)}."
        )
    return weights_enum[member]


# ------------------------------------------------------------------------------ weight facts
def _band_name(code: str) -> str | None:
    """A TorchGeo band code as a geofm band name (``B8a`` -> ``NIR_NARROW``), or None."""
    if code in ("R", "G", "B"):  # NAIP
        return {"R": "RED", "G": "GREEN", "B": "BLUE"}[code]
    for band_enum in (Sentinel2Bands, Sentinel1Bands):
        try:
            member = band_enum(code)
        except ValueError:
            continue
        # Sentinel-2 codes go by their wavelength name, as TerraTorch's band look-up does.
        aliases = [n for n, m in band_enum.__members__.items() if m is member and n != member.name]
        return aliases[0] if aliases else str(member.value)
    return None


def _common_name(band: Band) -> Band:
    """One spelling per band, so that ``B04`` and ``RED`` match."""
    resolved = resolve_band(band)
    return _band_name(resolved) or resolved if isinstance(resolved, str) else resolved


def weight_bands(member: enum.Enum) -> list[str | None]:
    """The pretraining bands of a weights member, in channel order, as geofm names.

    ``None`` marks a band geofm cannot name: Landsat codes (``B1`` there is not Sentinel-2's),
    indices such as NDVI, and every band of a member whose metadata lists none.
    """
    meta = member.value.meta
    codes = meta.get("bands")
    if codes is None:
        return [None] * int(meta.get("in_chans", 3))
    if member.name.startswith("LANDSAT"):
        return [None] * len(codes)
    return [_band_name(str(code)) for code in codes]


def weight_stats(member: enum.Enum) -> tuple[list[float], list[float]] | None:
    """Per-band ``(mean, std)`` of a member's input normalisation, or None when it has none.

    TorchGeo's ``transforms`` may chain several ``Normalize`` steps (SeCo: min-max, x255,
    ImageNet); ``(x - m1) / s1`` then ``(. - m2) / s2`` is ``(x - (m1 + m2 s1)) / (s1 s2)``.
    Crops and resizes do not change values and are skipped.
    """
    transforms = member.value.transforms
    steps = list(transforms.children()) if isinstance(transforms, nn.Sequential) else [transforms]
    channels = len(weight_bands(member))
    mean, std = [0.0] * channels, [1.0] * channels
    found = False
    for step in steps:
        if not (hasattr(step, "mean") and hasattr(step, "std")):
            continue
        found = True
        m = [float(v) for v in step.mean] * (channels if len(step.mean) == 1 else 1)
        s = [float(v) for v in step.std] * (channels if len(step.std) == 1 else 1)
        if len(m) != channels or len(s) != channels:
            return None
        mean = [a + b * c for a, b, c in zip(mean, m, std, strict=True)]
        std = [a * b for a, b in zip(std, s, strict=True)]
    return (mean, std) if found else None


def find_weights_file(member: enum.Enum, ckpt_path: str | Path | None = None) -> Path:
    """The local file of a weights member: ``ckpt_path``, else a cached copy (never downloads).

    Looks in ``torch.hub.get_dir()/checkpoints`` (where TorchGeo's own download stores it),
    then in the Hugging Face cache.

    Raises:
        FileNotFoundError: naming the file, its URL and Hugging Face repository, and
            ``ckpt_path``.
    """
    if ckpt_path is not None:
        path = Path(ckpt_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"ckpt_path='{ckpt_path}' does not exist.")
        return path
    url = member.value.url
    filename = url.rsplit("/", 1)[-1].split("?")[0]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if cached.is_file():
        return cached
    repo = None
    if "/resolve/" in url:
        repo = re.sub(r"^https?://[^/]+/", "", url.split("/resolve/")[0])
        from geofm.models.backbones.pretrained import find_cached_file

        found = find_cached_file(repo, filename)
        if found is not None:
            return found
    where = f" (Hugging Face repository '{repo}')" if repo else ""
    raise FileNotFoundError(
        f"pretrained=True, but the weights {type(member).__name__}.{member.name} are not in the "
        f"local torch hub cache ({cached.parent}) nor the Hugging Face cache; geofm never "
        f"downloads. Download '{filename}' from {url}{where} on a machine with network access, "
        f"then put it in {cached.parent} or pass ckpt_path=<path to {filename}> "
        "(backbone_ckpt_path in a model factory config)."
    )


# ------------------------------------------------------------------------------ the backbone
class TorchGeoBackbone(nn.Module):
    """A TorchGeo ResNet, ViT or Swin V2 returning a list of feature maps.

    Build it with :func:`build_torchgeo_backbone` (or the registry); the wrapped model is the
    one TorchGeo builds (timm's ResNet or ViT, torchvision's Swin V2), as ``self.model``.

    Attributes:
        family: ``"resnet"``, ``"vit"`` or ``"swin_v2"``.
        out_indices: The features returned, non-negative, in order.
        out_channels: Channels of each returned feature.
        extra_inputs: ``()``: no keyword inputs.
        pretrained_stats: ``{"bands", "mean", "std"}`` of the weights' normalisation for the
            input bands, in input order; ``None`` without weights or when a band has none.
    """

    def __init__(self, model: nn.Module, family: str, out_indices: Sequence[int] | None = None):
        super().__init__()
        self.model = model
        self.family = family
        channels = self._all_channels()
        default = None if family == "vit" else [-1]
        self.out_indices = check_out_indices(
            default if out_indices is None else out_indices, len(channels), _UNITS[family]
        )
        self.out_channels: list[int] = [channels[i] for i in self.out_indices]
        self.extra_inputs: tuple[str, ...] = ()
        self.pretrained_stats: dict[str, list[Any]] | None = None

    def _all_channels(self) -> list[int]:
        if self.family == "swin_v2":
            # Entry 0 is the patch embedding, then stage / merging pairs doubling the width.
            embed = self.model.features[0][0].out_channels
            return [embed * 2 ** (i // 2) for i in range(len(self.model.features))]
        return [int(info["num_chs"]) for info in self.model.feature_info]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features of ``x`` ``(B, C, H, W)``, one per ``out_indices`` entry.

        Returns:
            ResNet: ``(B, C_i, H/s_i, W/s_i)``; ViT: ``(B, D, H/p, W/p)``; Swin V2:
            ``(B, H/s_i, W/s_i, C_i)`` (channels last).
        """
        wanted = sorted(set(self.out_indices))
        if self.family == "swin_v2":
            found: dict[int, torch.Tensor] = {}
            for index, layer in enumerate(self.model.features[: wanted[-1] + 1]):
                x = layer(x)
                if index in wanted:
                    found[index] = x
            return [found[i] for i in self.out_indices]
        options: dict[str, Any] = {"norm": False} if self.family == "vit" else {}
        features = self.model.forward_intermediates(
            x, indices=wanted, stop_early=True, output_fmt="NCHW", intermediates_only=True, **options
        )
        by_index = dict(zip(wanted, features, strict=True))
        return [by_index[i] for i in self.out_indices]


_UNITS = {"resnet": "stage", "vit": "block", "swin_v2": "feature entry"}
# First-layer weight of each family, and the keys TorchGeo's loader lets a file lack or add.
_FIRST_LAYER = {"resnet": "conv1.weight", "vit": "patch_embed.proj.weight", "swin_v2": "features.0.0.weight"}
_OPTIONAL_KEYS = {
    "resnet": {"fc.weight", "fc.bias"},
    "vit": {"norm.weight", "norm.bias", "head.weight", "head.bias"},
    "swin_v2": set(),
}


def _build_model(builder: str, family: str, in_chans: int, meta: dict[str, Any], kwargs: dict[str, Any]) -> nn.Module:
    """The architecture as TorchGeo builds it for its weights, with ``in_chans`` inputs."""
    from torchgeo.models import api

    if family == "swin_v2":
        model = api.get_model(builder, weights=None, **kwargs)
        # TorchGeo (after Satlas) swaps in a biased 4x4 stride-4 convolution for the weights' bands.
        old = model.features[0][0]
        model.features[0][0] = nn.Conv2d(in_chans, old.out_channels, old.kernel_size, old.stride)
        return model
    if family == "vit" and "img_size" in meta:
        kwargs = {"img_size": meta["img_size"], **kwargs}
    # The classifier is not part of the features; num_classes=0 leaves it out.
    return api.get_model(builder, weights=None, in_chans=in_chans, **{"num_classes": 0, **kwargs})


def _resolve_model_bands(bands: Sequence[Band] | None, model_bands: Sequence[Band] | None) -> list[Band] | None:
    if bands is not None and model_bands is not None and list(bands) != list(model_bands):
        raise ValueError(
            f"bands={list(bands)} and model_bands={list(model_bands)} disagree; give one of them "
            "(model_bands is TerraTorch's name for bands)."
        )
    chosen = bands if bands is not None else model_bands
    return None if chosen is None else resolve_bands(chosen, argument="bands")


def _fit_first_layer(
    weight: torch.Tensor,
    init: torch.Tensor,
    model_bands: list[Band] | None,
    file_bands: list[str | None] | None,
    source: str,
    key: str,
) -> torch.Tensor:
    """The file's first-layer weight for the model's input channels (see the module docstring)."""
    if model_bands is None or file_bands is None or None in file_bands:
        if weight.shape[1] == init.shape[1]:
            if model_bands is not None:
                log.info("%s: the weights' bands have no names; '%s' is taken by position.", source, key)
            return weight
        known = "" if file_bands is None else f" ({len(file_bands)} bands that geofm cannot name)"
        raise ValueError(
            f"{source} has {weight.shape[1]} input channels in '{key}'{known} but the model has "
            f"{init.shape[1]}. Give bands= naming the model's input bands (with weights= so that "
            "the file's bands are known), or as many channels as the file has."
        )
    return adapt_input_channels(
        weight, init, [_common_name(b) for b in model_bands], list(file_bands), source, key  # type: ignore[arg-type]
    )


def _stats(member: enum.Enum, model_bands: list[Band] | None, in_chans: int) -> dict[str, list[Any]] | None:
    """The member's normalisation for the model's input bands (by name, else by position)."""
    stats = weight_stats(member)
    if stats is None:
        return None
    mean, std = stats
    file_bands = weight_bands(member)
    if model_bands is not None and None not in file_bands:
        names = [_common_name(b) for b in model_bands]
        if any(n not in file_bands for n in names):
            return None  # a new band has no pretraining statistics
        positions = [file_bands.index(n) for n in names]  # type: ignore[arg-type]
        return {"bands": list(model_bands), "mean": [mean[p] for p in positions], "std": [std[p] for p in positions]}
    if in_chans != len(file_bands):
        return None
    # By position; unnamed bands are labelled with the weights' own codes.
    codes = [str(c) for c in member.value.meta.get("bands", [])] or [None] * in_chans
    labels = list(model_bands) if model_bands is not None else [n or c for n, c in zip(file_bands, codes, strict=True)]
    return {"bands": labels, "mean": mean, "std": std}


def build_torchgeo_backbone(
    name: str,
    weights: Any = None,
    pretrained: bool = False,
    ckpt_path: str | Path | None = None,
    bands: Sequence[Band] | None = None,
    model_bands: Sequence[Band] | None = None,
    in_chans: int | None = None,
    out_indices: Sequence[int] | None = None,
    **kwargs: Any,
) -> TorchGeoBackbone:
    """A TorchGeo backbone by a name of :func:`weight_names` (the one door of this source).

    Args:
        name: A TorchGeo builder (``"resnet50"``) or a generated weights name
            (``"ssl4eos12_resnet50_sentinel2_all_moco"``), without the ``torchgeo_`` prefix.
        weights: Weights enum member, or its name (``"ResNet50_Weights.SENTINEL2_ALL_MOCO"``,
            ``"SENTINEL2_ALL_MOCO"``); a weights name's member by default. It fixes the
            pretraining bands, the number of input channels and ``pretrained_stats``.
        pretrained: Load the member's official file from the local cache.
        ckpt_path: A local weight file in TorchGeo's layout; loaded whatever ``pretrained``
            says (TerraTorch's ``ckpt_data``).
        bands: The model's input bands, in channel order; ``model_bands`` is TerraTorch's name.
        model_bands: Same as ``bands``.
        in_chans: Input channels when the bands are not named (default: the weights' count,
            else 3).
        out_indices: Features to return (see the module docstring).
        **kwargs: Passed to TorchGeo's builder, hence to timm or torchvision (``None`` values
            are dropped).

    Raises:
        FileNotFoundError: when the weight file is neither at ``ckpt_path`` nor cached.
        ValueError: for weights of another model, bands that disagree with ``in_chans``, a
            file that does not fit (every key problem in one message).
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if "ckpt_data" in kwargs:  # TerraTorch's keyword for a local file
        ckpt_path = ckpt_path or kwargs.pop("ckpt_data")
    table = weight_names()
    if name not in table:
        raise UnknownNameError(name, "torchgeo backbone", close_names(name, list(table)))
    builder, member_name = table[name]
    family = _family(builder)
    assert family is not None  # the table holds only wrapped families
    member = _weights_member(builder, weights if weights is not None else member_name)
    meta: dict[str, Any] = dict(member.value.meta) if member is not None else {}
    chosen = _resolve_model_bands(bands, model_bands)
    if chosen is not None and in_chans is not None and in_chans != len(chosen):
        raise ValueError(f"in_chans={in_chans} but bands lists {len(chosen)} bands: {chosen}.")
    channels = len(chosen) if chosen is not None else in_chans or int(meta.get("in_chans", 3))

    path = None
    if ckpt_path is not None or pretrained:
        if member is None and ckpt_path is None:
            raise ValueError(
                f"pretrained=True needs weights= for torchgeo_{name} (a member of its weights "
                "enum) or ckpt_path=<file>."
            )
        path = find_weights_file(member, ckpt_path)  # type: ignore[arg-type]

    model = _build_model(builder, family, channels, meta, kwargs)
    if path is not None:
        _load(model, family, path, chosen, weight_bands(member) if member is not None else None, name)
    backbone = TorchGeoBackbone(model, family, out_indices)
    if member is not None:
        backbone.pretrained_stats = _stats(member, chosen, channels)
    return backbone


_FAMILY_NAMES = {"resnet": "TorchGeo ResNet", "vit": "TorchGeo ViT", "swin_v2": "TorchGeo Swin V2"}


def describe(name: str) -> BackboneInfo | None:
    """The catalog entry of a weights name (see :mod:`geofm.models.catalog`); None for a bare
    builder name, whose bands and pretraining depend on ``weights=``."""
    from geofm.models.catalog import BackboneInfo

    builder, member_name = weight_names().get(name, (None, None))
    if builder is None or member_name is None:
        return None
    member = _weights_member(builder, member_name)
    assert member is not None
    meta = member.value.meta
    bands = [b or f"band {i + 1}" for i, b in enumerate(weight_bands(member))]
    method = f" {meta['ssl_method']}" if meta.get("ssl_method") else ""
    pretraining = f"{meta.get('dataset', '?')}{method}: `{type(member).__name__}.{member.name}`"
    return BackboneInfo(name, "torchgeo", _FAMILY_NAMES[_family(builder)], ", ".join(bands), pretraining)


def _load(
    model: nn.Module,
    family: str,
    path: Path,
    model_bands: list[Band] | None,
    file_bands: list[str | None] | None,
    name: str,
) -> None:
    """Load ``path`` into ``model`` strictly, allowing only TorchGeo's optional keys."""
    source = f"ckpt_path='{path}'"
    raw = read_checkpoint(path)
    for wrapper in ("state_dict", "model"):  # a Lightning or training-script checkpoint
        if isinstance(raw.get(wrapper), dict):
            raw = raw[wrapper]
    expected = model.state_dict()
    optional = _OPTIONAL_KEYS[family]
    state = {k: v for k, v in raw.items() if isinstance(v, torch.Tensor) and not (k in optional and k not in expected)}
    required = {k: v for k, v in expected.items() if not (k in optional and k not in state)}
    key = _FIRST_LAYER[family]
    if key in state and key in expected:
        init = torch.empty_like(expected[key])
        nn.init.xavier_uniform_(init)  # new bands start as TerraTorch's do
        state[key] = _fit_first_layer(state[key], init, model_bands, file_bands, source, key)
    check_state_dict(required, state, source, f"TorchGeo {name} ({family}, in_chans={expected[key].shape[1]})")
    model.load_state_dict(state, strict=False)
    log.info("Loaded %d tensors into torchgeo_%s from %s.", len(state), name, source)


# ------------------------------------------------------------------------------ the sources
class TorchGeoBackboneSource(ExternalSource):
    """TorchGeo backbones by builder or generated weights name (``torchgeo_resnet50``).

    The name table is built once, on the first lookup (:func:`weight_names`).
    """

    name = "torchgeo backbone"

    def _names(self) -> tuple[str, ...]:
        return tuple(weight_names())

    def _knows(self, name: str) -> bool:
        return name in weight_names()

    def _build(self, name: str, *args: Any, **kwargs: Any) -> TorchGeoBackbone:
        return build_torchgeo_backbone(name, *args, **kwargs)


# Names that look like this source's, for the message when torchgeo is missing.
_LOOKS_LIKE = re.compile(r"(?:[a-z0-9]+_)?(?:resnet\d+|vit|swin)(?:_\w+)?")


class MissingTorchGeoSource(ExternalSource):
    """Stands for :class:`TorchGeoBackboneSource` without torchgeo: its names say how to install it.

    Without torchgeo the names cannot be listed; a name is taken as a TorchGeo one by its
    shape (``[<dataset>_]<resnet..|vit_..|swin_..>``), after geofm and timm had their turn.
    """

    name = "torchgeo backbone"

    def _names(self) -> tuple[str, ...]:
        return ()

    def _knows(self, name: str) -> bool:
        return _LOOKS_LIKE.fullmatch(name) is not None

    def get(self, name: str) -> Any:
        if name not in self:
            raise UnknownNameError(name, self.name, close_names(name, []))
        raise torchgeo_missing_error()


if torchgeo_available():
    BACKBONE_REGISTRY.register_source("torchgeo", TorchGeoBackboneSource())
else:
    BACKBONE_REGISTRY.register_source("torchgeo", MissingTorchGeoSource())
