"""Photo-sized images for the benchmarks, from the two real photographs scikit-learn ships (nothing downloads).

A row is a random crop of `china.jpg` or `flower.jpg`, rescaled to a camera-like size, with what it shows and
where in the scene it was cut: enough for a caption that matches the picture.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

SUBJECTS = {"china.jpg": "the roof of a Chinese temple among trees", "flower.jpg": "a pink flower with a yellow centre"}
REGIONS = ["upper left", "upper right", "lower left", "lower right", "centre"]


@lru_cache(maxsize=1)
def _sources() -> list[tuple[np.ndarray, str]]:
    from sklearn.datasets import load_sample_images

    photos = load_sample_images()
    return [(img, Path(name).name) for img, name in zip(photos.images, photos.filenames)]


def random_photo_crop(rng: np.random.Generator, *, long_side: tuple[int, int],
                      resample: int | None = None) -> tuple[Image.Image, str, str]:
    """(image, subject, region): a crop of 30-90 % of each side of a random source photograph, at a random
    place, resized (`resample`: a Pillow filter, None for Pillow's default) so that its long side is drawn
    from `long_side` (both ends included)."""
    sources = _sources()
    src, name = sources[int(rng.integers(len(sources)))]
    h, w = src.shape[:2]
    ch, cw = int(h * rng.uniform(0.3, 0.9)), int(w * rng.uniform(0.3, 0.9))
    y, x = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
    region = REGIONS[min(4, (2 * y // max(1, h - ch + 1)) * 2 + (2 * x // max(1, w - cw + 1)))]
    side = int(rng.integers(long_side[0], long_side[1] + 1))
    size = (side, max(1, side * ch // cw)) if cw >= ch else (max(1, side * cw // ch), side)
    return Image.fromarray(src[y:y + ch, x:x + cw]).resize(size, resample), SUBJECTS[name], region
