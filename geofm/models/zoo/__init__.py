"""External model zoos, one module each: its registry source and its wrapper together.

- :mod:`geofm.models.zoo.timm`: every timm model as a features-only backbone (``timm_``).
- :mod:`geofm.models.zoo.smp`: segmentation_models_pytorch decoders (``smp_``).
- :mod:`geofm.models.zoo.mmseg`: mmsegmentation decode heads (``mmseg_``), when installed.

Each module adds its source with ``register_source`` when imported; ``BACKBONE_REGISTRY`` and
``DECODER_REGISTRY`` list them as ``locations`` and import them on first lookup. The zoo's
library itself is imported only when a name is looked up or built, never here.
"""
