"""``PrithviMAEFactory``: a Prithvi ViT with the official MAE decoder, for continued pretraining.

Keyword routing as in :class:`~geofm.models.factories.encoder_decoder.EncoderDecoderFactory`:
``backbone_*`` arguments go to :func:`~geofm.models.backbones.prithvi_vit.build_prithvi_vit`
(``backbone_bands``, ``backbone_num_frames``, ``backbone_img_size``, ``backbone_drop_path``,
``backbone_coords_encoding``...), ``decoder_*`` to the MAE decoder (``decoder_embed_dim``,
``decoder_depth``, ``decoder_num_heads``; default: the official 512, 8, 16). Weights
(``backbone_pretrained``: the official file from the local Hugging Face cache, or
``backbone_ckpt_path``) load into encoder *and* decoder (:mod:`geofm.models.mae.weights`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geofm.data.bands import Band, resolve_bands
from geofm.models.backbones.pretrained import resolve_weights
from geofm.models.backbones.prithvi_vit import VARIANTS, build_prithvi_vit
from geofm.models.mae.model import DECODER_DEFAULTS, PrithviMAE
from geofm.models.mae.weights import load_prithvi_mae_checkpoint
from geofm.registry import MODEL_FACTORY_REGISTRY

__all__ = ["PrithviMAEFactory", "build_prithvi_mae"]

_DECODER_ARGS = ("embed_dim", "depth", "num_heads")
# build_prithvi_vit arguments that cannot change an MAE: it always runs every block.
_NOT_FOR_MAE = {"out_indices": "the MAE runs every encoder block and the final norm"}


def build_prithvi_mae(
    backbone: str,
    pretrained: bool | None = None,
    ckpt_path: str | Path | None = None,
    bands: Sequence[Band] | None = None,
    pretrained_bands: Sequence[Band] | None = None,
    decoder_embed_dim: int | None = None,
    decoder_depth: int | None = None,
    decoder_num_heads: int | None = None,
    **backbone_kwargs: Any,
) -> PrithviMAE:
    """A :class:`PrithviMAE` of a Prithvi ViT variant, with weights when asked.

    Args:
        backbone: A Prithvi ViT variant name (``prithvi_eo_v2_300``...).
        pretrained: Load the official MAE weights (encoder and decoder) from the local Hugging
            Face cache.
        ckpt_path: A weight file instead: official V1/V2, a geofm MAE or fine-tuning checkpoint.
        bands: Input bands, in channel order (default: the pretraining bands).
        pretrained_bands: The checkpoint's bands, in channel order.
        decoder_embed_dim: Decoder width (default 512).
        decoder_depth: Decoder blocks (default 8).
        decoder_num_heads: Decoder heads (default 16).
        **backbone_kwargs: Other :func:`build_prithvi_vit` arguments (``num_frames``,
            ``img_size``, ``drop_path``, ``coords_encoding``...).

    Raises:
        ValueError: for a backbone that is not a Prithvi ViT, or an argument an MAE cannot use.
    """
    if not isinstance(backbone, str) or backbone not in VARIANTS:
        raise ValueError(
            f"MAE pretraining needs a Prithvi ViT backbone; model_args.backbone={backbone!r} is "
            f"not one. Choose from {list(VARIANTS)}."
        )
    refused = sorted(set(backbone_kwargs) & set(_NOT_FOR_MAE))
    if refused:
        raise ValueError(
            f"model_args.backbone_{refused[0]} does not apply to MAE pretraining: "
            f"{_NOT_FOR_MAE[refused[0]]}. Remove it."
        )
    variant = VARIANTS[backbone]
    weights = resolve_weights(variant.name, variant.pretrained_cfg, pretrained, ckpt_path)
    encoder = build_prithvi_vit(
        variant, pretrained=False, bands=bands, pretrained_bands=pretrained_bands, **backbone_kwargs
    )
    decoder = {
        "decoder_embed_dim": decoder_embed_dim,
        "decoder_depth": decoder_depth,
        "decoder_num_heads": decoder_num_heads,
    }
    model = PrithviMAE(
        encoder,
        **{
            k: v if v is not None else DECODER_DEFAULTS[k.removeprefix("decoder_")]
            for k, v in decoder.items()
        },
    )
    if weights is not None:
        checkpoint_bands = pretrained_bands
        if checkpoint_bands is None:
            cfg = variant.pretrained_cfg
            checkpoint_bands = list(cfg.bands) if cfg is not None else list(encoder.bands)
        load_prithvi_mae_checkpoint(
            model,
            weights,
            encoder.bands,
            resolve_bands(checkpoint_bands, argument="pretrained_bands"),
        )
    return model


@MODEL_FACTORY_REGISTRY.register
class PrithviMAEFactory:
    """Builds :class:`~geofm.models.mae.model.PrithviMAE` from ``backbone*`` / ``decoder_*``
    keywords (see the module docstring)."""

    def build_model(self, task: str, backbone: str, **kwargs: Any) -> PrithviMAE:
        """Build the MAE.

        Args:
            task: ``"mae"``.
            backbone: A Prithvi ViT variant name.
            **kwargs: ``backbone_<arg>`` (``pretrained``, ``ckpt_path``, ``bands``,
                ``pretrained_bands`` and the other :func:`build_prithvi_vit` arguments) and
                ``decoder_embed_dim`` / ``decoder_depth`` / ``decoder_num_heads``.

        Raises:
            NotImplementedError: for another task.
            ValueError: for keywords without the ``backbone_`` / ``decoder_`` prefix, or that
                the MAE does not take.
        """
        if task != "mae":
            raise NotImplementedError(
                f"PrithviMAEFactory builds MAE pretraining models (task 'mae'), not '{task}'; "
                "use EncoderDecoderFactory."
            )
        names = [f"decoder_{a}" for a in _DECODER_ARGS]
        decoder = {k: kwargs.pop(k) for k in names if k in kwargs}
        unknown = sorted(k for k in kwargs if not k.startswith("backbone_"))
        unknown += sorted(k for k in kwargs if k.startswith("decoder_"))
        if unknown:
            raise ValueError(
                f"PrithviMAEFactory got arguments it does not use: {sorted(set(unknown))}; it "
                "takes "
                "backbone, backbone_<argument> (bands, pretrained, ckpt_path, num_frames, ...) and "
                f"{names}."
            )
        options = {k.removeprefix("backbone_"): v for k, v in kwargs.items()}
        options = {k: v for k, v in options.items() if v is not None}  # null: the default
        return build_prithvi_mae(backbone, **options, **decoder)
