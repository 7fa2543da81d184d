"""``EncoderDecoderFactory``: backbone + necks + decoder + head from registry names."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from geofm.models.heads import ClassificationHead, RegressionHead, SegmentationHead
from geofm.models.model import AuxiliaryHead, Model
from geofm.models.pixel_wise_model import PixelWiseModel
from geofm.models.scalar_output_model import ScalarOutputModel, pool_spatial
from geofm.registry import (
    BACKBONE_REGISTRY,
    DECODER_REGISTRY,
    MODEL_FACTORY_REGISTRY,
    NECK_REGISTRY,
)

__all__ = ["EncoderDecoderFactory", "DecoderWithHead", "SUPPORTED_TASKS"]

log = logging.getLogger(__name__)

SUPPORTED_TASKS = ("segmentation", "regression", "classification")


class DecoderWithHead(nn.Module):
    """A decoder and its head as one module (used for auxiliary heads).

    Args:
        decoder: Decoder returning ``(B, C, H, W)``.
        head: Head applied to the decoder output.
        pool: Average the head output over H and W (classification: a no-op on the
            ``(B, num_classes)`` of a :class:`ClassificationHead`, which pools itself).
    """

    def __init__(self, decoder: nn.Module, head: nn.Module, pool: bool = False):
        super().__init__()
        self.decoder = decoder
        self.head = head
        self.pool = pool

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        out = self.decoder(features)
        out = self.head(out)
        return pool_spatial(out) if self.pool else out


def _split_prefixed(kwargs: Mapping[str, Any], prefixes: Sequence[str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Route ``prefix_name`` keywords to ``{prefix: {name: value}}``; return the leftovers too."""
    routed: dict[str, dict[str, Any]] = {prefix: {} for prefix in prefixes}
    unused = []
    for key, value in kwargs.items():
        prefix, sep, name = key.partition("_")
        if sep and name and prefix in routed:
            routed[prefix][name] = value
        else:
            unused.append(key)
    return routed, unused


def _channels(module: nn.Module, what: str) -> Any:
    channels = getattr(module, "out_channels", None)
    if channels is None:
        raise ValueError(
            f"The {what} {type(module).__name__} has no 'out_channels' attribute; the factory "
            f"needs it to size what comes next. Set module.out_channels "
            f"({'list[int] for a backbone' if what == 'backbone' else 'int for a decoder'})."
        )
    return channels


def _includes_head(decoder: str | nn.Module, module: nn.Module | None = None) -> bool:
    if getattr(module if module is not None else decoder, "includes_head", False):
        return True
    if isinstance(decoder, str):
        # On the registered class, or on the whole source (mmseg heads all include one).
        source = DECODER_REGISTRY.find_registry(decoder)
        return bool(
            getattr(DECODER_REGISTRY.get(decoder), "includes_head", False)
            or getattr(source, "includes_head", False)
        )
    return False


