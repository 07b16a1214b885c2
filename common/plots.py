"""Per-epoch metrics files and loss/accuracy curves, saved to the run folder.

Figures are always written to PNG files. They open in a window only with `--show`, and
only when there is a display, so the scripts also run over SSH, in CI and in Docker.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import matplotlib


def use_backend(show: bool) -> bool:
    """Pick a matplotlib backend: the non-interactive 'Agg' unless `show` and a display exists.

    Returns whether figures will really be shown. Call it before pyplot is first used.
    """
    has_display = sys.platform in ("win32", "darwin") or bool(os.environ.get("DISPLAY")
                                                             or os.environ.get("WAYLAND_DISPLAY"))
    if show and has_display:
        return True
    matplotlib.use("Agg")
    return False


def write_metrics(history: list[dict], out_dir: Path) -> tuple[Path, Path]:
    """Write the per-epoch metrics as metrics.json and metrics.csv; return both paths."""
    out_dir = Path(out_dir)
    json_path, csv_path = out_dir / "metrics.json", out_dir / "metrics.csv"
    json_path.write_text(json.dumps(history, indent=2) + "\n", encoding="utf-8")
    columns = list(dict.fromkeys(key for row in history for key in row))  # every key, first-seen order
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
    return json_path, csv_path


def plot_curves(history: list[dict], path: Path, title: str = "", show: bool = False) -> Path:
    """Save a two-panel figure: train/test loss and test accuracy against epoch."""
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [row["train_loss"] for row in history], "o-", label="train")
    ax_loss.plot(epochs, [row["test_loss"] for row in history], "s-", label="test")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_loss.legend()
    ax_acc.plot(epochs, [100 * row["test_accuracy"] for row in history], "s-", color="tab:green")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Test accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, show)


def save_figure(fig, path: Path, show: bool = False) -> Path:
    """Save `fig` as a PNG; show it if asked (and possible), then close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.savefig(path, dpi=100)
    if show and matplotlib.get_backend().lower() != "agg":
        plt.show()
    plt.close(fig)
    return path
