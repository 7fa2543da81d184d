"""Masked-autoencoder pretraining of Prithvi ViTs: the model and its checkpoint loading."""

from geofm.models.mae.model import (
    DECODER_DEFAULTS,
    MAEDecoder,
    MAEOutput,
    PrithviMAE,
    kept_tokens,
    patchify,
    random_masking,
    unpatchify,
)

__all__ = [
    "DECODER_DEFAULTS",
    "MAEDecoder",
    "MAEOutput",
    "PrithviMAE",
    "kept_tokens",
    "patchify",
    "random_masking",
    "unpatchify",
]
