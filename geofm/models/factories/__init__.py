"""Model factories, registered in ``MODEL_FACTORY_REGISTRY``."""
