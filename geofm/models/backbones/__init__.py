"""Backbones; each module registers its models in ``GEOFM_BACKBONE_REGISTRY`` when imported."""

