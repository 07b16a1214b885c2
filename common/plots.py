"""Per-epoch metrics files and loss/accuracy curves, saved to the run folder.

Figures are always written to PNG files. They open in a window only with `--show`, and
only when there is a display, so the scripts also run over SSH, in CI and in Docker.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

# matplotlib itself is imported only where a figure is made: importing it takes about 0.2 s,
# which a training script would otherwise spend before its first step.
if TYPE_CHECKING:  # only for the type hints: keeps `import common.plots` light
    import torch
    from matplotlib.figure import Figure


def use_backend(show: bool) -> bool:
    """Pick a matplotlib backend: the non-interactive 'Agg' unless `show` and a display exists.

    Returns whether figures will really be shown. Call it before pyplot is first used.
    """
    has_display = sys.platform in ("win32", "darwin") or bool(os.environ.get("DISPLAY")
                                                             or os.environ.get("WAYLAND_DISPLAY"))
    if show and has_display:
        return True
    if "matplotlib" in sys.modules:
        sys.modules["matplotlib"].use("Agg")
    else:  # matplotlib reads this when it is first imported (by the first figure): no import now
        os.environ["MPLBACKEND"] = "Agg"
    return False


def write_metrics(history: list[dict], out_dir: Path) -> tuple[Path, Path]:
    """Write the per-epoch metrics as metrics.json and metrics.csv, each atomically; return both paths.

    The JSON is strict: a NaN or infinity (which plain json.dumps writes as the non-standard
    token NaN) is written as null, so every JSON reader accepts the file.
    """
    from common.checkpoint import atomic_write_text

    out_dir = Path(out_dir)
    rows = [{key: _finite_or_none(value) for key, value in row.items()} for row in history]
    json_path = atomic_write_text(out_dir / "metrics.json", json.dumps(rows, indent=2, allow_nan=False) + "\n")
    columns = list(dict.fromkeys(key for row in history for key in row))  # every key, first-seen order
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    csv_path = atomic_write_text(out_dir / "metrics.csv", text.getvalue())
    return json_path, csv_path


def _finite_or_none(value: object) -> object:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def plot_curves(history: list[dict], path: Path, title: str = "", show: bool = False) -> Path:
    """Save a two-panel figure: train/test loss and test accuracy against epoch."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [row["train_loss"] for row in history], "o-", label="train")
    ax_loss.plot(epochs, [row["test_loss"] for row in history], "s-", label="test")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_loss.legend()
    ax_acc.plot(epochs, [100 * row["test_accuracy"] for row in history], "s-", color="tab:green")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Test accuracy")
    bottom, top = ax_acc.get_ylim()
    ax_acc.set_ylim(bottom, min(top, 101))  # a flat line at 100% should not draw an axis up to 105%
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        # Whole epochs only: a tick on every epoch when there are few (one epoch alone would
        # otherwise get 0.96 ... 1.04), whole numbers chosen by matplotlib when there are many.
        if len(epochs) <= 10:
            ax.set_xticks(epochs)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, show)


def save_figure(fig: Figure, path: Path, show: bool = False) -> Path:
    """Save `fig` as a PNG; show it if asked (and possible), then close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.savefig(path, dpi=100)
    if show and plt.get_backend().lower() != "agg":
        plt.show()
    plt.close(fig)
    return path


def confusion_matrix(targets: Sequence[int] | torch.Tensor, predictions: Sequence[int] | torch.Tensor,
                     num_classes: int) -> torch.Tensor:
    """Count matrix: row = true class, column = predicted class (a torch.long tensor)."""
    import torch

    targets, predictions = torch.as_tensor(targets).long().cpu(), torch.as_tensor(predictions).long().cpu()
    flat = targets * num_classes + predictions  # one bin per (true, predicted) pair
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def plot_image_grid(images: torch.Tensor, titles: list[str], path: Path, mean: Sequence[float] | None = None,
                    std: Sequence[float] | None = None, columns: int = 8, show: bool = False) -> Path:
    """Save a grid of images (N x C x H x W tensor) with a title under each, undoing Normalize first.

    `mean`/`std` are the Normalize values (one per channel), so the pictures show real colours.
    """
    import matplotlib.pyplot as plt
    import torch

    images = images.detach().cpu().float()
    if mean is not None and std is not None:
        channels = images.shape[1]
        std_t = torch.as_tensor(std, dtype=torch.float32).expand(channels).view(1, -1, 1, 1)
        mean_t = torch.as_tensor(mean, dtype=torch.float32).expand(channels).view(1, -1, 1, 1)
        images = images * std_t + mean_t  # x_normalised * std + mean = the original 0..1 pixels
    images = images.clamp(0, 1)
    count = len(images)
    columns = max(1, min(columns, count))
    rows = (count + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        if image.shape[0] == 1:
            ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(image.permute(1, 2, 0).numpy())  # matplotlib wants H x W x C
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, show)
