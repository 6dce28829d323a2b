"""Training and evaluation data: the embedded toy world, CSV/webdataset sources and the loaders over them."""
