"""TerraTorch's older model factories, so that configs naming them run unchanged.

``PrithviModelFactory``, ``SMPModelFactory`` and ``TimmModelFactory`` take TerraTorch's
arguments, map them to :class:`~geofm.models.factories.encoder_decoder.EncoderDecoderFactory`'s
and build the model through it, so the result is a geofm model (freezing, padding, auxiliary
heads, export) with the composition TerraTorch builds:

- ``PrithviModelFactory``: ``bands``, ``in_channels``, ``pretrained`` and ``num_frames`` become
  ``backbone_*`` arguments; no necks given, so the backbone's token reshape is inserted.
- ``SMPModelFactory``: the smp model ``model(encoder_name=backbone, ...)``, its encoder as the
  backbone and its decoder with its segmentation head as the decoder (same parameters, same
  output as ``smp.<model>``).
- ``TimmModelFactory``: a timm classifier, its pooled features as the backbone and its last
  linear layer as a :class:`~geofm.models.heads.ClassificationHead`.

Arguments TerraTorch accepts but geofm cannot honour raise an error that names them and what
to write instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from geofm.models.factories.encoder_decoder import EncoderDecoderFactory
from geofm.models.model import Model
from geofm.registry import MODEL_FACTORY_REGISTRY

__all__ = ["PrithviModelFactory", "SMPModelFactory", "TimmModelFactory"]

log = logging.getLogger(__name__)

_NECKS_INSTEAD = (
    "prepare_features_for_image_model is not supported (TerraTorch dropped it too); with "
    "EncoderDecoderFactory give necks, e.g. [{name: SelectIndices, indices: [...]}, "
    "{name: ReshapeTokensToImage}]."
)


def _check_task(factory: str, task: str, supported: tuple[str, ...], instead: str) -> str:
    task = task.lower()
    if task not in supported:
        raise NotImplementedError(
            f"{factory} builds {' and '.join(supported)} models, not '{task}'; {instead}"
        )
    return task


def _set_routed(kwargs: dict[str, Any], key: str, value: Any, factory: str, argument: str) -> None:
    """Put a factory argument into its ``backbone_*`` keyword, refusing a different one given too."""
    if value is None:
        return
    if key in kwargs and kwargs[key] is not None and kwargs[key] != value:
        raise ValueError(
            f"{factory}: {argument}={value!r} and {key}={kwargs[key]!r} disagree; give one of them."
        )
    kwargs[key] = value


def _split(kwargs: Mapping[str, Any], prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``prefix_name`` keywords as ``{name: value}``, and the rest."""
    taken = {k[len(prefix):]: v for k, v in kwargs.items() if k.startswith(prefix)}
    rest = {k: v for k, v in kwargs.items() if not k.startswith(prefix)}
    return taken, rest


