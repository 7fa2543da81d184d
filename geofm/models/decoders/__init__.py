"""Decoders; each module registers its classes in ``GEOFM_DECODER_REGISTRY`` when imported."""
