"""T04 · Activation functions: sigmoid, tanh, ReLU, leaky ReLU and softmax, with their gradients.

Each function is computed twice, with NumPy from its formula and with torch, and the two
are checked equal. The plots are saved as PNG files in the run folder:

    activations.png   each function and its gradient (from autograd)
    softmax.png       softmax of a vector of scores (it is not a curve: see section 2)

    python T04_tensor_autograd_basics/activations.py
    python T04_tensor_autograd_basics/activations.py --out-dir runs/my_plots --show
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script, Ctrl-C while torch loads (a second or two) stops it, no traceback
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # (imported, e.g. in a notebook, nothing changes)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `common/` imports from any folder

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common import cli
from common.run import new_folder
from T04_tensor_autograd_basics.lesson import check, done, section, start

LEAKY_SLOPE = 0.01  # leaky ReLU's slope for x < 0 (torch's default)

# Each function from its formula, in NumPy.
NUMPY_FUNCTIONS = {
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(0, x),
    "leaky_relu": lambda x: np.where(x > 0, x, LEAKY_SLOPE * x),
}
# The same functions in torch.
TORCH_FUNCTIONS = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": F.relu,
    "leaky_relu": lambda x: F.leaky_relu(x, LEAKY_SLOPE),
}
# Their derivatives worked out by hand (at exactly 0, torch uses the x < 0 side for ReLU and leaky ReLU).
DERIVATIVES = {
    "sigmoid": lambda x: (1 / (1 + np.exp(-x))) * (1 - 1 / (1 + np.exp(-x))),  # s * (1 - s)
    "tanh": lambda x: 1 - np.tanh(x) ** 2,
    "relu": lambda x: np.where(x > 0, 1.0, 0.0),
    "leaky_relu": lambda x: np.where(x > 0, 1.0, LEAKY_SLOPE),
}


def softmax_numpy(scores: np.ndarray) -> np.ndarray:
    """Softmax of a vector: exp of each score over the sum of them all (shifted by the max, so exp never overflows)."""
    shifted = np.exp(scores - scores.max())
    return shifted / shifted.sum()


def elementwise_functions(x: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Section 1: NumPy against torch for each function, and the gradient from autograd."""
    section(1, "sigmoid, tanh, ReLU, leaky ReLU: NumPy and torch agree")
    curves = {}
    for name, numpy_function in NUMPY_FUNCTIONS.items():
        inputs = torch.tensor(x, requires_grad=True)  # float64, like the NumPy array
        outputs = TORCH_FUNCTIONS[name](inputs)
        outputs.sum().backward()  # each output depends on one input only, so x.grad is the derivative
        values, gradient = outputs.detach().numpy(), inputs.grad.numpy()
        print(f"  {name:<10}: f(-2, 0, 2) = {np.round(numpy_function(np.array([-2.0, 0.0, 2.0])), 4).tolist()}, "
              f"range [{values.min():.3f}, {values.max():.3f}]")
        check(np.allclose(values, numpy_function(x), rtol=1e-12, atol=1e-12), f"{name}: torch equals NumPy's formula")
        check(np.allclose(gradient, DERIVATIVES[name](x), rtol=1e-12, atol=1e-12),
              f"{name}: autograd's gradient equals the derivative worked out by hand")
        curves[name] = (values, gradient)
    return curves


