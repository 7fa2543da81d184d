"""Decoders; each module registers its classes in ``GEOFM_DECODER_REGISTRY`` when imported."""

from geofm.models.decoders import aspp  # noqa: F401
from geofm.models.decoders import fcn  # noqa: F401
from geofm.models.decoders import identity  # noqa: F401
from geofm.models.decoders import linear  # noqa: F401
from geofm.models.decoders import mlp  # noqa: F401
from geofm.models.decoders import unet  # noqa: F401
from geofm.models.decoders import upernet  # noqa: F401
