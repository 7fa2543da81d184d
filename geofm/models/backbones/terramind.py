"""TerraMind v1 encoders (IBM/ESA), on raw inputs, loading the official files unchanged.

======================  =====  =====  =====  ===========================  =======================
name                    dim    depth  heads  MLP                          official weights (HF)
======================  =====  =====  =====  ===========================  =======================
``terramind_v1_tiny``   192    12     3      768, GELU, biases            TerraMind-1.0-tiny
``terramind_v1_small``  384    12     6      1536, GELU, biases           TerraMind-1.0-small
``terramind_v1_base``   768    12     12     SwiGLU 2048, no biases       TerraMind-1.0-base
``terramind_v1_large``  1024   24     16     SwiGLU 2730, no biases       TerraMind-1.0-large
======================  =====  =====  =====  ===========================  =======================

TerraMind (Jakubik et al., https://arxiv.org/abs/2504.11171) is an any-to-any model; geofm
uses its encoder on raw images, as TerraTorch's ``terramind_v1_*`` backbones do. Each input
modality has its own patch embedding (``encoder_embeddings.<key>``: a bias-free Linear over
16 x 16 patches flattened (row, column, channel) with the channel fastest, a fixed 2-D sin-cos
``pos_emb`` and a learned ``mod_emb``); the tokens of all given modalities are concatenated in
input order and go through pre-norm blocks together (LayerNorm eps 1e-6 without a learnable
bias). Parameter names are the official file's, so loading only drops what the encoder does
not use (other modalities, the decoder), in one log line.

Modalities are named as in TerraTorch (:data:`MODALITIES`): ``S2L2A``, ``S2L1C``, ``S2RGB`` /
``RGB``, ``S1GRD``, ``S1RTC``, ``DEM``, case-insensitively, or by the file's key
(``untok_sen2l2a@224``); ``{"name": n_channels}`` adds a new, untrained modality.

Features: the output of every block, tokens ``(B, Hg * Wg, D)`` with no class token, the last
one through ``encoder_norm``, the modalities merged by ``merge_method`` (mean by default).
Decoders need the necks ``ReshapeTokensToImage`` with ``remove_cls_token: false`` and e.g.
``SelectIndices`` + ``LearnedInterpolateToPyramidal``.

Example:
    >>> backbone = terramind_v1_base(
    ...     pretrained=True, ckpt_path="TerraMind_v1_base.pt", modalities=["S2L2A", "S1GRD"])
    >>> features = backbone({"S2L2A": s2, "S1GRD": s1})  # (B, 12, 224, 224), (B, 2, 224, 224)
    >>> len(features), features[-1].shape
    (12, (B, 196, 768))
    >>> backbone.pretrained_stats["S1GRD"]
    {'bands': ['VV', 'VH'], 'mean': [-12.599, -20.293], 'std': [5.195, 5.89]}
"""

from __future__ import annotations

import inspect
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from geofm.data.bands import Sentinel2Bands
from geofm.models.backbones.checkpoints import (
    backbone_tensors,
    check_state_dict,
    listed,
    read_checkpoint,
)
from geofm.models.backbones.pretrained import PretrainedConfig, resolve_weights
from geofm.registry import GEOFM_BACKBONE_REGISTRY

if TYPE_CHECKING:
    from geofm.models.catalog import BackboneInfo

__all__ = [
    "TerraMindModality",
    "MODALITIES",
    "TerraMindVariant",
    "VARIANTS",
    "TERRAMIND_PRETRAINED_CONFIGS",
    "MERGE_METHODS",
    "modality_key",
    "sincos_2d_pos_emb",
    "resize_pos_emb",
    "ImageEmbedding",
    "TerraMindBlock",
    "TerraMindEncoder",
    "load_terramind_checkpoint",
    "build_terramind",
    "terramind_v1_tiny",
    "terramind_v1_small",
    "terramind_v1_base",
    "terramind_v1_large",
]

log = logging.getLogger(__name__)

PATCH_SIZE = 16
_FILE_IMG_SIZE = 224  # the grid (14 x 14) of the official files' pos_emb
MERGE_METHODS = ("mean", "max", "concat", "dict", None)


# ------------------------------------------------------------------------------ facts as data
@dataclass(frozen=True)
class TerraMindModality:
    """One raw-input modality of the official files.

    Attributes:
        name: The usual user-facing name (``"S2L2A"``).
        key: Its key in the file (``"untok_sen2l2a@224"``).
        bands: Pretraining bands, in input-channel order.
        mean: Pretraining standardisation mean per band (S2: reflectance x 10000, S1: dB,
            RGB: 0-255, DEM: metres).
        std: Standard deviation per band, likewise.
    """

    name: str
    key: str
    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if not len(self.bands) == len(self.mean) == len(self.std):
            raise ValueError(f"{self.name}: bands, mean and std differ in length.")


_S2L2A = ("COASTAL_AEROSOL", "BLUE", "GREEN", "RED", "RED_EDGE_1", "RED_EDGE_2", "RED_EDGE_3",
          "NIR_BROAD", "NIR_NARROW", "WATER_VAPOR", "SWIR_1", "SWIR_2")  # fmt: skip
