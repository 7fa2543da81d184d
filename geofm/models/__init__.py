"""Model components: backbones, necks, decoders, heads, and the models that compose them."""