# ------------------------------------------------------------------------------ Prithvi
@MODEL_FACTORY_REGISTRY.register
class PrithviModelFactory:
    """TerraTorch's ``PrithviModelFactory``: a Prithvi backbone through EncoderDecoderFactory."""

    def build_model(
        self,
        task: str,
        backbone: str | nn.Module,
        decoder: str | nn.Module,
        bands: list[Any] | None = None,
        in_channels: int | None = None,
        num_classes: int | None = None,
        pretrained: bool = True,
        num_frames: int = 1,
        prepare_features_for_image_model: Any = None,
        aux_decoders: list[Any] | None = None,
        rescale: bool = True,
        **kwargs: Any,
    ) -> Model:
        """Build as TerraTorch's factory does, with geofm's parts.

        Args:
            task: ``"segmentation"``, ``"regression"`` or ``"classification"``.
            backbone: A ``prithvi_*`` backbone name (ViT or Swin) or a ready module.
            decoder: A decoder name or module, as for EncoderDecoderFactory.
            bands: Input bands (``backbone_bands``); TerraTorch requires them, geofm defaults
                to the pretraining bands.
            in_channels: Input channels (``backbone_in_chans``), checked against ``bands``.
            num_classes: Classes of segmentation and classification outputs.
            pretrained: Load the official weights (``backbone_pretrained``; TerraTorch's
                default ``True``).
            num_frames: Frames per sample (``backbone_num_frames``).
            prepare_features_for_image_model: Not supported: an error says to use necks.
            aux_decoders: Auxiliary heads, as for EncoderDecoderFactory.
            rescale: Resize pixel-wise outputs to the input size (ignored for
                classification, as TerraTorch does).
            **kwargs: ``backbone_*``, ``decoder_*``, ``head_*`` arguments and ``necks``, passed
                to EncoderDecoderFactory.

        Raises:
            NotImplementedError: for a backbone name that is not a Prithvi one.
            ValueError: for ``prepare_features_for_image_model``, or a factory argument that
                disagrees with its ``backbone_*`` keyword.
        """
        name = type(self).__name__
        if prepare_features_for_image_model is not None:
            raise ValueError(f"{name}: {_NECKS_INSTEAD}")
        if isinstance(backbone, str) and not backbone.startswith("prithvi_"):
            raise NotImplementedError(
                f"{name} builds prithvi_* backbones, not '{backbone}'; use "
                f"model_factory: EncoderDecoderFactory with backbone: {backbone}."
            )
        log.info("%s is TerraTorch's deprecated factory; building with EncoderDecoderFactory.", name)
        if in_channels is None and bands is not None:
            in_channels = len(bands)
        if isinstance(backbone, str):
            # A ready module takes no backbone_* arguments (EncoderDecoderFactory refuses them).
            for argument, value in (
                ("bands", bands),
                ("in_chans", in_channels),
                ("pretrained", pretrained),
                ("num_frames", num_frames),
            ):
                _set_routed(kwargs, f"backbone_{argument}", value, name, argument)
        is_pixel_task = task.lower() != "classification"
        return EncoderDecoderFactory().build_model(
            task,
            backbone,
            decoder,
            num_classes=num_classes,
            aux_decoders=aux_decoders,
            rescale=rescale if is_pixel_task else None,
            **kwargs,
        )


# ------------------------------------------------------------------------------ smp
class SmpEncoder(nn.Module):
    """An smp encoder as a geofm backbone: its features without the input itself.

    smp encoders return ``depth + 1`` features, the first being the input image; decoders
    never read its values, so it is dropped here and :class:`SmpDecoderWithHead` passes an
    empty stand-in of its size.

    Args:
        encoder: An smp encoder (``smp_model.encoder``).

    Attributes:
        out_channels: Channels of levels 1..depth.
        strides: Downsampling of each level (dilated encoders stop at their output stride).
        extra_inputs: ``()``: :meth:`forward` takes only the image.
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        channels = list(encoder.out_channels)[1:]
        output_stride = int(getattr(encoder, "output_stride", 2 ** len(channels)))
        self.out_channels: list[int] = channels
        self.strides: list[int] = [min(2**i, output_stride) for i in range(1, len(channels) + 1)]
        self.extra_inputs: tuple[str, ...] = ()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(B, C, H, W)`` -> one ``(B, out_channels[i], H / strides[i], W / strides[i])`` per level."""
        return list(self.encoder(x))[1:]