_S2L1C = (*_S2L2A[:10], "CIRRUS", *_S2L2A[10:])
# fmt: off
MODALITIES: dict[str, TerraMindModality] = {m.key: m for m in (
    TerraMindModality(
        "S2L2A", "untok_sen2l2a@224", _S2L2A,
        (1390.458, 1503.317, 1718.197, 1853.91, 2199.1, 2779.975, 2987.011, 3083.234, 3132.22,
         3162.988, 2424.884, 1857.648),
        (2106.761, 2141.107, 2038.973, 2134.138, 2085.321, 1889.926, 1820.257, 1871.918,
         1753.829, 1797.379, 1434.261, 1334.311)),
    TerraMindModality(
        "S2L1C", "untok_sen2l1c@224", _S2L1C,
        (2357.089, 2137.385, 2018.788, 2082.986, 2295.651, 2854.537, 3122.849, 3040.56,
         3306.481, 1473.847, 506.07, 2472.825, 1838.929),
        (1624.683, 1675.806, 1557.708, 1833.702, 1823.738, 1733.977, 1732.131, 1679.732,
         1727.26, 1024.687, 442.165, 1331.411, 1160.419)),
    TerraMindModality("S2RGB", "untok_sen2rgb@224", ("RED", "GREEN", "BLUE"),
                      (87.271, 80.931, 66.667), (58.767, 47.663, 42.631)),
    TerraMindModality("S1GRD", "untok_sen1grd@224", ("VV", "VH"),
                      (-12.599, -20.293), (5.195, 5.890)),
    TerraMindModality("S1RTC", "untok_sen1rtc@224", ("VV", "VH"),
                      (-10.93, -17.329), (4.391, 4.459)),
    TerraMindModality("DEM", "untok_dem@224", ("DEM",), (670.665,), (951.272,)),
)}
# fmt: on
"""The raw-input modalities of the official files, by file key (pretraining bands and
standardisation from the TerraMind spec)."""

# TerraTorch's lookup, in its order: the first fragment found in the renamed name decides.
_NAME_FRAGMENTS = (
    ("sen2l2a", "untok_sen2l2a@224"),
    ("sen2l1c", "untok_sen2l1c@224"),
    ("sen1rtc", "untok_sen1rtc@224"),
    ("sen1grd", "untok_sen1grd@224"),
    ("rgb", "untok_sen2rgb@224"),
    ("dem", "untok_dem@224"),
)


@dataclass(frozen=True)
class TerraMindVariant:
    """The architecture of one TerraMind v1 encoder.

    Attributes:
        name: Registry name.
        embed_dim: Token size ``D``.
        depth: Number of blocks.
        num_heads: Attention heads.
        swiglu: SwiGLU MLP (``fc1``, ``fc3``, ``fc2``, hidden ``int(2 * 4D / 3)``) without
            biases anywhere in the blocks (base, large); else a GELU MLP (hidden ``4D``) with
            biases (tiny, small).
    """

    name: str
    embed_dim: int
    depth: int
    num_heads: int
    swiglu: bool

    @property
    def mlp_hidden(self) -> int:
        """Hidden size of the MLP."""
        hidden = 4 * self.embed_dim
        return int(2 * hidden / 3) if self.swiglu else hidden

    @property
    def pretrained_cfg(self) -> PretrainedConfig | None:
        """Its entry of :data:`TERRAMIND_PRETRAINED_CONFIGS`."""
        return TERRAMIND_PRETRAINED_CONFIGS.get(self.name)


VARIANTS: dict[str, TerraMindVariant] = {v.name: v for v in (
    TerraMindVariant("terramind_v1_tiny", 192, 12, 3, swiglu=False),
    TerraMindVariant("terramind_v1_small", 384, 12, 6, swiglu=False),
    TerraMindVariant("terramind_v1_base", 768, 12, 12, swiglu=True),
    TerraMindVariant("terramind_v1_large", 1024, 24, 16, swiglu=True),
)}  # fmt: skip
"""Architecture of every TerraMind v1 encoder, by registry name."""

# One file per size holds the whole any-to-any model; its bands and statistics are per
# modality (MODALITIES), so the configs carry none.
TERRAMIND_PRETRAINED_CONFIGS: dict[str, PretrainedConfig] = {
    f"terramind_v1_{size}": PretrainedConfig(
        f"ibm-esa-geospatial/TerraMind-1.0-{size}", f"TerraMind_v1_{size}.pt", bands=()
    )
    for size in ("tiny", "small", "base", "large")
}
"""Official weight file of every TerraMind v1 encoder, by registry name."""


# ------------------------------------------------------------------------------ names and bands
def modality_key(name: str) -> str | None:
    """The file key of a user-facing modality name, or ``None`` when it names none.

    As TerraTorch: lower case, ``s2`` -> ``sen2`` and ``s1`` -> ``sen1``, then the first of
    ``sen2l2a``, ``sen2l1c``, ``sen1rtc``, ``sen1grd``, ``rgb``, ``dem`` found in it decides
    (``"S2L2A"`` and ``"untok_sen2l2a@224"`` -> ``"untok_sen2l2a@224"``).
    """
    renamed = name.strip().lower().replace("s2", "sen2").replace("s1", "sen1")
    for fragment, key in _NAME_FRAGMENTS:
        if fragment in renamed:
            return key
    return None


# Sentinel-2 codes (B04, b8a) -> the wavelength names of the pretraining band lists.
_S2_CODE_NAMES = {
    member.value: name
    for name, member in Sentinel2Bands.__members__.items()
    if name != member.value
}


def _band_name(band: Any) -> str | int:
    """A band's name as the pretraining lists spell it; integer identifiers unchanged."""
    if isinstance(band, int) and not isinstance(band, bool):
        return band
    name = str(getattr(band, "value", band)).split(".")[-1].strip().upper()
    return _S2_CODE_NAMES.get(Sentinel2Bands._normalise(name), name)


