"""geofm: fine-tune geospatial foundation models on satellite imagery.

``import geofm`` stays light: public names load their modules on first access (PEP 562).
"""

from __future__ import annotations

from geofm._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        [
            "Registry",
            "MultiSourceRegistry",
            "UnknownNameError",
            "UnknownScopeError",
            "default_scope",
            "registry_summary",
            "BACKBONE_REGISTRY",
            "DECODER_REGISTRY",
            "NECK_REGISTRY",
            "MODEL_FACTORY_REGISTRY",
            "GEOFM_BACKBONE_REGISTRY",
            "GEOFM_DECODER_REGISTRY",
            "GEOFM_NECK_REGISTRY",
        ],
        "geofm.registry",
    ),
    "ModelOutput": "geofm.models.model",
    "AuxiliaryHead": "geofm.models.model",
    "EncoderDecoderFactory": "geofm.models.factories.encoder_decoder",
    "PixelWiseModel": "geofm.models.pixel_wise_model",
    "ScalarOutputModel": "geofm.models.scalar_output_model",
    "SemanticSegmentationTask": "geofm.tasks.segmentation",
    "PixelwiseRegressionTask": "geofm.tasks.regression",
    "ClassificationTask": "geofm.tasks.classification",
    "MultiLabelClassificationTask": "geofm.tasks.classification",
    "GenericNonGeoSegmentationDataModule": "geofm.data.datamodules",
    "GenericNonGeoPixelwiseRegressionDataModule": "geofm.data.datamodules",
    "GenericNonGeoClassificationDataModule": "geofm.data.datamodules",
    "GenericMultiModalDataModule": "geofm.data.datamodules",
    "GenericNonGeoDetectionDataModule": "geofm.data.datamodules",
    "compute_statistics": "geofm.data.statistics",
    "predict_scenes": "geofm.inference.streaming",
}

__all__ = ["__version__", *_LAZY]

__getattr__, __dir__ = lazy_exports(globals(), _LAZY)
