"""Figures of one sample: image | label | prediction, or input | masked | reconstruction for
masked autoencoders (matplotlib, an optional dependency)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["matplotlib_available", "plot_reconstruction", "plot_sample", "rgb_image"]

log = logging.getLogger(__name__)

_WARNED = False


def matplotlib_available() -> bool:
    """Whether matplotlib imports; warns once (per process) when it does not."""
    global _WARNED
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if not _WARNED:
            log.warning(
                "plot_on_val needs matplotlib, which is not installed; plots are skipped. "
                "Install it with: pip install 'geofm[plot]'"
            )
            _WARNED = True
        return False
    return True


def rgb_image(image: torch.Tensor, rgb_indices: Sequence[int] | None = None) -> np.ndarray:
    """A displayable ``(H, W, 3)`` array in [0, 1] from ``image`` ``(C, H, W)`` or ``(C, T, H, W)``.

    Each channel is stretched between its 2nd and 98th percentiles, so raw reflectances and
    normalised values both display. A temporal image shows its first time step.

    Args:
        image: One sample.
        rgb_indices: The bands shown as red, green, blue (default: the first three, or the
            first band in grey when there are fewer than three).

    Raises:
        ValueError: when an index is out of range.
    """
    if image.ndim == 4:
        image = image[:, 0]
    bands = image.shape[0]
    if rgb_indices is None:
        rgb_indices = [0, 1, 2] if bands >= 3 else [0, 0, 0]
    bad = [i for i in rgb_indices if not -bands <= i < bands]
    if len(rgb_indices) != 3 or bad:
        raise ValueError(f"rgb_indices={list(rgb_indices)} must be 3 band indices below {bands}.")
    rgb = image[list(rgb_indices)].detach().float().cpu().numpy()
    rgb = np.nan_to_num(rgb)
    low = np.percentile(rgb, 2, axis=(1, 2), keepdims=True)
    high = np.percentile(rgb, 98, axis=(1, 2), keepdims=True)
    rgb = np.clip((rgb - low) / np.maximum(high - low, 1e-12), 0, 1)
    return rgb.transpose(1, 2, 0)


def plot_sample(
    image: torch.Tensor,
    target: torch.Tensor | None,
    prediction: torch.Tensor,
    mode: str,
    class_names: Sequence[str] | None = None,
    rgb_indices: Sequence[int] | None = None,
    num_classes: int | None = None,
) -> Any:
    """A matplotlib figure with the image, the label (when given) and the prediction.

    Args:
        image: ``(C, H, W)`` or ``(C, T, H, W)``.
        target: Mask ``(H, W)`` (segmentation, regression), a class index, or 0/1 labels
            ``(C,)`` (multi-label); ``None`` when unlabelled.
        prediction: Shaped like ``target``.
        mode: ``"segmentation"``, ``"regression"``, ``"classification"`` or ``"multilabel"``.
        class_names: Names for the legend and titles.
        rgb_indices: See :func:`rgb_image`.
        num_classes: Colour range of class maps.
    """
    # A bare Figure needs no pyplot backend (safe on headless nodes and in worker threads).
    from matplotlib.figure import Figure

    rgb = rgb_image(image, rgb_indices)
    pixel_wise = mode in ("segmentation", "regression")
    panels = 1 + (pixel_wise * (1 + (target is not None)))
    fig = Figure(figsize=(3.2 * panels, 3.4))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    axes[0].imshow(rgb)
    axes[0].set_title("image" if pixel_wise else _scalar_title(target, prediction, mode, class_names))
    if pixel_wise:
        maps = ([("label", target)] if target is not None else []) + [("prediction", prediction)]
        arrays = [m.detach().float().cpu().numpy() for _, m in maps]
        if mode == "segmentation":
            style = {"cmap": "tab20", "vmin": 0, "vmax": max(num_classes or 1, 2) - 1, "interpolation": "nearest"}
        else:
            finite = np.concatenate([a[np.isfinite(a)] for a in arrays]) if arrays else np.zeros(1)
            style = {"cmap": "viridis", "vmin": float(finite.min(initial=0)), "vmax": float(finite.max(initial=1))}
        for ax, (title, _), array in zip(axes[1:], maps, arrays):
            shown = ax.imshow(array, **style)
            ax.set_title(title)
        if mode == "regression":
            fig.colorbar(shown, ax=list(axes[1:]), shrink=0.8)
    for ax in axes:
        ax.set_axis_off()
    return fig


def _name(index: int, class_names: Sequence[str] | None) -> str:
    return str(class_names[index]) if class_names and 0 <= index < len(class_names) else str(index)


def _scalar_title(
    target: torch.Tensor | None, prediction: torch.Tensor, mode: str, class_names: Sequence[str] | None
) -> str:
    def describe(value: torch.Tensor) -> str:
        if mode == "multilabel":
            return ", ".join(_name(i, class_names) for i in torch.nonzero(value > 0.5).flatten().tolist()) or "-"
        return _name(int(value), class_names)

    title = f"prediction: {describe(prediction)}"
    return title if target is None else f"label: {describe(target)}\n{title}"


def plot_reconstruction(
    image: torch.Tensor,
    masked: torch.Tensor,
    reconstruction: torch.Tensor,
    rgb_indices: Sequence[int] | None = None,
) -> Any:
    """A matplotlib figure: input | masked input | reconstruction, of the first time step.

    The three panels share one stretch (computed over input and reconstruction together), so
    their colours compare.

    Args:
        image: ``(C, H, W)`` or ``(C, T, H, W)``.
        masked: ``(H, W)`` or ``(T, H, W)`` bool, True on the pixels of masked patches (shown
            grey in the middle panel).
        reconstruction: Shaped like ``image``: the prediction on masked patches, the input
            elsewhere.
        rgb_indices: See :func:`rgb_image`.
    """
    from matplotlib.figure import Figure

    if image.ndim == 4:
        image, reconstruction, masked = image[:, 0], reconstruction[:, 0], masked[0]
    width = image.shape[-1]
    both = rgb_image(torch.cat([image, reconstruction.to(image)], dim=-1), rgb_indices)
    shown_input, shown_reconstruction = both[:, :width], both[:, width:]
    shown_masked = shown_input.copy()
    shown_masked[masked.detach().cpu().numpy().astype(bool)] = 0.5
    fig = Figure(figsize=(9.6, 3.4))
    axes = fig.subplots(1, 3, squeeze=False)[0]
    for ax, title, array in zip(
        axes,
        ("input", "masked", "reconstruction"),
        (shown_input, shown_masked, shown_reconstruction),
        strict=True,
    ):
        ax.imshow(array)
        ax.set_title(title)
        ax.set_axis_off()
    return fig
