"""Plots of ISM results: an attribution logo above the ISM heatmap of one sequence.

Needs matplotlib (``pip install matplotlib``). The Agg backend is selected on import, so plotting
works headless; import this module before ``matplotlib.pyplot`` if you want another backend.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .attributions import attributions
from .errors import InputValidationError

try:
    import matplotlib
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("plotting needs matplotlib: pip install matplotlib") from exc

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["plot_ism", "infer_sequence", "COLORS"]

#: Standard nucleotide colors.
COLORS = {"A": "#109648", "C": "#255C99", "G": "#F7B32B", "T": "#D62839"}
_OTHER_COLORS = ["#6C4A9E", "#8C564B", "#E377C2", "#7F7F7F", "#17BECF", "#BCBD22"]
#: Above this many positions the logo is drawn as colored bars instead of letter glyphs.
MAX_GLYPHS = 1500
_MIN_WIDTH, _MAX_WIDTH, _INCH_PER_POS = 7.0, 24.0, 0.13


def _color(ch: str, k: int) -> str:
    return COLORS.get(ch.upper(), _OTHER_COLORS[k % len(_OTHER_COLORS)])


def infer_sequence(y0: np.ndarray, y_hat: np.ndarray) -> np.ndarray:
    """One-hot ``(N, A, Lr)`` guess of the mutated region from ISM results alone.

    Substituting a position with its own character leaves the output unchanged, so the observed
    character is the one whose ``y_hat`` is closest to ``y0`` (exactly equal for a converted
    model). Where no substitution changes the output the guess is arbitrary, but every
    attribution there is zero anyway.
    """
    y0 = np.asarray(y0)
    y_hat = np.asarray(y_hat)
    n, a, lr = y_hat.shape[:3]
    diff = np.abs(y_hat.reshape(n, a, lr, -1).astype(np.float64) - y0.reshape(n, 1, 1, -1))
    best = diff.max(axis=-1).argmin(axis=1)  # (N, Lr)
    return np.eye(a, dtype=np.float32)[best].transpose(0, 2, 1)


def _as_ncl(X: np.ndarray, a: int) -> np.ndarray:
    if X.ndim == 2:
        X = X[None]
    if X.ndim != 3:
        raise InputValidationError(f"expected a 3-D (N, A, L) or (N, L, A) array, got shape {X.shape}")
    if X.shape[1] != a and X.shape[2] == a:
        X = X.transpose(0, 2, 1)
    if X.shape[1] != a:
        raise InputValidationError(f"array of shape {X.shape} does not have an alphabet axis of size {a}")
    return X


def _logo_glyphs(ax, values: np.ndarray, letters: np.ndarray, x0: int, alphabet: str) -> None:
    """Draw one letter per position, height = its value (negative values flipped below 0)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.patches import PathPatch
    from matplotlib.textpath import TextPath
    from matplotlib.transforms import Affine2D

    font = FontProperties(family="DejaVu Sans", weight="bold")
    paths = {}
    for k, ch in enumerate(alphabet):
        path = TextPath((0, 0), ch, size=1, prop=font)
        ext = path.get_extents()
        paths[k] = (path, ext)
    width = 0.92
    for i, (v, k) in enumerate(zip(values, letters)):
        if v == 0 or not np.isfinite(v):
            continue
        path, ext = paths[int(k)]
        sx = width / max(ext.width, 1e-9)
        sy = abs(v) / max(ext.height, 1e-9)
        t = Affine2D().translate(-ext.x0, -ext.y0).scale(sx, sy)
        if v < 0:
            t = t.scale(1, -1)
        t = t.translate(x0 + i - width / 2, 0)
        ax.add_patch(PathPatch(t.transform_path(path), facecolor=_color(alphabet[int(k)], int(k)),
                               edgecolor="none", linewidth=0))


def _logo_bars(ax, values: np.ndarray, letters: np.ndarray, x0: int, alphabet: str) -> None:
    x = x0 + np.arange(len(values))
    colors = [_color(alphabet[int(k)], int(k)) for k in letters]
    ax.bar(x, values, width=1.0, color=colors, linewidth=0)


