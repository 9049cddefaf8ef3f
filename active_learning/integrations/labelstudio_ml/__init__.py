"""Refrain as a Label Studio ML backend, and the newest model's predictions pushed to linked
Label Studio projects. Here, not in ``annotation.integrations.labelstudio``: predictions need the
models of this layer, and annotation never imports it."""