# ------------------------------------------------------------------------------ position code
def sincos_2d_pos_emb(grid: int | tuple[int, int], dim: int) -> torch.Tensor:
    """TerraMind's fixed 2-D sin-cos position code.

    For the patch in row ``r``, column ``c`` (tokens in row-major order), with ``q = D / 4``
    and ``w_i = 10000^(-i / q)``: ``[sin(r w), cos(r w), sin(c w), cos(c w)]``.

    Args:
        grid: Patch grid side, or ``(rows, columns)``.
        dim: Token size ``D``, a multiple of 4.

    Returns:
        ``(1, rows * columns, D)`` in float32.
    """
    if dim % 4:
        raise ValueError(f"The 2-D sin-cos code needs a token size divisible by 4, got {dim}.")
    rows, cols = (grid, grid) if isinstance(grid, int) else grid
    q = dim // 4
    omega = 1.0 / (10000.0 ** (torch.arange(q, dtype=torch.float32) / q))
    r, c = torch.meshgrid(
        torch.arange(rows, dtype=torch.float32), torch.arange(cols, dtype=torch.float32),
        indexing="ij",
    )  # fmt: skip
    r_w = r.reshape(-1, 1) * omega
    c_w = c.reshape(-1, 1) * omega
    return torch.cat([r_w.sin(), r_w.cos(), c_w.sin(), c_w.cos()], dim=1).unsqueeze(0)


