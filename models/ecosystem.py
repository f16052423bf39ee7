"""Models built from the genomics ecosystem's own classes, for benchmarks and tests.

Each model here is an instance of a class from bpnet-lite (``BPNet``, ``ChromBPNet``) or gReLU
(``ConvModel``, ``DilatedConvModel``, ``BorzoiModel``, ``EnformerModel``; ``ConvModel`` also with
gReLU's attention pooling) with random, seeded
weights: nothing is downloaded. Every spec has two sizes:

- ``full``: the configuration a user would benchmark (bpnet-lite's defaults, 2114 bp in, the
  central 1000 positions mutated; gReLU defaults or a small attention model that still runs on a
  CPU), exported by ``tools/export_ecosystem.py`` into ``models/generated/`` (git-ignored);
- ``small``: the same class, the same export path and therefore the same ONNX idioms, with
  few filters, few layers and a short input, committed to ``models/onnx/`` for the tests.

A model with several outputs lists them in ``outputs`` (bpnet-lite returns
``(profile, counts)``). ``region`` is the number of central positions mutated by default
(``None``: all of them).

This module imports bpnet-lite and gReLU only when a model is built (``pip install -e .[bench]``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

__all__ = ["SPECS", "Spec", "build", "randomize_norms", "random_one_hot"]


@dataclass(frozen=True)
class Size:
    """One configuration of a spec: constructor arguments and input length."""

    length: int
    kwargs: dict[str, Any]
    region: int | None = None  # central positions mutated by default (None: all)


@dataclass(frozen=True)
class Spec:
    """An ecosystem model: its family, class, outputs and two sizes."""

    name: str
    family: str  # "bpnet-lite" or "grelu"
    cls: str  # the ecosystem class built, for the manifest and reports
    make: Callable[..., nn.Module]
    full: Size
    small: Size
    outputs: tuple[str, ...] = ("y",)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def size(self, which: str) -> Size:
        """``self.full`` or ``self.small``."""
        if which not in ("full", "small"):
            raise ValueError(f"size must be 'full' or 'small', got {which!r}")
        return self.full if which == "full" else self.small


# --------------------------------------------------------------------------- builders
def _bpnet(**kwargs: Any) -> nn.Module:
    """bpnet-lite ``BPNet`` behind its ``ControlWrapper``.

    With ``n_control_tracks > 0`` (bpnet-lite's default, 2 stranded control tracks) the wrapper
    feeds an all-zero control track built from the input's shape, as bpnet-lite does when a
    user calls the model on sequence alone; the ONNX model therefore has one input, and the
    control track enters the graph as a tensor derived from the sequence's shape that is
    concatenated with the sequence features before the profile conv.
    """
    from bpnetlite.bpnet import BPNet, ControlWrapper

    return ControlWrapper(BPNet(verbose=False, **kwargs))


def _chrombpnet(accessibility: dict[str, Any], bias: dict[str, Any]) -> nn.Module:
    """bpnet-lite ``ChromBPNet``: a frozen bias ``BPNet`` plus an accessibility ``BPNet``.

    ``ChromBPNet.forward`` crops the bias profile to the accessibility profile's length, read
    from the tensors' shapes at run time, and adds them; the counts are
    ``log(exp(acc) + exp(bias))``.
    """
    from bpnetlite.bpnet import BPNet
    from bpnetlite.chrombpnet import ChromBPNet

    acc = BPNet(n_outputs=1, n_control_tracks=0, verbose=False, **accessibility)
    bias_model = BPNet(n_outputs=1, n_control_tracks=0, verbose=False, **bias)
    return ChromBPNet(bias_model, acc)


def _grelu(cls_name: str) -> Callable[..., nn.Module]:
    """A builder for ``grelu.model.models.<cls_name>``."""

    def make(**kwargs: Any) -> nn.Module:
        import grelu.model.models as models

        return getattr(models, cls_name)(**kwargs)

    make.__name__ = f"grelu_{cls_name}"
    return make


# --------------------------------------------------------------------------- specs
BPNET_LITE = Spec(
    name="bpnet_lite", family="bpnet-lite", cls="bpnetlite.bpnet.BPNet (ControlWrapper)",
    make=_bpnet, outputs=("profile", "counts"),
    # bpnet-lite's defaults: 64 filters, 8 dilated residual layers, 2 stranded outputs, 2
    # control tracks; default trimming 557 maps 2114 -> 1000 (bpnet-lite's in/out windows).
    full=Size(2114, dict(n_filters=64, n_layers=8, n_outputs=2, n_control_tracks=2), region=1000),
    # 4 layers: trimming 47 + 30 = 77, 240 -> 86
    small=Size(240, dict(n_filters=8, n_layers=4, n_outputs=2, n_control_tracks=2)),
    note="ControlWrapper supplies zero control tracks (one ONNX input)",
)

CHROMBPNET_LITE = Spec(
    name="chrombpnet_lite", family="bpnet-lite", cls="bpnetlite.chrombpnet.ChromBPNet",
    make=_chrombpnet, outputs=("profile", "counts"),
    # Accessibility model at bpnet-lite's BPNet default width (64 filters, 8 layers; the
    # published ChromBPNet uses 512 filters, 64x the conv FLOPs, not feasible for ISM on a
    # CPU); bias model as ChromBPNet trains it (128 filters, 4 dilated layers). Both 1
    # unstranded output, no control track; bias trimming 77 -> 1960 positions, cropped by
    # ChromBPNet.forward to the accessibility model's 1000.
    full=Size(2114, dict(accessibility=dict(n_filters=64, n_layers=8),
                         bias=dict(n_filters=128, n_layers=4)), region=1000),
    # accessibility trimming 77 (240 -> 86), bias trimming 53 (240 -> 134, cropped by 24)
    small=Size(240, dict(accessibility=dict(n_filters=8, n_layers=4),
                         bias=dict(n_filters=8, n_layers=2))),
    note="bias profile cropped by a Shape-derived slice",
)

GRELU_CONV = Spec(
    name="grelu_conv", family="grelu", cls="grelu.model.models.ConvModel",
    make=_grelu("ConvModel"),
    # gReLU's ConvModel defaults (stem 64 x k15, blocks of 64 x k5, ReLU, "same" padding) with
    # 4 blocks whose dilation doubles (1, 2, 4) and a profile head (final_pool_func=None: one
    # value per position), the configuration with dilated "same" convs.
    full=Size(1000, dict(n_tasks=1, n_conv=4, dilation_mult=2, final_pool_func=None)),
    small=Size(120, dict(n_tasks=1, stem_channels=8, channel_init=8, n_conv=4, dilation_mult=2,
                         final_pool_func=None)),
    note="profile head; dilated convs with padding='same'",
)

GRELU_DILATED = Spec(
    name="grelu_dilated", family="grelu", cls="grelu.model.models.DilatedConvModel",
    make=_grelu("DilatedConvModel"),
    # gReLU's training tutorial (docs/tutorials/3_train.ipynb): seq_len 2114, label_len 1000,
    # crop_len (2114 - 1000) // 2, 1 task, n_conv 8, average-pooled head; channels at the class
    # default 64 (the tutorial's 512 is 64x the conv FLOPs).
    full=Size(2114, dict(n_tasks=1, channels=64, n_conv=8, crop_len=557)),
    # 4 blocks (dilations 2, 4, 8): receptive field 49, auto crop 24
    small=Size(200, dict(n_tasks=1, channels=8, n_conv=4, crop_len="auto")),
    note="average-pooled head; dilated convs with padding='same'",
)

GRELU_BORZOI = Spec(
    name="grelu_borzoi", family="grelu", cls="grelu.model.models.BorzoiModel",
    make=_grelu("BorzoiModel"),
    # Borzoi's architecture (conv/max-pool tower, transformer with relative position
    # attention, 2-step U-net back to 32 bp bins, pointwise conv, crop) at a size ISM can run on
    # a CPU: 7 pooling blocks (128x), channels 16 -> 64, one transformer block with 2 heads.
    full=Size(2048, dict(n_tasks=2, stem_channels=16, init_channels=32, channels=64, n_conv=7,
                         n_transformers=1, key_len=8, value_len=16, n_heads=2, n_pos_features=8,
                         crop_len=4, final_pool_func=None)),
    # 4 pooling blocks (16x): 256 bp -> 16 tokens -> 64 bins after the U-net, crop 2 -> 60
    small=Size(256, dict(n_tasks=2, stem_channels=8, init_channels=32, channels=32, n_conv=4,
                         n_transformers=1, key_len=4, value_len=8, n_heads=2, n_pos_features=8,
                         crop_len=2, final_pool_func=None)),
    note="LayerNorm + relative-position attention after a pooling conv tower",
)

GRELU_ENFORMER = Spec(
    name="grelu_enformer", family="grelu", cls="grelu.model.models.EnformerModel",
    make=_grelu("EnformerModel"),
    # Enformer's architecture (conv stem, attention-pooling tower, transformer, pointwise
    # head) at a size ISM can run on a CPU: 5 blocks (32x), one transformer block with 2 heads.
    # 384 channels is the smallest width gReLU builds with 2 heads: the tower's widths are
    # multiples of 128 from channels / 2 on, and channels / n_heads must be a multiple of 6
    # (the relative position features).
    full=Size(2048, dict(n_tasks=2, n_conv=5, channels=384, n_transformers=1, n_heads=2, key_len=8,
                         crop_len=2, final_pool_func=None)),
    # 3 blocks (8x): 256 bp -> 32 tokens, crop 2 -> 28
    small=Size(256, dict(n_tasks=2, n_conv=3, channels=384, n_transformers=1, n_heads=2, key_len=4,
                         crop_len=2, final_pool_func=None)),
    # Neither exporter handles it with torch 2.13 / enformer-pytorch 0.8.12 (the relative
    # position features call xlogy and lgamma): kept to report that; GRELU_ATTNPOOL has its
    # attention pooling.
    note="attention pooling (reshape of the length axis) + transformer; does not export",
)

GRELU_ATTNPOOL = Spec(
    name="grelu_attnpool", family="grelu", cls="grelu.model.models.ConvModel",
    make=_grelu("ConvModel"),
    # Enformer's attention pooling (gReLU's AttentionPool: the length axis reshaped into
    # (L / 2, 2), softmax-weighted sum over the 2) in a model that exports: gReLU's
    # EnformerModel does not (see GRELU_ENFORMER). ConvModel defaults, every block pooled by
    # attention, average-pooled head.
    # 1024 bp, 4 blocks (3 pooled, 8x): mutants run per mutant from the first pooling on (a
    # fallback today), so a longer input needs tens of GiB.
    full=Size(1024, dict(n_tasks=1, n_conv=4, pool_func="attn", pool_size=2)),
    # 3 blocks, 2 of them pooled (4x): 128 -> 32 positions
    small=Size(128, dict(n_tasks=1, stem_channels=8, channel_init=8, n_conv=3, pool_func="attn", pool_size=2)),
    note="attention pooling: Reshape of the length axis into (L/2, 2), Softmax, ReduceSum",
)

SPECS: dict[str, Spec] = {s.name: s for s in (BPNET_LITE, CHROMBPNET_LITE, GRELU_CONV, GRELU_DILATED,
                                                GRELU_BORZOI, GRELU_ATTNPOOL, GRELU_ENFORMER)}


# --------------------------------------------------------------------------- building
def randomize_norms(model: nn.Module, generator: torch.Generator) -> None:
    """Give every BatchNorm random running statistics and every norm layer a random affine map.

    Freshly built norm layers are the identity in evaluation mode (mean 0, variance 1, scale 1,
    shift 0); random values make the exported normalization nodes do real work.
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=generator))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=generator))
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)):
                if getattr(m, "weight", None) is not None:
                    m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=generator))
                if getattr(m, "bias", None) is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=generator))


