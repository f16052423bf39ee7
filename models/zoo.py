"""Reference genomics sequence models used to test and benchmark yuzu-onnx.

Every model takes a one-hot encoded DNA sequence of shape ``(N, 4, L)`` and
accepts a ``width`` multiplier applied to all channel counts and dense units
(including the output heads of DeepSEA, Basset and Factorized Basset), so that
tests can use tiny variants of the same architectures. The architectures
follow the models benchmarked in the Yuzu paper (Schreiber et al., 2022).

This module only depends on PyTorch and can be imported by path.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = [
    "MODELS",
    "OneLayer",
    "ToyNet",
    "DeepSEA",
    "Basset",
    "FactorizedBasset",
    "BPNet",
    "build",
    "random_one_hot",
]


def _scaler(width: float) -> Callable[[int], int]:
    """Return a function scaling a channel count by ``width`` (at least 1)."""
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    return lambda n: max(1, round(n * width))


def _conv(c_in: int, c_out: int, k: int, padding: int | None = None, dilation: int = 1) -> nn.Conv1d:
    """Conv1d with "same" padding (``dilation * (k // 2)``) unless ``padding`` is given."""
    if padding is None:
        padding = dilation * (k // 2)
    return nn.Conv1d(c_in, c_out, k, padding=padding, dilation=dilation)


def _flat_size(features: nn.Module, length: int) -> int:
    """Number of features per sequence after running ``features`` on length ``length``."""
    with torch.no_grad():
        n = features(torch.zeros(1, 4, length)).numel()
    if n == 0:
        raise ValueError(f"length {length} is too short for this model")
    return n


class _FeaturesHead(nn.Module):
    """Convolutional feature extractor followed by a dense head."""

    def __init__(self, features: nn.Sequential, head: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class OneLayer(nn.Sequential):
    """A single convolution: Conv1d 4 -> 64, kernel 7, "same" padding.

    Parameters
    ----------
    length : int
        Sequence length (unused; kept for a uniform constructor signature).
    width : float, optional
        Channel multiplier.
    """

    def __init__(self, length: int, width: float = 1.0) -> None:
        c = _scaler(width)
        super().__init__(_conv(4, c(64), 7))


class ToyNet(nn.Sequential):
    """Three kernel-7 "same" convolutions (32, 32, 2 filters) with ReLUs between.

    Parameters
    ----------
    length : int
        Sequence length (unused; kept for a uniform constructor signature).
    width : float, optional
        Multiplier for the 32 hidden filters; the 2 output channels are fixed.
    """

    def __init__(self, length: int, width: float = 1.0) -> None:
        c = _scaler(width)
        super().__init__(
            _conv(4, c(32), 7), nn.ReLU(),
            _conv(c(32), c(32), 7), nn.ReLU(),
            _conv(c(32), 2, 7),
        )


class DeepSEA(_FeaturesHead):
    """DeepSEA (Zhou & Troyanskaya, 2015): three k9 convolutions, 925 sigmoid outputs.

    Parameters
    ----------
    length : int
        Sequence length; sets the input size of the dense layer.
    width : float, optional
        Channel / unit multiplier.
    """

    def __init__(self, length: int, width: float = 1.0) -> None:
        c = _scaler(width)
        features = nn.Sequential(
            _conv(4, c(320), 9), nn.ReLU(), nn.MaxPool1d(4),
            _conv(c(320), c(480), 9), nn.ReLU(), nn.MaxPool1d(4),
            _conv(c(480), c(960), 9), nn.ReLU(),
            nn.Flatten(),
        )
        head = nn.Sequential(nn.Linear(_flat_size(features, length), c(925)), nn.Sigmoid())
        super().__init__(features, head)


def _basset_head(n_in: int, c: Callable[[int], int]) -> nn.Sequential:
    """Basset dense head: 1000 -> 1000 -> 164 sigmoid outputs."""
    return nn.Sequential(
        nn.Linear(n_in, c(1000)), nn.ReLU(),
        nn.Linear(c(1000), c(1000)), nn.ReLU(),
        nn.Linear(c(1000), c(164)), nn.Sigmoid(),
    )


class Basset(_FeaturesHead):
    """Basset (Kelley et al., 2016) with "same" padded convolutions.

    Conv 300 k19 / 200 k11 / 200 k7, each followed by ReLU, BatchNorm and max
    pooling (3, 4, 4), then a 1000-1000-164 dense head.

    Parameters
    ----------
    length : int
        Sequence length; sets the input size of the first dense layer.
    width : float, optional
        Channel / unit multiplier.
    """

    def __init__(self, length: int, width: float = 1.0) -> None:
        c = _scaler(width)
        features = nn.Sequential(
            _conv(4, c(300), 19), nn.ReLU(), nn.BatchNorm1d(c(300)), nn.MaxPool1d(3),
            _conv(c(300), c(200), 11), nn.ReLU(), nn.BatchNorm1d(c(200)), nn.MaxPool1d(4),
            _conv(c(200), c(200), 7), nn.ReLU(), nn.BatchNorm1d(c(200)), nn.MaxPool1d(4),
            nn.Flatten(),
        )
        super().__init__(features, _basset_head(_flat_size(features, length), c))


class FactorizedBasset(_FeaturesHead):
    """Basset with factorized convolutions, as in the Yuzu paper's benchmarks.

    The k19 first layer becomes convolutions k3/k3/k3/k7/k7 (48, 64, 100, 150,
    300 filters; receptive field 19) and the k11 second layer becomes k7/k3/k3
    (200 filters each; receptive field 11). The third layer (200 k7) is kept.
    Each convolution is followed by BatchNorm and ReLU; pooling and the dense
    head are Basset's.

    Parameters
    ----------
    length : int
        Sequence length; sets the input size of the first dense layer.
    width : float, optional
        Channel / unit multiplier.
    """

    def __init__(self, length: int, width: float = 1.0) -> None:
        c = _scaler(width)

        def stack(c_in: int, spec: list[tuple[int, int]]) -> list[nn.Module]:
            """Conv -> BatchNorm -> ReLU for each ``(filters, kernel)`` in ``spec``."""
            layers: list[nn.Module] = []
            for n, k in spec:
                layers += [_conv(c_in, c(n), k), nn.BatchNorm1d(c(n)), nn.ReLU()]
                c_in = c(n)
            return layers

        features = nn.Sequential(
            *stack(4, [(48, 3), (64, 3), (100, 3), (150, 7), (300, 7)]), nn.MaxPool1d(3),
            *stack(c(300), [(200, 7), (200, 3), (200, 3)]), nn.MaxPool1d(4),
            *stack(c(200), [(200, 7)]), nn.MaxPool1d(4),
            nn.Flatten(),
        )
        super().__init__(features, _basset_head(_flat_size(features, length), c))


class BPNet(nn.Sequential):
    """BPNet-style profile model without residual connections.

    Conv 64 k21, then dilated k3 convolutions (dilation 2, 4, 8), all "same"
    padded and followed by ReLU, then a 1-channel k75 profile convolution.

    Parameters
    ----------
    length : int
        Sequence length (unused; kept for a uniform constructor signature).
    width : float, optional
        Multiplier for the 64 hidden filters; the profile head has 1 channel.
    """

    def __init__(self, length: int, width: float = 1.0) -> None:
        c = _scaler(width)
        layers: list[nn.Module] = [_conv(4, c(64), 21), nn.ReLU()]
        for d in (2, 4, 8):
            layers += [_conv(c(64), c(64), 3, dilation=d), nn.ReLU()]
        layers.append(_conv(c(64), 1, 75))
        super().__init__(*layers)


MODELS: dict[str, type[nn.Module]] = {
    "onelayer": OneLayer,
    "toynet": ToyNet,
    "deepsea": DeepSEA,
    "basset": Basset,
    "factorized_basset": FactorizedBasset,
    "bpnet": BPNet,
}


def random_one_hot(n: int, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random one-hot DNA batch of shape ``(n, 4, length)``, float32."""
    idx = torch.randint(0, 4, (n, length), generator=generator)
    return nn.functional.one_hot(idx, 4).permute(0, 2, 1).float()


def _randomize(model: nn.Module, length: int, n_calibration: int = 16) -> None:
    """Give ``model`` random weights, drawn from the global torch RNG, in place.

    Convolution / linear weights start as N(0, 1 / fan_in). They are then
    calibrated on a batch of random one-hot sequences (LSUV-style): layer by
    layer, each output channel / unit is rescaled and shifted to zero mean and
    unit variance over the batch, so activations neither vanish nor explode
    and the output varies with the input. BatchNorm layers get random running
    statistics and affine parameters so that folding them is exercised.

    The model must be a plain chain of its leaf modules (true for ``MODELS``).
    """
    for m in model.modules():
        with torch.no_grad():
            if isinstance(m, (nn.Conv1d, nn.Linear)):
                m.weight.normal_(0.0, m.weight[0].numel() ** -0.5)
                m.bias.zero_()
            elif isinstance(m, nn.BatchNorm1d):
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
    model.eval()
    x = random_one_hot(n_calibration, length)
    h = x
    with torch.no_grad():
        for m in (m for m in model.modules() if not list(m.children())):
            out = m(h)
            if isinstance(m, (nn.Conv1d, nn.Linear)):
                dims = (0, 2) if out.dim() == 3 else (0,)
                mean, std = out.mean(dims), out.std(dims).clamp_min(1e-3)
                shape = (-1,) + (1,) * (m.weight.dim() - 1)
                m.weight.div_(std.view(shape))
                m.bias.sub_(mean).div_(std)
                out = m(h)
            h = out
        if not torch.allclose(h, model(x), atol=1e-5):
            raise RuntimeError("model is not a plain chain of its leaf modules")


def build(name: str, length: int, width: float = 1.0, seed: int = 0) -> nn.Module:
    """Build a reference model with deterministic random weights.

    Parameters
    ----------
    name : str
        Model name, one of ``MODELS`` (case-insensitive).
    length : int
        Input sequence length ``L``; inputs have shape ``(N, 4, L)``.
    width : float, optional
        Multiplier for channel counts and dense units.
    seed : int, optional
        Seed for ``torch.manual_seed``; the same seed gives the same weights.

    Returns
    -------
    torch.nn.Module
        The model, in eval mode.
    """
    key = name.lower()
    if key not in MODELS:
        raise KeyError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    torch.manual_seed(seed)
    model = MODELS[key](length, width)
    _randomize(model, length)
    return model.eval()
