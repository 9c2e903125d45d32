"""Stand-in generators for ``tools/generate_set.py``: class-conditional image makers with the
interface a real generator is wrapped in, so the DM-AT recipes run end to end without a
diffusion model. A generator is ``make(labels, rng) -> uint8 (n, H, W, C)``, built by a
factory ``factory(shape, train) -> make`` (``train``: the real training split, IndexedImages,
or None), so ``--generator my_module:factory`` plugs in any sampler (an EDM wrapper, ...).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

Generator = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def noise(shape: Sequence[int], train=None) -> Generator:
    """Uniform random pixels (memory and speed tests: the content does not matter)."""
    def make(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, 256, (len(labels), *shape), dtype=np.uint8)
    return make


def jitter(shape: Sequence[int], train=None) -> Generator:
    """Perturbed copies of real training images of the requested class: a random translation
    of up to 4 pixels (edges repeated), a random flip for colour sets, and Gaussian pixel noise
    of sigma 8/255. Needs the training split (never validation or test images, which would leak
    into training)."""
    if train is None:
        raise ValueError("the jitter stand-in needs a data set: pass a recipe after --")
    x = train.images.numpy()
    if x.dtype != np.uint8:                                           # [0, 1] floats
        x = (x * 255).round().astype(np.uint8)
    x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))                 # NCHW -> NHWC
    y = train.labels.numpy()
    by_class = {c: np.nonzero(y == c)[0] for c in np.unique(y)}

    def make(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = np.empty((len(labels), *shape), dtype=np.uint8)
        h, w = shape[0], shape[1]
        for i, c in enumerate(labels):
            pool = by_class.get(int(c))
            if pool is None or not len(pool):
                raise ValueError(f"the training split has no image of class {int(c)}")
            img = np.pad(x[rng.choice(pool)], ((4, 4), (4, 4), (0, 0)), mode="edge")
            dy, dx = rng.integers(0, 9, 2)
            img = img[dy:dy + h, dx:dx + w].astype(np.float32)
            if shape[2] == 3 and rng.random() < 0.5:
                img = img[:, ::-1]
            img += rng.normal(0.0, 8.0, img.shape)
            out[i] = np.clip(img, 0, 255).round().astype(np.uint8)
        return out
    return make


STANDINS = {"noise": noise, "jitter": jitter}
