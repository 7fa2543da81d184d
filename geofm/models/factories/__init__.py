"""Model factories, registered in ``MODEL_FACTORY_REGISTRY``."""

from geofm.models.factories import encoder_decoder  # noqa: F401  (registers EncoderDecoderFactory)
from geofm.models.factories import legacy  # noqa: F401  (registers TerraTorch's older factories)
from geofm.models.factories import object_detection  # noqa: F401  (registers ObjectDetectionModelFactory)
from geofm.models.factories import mae  # noqa: F401  (registers PrithviMAEFactory)