def softmax_section(x: np.ndarray) -> dict:
    """Section 2: softmax works on a whole vector, so it has no curve of its own."""
    section(2, "softmax: a function of a whole vector, not of one number")
    scores = np.array([2.0, 1.0, 0.1, -1.0, 3.0])
    probabilities = softmax_numpy(scores)
    from_torch = torch.softmax(torch.tensor(scores), dim=0).numpy()
    print(f"scores {scores.tolist()} -> softmax {np.round(probabilities, 4).tolist()}")
    check(np.allclose(probabilities, from_torch, rtol=1e-12, atol=1e-15), "torch.softmax equals NumPy's formula")
    check(np.isclose(probabilities.sum(), 1) and (probabilities > 0).all(),
          "softmax gives positive numbers that add up to 1: probabilities")
    check(np.argmax(probabilities) == np.argmax(scores) and np.allclose(softmax_numpy(scores + 100), probabilities),
          "the largest score gets the largest probability; adding a constant to every score changes nothing")
    # The post plots softmax "along x" like the functions above. But softmax(x) of a grid divides by
    # the sum over the whole grid, so the value at a point depends on how many points the grid has.
    coarse, fine = np.linspace(-6, 6, 121), x
    at_zero_coarse, at_zero_fine = softmax_numpy(coarse)[60], softmax_numpy(fine)[len(fine) // 2]
    print(f"softmax over a grid of -6..6 at x = 0: {at_zero_coarse:.3e} with 121 points, "
          f"{at_zero_fine:.3e} with {len(fine)} points")
    check(not np.isclose(at_zero_coarse, at_zero_fine),
          "softmax over a grid of x values depends on the grid, so drawing it as a curve of x means nothing")
    with np.errstate(over="ignore", invalid="ignore"):
        big = np.array([1000.0, 1001.0])
        naive = np.exp(big) / np.exp(big).sum()  # exp(1000) overflows to inf; inf / inf is nan
    print(f"scores [1000, 1001]: exp(s) / sum(exp(s)) = {naive.tolist()}; shifted by the max: "
          f"{np.round(softmax_numpy(big), 4).tolist()}")
    check(np.isnan(naive).all() and np.allclose(softmax_numpy(big), softmax_numpy(big - 1000)),
          "the textbook formula overflows for large scores; subtracting the max first (as torch does) does not")
    return {"scores": scores, "probabilities": probabilities}


def gradients_section(curves: dict[str, tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> dict:
    """Section 3: why sigmoid saturates and why ReLU units can die."""
    section(3, "Gradients: sigmoid saturates, ReLU can die")
    sigmoid_gradient = curves["sigmoid"][1]
    at_six = sigmoid_gradient[np.argmin(np.abs(x - 6))]
    print(f"sigmoid's gradient: {sigmoid_gradient.max():.4f} at most (at x = 0), {at_six:.4f} at x = 6; "
          f"through 10 sigmoid layers at most 0.25^10 = {0.25 ** 10:.1e}")
    check(np.isclose(sigmoid_gradient.max(), 0.25) and at_six < 0.01,
          "sigmoid's gradient is at most 0.25 and almost 0 for large |x| (it saturates): gradients vanish")
    check(np.isclose(curves["tanh"][1].max(), 1.0), "tanh's gradient reaches 1 at x = 0 (better, but it saturates too)")
    relu_gradient = curves["relu"][1]
    check(set(np.unique(relu_gradient).tolist()) == {0.0, 1.0}, "ReLU's gradient is 1 for x > 0 and 0 for x <= 0")

    # A "dead" unit: a bias so negative that the input to ReLU is below 0 for every sample.
    torch.manual_seed(0)
    inputs = torch.randn(256, 4)
    dead = {}
    for name, activation in (("ReLU", nn.ReLU()), ("LeakyReLU", nn.LeakyReLU(LEAKY_SLOPE))):
        unit = nn.Linear(4, 1)
        with torch.no_grad():
            unit.weight.fill_(0.1)
            unit.bias.fill_(-10.0)
        activation(unit(inputs)).mean().backward()
        dead[name] = unit.weight.grad.abs().max().item()
        print(f"  {name:<9} unit with bias -10: largest weight gradient {dead[name]:.2e}")
    check(dead["ReLU"] == 0.0, "a ReLU unit whose input is always negative gets zero gradient: it never learns again")
    check(dead["LeakyReLU"] > 0.0, "leaky ReLU keeps a small gradient there, so the unit can recover")
    return {"dead_relu_gradient": dead["ReLU"], "leaky_relu_gradient": dead["LeakyReLU"]}


def plot_activations(x: np.ndarray, curves: dict, path: Path, show: bool) -> Path:
    """Four panels: each function (solid) and its gradient (dashed)."""
    import matplotlib.pyplot as plt

    titles = {"sigmoid": "sigmoid", "tanh": "tanh", "relu": "ReLU", "leaky_relu": f"leaky ReLU (slope {LEAKY_SLOPE})"}
    fig, axes = plt.subplots(2, 2, figsize=(9, 7))
    for ax, (name, (values, gradient)) in zip(axes.flat, curves.items()):
        ax.plot(x, values, label="f(x)")
        ax.plot(x, gradient, "--", label="f'(x) (autograd)")
        ax.axhline(0, color="gray", linewidth=0.5)
        ax.axvline(0, color="gray", linewidth=0.5)
        ax.set(title=titles[name], xlabel="x")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    if show:
        plt.show()  # a window where there is a display (without one, matplotlib draws off screen and warns)
    plt.close(fig)
    return path


def plot_softmax(scores: np.ndarray, probabilities: np.ndarray, path: Path, show: bool) -> Path:
    """Bar charts of the scores and their softmax, beside the post's mistake: softmax 'along x'."""
    import matplotlib.pyplot as plt

    labels = [f"class {i}" for i in range(len(scores))]
    fig, (ax_scores, ax_probabilities, ax_wrong) = plt.subplots(1, 3, figsize=(15, 4))
    ax_scores.bar(labels, scores, color="tab:gray")
    ax_scores.axhline(0, color="black", linewidth=0.5)
    ax_scores.set(title="scores (logits)")
    bars = ax_probabilities.bar(labels, probabilities, color="tab:blue")
    ax_probabilities.bar_label(bars, fmt="%.3f")
    ax_probabilities.set(title="softmax(scores): positive, sum = 1", ylim=(0, 1))
    for points in (61, 121, 241):  # the same x range, three grids: three different "curves"
        grid = np.linspace(-6, 6, points)
        ax_wrong.plot(grid, softmax_numpy(grid), label=f"{points} points")
    ax_wrong.set(title="not a curve: softmax 'along x'\nchanges with the number of grid points", xlabel="x")
    ax_wrong.legend()
    ax_wrong.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    if show:
        plt.show()  # a window where there is a display (without one, matplotlib draws off screen and warns)
    plt.close(fig)
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(description="T04: activation functions and their gradients, plotted and checked.")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="folder for the PNG files (default: a new folder under <repo>/runs)")
    parser.add_argument("--show", action="store_true", help="also open the figures in a window, if there is a display")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out_dir, _ = new_folder(args.out_dir, "activations")  # --out-dir, or a new folder under runs/
    start("T04 - Activation functions")
    x = np.linspace(-6, 6, 241)  # steps of 0.05; x = 0 is one of the points
    curves = elementwise_functions(x)
    softmax = softmax_section(x)
    facts = gradients_section(curves, x)
    section(4, "The plots")
    figures = [plot_activations(x, curves, out_dir / "activations.png", args.show),
               plot_softmax(softmax["scores"], softmax["probabilities"], out_dir / "softmax.png", args.show)]
    for path in figures:
        check(path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"wrote {path.name}, a PNG image")
    print(f"\nRun folder: {out_dir} (activations.png, softmax.png)")
    return {**facts, "figures": figures, "out_dir": out_dir, "claims": done()}


if __name__ == "__main__":
    cli.run_main(main)