@MODEL_FACTORY_REGISTRY.register
class EncoderDecoderFactory:
    """Builds a :class:`PixelWiseModel` or :class:`ScalarOutputModel` from registry names."""

    def build_model(
        self,
        task: str,
        backbone: str | nn.Module,
        decoder: str | nn.Module,
        num_classes: int | None = None,
        necks: list[Mapping[str, Any]] | None = None,
        aux_decoders: list[AuxiliaryHead | Mapping[str, Any]] | None = None,
        rescale: bool | None = None,
        **kwargs: Any,
    ) -> Model:
        """Compose a model.

        Args:
            task: ``"segmentation"``, ``"regression"`` or ``"classification"`` (any case).
            backbone: A name in ``BACKBONE_REGISTRY`` (``"prithvi_eo_v2_300"``,
                ``"timm_resnet50"``) or a module with ``out_channels``.
            decoder: A name in ``DECODER_REGISTRY`` (``"UperNetDecoder"``, ``"smp_Unet"``) or
                a module with ``out_channels``.
            num_classes: Classes of segmentation and classification outputs.
            necks: ``[{"name": "SelectIndices", "indices": [2, 5, 8, 11]}, ...]``, built from
                ``NECK_REGISTRY`` in order, each given the channels the previous one produced.
                When none are given (``None`` or ``[]``) and the backbone declares
                ``image_necks`` (token backbones: Prithvi ViT, DOFA), those are inserted, as
                TerraTorch applies the backbone's token-to-image reshape when a config has no
                necks; an INFO log line names them.
            aux_decoders: Auxiliary heads built on the same necked features.
            rescale: Resize pixel-wise outputs to the input size (default ``True``). Not for
                classification, whose output is one value per image.
            **kwargs: ``backbone_*``, ``decoder_*`` and ``head_*`` arguments, routed to the
                backbone, the decoder and the head with the prefix removed.

        Raises:
            NotImplementedError: for an unsupported task.
            ValueError: for keywords without a known prefix (all are listed), and for
                ``rescale`` given with classification.
        """
        task = task.lower()
        if task not in SUPPORTED_TASKS:
            raise NotImplementedError(
                f"Task '{task}' is not supported; choose one of {list(SUPPORTED_TASKS)}."
            )
        routed, unused = _split_prefixed(kwargs, ("backbone", "decoder", "head"))
        if unused:
            raise ValueError(
                f"EncoderDecoderFactory got arguments it does not use: {sorted(unused)}. "
                "Prefix backbone arguments with 'backbone_', decoder arguments with "
                "'decoder_' and head arguments with 'head_'."
            )
        if task == "classification" and rescale is not None:
            # Accepting it would silently do nothing: there is no output map to resize.
            raise ValueError(
                f"rescale={rescale!r} has no effect for classification (one prediction per image, "
                "no output map to resize); remove rescale from model_args."
            )
        if task in ("segmentation", "classification") and num_classes is None:
            raise ValueError(f"Task '{task}' needs num_classes.")

        encoder = self._build_backbone(backbone, routed["backbone"])
        if not necks:
            necks = self._default_necks(encoder)
        neck_modules, channel_list = self._build_necks(necks, list(_channels(encoder, "backbone")))
        decoder_module, head = self._build_decoder_and_head(
            task, decoder, channel_list, num_classes, routed["decoder"], routed["head"]
        )
        aux_heads = {
            aux.name: DecoderWithHead(
                *self._build_decoder_and_head(task, aux.decoder, channel_list, num_classes, *self._aux_args(aux)),
                pool=task == "classification",
            )
            for aux in map(self._as_aux_head, aux_decoders or [])
        }
        if task == "classification":
            return ScalarOutputModel(task, encoder, decoder_module, head, neck_modules, aux_heads)
        return PixelWiseModel(
            task, encoder, decoder_module, head, neck_modules, aux_heads,
            rescale=rescale is not False,
        )

    # ------------------------------------------------------------------ parts
    @staticmethod
    def _build_backbone(backbone: str | nn.Module, args: dict[str, Any]) -> nn.Module:
        if isinstance(backbone, nn.Module):
            if args:
                raise ValueError(
                    f"backbone is a ready module, so backbone_* arguments {sorted(args)} would be ignored."
                )
            return backbone
        return BACKBONE_REGISTRY.build(backbone, **args)

    @staticmethod
    def _default_necks(encoder: nn.Module) -> list[dict[str, Any]] | None:
        """The necks a backbone declares for configs that give none (its ``image_necks``).

        TerraTorch's models call a token backbone's ``prepare_features_for_image_model`` (drop
        the class token, reshape to ``(B, T * D, Hg, Wg)``) whenever no neck is configured;
        geofm's token backbones declare the same as neck specs, so the factory needs no
        per-backbone knowledge and the inserted necks show up in the model like given ones.
        """
        declared = getattr(encoder, "image_necks", None)
        if not declared:
            return None
        specs = [dict(spec) for spec in declared]
        described = ", ".join(
            f"{spec['name']}({', '.join(f'{k}={v!r}' for k, v in spec.items() if k != 'name')})"
            for spec in specs
        )
        log.info(
            "No necks given for backbone %s, which returns tokens: inserted %s "
            "(pass necks to choose others).",
            type(encoder).__name__,
            described,
        )
        return specs

    @staticmethod
    def _build_necks(
        necks: list[Mapping[str, Any]] | None, channel_list: list[int]
    ) -> tuple[list[nn.Module], list[int]]:
        modules = []
        for index, spec in enumerate(necks or []):
            spec = dict(spec)
            name = spec.pop("name", None)
            if name is None:
                raise ValueError(f"necks[{index}] needs a 'name' key, got keys {sorted(spec)}.")
            neck = NECK_REGISTRY.build(name, channel_list, **spec)
            channel_list = list(neck.process_channel_list(channel_list))
            modules.append(neck)
        return modules, channel_list

    @staticmethod
    def _build_decoder_and_head(
        task: str,
        decoder: str | nn.Module,
        channel_list: list[int],
        num_classes: int | None,
        decoder_args: dict[str, Any],
        head_args: dict[str, Any],
    ) -> tuple[nn.Module, nn.Module]:
        outputs = 1 if task == "regression" else num_classes
        if isinstance(decoder, nn.Module):
            if decoder_args:
                raise ValueError(
                    f"decoder is a ready module, so decoder_* arguments {sorted(decoder_args)} would be ignored."
                )
            module = decoder
        else:
            if _includes_head(decoder):
                decoder_args = {**decoder_args, "num_classes": outputs}
            module = DECODER_REGISTRY.build(decoder, channel_list, **decoder_args)
        if _includes_head(decoder, module):
            if head_args:
                raise ValueError(
                    f"Decoder {type(module).__name__} includes its head, so head_* arguments "
                    f"{sorted(head_args)} have nowhere to go."
                )
            return module, nn.Identity()
        channels = _channels(module, "decoder")
        if task == "segmentation":
            head: nn.Module = SegmentationHead(channels, num_classes, **head_args)
        elif task == "regression":
            head = RegressionHead(channels, **head_args)
        else:
            head = ClassificationHead(channels, num_classes, **head_args)
        return module, head

    @staticmethod
    def _as_aux_head(aux: AuxiliaryHead | Mapping[str, Any]) -> AuxiliaryHead:
        if isinstance(aux, AuxiliaryHead):
            return aux
        try:
            return AuxiliaryHead(**aux)
        except TypeError as err:
            raise ValueError(
                f"aux_decoders entries need 'name', 'decoder' and optional 'decoder_args'; got {dict(aux)}."
            ) from err

    @staticmethod
    def _aux_args(aux: AuxiliaryHead) -> tuple[dict[str, Any], dict[str, Any]]:
        routed, unused = _split_prefixed(aux.decoder_args or {}, ("decoder", "head"))
        if unused:
            raise ValueError(
                f"Auxiliary head '{aux.name}' got arguments it does not use: {sorted(unused)}; "
                "prefix them with 'decoder_' or 'head_'."
            )
        return routed["decoder"], routed["head"]
