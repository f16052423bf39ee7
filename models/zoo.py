"""Reference genomics sequence models used to test and benchmark yuzu-onnx.

Every model takes a one-hot encoded DNA sequence of shape ``(N, 4, L)`` and
accepts a ``width`` multiplier applied to all channel counts and dense units
(including the output heads of DeepSEA, Basset and Factorized Basset), so that
tests can use tiny variants of the same architectures. The first six
architectures follow the models benchmarked in the Yuzu paper (Schreiber et
al., 2022); the others add residual connections, valid (unpadded)
convolutions with cropping, GELU / BatchNorm towers, self-attention and
models with several outputs. A model with several outputs returns a tuple and
names its outputs in the class attribute ``output_names``.

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
    "BPNet9",
    "ChromBPNet",
    "ChromBPNetMini",
    "Basenji",
    "ConvAttention",
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


class _Residual(nn.Module):
    """``x + body(x)``, optionally center-cropping ``x`` to the length of ``body(x)``.

    Parameters
    ----------
    body : torch.nn.Module
        The residual branch.
    crop : bool, optional
        Center-crop the skip connection (for valid convolutions, which shorten ``body(x)``).
    """

    def __init__(self, body: nn.Module, crop: bool = False) -> None:
        super().__init__()
        self.body = body
        self.crop = crop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if self.crop:
            x = _center_crop(x, y.shape[-1])
        return x + y


def _center_crop(x: torch.Tensor, length: int) -> torch.Tensor:
    """Keep the central ``length`` positions of the last axis (the extra one, if odd, on the right)."""
    start = (x.shape[-1] - length) // 2
    return x[..., start:start + length]


class BPNet9(nn.Module):
    """BPNet (Avsec et al., 2021) with 9 residual dilated layers and two heads.

    Conv 64 k21 + ReLU, then for dilation ``2**i`` (i = 1..9)
    ``x = x + ReLU(Conv 64 k3 dilation 2**i)``, all "same" padded. Two outputs:
    ``profile``, a 2-channel k75 "same" convolution of shape ``(N, 2, L)``, and
    ``counts``, the tower output averaged over positions followed by a dense
    layer 64 -> 2, of shape ``(N, 2)``.

    Parameters
    ----------
    length : int
        Sequence length (unused; kept for a uniform constructor signature).
    width : float, optional
        Multiplier for the 64 hidden filters; the heads keep 2 outputs.
    """

    output_names = ("profile", "counts")

    def __init__(self, length: int, width: float = 1.0) -> None:
        super().__init__()
        c = _scaler(width)
        self.stem = nn.Sequential(_conv(4, c(64), 21), nn.ReLU())
        self.tower = nn.Sequential(*(
            _Residual(nn.Sequential(_conv(c(64), c(64), 3, dilation=2**i), nn.ReLU())) for i in range(1, 10)
        ))
        self.profile = _conv(c(64), 2, 75)
        self.counts = nn.Linear(c(64), 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.tower(self.stem(x))
        return self.profile(h), self.counts(h.mean(dim=2))


class ChromBPNet(nn.Module):
    """ChromBPNet-style model (Pampari et al., 2024): valid convolutions with cropping.

    Conv 64 k21 (valid) + ReLU, then ``n_dilated`` residual layers
    ``x = crop(x) + ReLU(Conv 64 k3 dilation 2**i)`` (i = 1..n_dilated, valid,
    the skip connection center-cropped to the shorter branch). Two outputs:

    - ``profile``: Conv 64 -> 1 k75 (valid), center-cropped by ``trim``
      positions on each side and flattened to ``(N, out_length)``;
    - ``counts``: the tower output averaged over positions, then a dense
      layer 64 -> 1, of shape ``(N, 1)``.

    With the defaults (8 dilated layers, no trim) the valid convolutions
    shorten the sequence by 20 + 2 * (2 + 4 + ... + 256) + 74 = 1114, so
    ``out_length = L - 1114``: the standard 2114 bp input gives the 1000 bp
    profile exactly, and the final crop is a no-op as in ChromBPNet.

    Parameters
    ----------
    length : int
        Sequence length (at least ``1115 + 2 * trim`` with the defaults).
    width : float, optional
        Multiplier for the 64 hidden filters; the heads keep 1 output.
    n_dilated : int, optional
        Number of residual dilated layers (dilations 2, 4, ..., ``2**n_dilated``).
    trim : int, optional
        Positions removed from each end of the profile by the final crop.
    """

    output_names = ("profile", "counts")

    def __init__(self, length: int, width: float = 1.0, n_dilated: int = 8, trim: int = 0) -> None:
        super().__init__()
        c = _scaler(width)
        shrink = 20 + 2 * sum(2**i for i in range(1, n_dilated + 1)) + 74 + 2 * trim
        if length <= shrink:
            raise ValueError(f"length {length} is too short for this model (need more than {shrink})")
        self.out_length = length - shrink
        self.stem = nn.Sequential(_conv(4, c(64), 21, padding=0), nn.ReLU())
        self.tower = nn.Sequential(*(
            _Residual(nn.Sequential(_conv(c(64), c(64), 3, padding=0, dilation=2**i), nn.ReLU()), crop=True)
            for i in range(1, n_dilated + 1)
        ))
        self.profile = _conv(c(64), 1, 75, padding=0)
        self.counts = nn.Linear(c(64), 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.tower(self.stem(x))
        profile = _center_crop(self.profile(h), self.out_length).flatten(1)
        return profile, self.counts(h.mean(dim=2))


class ChromBPNetMini(ChromBPNet):
    """Scaled-down :class:`ChromBPNet` for tests: 4 dilated layers and a real final crop.

    Dilations 2, 4, 8, 16 and a profile cropped by 10 positions on each side,
    so ``out_length = L - (20 + 60 + 74 + 20) = L - 174`` (e.g. 200 -> 26,
    211 -> 37). Kernel sizes, cropped residuals and heads are ChromBPNet's.

    Parameters
    ----------
    length : int
        Sequence length (at least 175).
    width : float, optional
        Multiplier for the 64 hidden filters.
    """

    def __init__(self, length: int, width: float = 1.0) -> None:
        super().__init__(length, width, n_dilated=4, trim=10)


def _gelu_bn_conv(c_in: int, c_out: int, k: int, dilation: int = 1) -> list[nn.Module]:
    """Basenji conv block body: GELU -> BatchNorm -> "same" Conv."""
    return [nn.GELU(), nn.BatchNorm1d(c_in), _conv(c_in, c_out, k, dilation=dilation)]


class Basenji(nn.Sequential):
    """Basenji-style tower (Kelley et al., 2018), with exact (erf) GELUs.

    Each block is GELU -> BatchNorm -> Conv ("same"), like Basenji's conv
    blocks: Conv 64 k15 + MaxPool 2; two tower blocks Conv 80 k5 and Conv 96
    k5, each + MaxPool 2; two dilated residual blocks (Conv 48 k3 dilation 2
    resp. 4, then Conv 96 k1, Dropout, added to the block input); finally
    GELU -> Conv k1 -> 8 tracks -> Softplus. Output ``(N, 8, L // 8)``
    (each pool floors).

    Parameters
    ----------
    length : int
        Sequence length (unused; kept for a uniform constructor signature).
    width : float, optional
        Multiplier for the hidden filters; the 8 tracks are fixed.
    """

    def __init__(self, length: int, width: float = 1.0) -> None:
        c = _scaler(width)
        layers: list[nn.Module] = [*_gelu_bn_conv(4, c(64), 15), nn.MaxPool1d(2)]
        c_in = c(64)
        for n in (80, 96):
            layers += [*_gelu_bn_conv(c_in, c(n), 5), nn.MaxPool1d(2)]
            c_in = c(n)
        for d in (2, 4):
            layers.append(_Residual(nn.Sequential(
                *_gelu_bn_conv(c_in, c(48), 3, dilation=d),
                *_gelu_bn_conv(c(48), c_in, 1),
                nn.Dropout(0.25),
            )))
        layers += [nn.GELU(), _conv(c_in, 8, 1), nn.Softplus()]
        super().__init__(*layers)


class ConvAttention(nn.Module):
    """Convolution stem followed by one single-head self-attention block.

    Conv 32 k7 "same" + ReLU + MaxPool 2, then, on the channels-last view
    ``(N, L // 2, 32)``, ``h = h + O(softmax(Q K^T / sqrt(32)) V)`` with linear
    maps Q, K, V, O (32 -> 32) and the softmax over positions; finally the
    mean over positions and a dense layer 32 -> 3. Output ``(N, 3)``.

    Parameters
    ----------
    length : int
        Sequence length (unused; kept for a uniform constructor signature).
    width : float, optional
        Multiplier for the 32 hidden channels; the 3 outputs are fixed.
    """

    def __init__(self, length: int, width: float = 1.0) -> None:
        super().__init__()
        c = _scaler(width)
        self.stem = nn.Sequential(_conv(4, c(32), 7), nn.ReLU(), nn.MaxPool1d(2))
        self.query = nn.Linear(c(32), c(32))
        self.key = nn.Linear(c(32), c(32))
        self.value = nn.Linear(c(32), c(32))
        self.out = nn.Linear(c(32), c(32))
        self.head = nn.Linear(c(32), 3)
        self.scale = c(32) ** -0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x).transpose(1, 2)
        q, k, v = self.query(h), self.key(h), self.value(h)
        attn = torch.softmax(torch.matmul(q, k.transpose(1, 2)) * self.scale, dim=-1)
        h = h + self.out(torch.matmul(attn, v))
        return self.head(h.mean(dim=1))


MODELS: dict[str, type[nn.Module]] = {
    "onelayer": OneLayer,
    "toynet": ToyNet,
    "deepsea": DeepSEA,
    "basset": Basset,
    "factorized_basset": FactorizedBasset,
    "bpnet": BPNet,
    "bpnet9": BPNet9,
    "chrombpnet": ChromBPNet,
    "chrombpnet_mini": ChromBPNetMini,
    "basenji": Basenji,
    "attention": ConvAttention,
}


def random_one_hot(n: int, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random one-hot DNA batch of shape ``(n, 4, length)``, float32."""
    idx = torch.randint(0, 4, (n, length), generator=generator)
    return nn.functional.one_hot(idx, 4).permute(0, 2, 1).float()


class _Captured(Exception):
    """Raised by a forward hook to stop the forward pass once a layer's output is captured."""

    def __init__(self, output: torch.Tensor) -> None:
        super().__init__()
        self.output = output


def _layer_output(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Output of ``layer`` when ``model`` runs on ``x`` (the rest of the pass is skipped)."""
    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        raise _Captured(output)

    handle = layer.register_forward_hook(hook)
    try:
        model(x)
    except _Captured as captured:
        return captured.output
    finally:
        handle.remove()
    raise RuntimeError(f"{type(layer).__name__} was not called by the model")


def _call_order(model: nn.Module, x: torch.Tensor) -> list[nn.Module]:
    """Convolution / linear layers of ``model`` in the order its forward pass first calls them."""
    order: list[nn.Module] = []

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if module not in order:
            order.append(module)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Linear))]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return order


def _randomize(model: nn.Module, length: int, n_calibration: int = 16) -> None:
    """Give ``model`` random weights, drawn from the global torch RNG, in place.

    Convolution / linear weights start as N(0, 1 / fan_in). They are then
    calibrated on a batch of random one-hot sequences (LSUV-style): layer by
    layer, in the order the forward pass calls them, each output channel /
    unit is rescaled and shifted to zero mean and unit variance over the batch
    (convolutions: over sequences and positions; linear layers: over every
    axis but the last), so activations neither vanish nor explode and the
    output varies with the input. BatchNorm layers get random running
    statistics and affine parameters so that folding them is exercised.

    Each layer must be called once per forward pass (true for ``MODELS``).
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
    with torch.no_grad():
        for m in _call_order(model, x):
            out = _layer_output(model, m, x)
            channel = 1 if isinstance(m, nn.Conv1d) else out.dim() - 1
            dims = tuple(d for d in range(out.dim()) if d != channel)
            mean, std = out.mean(dims), out.std(dims).clamp_min(1e-3)
            shape = (-1,) + (1,) * (m.weight.dim() - 1)
            m.weight.div_(std.view(shape))
            m.bias.sub_(mean).div_(std)


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