def _draw_logo(ax, attr: np.ndarray, x0: int, alphabet: str) -> None:
    """``attr`` is (A, Lr) with (at most) one nonzero character per position."""
    letters = np.abs(attr).argmax(axis=0)
    values = attr[letters, np.arange(attr.shape[1])]
    if len(values) <= MAX_GLYPHS:
        _logo_glyphs(ax, values, letters, x0, alphabet)
    else:
        _logo_bars(ax, values, letters, x0, alphabet)
    lo, hi = float(min(values.min(initial=0.0), 0.0)), float(max(values.max(initial=0.0), 0.0))
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    ax.set_ylim(lo - pad, hi + pad)
    ax.axhline(0, color="0.3", linewidth=0.6)
    ax.set_ylabel("attribution")
    handles = [matplotlib.patches.Patch(color=_color(ch, k), label=ch) for k, ch in enumerate(alphabet)]
    ax.legend(handles=handles, loc="upper right", ncol=len(alphabet), fontsize="small", frameon=False,
              handlelength=0.8, columnspacing=0.8, bbox_to_anchor=(1.0, 1.02))


def _describe_target(target, size: int) -> str:
    if target is None:
        return f"mean over all {size} output elements" if size > 1 else "the output"
    idx = np.atleast_1d(np.asarray(target)).tolist()
    return f"output element {idx[0]}" if len(idx) == 1 else f"mean over output elements {idx}"