def resize_pos_emb(pos_emb: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A square ``pos_emb`` table resized to another patch grid, as TerraTorch does.

    Bicubic ``F.interpolate`` with ``align_corners=False`` of the ``g x g`` table (the code is
    not recomputed).

    Args:
        pos_emb: ``(1, g * g, D)``.
        grid: ``(Hg, Wg)``.

    Returns:
        ``(1, Hg * Wg, D)`` in ``pos_emb``'s dtype.
    """
    side = math.isqrt(pos_emb.shape[1])
    if side * side != pos_emb.shape[1]:
        raise ValueError(f"pos_emb of shape {tuple(pos_emb.shape)} is not a square grid.")
    # Under torch.export the grid is symbolic: always resize (exact at the same grid), so the
    # exported model takes any size, not only the traced one.
    if not torch.compiler.is_exporting() and (side, side) == tuple(grid):
        return pos_emb
    maps = pos_emb.reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    maps = F.interpolate(maps, size=tuple(grid), mode="bicubic", align_corners=False)
    return maps.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1).to(pos_emb.dtype)


# ------------------------------------------------------------------------------ layers
class _LayerNorm(nn.Module):
    """LayerNorm with a learnable weight and a fixed zero bias (a buffer, as in the files)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.register_buffer("bias", torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class _Attention(nn.Module):
    """Multi-head self-attention, plain softmax of ``q k^T / sqrt(D / heads)``."""

    def __init__(self, dim: int, num_heads: int, bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, N, D / heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class _Mlp(nn.Module):
    """GELU (exact) MLP ``fc2(gelu(fc1(x)))``."""

    def __init__(self, dim: int, hidden: int, bias: bool):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _SwiGLU(nn.Module):
    """Gated MLP ``fc2(silu(fc1(x)) * fc3(x))`` (names as in the files)."""

    def __init__(self, dim: int, hidden: int, bias: bool):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.fc3 = nn.Linear(dim, hidden, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.silu(self.fc1(x)) * self.fc3(x))


class TerraMindBlock(nn.Module):
    """Pre-norm block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``.

    Args:
        dim: Token size ``D``.
        num_heads: Attention heads.
        mlp_hidden: MLP hidden size.
        swiglu: SwiGLU MLP and no biases (base, large); else GELU MLP with biases.
        drop_path: Stochastic depth rate of both branches.
    """

    def __init__(
        self, dim: int, num_heads: int, mlp_hidden: int, swiglu: bool, drop_path: float = 0.0
    ):
        super().__init__()
        bias = not swiglu
        self.norm1 = _LayerNorm(dim)
        self.attn = _Attention(dim, num_heads, bias)
        self.norm2 = _LayerNorm(dim)
        self.mlp = (_SwiGLU if swiglu else _Mlp)(dim, mlp_hidden, bias)
        self.drop_path = float(drop_path)

    def _branch(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_path == 0.0:
            return x
        keep = 1.0 - self.drop_path
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, D)`` -> ``(B, N, D)``."""
        x = x + self._branch(self.attn(self.norm1(x)))
        return x + self._branch(self.mlp(self.norm2(x)))


class ImageEmbedding(nn.Module):
    """One modality's patches to tokens: ``proj(patch) + pos_emb + mod_emb``.

    Args:
        num_channels: Input channels ``C``.
        dim: Token size ``D``.
        img_size: Image side the ``pos_emb`` table is made for (224: the files' 14 x 14).

    Attributes:
        proj: ``Linear(C * 256, D, bias=False)`` over patches flattened (row, column,
            channel), channel fastest.
        pos_emb: ``(1, Hg * Wg, D)`` fixed sin-cos buffer (in the state dict, as in the files).
        mod_emb: ``(1, 1, D)`` learned.
    """

    def __init__(self, num_channels: int, dim: int, img_size: int = _FILE_IMG_SIZE):
        super().__init__()
        self.num_channels = int(num_channels)
        self.proj = nn.Linear(self.num_channels * PATCH_SIZE**2, dim, bias=False)
        self.register_buffer("pos_emb", sincos_2d_pos_emb(img_size // PATCH_SIZE, dim))
        self.mod_emb = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.xavier_uniform_(self.proj.weight)
        nn.init.normal_(self.mod_emb, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, Hg * Wg, D)``, ``Hg = H / 16``, tokens in row-major order."""
        b, c, h, w = x.shape
        hg, wg = h // PATCH_SIZE, w // PATCH_SIZE
        patches = x.reshape(b, c, hg, PATCH_SIZE, wg, PATCH_SIZE).permute(0, 2, 4, 3, 5, 1)
        tokens = self.proj(patches.reshape(b, hg * wg, PATCH_SIZE * PATCH_SIZE * c))
        pos_emb = resize_pos_emb(self.pos_emb, (hg, wg))
        return tokens + (pos_emb + self.mod_emb).to(tokens.dtype)


# ------------------------------------------------------------------------------ encoder
class TerraMindEncoder(nn.Module):
    """TerraMind v1 encoder on raw modalities; features of every block, modalities merged.

    Args:
        modalities: Modalities to embed, in order: names (``"S2L2A"``, ``"s1grd"``,
            ``"untok_dem@224"``...; see :func:`modality_key`) or ``{"name": n_channels}`` for a
            new, untrained modality; a dict ``{"name": n_channels, ...}`` is taken as a list of
            such entries. Default ``["S2L2A"]``.
        embed_dim: Token size ``D``.
        depth: Number of blocks.
        num_heads: Attention heads.
        mlp_hidden: MLP hidden size.
        swiglu: SwiGLU MLP without biases (base, large), else GELU MLP with biases.
        merge_method: How the modalities' tokens are merged in each feature: ``"mean"``
            (default), ``"max"``, ``"concat"`` (along channels; absent modalities get the
            learned ``missing_mod_token``), ``"dict"`` (``{modality: tokens}``) or ``None``
            (the raw sequence of all modalities).
        img_size: Image side the ``pos_emb`` tables are made for; other input sizes resize
            them (bicubic).
        drop_path_rate: Stochastic depth of the last block, growing linearly from 0.

    Attributes:
        modalities: ``tuple[str, ...]``: the user-facing names, in build order, as given
            (``("S2L2A", "S1GRD")``): the keys :meth:`forward` expects (aliases of the same
            modality are accepted too).
        keys: The file key of each modality, in the same order (``"untok_sen2l2a@224"``; a new
            modality's key is its name).
        out_channels: ``[D] * depth`` (``D * len(modalities)`` each for ``"concat"``).
        extra_inputs: ``()``: :meth:`forward` takes only the images.
        bands: ``{modality: [band, ...]}``: each modality's input bands in channel order
            (``[]`` for a new modality given without ``bands``), set by :func:`build_terramind`.
        pretrained_stats: The pretraining standardisation, **per modality**::

                {modality name: {"bands": [band, ...], "mean": [...], "std": [...]} | None}

            keyed by the names of :attr:`modalities` (same order), each list in that
            modality's input-channel order (after any ``bands`` subset). A modality's entry is
            ``None`` when it has a band without pretraining statistics, or is new. Units are
            the pretraining data's: S2 reflectance x 10000, S1 dB, RGB 0-255, DEM metres. The
            backbone does **not** standardise its input: the data path must, per modality
            (``(x[:, i] - mean[i]) / std[i]``). Set by :func:`build_terramind`; ``{}`` when the
            module is built directly.
        variant: The :class:`TerraMindVariant` built, set by :func:`build_terramind`.
    """

    patch_size = PATCH_SIZE  # models pad inputs to a multiple of it

    def __init__(
        self,
        modalities: Sequence[str | Mapping[str, int]] | Mapping[str, int] | None = None,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_hidden: int = 2048,
        swiglu: bool = True,
        merge_method: str | None = "mean",
        img_size: int = _FILE_IMG_SIZE,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        if merge_method not in MERGE_METHODS:
            raise ValueError(
                f"merge_method={merge_method!r}; choose one of {list(MERGE_METHODS)}."
            )
        if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size % PATCH_SIZE:
            raise ValueError(f"img_size must be a multiple of {PATCH_SIZE}, got {img_size!r}.")
        self.embed_dim = int(embed_dim)
        self.depth = int(depth)
        self.merge_method = merge_method
        self.img_size = img_size
        entries = _modality_entries(modalities)
        self.modalities: tuple[str, ...] = tuple(name for name, _, _ in entries)
        self.keys: tuple[str, ...] = tuple(key for _, key, _ in entries)
        self.new_modalities: tuple[str, ...] = tuple(
            key for _, key, channels in entries if key not in MODALITIES
        )
        self.encoder_embeddings = nn.ModuleDict(
            {key: ImageEmbedding(n, self.embed_dim, img_size) for _, key, n in entries}
        )
        if merge_method == "concat":
            self.missing_mod_token = nn.Parameter(torch.zeros(self.embed_dim))
            nn.init.normal_(self.missing_mod_token, std=0.02)
        rates = torch.linspace(0, float(drop_path_rate), self.depth, device="cpu").tolist()
        self.encoder = nn.ModuleList(
            TerraMindBlock(self.embed_dim, num_heads, mlp_hidden, swiglu, rate) for rate in rates
        )
        self.encoder_norm = _LayerNorm(self.embed_dim)
        width = self.embed_dim * (len(entries) if merge_method == "concat" else 1)
        self.out_channels: list[int] = [width] * self.depth
        self.extra_inputs: tuple[str, ...] = ()
        self.bands: dict[str, list[str | int]] = {}
        self.pretrained_stats: dict[str, dict[str, list[Any]] | None] = {}
        self.variant: TerraMindVariant | None = None
        self._init_blocks()
        self._warned: set[str] = set()

    def _init_blocks(self) -> None:
        # MAE-style, as the reference: Xavier per Q/K/V part, zero biases, unit norms.
        for name, module in self.encoder.named_modules():
            if isinstance(module, nn.Linear):
                fan_out = module.weight.shape[0] // (3 if name.endswith("qkv") else 1)
                bound = math.sqrt(6.0 / (fan_out + module.weight.shape[1]))
                nn.init.uniform_(module.weight, -bound, bound)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def modality_of(self, name: str) -> str | None:
        """The file key of a built modality that ``name`` designates, else ``None``."""
        if name in self.modalities:
            return self.keys[self.modalities.index(name)]
        if name in self.encoder_embeddings:
            return name
        key = modality_key(name)
        return key if key in self.encoder_embeddings else None

    def _inputs(
        self, x: torch.Tensor | Mapping[str, torch.Tensor]
    ) -> list[tuple[str, torch.Tensor]]:
        """``(file key, image)`` of each known input, in input order; unknown keys warned."""
        if isinstance(x, torch.Tensor):
            return [(self.keys[0], x)]
        if not isinstance(x, Mapping):
            raise TypeError(
                f"TerraMind expects a dict {{modality: (B, C, H, W)}} or one tensor (the first "
                f"modality, {self.modalities[0]}), got {type(x).__name__}."
            )
        found: list[tuple[str, torch.Tensor]] = []
        for name, image in x.items():
            key = self.modality_of(str(name))
            if key is None:
                if name not in self._warned:  # once per name, not once per batch
                    self._warned.add(name)
                    warnings.warn(
                        f"TerraMind: input '{name}' is not one of the built modalities "
                        f"{list(self.modalities)}; it is ignored. Add it to modalities= to use it.",
                        UserWarning,
                        stacklevel=3,
                    )
                continue
            if any(key == k for k, _ in found):
                raise ValueError(f"TerraMind: modality '{name}' is given twice (as {key}).")
            found.append((key, image))
        if not found:
            raise ValueError(
                f"TerraMind got none of its modalities {list(self.modalities)} "
                f"(inputs: {list(x)})."
            )
        return found

    def _check(self, key: str, image: torch.Tensor) -> None:
        channels = self.encoder_embeddings[key].num_channels
        name = self.modalities[self.keys.index(key)]
        if image.ndim != 4 or image.shape[1] != channels:
            raise ValueError(
                f"TerraMind modality '{name}' expects (B, {channels}, H, W) (bands "
                f"{self.bands.get(name) or channels}), got shape {tuple(image.shape)}. Set "
                "bands={'" + name + "': [...]} to the input's bands."
            )
        if image.shape[-2] % PATCH_SIZE or image.shape[-1] % PATCH_SIZE:
            raise ValueError(
                f"TerraMind modality '{name}': height and width {tuple(image.shape[-2:])} must "
                f"be multiples of the patch size {PATCH_SIZE}; pad the input."
            )

    def forward(self, x: torch.Tensor | Mapping[str, torch.Tensor]) -> list[Any]:
        """Features of every block.

        Args:
            x: ``{modality: (B, C_m, H, W)}`` with any non-empty subset of the built
                modalities, all of the same ``H, W`` (multiples of 16); keys not built are
                warned about once and ignored. A bare ``(B, C, H, W)`` tensor is the first
                modality.

        Returns:
            ``depth`` features; the last has ``encoder_norm`` applied. Per ``merge_method``:
            ``"mean"``/``"max"``: ``(B, Hg * Wg, D)``; ``"concat"``: ``(B, Hg * Wg, D * M)``
            (``M`` built modalities; given ones in input order, then ``missing_mod_token`` for
            the others); ``"dict"``: ``{modality key: (B, Hg * Wg, D)}`` in input order;
            ``None``: ``(B, M' * Hg * Wg, D)`` for the ``M'`` given modalities.
        """
        inputs = self._inputs(x)
        tokens, counts = [], []
        for key, image in inputs:
            self._check(key, image)
            embedded = self.encoder_embeddings[key](image)
            tokens.append(embedded)
            counts.append(embedded.shape[1])
        hidden = torch.cat(tokens, dim=1)
        out = []
        for block in self.encoder:
            hidden = block(hidden)
            out.append(hidden)
        out[-1] = self.encoder_norm(hidden)
        return [self._merge(feature, [k for k, _ in inputs], counts) for feature in out]

    def _merge(self, feature: torch.Tensor, keys: list[str], counts: list[int]) -> Any:
        if self.merge_method is None:
            return feature
        parts = torch.split(feature, counts, dim=1)
        if self.merge_method == "dict":
            return dict(zip(keys, parts, strict=True))
        if any(count != counts[0] for count in counts[1:]):  # (symbolic counts are unhashable)
            raise ValueError(
                f"merge_method={self.merge_method!r} needs the same image size for every modality, "
                f"got token counts {dict(zip(keys, counts, strict=True))}."
            )
        stacked = torch.stack(parts, dim=1)  # (B, M, N, D)
        if self.merge_method == "mean":
            return stacked.mean(dim=1)
        if self.merge_method == "max":
            return stacked.amax(dim=1)
        missing = len(self.keys) - len(keys)
        if missing:  # concat: absent modalities get the learned token, after the given ones
            b, _, n, d = stacked.shape
            filler = self.missing_mod_token.to(stacked.dtype).expand(b, missing, n, d)
            stacked = torch.cat([stacked, filler], dim=1)
        return torch.cat(stacked.unbind(dim=1), dim=-1)


def _modality_entries(
    modalities: Sequence[str | Mapping[str, int]] | Mapping[str, int] | None,
) -> list[tuple[str, str, int]]:
    """``(user name, file key, channels)`` of each requested modality, in order."""
    if modalities is None:
        modalities = ["S2L2A"]
    if isinstance(modalities, Mapping):
        modalities = [modalities]
    if isinstance(modalities, (str, bytes)) or not isinstance(modalities, Sequence):
        raise ValueError(
            f"modalities must be a list of names (e.g. ['S2L2A', 'S1GRD']) or of "
            f"{{name: n_channels}} dicts, got {modalities!r}."
        )
    known = ", ".join(m.name for m in MODALITIES.values())
    entries: list[tuple[str, str, int]] = []
    for item in modalities:
        if isinstance(item, Mapping):
            for name, channels in item.items():
                if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
                    raise ValueError(
                        f"New modality {{'{name}': {channels!r}}}: give its number of channels "
                        "as a positive int."
                    )
                entries.append((str(name), str(name), channels))
            continue
        if not isinstance(item, str):
            raise ValueError(f"modalities entry {item!r} is neither a name nor a {{name: n}} dict.")
        key = modality_key(item)
        if key is None:
            raise ValueError(
                f"Unknown TerraMind modality '{item}'. Known: {known} (case-insensitive, or the "
                "file keys such as untok_sen2l2a@224); a new modality is {'name': n_channels}."
            )
        entries.append((item, key, len(MODALITIES[key].bands)))
    if not entries:
        raise ValueError(f"modalities is empty; name at least one of {known}.")
    for what, index in (("name", 0), ("modality", 1)):
        values = [e[index] for e in entries]
        doubles = sorted({v for v in values if values.count(v) > 1})
        if doubles:
            raise ValueError(f"modalities lists the {what} {doubles} more than once: {modalities}.")
    return entries


# ------------------------------------------------------------------------------ weights
def _drop_group(key: str) -> str:
    if key.startswith("encoder_embeddings."):
        return "other modalities"
    if key.startswith("decoder"):
        return "decoder"
    return "other"


def load_terramind_checkpoint(
    encoder: TerraMindEncoder,
    checkpoint: str | Path | Mapping[str, Any],
    model: str = "TerraMind encoder",
) -> None:
    """Load a TerraMind weight file (the official any-to-any layout) into an encoder, in place.

    Keeps ``encoder_embeddings.<built modality keys>.*``, ``encoder.*`` and
    ``encoder_norm.*``; drops every other tensor (other modalities' embeddings, the decoder,
    ``mask_token``...) with one log line. Then strict: any missing or mis-shaped encoder key is
    an error (:func:`~geofm.models.backbones.checkpoints.check_state_dict`), except the
    embeddings of new modalities and ``missing_mod_token``, which the official files cannot
    have (they keep their initialisation). A ``pos_emb`` made for another grid than the
    model's ``img_size`` is replaced by the model's sin-cos table. A checkpoint holding the
    encoder under a prefix (``model.encoder.``) works too.

    Args:
        encoder: The encoder, as built (before any ``bands`` subset).
        checkpoint: Path of a weight file, or its loaded mapping.
        model: What ``encoder`` is, for the key report.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when it is unreadable or an encoder tensor is missing or mis-shaped.
    """
    if isinstance(checkpoint, (str, Path)):
        source = f"ckpt_path='{checkpoint}'"
        raw: Mapping[str, Any] = read_checkpoint(checkpoint)
    else:
        source, raw = "checkpoint", checkpoint
    _, state = backbone_tensors(raw, source, what=model, anchor="encoder_norm.weight")
    keep = tuple(f"encoder_embeddings.{key}." for key in encoder.keys)
    dropped: dict[str, list[str]] = {}
    for key in list(state):
        if not key.startswith((*keep, "encoder.", "encoder_norm.")):
            dropped.setdefault(_drop_group(key), []).append(key)
            del state[key]
    if dropped:
        modalities = sorted({k.split(".")[1] for k in dropped.get("other modalities", [])})
        details = []
        for group, keys in dropped.items():
            named = modalities if group == "other modalities" else keys
            shown = f" ({listed(named, 6)})" if group != "decoder" else ""
            details.append(f"{len(keys)} of {group}{shown}")
        log.info(
            "%s: dropped %d tensors the encoder does not use: %s.",
            source, sum(map(len, dropped.values())), "; ".join(details),
        )  # fmt: skip
    expected = encoder.state_dict()
    for key in [k for k in state if k.endswith(".pos_emb") and k in expected]:
        if state[key].shape != expected[key].shape:
            log.info(
                "%s: %s %s is for another grid; using the model's sin-cos table %s.",
                source, key, tuple(state[key].shape), tuple(expected[key].shape),
            )  # fmt: skip
            state[key] = expected[key]
    new = tuple(f"encoder_embeddings.{key}." for key in encoder.new_modalities)
    allowed = {
        k for k in expected if (k.startswith(new) or k == "missing_mod_token") and k not in state
    }
    check_state_dict({k: v for k, v in expected.items() if k not in allowed}, state, source, model)
    state.update({k: expected[k] for k in allowed})
    encoder.load_state_dict(state, strict=True, assign=any(v.is_meta for v in expected.values()))
    log.info("Loaded %d tensors into the %s from %s.", len(state) - len(allowed), model, source)


def _select_bands(
    encoder: TerraMindEncoder, name: str, key: str, bands: Sequence[Any]
) -> list[str | int]:
    """Replace a modality's ``proj`` by one for ``bands``, copying known bands' columns.

    The new bias-free Linear has ``len(bands) * 256`` inputs; for each band in the modality's
    pretraining list, its columns (the band at all 256 pixel positions) are copied from the
    current weight; other bands keep the fresh initialisation. Matching is by name only.
    """
    if isinstance(bands, (str, bytes)) or not isinstance(bands, Sequence) or not bands:
        raise ValueError(f"bands['{name}'] must be a non-empty list of band names, got {bands!r}.")
    names = [_band_name(b) for b in bands]
    doubles = sorted({str(b) for b in names if names.count(b) > 1})
    if doubles:
        raise ValueError(f"bands['{name}'] lists {doubles} more than once: {list(bands)}.")
    embedding = encoder.encoder_embeddings[key]
    info = MODALITIES.get(key)
    if info is None:  # a new modality: the names only label its channels
        if len(names) != embedding.num_channels:
            raise ValueError(
                f"bands['{name}'] lists {len(names)} bands for the new modality {{'{name}': "
                f"{embedding.num_channels}}}; give one name per channel."
            )
        return names
    old = embedding.proj.weight  # (D, 256 * C), channel fastest
    dim = old.shape[0]
    proj = nn.Linear(
        len(names) * PATCH_SIZE**2, dim, bias=False, device=old.device, dtype=old.dtype
    )
    copied, fresh = [], []
    with torch.no_grad():
        source = old.reshape(dim, PATCH_SIZE**2, len(info.bands))
        target = proj.weight.view(dim, PATCH_SIZE**2, len(names))
        for channel, band in enumerate(names):
            if band in info.bands:
                if not old.is_meta:
                    target[:, :, channel] = source[:, :, info.bands.index(band)]
                copied.append(band)
            else:
                fresh.append(band)
    embedding.proj = proj
    embedding.num_channels = len(names)
    log.info("TerraMind %s: patch-embedding weights copied for bands %s.", name, copied)
    if fresh:
        log.warning(
            "TerraMind %s: bands %s are not among its pretraining bands %s; their "
            "patch-embedding weights are newly initialised and must be learned.",
            name, fresh, list(info.bands),
        )  # fmt: skip
    return names


def _modality_stats(key: str, bands: Sequence[str | int]) -> dict[str, list[Any]] | None:
    info = MODALITIES.get(key)
    if info is None or not bands or any(b not in info.bands for b in bands):
        return None
    positions = [info.bands.index(b) for b in bands]  # type: ignore[arg-type]
    return {
        "bands": list(bands),
        "mean": [info.mean[p] for p in positions],
        "std": [info.std[p] for p in positions],
    }


# ------------------------------------------------------------------------------ building
def build_terramind(
    variant: str | TerraMindVariant,
    pretrained: bool | None = None,
    ckpt_path: str | Path | None = None,
    modalities: Sequence[str | Mapping[str, int]] | Mapping[str, int] | None = None,
    bands: Mapping[str, Sequence[Any]] | None = None,
    merge_method: str | None = "mean",
    img_size: int | None = None,
    drop_path_rate: float | None = None,
) -> TerraMindEncoder:
    """Build a TerraMind v1 encoder, with weights when asked. ``None`` means the default.

    Args:
        variant: A :data:`VARIANTS` name or a :class:`TerraMindVariant`.
        pretrained: Load the official file ``TerraMind_v1_<size>.pt`` from the local Hugging
            Face cache (never downloaded); an error names the file to obtain when it is absent.
        ckpt_path: Weight file to load instead (the official layout, or a checkpoint holding
            it under a prefix); loaded whatever ``pretrained`` says.
        modalities: Input modalities in order (default ``["S2L2A"]``); see
            :class:`TerraMindEncoder`.
        bands: ``{modality: [band, ...]}``: input bands of a modality, in channel order,
            when they differ from its pretraining bands (a subset, another order, new bands);
            applied after loading (see :func:`_select_bands`).
        merge_method: ``"mean"`` (default), ``"max"``, ``"concat"``, ``"dict"`` or ``None``.
            (A config's explicit ``null`` means ``None``, TerraTorch's raw sequence.)
        img_size: Image side of the ``pos_emb`` tables (default 224, the files' 14 x 14).
        drop_path_rate: Stochastic depth rate (default 0).

    Raises:
        ValueError: for an unknown variant, modality or band argument, or weights that do not
            fit.
        FileNotFoundError: when the weight file is missing.
    """
    if isinstance(variant, str):
        if variant not in VARIANTS:
            raise ValueError(
                f"Unknown TerraMind variant {variant!r}; choose from {list(VARIANTS)}."
            )
        variant = VARIANTS[variant]
    if bands is not None and not isinstance(bands, Mapping):
        raise ValueError(
            f"TerraMind takes bands per modality: bands={{'S2L2A': ['BLUE', ...]}}, got {bands!r}."
        )
    # Files are checked before building: a missing one should not cost a large init.
    weights = resolve_weights(variant.name, variant.pretrained_cfg, pretrained, ckpt_path)
    encoder = TerraMindEncoder(
        modalities=modalities,
        embed_dim=variant.embed_dim,
        depth=variant.depth,
        num_heads=variant.num_heads,
        mlp_hidden=variant.mlp_hidden,
        swiglu=variant.swiglu,
        merge_method=merge_method,
        img_size=_FILE_IMG_SIZE if img_size is None else img_size,
        drop_path_rate=0.0 if drop_path_rate is None else drop_path_rate,
    )
    encoder.variant = variant
    if weights is not None:
        load_terramind_checkpoint(
            encoder, weights, f"TerraMind {variant.name} (embed_dim={variant.embed_dim}, "
            f"depth={variant.depth}, modalities={list(encoder.modalities)})",
        )  # fmt: skip
    chosen: dict[str, Sequence[Any]] = {}
    for name, band_list in (bands or {}).items():
        key = encoder.modality_of(str(name))
        if key is None:
            raise ValueError(
                f"bands names the modality '{name}', which is not among modalities="
                f"{list(encoder.modalities)}."
            )
        chosen[key] = band_list
    for name, key in zip(encoder.modalities, encoder.keys, strict=True):
        if key in chosen:
            encoder.bands[name] = _select_bands(encoder, name, key, chosen[key])
        else:
            encoder.bands[name] = list(MODALITIES[key].bands) if key in MODALITIES else []
        encoder.pretrained_stats[name] = _modality_stats(key, encoder.bands[name])
    return encoder


_BUILD_ARGS = [p for p in inspect.signature(build_terramind).parameters if p != "variant"]


def _build(
    name: str,
    pretrained: bool,
    ckpt_path: str | Path | None,
    bands: Mapping[str, Sequence[Any]] | None,
    kwargs: dict[str, Any],
) -> TerraMindEncoder:
    """What every registered variant function does: check its keywords, then build."""
    unknown = sorted(set(kwargs) - set(_BUILD_ARGS))
    if unknown:
        raise TypeError(f"{name} got unknown arguments {unknown}; valid arguments: {_BUILD_ARGS}.")
    # None values are dropped so that config defaults never override the variant's; except
    # merge_method, where None is a choice (the raw token sequence), as in TerraTorch.
    options = {k: v for k, v in kwargs.items() if v is not None or k == "merge_method"}
    return build_terramind(name, pretrained=pretrained, ckpt_path=ckpt_path, bands=bands, **options)


# ------------------------------------------------------------------------------ variants
# Arguments of every function: pretrained (the official file from the local Hugging Face
# cache), ckpt_path (a local weight file, loaded whatever pretrained says), bands (per
# modality), and the other build_terramind arguments (modalities, merge_method...) as keywords.
@GEOFM_BACKBONE_REGISTRY.register
def terramind_v1_tiny(
    pretrained: bool = False,
    ckpt_path: str | Path | None = None,
    bands: Mapping[str, Sequence[Any]] | None = None,
    **kwargs: Any,
) -> TerraMindEncoder:
    """TerraMind v1 tiny (D 192, depth 12, 3 heads, GELU MLP): ``TerraMind_v1_tiny.pt``.

    Args: see :func:`build_terramind`.
    """
    return _build("terramind_v1_tiny", pretrained, ckpt_path, bands, kwargs)


@GEOFM_BACKBONE_REGISTRY.register
def terramind_v1_small(
    pretrained: bool = False,
    ckpt_path: str | Path | None = None,
    bands: Mapping[str, Sequence[Any]] | None = None,
    **kwargs: Any,
) -> TerraMindEncoder:
    """TerraMind v1 small (D 384, depth 12, 6 heads, GELU MLP): ``TerraMind_v1_small.pt``.

    Args: see :func:`build_terramind`.
    """
    return _build("terramind_v1_small", pretrained, ckpt_path, bands, kwargs)


@GEOFM_BACKBONE_REGISTRY.register
def terramind_v1_base(
    pretrained: bool = False,
    ckpt_path: str | Path | None = None,
    bands: Mapping[str, Sequence[Any]] | None = None,
    **kwargs: Any,
) -> TerraMindEncoder:
    """TerraMind v1 base (D 768, depth 12, 12 heads, SwiGLU): ``TerraMind_v1_base.pt``.

    Args: see :func:`build_terramind`.
    """
    return _build("terramind_v1_base", pretrained, ckpt_path, bands, kwargs)


@GEOFM_BACKBONE_REGISTRY.register
def terramind_v1_large(
    pretrained: bool = False,
    ckpt_path: str | Path | None = None,
    bands: Mapping[str, Sequence[Any]] | None = None,
    **kwargs: Any,
) -> TerraMindEncoder:
    """TerraMind v1 large (D 1024, depth 24, 16 heads, SwiGLU): ``TerraMind_v1_large.pt``.

    Args: see :func:`build_terramind`.
    """
    return _build("terramind_v1_large", pretrained, ckpt_path, bands, kwargs)


def describe(name: str) -> BackboneInfo:
    """The catalog entry of a TerraMind v1 encoder (see :mod:`geofm.models.catalog`)."""
    entry = TERRAMIND_PRETRAINED_CONFIGS[name].info(name, "TerraMind", "TerraMesh, any-to-any")
    modalities = ", ".join(f"{m.name} ({len(m.bands)})" for m in MODALITIES.values())
    return dataclasses.replace(entry, bands=f"modalities {modalities}")
