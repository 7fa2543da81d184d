"""Model factories, registered in ``MODEL_FACTORY_REGISTRY``."""

from geofm.models.factories import encoder_decoder  # noqa: F401  (registers EncoderDecoderFactory)
