"""Datasets: manifests and shards in, decoded fixed-size arrays out (plus the built-in datasets)."""