class SmpDecoderWithHead(nn.Module):
    """An smp decoder and its segmentation head, as a geofm decoder that includes its head.

    Args:
        decoder: ``smp_model.decoder``.
        head: ``smp_model.segmentation_head`` (3x3 conv, the architecture's upsampling), with
            a ReLU after it for TerraTorch's ``regression_relu``.
        out_channels: Classes of the head.
    """

    includes_head = True

    def __init__(self, decoder: nn.Module, head: nn.Module, out_channels: int):
        super().__init__()
        self.decoder = decoder
        self.head = head
        self.out_channels = out_channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Levels 1..depth of an smp encoder -> ``(B, out_channels, H', W')``."""
        first = features[0]
        # The input-resolution level smp decoders expect: no channels, so no memory.
        stand_in = first.new_empty(first.shape[0], 0, first.shape[-2] * 2, first.shape[-1] * 2)
        return self.head(self.decoder([stand_in, *features]))


@MODEL_FACTORY_REGISTRY.register
class SMPModelFactory:
    """TerraTorch's ``SMPModelFactory``: an smp architecture, split into geofm's parts."""

    def build_model(
        self,
        task: str,
        backbone: str,
        model: str,
        bands: list[Any] | None = None,
        in_channels: int | None = None,
        num_classes: int = 1,
        pretrained: str | bool | None = True,
        prepare_features_for_image_model: Any = None,
        regression_relu: bool = False,
        rescale: bool = True,
        **kwargs: Any,
    ) -> Model:
        """Build ``smp.<model>(encoder_name=backbone, ...)`` as a geofm model.

        Args:
            task: ``"segmentation"`` (TerraTorch's only task) or ``"regression"``.
            backbone: An smp encoder name (``"resnet34"``, ``"efficientnet-b0"``,
                ``"tu-convnext_tiny"``).
            model: smp architecture class name (``"Unet"``, ``"FPN"``, ``"DeepLabV3Plus"``...).
            bands: Input bands; only their number is used (smp has no band names).
            in_channels: Input channels (default ``len(bands)``, else 3).
            num_classes: Output classes (1 for regression).
            pretrained: ``True`` for smp's ``"imagenet"`` encoder weights, a weight name such
                as ``"ssl"``, or ``False``/``None`` for none. smp downloads them unless cached.
            prepare_features_for_image_model: Not supported (custom encoders).
            regression_relu: ReLU after the head for regression, as TerraTorch's wrapper.
            rescale: Resize the output to the input size.
            **kwargs: ``smp_*`` arguments of the smp architecture (``smp_decoder_channels``,
                ``smp_encoder_depth``...).

        Raises:
            NotImplementedError: for another task.
            ValueError: for an unknown architecture or encoder, ``aux_*`` or ``backbone_*``
                arguments, or other leftover keywords (all listed).
        """
        import segmentation_models_pytorch as smp

        name = type(self).__name__
        task = _check_task(
            name, task, ("segmentation", "regression"),
            "for classification use TimmModelFactory or EncoderDecoderFactory.",
        )
        if prepare_features_for_image_model is not None:
            raise ValueError(f"{name}: {_NECKS_INSTEAD}")
        smp_args, rest = _split(kwargs, "smp_")
        self._refuse_leftovers(rest, backbone, model)
        arch = getattr(smp, model, None)
        if not (isinstance(arch, type) and issubclass(arch, nn.Module)):
            raise ValueError(
                f"{name}: model '{model}' is not an smp architecture; choose from "
                f"{sorted(a.__name__ for a in smp.MODEL_ARCHITECTURES_MAPPING.values())}."
            )
        if backbone not in smp.encoders.get_encoder_names() and not backbone.startswith("tu-"):
            raise ValueError(
                f"{name}: backbone '{backbone}' is not an smp encoder (see "
                "segmentation_models_pytorch.encoders.get_encoder_names(), or 'tu-<timm name>'). "
                f"For a geofm or timm backbone use EncoderDecoderFactory with backbone: "
                f"{backbone} and decoder: smp_{model}."
            )
        if in_channels is None:
            in_channels = len(bands) if bands is not None else 3
        if task == "regression" and num_classes != 1:
            raise ValueError(f"{name}: regression predicts one value per pixel; num_classes must be 1.")
        weights = ("imagenet" if pretrained else None) if isinstance(pretrained, bool) else pretrained
        try:
            smp_model = arch(
                encoder_name=backbone,
                encoder_weights=weights,
                in_channels=in_channels,
                classes=num_classes,
                **smp_args,
            )
        except (OSError, RuntimeError) as err:
            if weights is None:
                raise
            raise RuntimeError(
                f"{name}: could not load the '{weights}' weights of smp encoder '{backbone}' "
                f"({err}). Without network access put them in the torch hub cache, or set "
                "pretrained: false."
            ) from err
        head: nn.Module = smp_model.segmentation_head
        if task == "regression" and regression_relu:
            head = nn.Sequential(head, nn.ReLU())
        return EncoderDecoderFactory().build_model(
            task,
            SmpEncoder(smp_model.encoder),
            SmpDecoderWithHead(smp_model.decoder, head, num_classes),
            num_classes=num_classes if task == "segmentation" else None,
            rescale=rescale,
        )

    @staticmethod
    def _refuse_leftovers(rest: Mapping[str, Any], backbone: str, model: str) -> None:
        aux = sorted(k for k in rest if k.startswith("aux_"))
        custom = sorted(k for k in rest if k.startswith("backbone_"))
        other = sorted(set(rest) - set(aux) - set(custom))
        problems = []
        if aux:
            problems.append(
                f"{aux}: smp's auxiliary image-level classifier (aux_params), whose output "
                "TerraTorch's SMP wrapper drops; remove them (same predictions), or use "
                "EncoderDecoderFactory's aux_decoders for auxiliary pixel-wise heads"
            )
        if custom:
            problems.append(
                f"{custom}: arguments of TerraTorch's custom (non-smp) encoders; use "
                f"EncoderDecoderFactory with backbone: <name>, backbone_* arguments and "
                f"decoder: smp_{model}"
            )
        if other:
            problems.append(
                f"{other}: not SMPModelFactory arguments; smp architecture arguments take the "
                "prefix smp_ (smp_decoder_channels)"
            )
        if problems:
            raise ValueError(
                f"SMPModelFactory (backbone '{backbone}', model '{model}') cannot use "
                + "; ".join(problems)
                + "."
            )


# ------------------------------------------------------------------------------ timm
class TimmPooledBackbone(nn.Module):
    """A timm classifier without its last layer: pooled features ``(B, C)``.

    Args:
        model: A timm model built with ``num_classes=0``.

    Attributes:
        out_channels: ``[C]``, the width of the pooled (pre-logits) features.
        extra_inputs: ``()``: :meth:`forward` takes only the image.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        width = getattr(model, "head_hidden_size", None) or model.num_features
        self.out_channels: list[int] = [int(width)]
        self.extra_inputs: tuple[str, ...] = ()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(B, C_in, H, W)`` -> ``[(B, C)]``."""
        return [self.model(x)]


@MODEL_FACTORY_REGISTRY.register
class TimmModelFactory:
    """TerraTorch's ``TimmModelFactory``: a timm classifier as a geofm model."""

    def build_model(
        self,
        task: str,
        backbone: str,
        in_channels: int,
        num_classes: int,
        pretrained: str | bool = True,
        **kwargs: Any,
    ) -> Model:
        """Build ``timm.create_model(backbone, num_classes=..., in_chans=...)`` as a geofm model.

        The timm model is built with ``num_classes=0`` (its pooled features) and its classifier
        is a :class:`~geofm.models.heads.ClassificationHead` (one linear layer), so parameters
        and outputs match timm's classifier.

        Args:
            task: ``"classification"``.
            backbone: timm model name (``"resnet50"``, ``"vit_base_patch16_224.mae"``).
            in_channels: Input channels (timm adapts the first layer's weights).
            num_classes: Classes.
            pretrained: Load timm's pretrained weights (downloaded by timm unless cached).
                TerraTorch's TorchGeo weight names and checkpoint paths are not supported.
            **kwargs: ``backbone_*`` arguments of ``timm.create_model``
                (``backbone_drop_path_rate``, ``backbone_pretrained_cfg_overlay``...).

        Raises:
            NotImplementedError: for another task.
            ValueError: for a string ``pretrained`` or keywords without the ``backbone_`` prefix.
        """
        import timm

        name = type(self).__name__
        _check_task(
            name, task, ("classification",),
            f"for pixel-wise tasks use EncoderDecoderFactory with backbone: timm_{backbone}.",
        )
        timm_args, rest = _split(kwargs, "backbone_")
        if rest:
            raise ValueError(
                f"{name} got arguments it does not use: {sorted(rest)}; timm.create_model "
                "arguments take the prefix backbone_ (backbone_drop_path_rate)."
            )
        if isinstance(pretrained, str):
            raise ValueError(
                f"{name}: pretrained='{pretrained}' (a TorchGeo weight name or checkpoint) is not "
                "supported; for a timm weight file use pretrained: true with "
                "backbone_pretrained_cfg_overlay: {file: <path>}, for TorchGeo weights "
                "EncoderDecoderFactory with a torchgeo backbone (geofm registry list backbone)."
            )
        try:
            model = timm.create_model(
                backbone, pretrained=pretrained, num_classes=0, in_chans=in_channels, **timm_args
            )
        except (OSError, RuntimeError) as err:
            if not pretrained:
                raise
            raise RuntimeError(
                f"{name}: could not fetch pretrained weights for timm model '{backbone}' ({err}). "
                "Without network access download them elsewhere and pass "
                "backbone_pretrained_cfg_overlay: {file: <path>}, or set pretrained: false."
            ) from err
        return EncoderDecoderFactory().build_model(
            "classification",
            TimmPooledBackbone(model),
            "IdentityDecoder",
            num_classes=num_classes,
        )
