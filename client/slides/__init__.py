"""Whole-slide images: OpenSlide tiles, stain normalisation, tile encoders and bags of embeddings."""
