"""Reading GeoTIFFs into batches: bands, datasets, datamodules, transforms, statistics."""