def build(name: str, size: str = "full", seed: int = 0) -> tuple[nn.Module, Size]:
    """Build an ecosystem model with seeded random weights, in evaluation mode.

    Parameters
    ----------
    name : str
        A key of :data:`SPECS`.
    size : {"full", "small"}
        The benchmark or the test configuration.
    seed : int
        Seeds PyTorch's default generator before construction (the classes' own initializers
        draw from it) and the norm statistics.

    Returns
    -------
    (torch.nn.Module, Size)
        The model and its configuration (input length, constructor arguments, region).
    """
    if name not in SPECS:
        raise KeyError(f"unknown ecosystem model {name!r}; choose from {sorted(SPECS)}")
    spec = SPECS[name]
    cfg = spec.size(size)
    torch.manual_seed(seed)
    model = spec.make(**cfg.kwargs)
    randomize_norms(model, torch.Generator().manual_seed(seed + 7919))
    return model.eval(), cfg


def output_names(name: str) -> list[str]:
    """ONNX output names of a spec."""
    return list(SPECS[name].outputs)


def random_one_hot(n: int, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random one-hot DNA batch of shape ``(n, 4, length)``, float32."""
    idx = torch.randint(0, 4, (n, length), generator=generator)
    return nn.functional.one_hot(idx, 4).permute(0, 2, 1).float()