def plot_ism(y0: np.ndarray | None, y_hat: np.ndarray | None, X_or_attr: np.ndarray | None, seq_index: int,
             output: str | None = None, target: int | Sequence[int] | None = None, title: str | None = None,
             start: int = 0, alphabet: str = "ACGT") -> Figure:
    """Plot one sequence's ISM: attribution logo (top) and centered ISM heatmap (bottom).

    Parameters
    ----------
    y0, y_hat : numpy.ndarray or None
        ``(N, *out)`` and ``(N, A, Lr, *out)`` ISM results of one output (as written by
        ``yuzu-onnx ism``). When both are ``None`` only the logo of ``X_or_attr`` is drawn.
    X_or_attr : numpy.ndarray or None
        With ``y0``/``y_hat``: the one-hot sequences, ``(N, A, L)`` or ``(N, L, A)`` with ``L`` either
        ``Lr`` or the full length (then positions ``start .. start + Lr`` are used), or ``None`` to
        infer the observed characters from the results (:func:`infer_sequence`). Without them: the
        ``(N, A, Lr)`` attributions (``yuzu-onnx ism --attr``).
    seq_index : int
        Which sequence to plot.
    output : str, optional
        The output's name, for the titles.
    target : int or sequence of int, optional
        Output element(s) to explain (flattened indices, averaged); default: all of them.
    title : str, optional
        Figure title (default: ``sequence <seq_index>``).
    start : int
        Position of the first mutated character, for the x axis.
    alphabet : str
        Characters of the alphabet axis, in order.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if (y0 is None) != (y_hat is None):
        raise InputValidationError("pass both y0 and y_hat, or neither (attributions only)")
    if y_hat is None and X_or_attr is None:
        raise InputValidationError("nothing to plot: pass y0 and y_hat, or attributions")
    start = int(start)
    if y_hat is not None:
        y0 = np.asarray(y0)
        y_hat = np.asarray(y_hat)
        if y_hat.ndim < 3:
            raise InputValidationError(f"y_hat must have shape (N, A, Lr, *out), got {y_hat.shape}")
        n, a, lr = y_hat.shape[:3]
    else:
        attr_all = _as_ncl(np.asarray(X_or_attr), len(alphabet))
        n, a, lr = attr_all.shape
    if not -n <= seq_index < n:
        raise InputValidationError(f"sequence index {seq_index} is out of range: the results hold {n} "
                                   f"sequence(s) (valid: 0 to {n - 1})")
    s = seq_index % n
    if len(alphabet) < a:
        alphabet = alphabet + "".join(str(k) for k in range(len(alphabet), a))
    alphabet = alphabet[:a]

    heat = None
    if y_hat is not None:
        sel = slice(s, s + 1)
        if X_or_attr is None:
            X = infer_sequence(y0[sel], y_hat[sel])
        else:
            X = _as_ncl(np.asarray(X_or_attr), a)
            if X.shape[0] == n:
                X = X[sel]
            elif X.shape[0] != 1:
                raise InputValidationError(f"X holds {X.shape[0]} sequences, the results {n}")
            if X.shape[2] != lr:
                if not 0 <= start <= X.shape[2] - lr:
                    raise InputValidationError(f"region start={start}, length {lr} does not fit sequences of "
                                               f"length {X.shape[2]}")
                X = X[:, :, start:start + lr]
        heat = attributions(y0[sel], y_hat[sel], None, target=target, hypothetical=True)[0]  # (A, Lr)
        attr = heat * X[0]
        size = int(np.prod(y0.shape[1:], dtype=np.int64))
    else:
        attr = attr_all[s]

    width = float(np.clip(_INCH_PER_POS * lr + 2.5, _MIN_WIDTH, _MAX_WIDTH))
    if heat is not None:
        fig = plt.figure(figsize=(width, 5.2))
        gs = fig.add_gridspec(2, 2, width_ratios=[1, 0.012], height_ratios=[1, 1], hspace=0.32, wspace=0.015,
                              left=0.7 / width, right=1 - 0.75 / width, top=0.86, bottom=0.11)
        ax_logo = fig.add_subplot(gs[0, 0])
        ax_heat = fig.add_subplot(gs[1, 0], sharex=ax_logo)
        ax_cbar = fig.add_subplot(gs[1, 1])
    else:
        fig = plt.figure(figsize=(width, 3.0))
        gs = fig.add_gridspec(1, 2, width_ratios=[1, 0.012], left=0.7 / width, right=1 - 0.75 / width,
                              top=0.78, bottom=0.18)
        ax_logo = fig.add_subplot(gs[0, 0])
        ax_heat = ax_cbar = None

    _draw_logo(ax_logo, attr, start, alphabet)
    ax_logo.set_xlim(start - 0.5, start + lr - 0.5)
    what = f"output {output!r}, " if output else ""
    if heat is not None:
        ax_logo.set_title(f"attribution of the observed character ({what}{_describe_target(target, size)})",
                          fontsize="medium", loc="left")
        plt.setp(ax_logo.get_xticklabels(), visible=False)
        vmax = float(np.abs(heat).max()) or 1.0
        im = ax_heat.imshow(heat, aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest",
                            extent=(start - 0.5, start + lr - 0.5, a - 0.5, -0.5))
        observed = np.abs(X[0]).argmax(axis=0)
        if lr <= 400:
            ax_heat.scatter(start + np.arange(lr), observed, s=max(2.0, min(12.0, 1200.0 / lr)), c="0.15",
                            marker="o", linewidths=0, label="observed")
        ax_heat.set_yticks(range(a))
        ax_heat.set_yticklabels(list(alphabet))
        for lbl, ch in zip(ax_heat.get_yticklabels(), alphabet):
            lbl.set_color(_color(ch, alphabet.index(ch)))
            lbl.set_fontweight("bold")
        ax_heat.set_ylabel("substituted to")
        ax_heat.set_xlabel("position")
        ax_heat.set_title("ISM: effect of each substitution, centered over the alphabet "
                          + ("(dots: observed character)" if lr <= 400 else ""), fontsize="medium", loc="left")
        cb = fig.colorbar(im, cax=ax_cbar)
        cb.set_label("centered Δ output", fontsize="small")
        ax_cbar.tick_params(labelsize="small")
    else:
        ax_logo.set_xlabel("position")
        ax_logo.set_title(f"attribution of the observed character ({what.rstrip(', ') or 'attributions'}; "
                          "no ISM results in the file, logo only)", fontsize="medium", loc="left")
    from matplotlib.ticker import MaxNLocator
    ax_logo.xaxis.set_major_locator(MaxNLocator(nbins=min(20, max(4, lr // 5)), integer=True))
    fig.suptitle(title if title is not None else f"sequence {s}", fontsize="large", fontweight="bold",
                 x=0.7 / width, ha="left")
    return fig
