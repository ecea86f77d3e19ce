"""Datasets: manifests and shards in, decoded fixed-size arrays out (plus the built-in datasets)."""

from multimem_core.data.emoji import build_emoji
from multimem_core.data.shapes import build_shapes

# Built-in datasets by name: each builder takes (out_dir, *, inject_rate, seed, progress, ...) and
# returns the path of the manifest it wrote.
BUILTIN_DATASETS = {"shapes": build_shapes, "emoji": build_emoji}
