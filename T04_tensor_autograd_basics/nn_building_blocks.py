"""T04 · The layers a network is made of: shapes, parameters, losses, optimizer steps.

The official tutorial's NeuralNetwork is taken apart layer by layer on a batch of three
28x28 images, then Conv2d, MaxPool2d, Dropout and BatchNorm2d are tried on their own, then
the common losses, and five optimizers on one small problem. Every claim is checked while
the script runs.

    python T04_tensor_autograd_basics/nn_building_blocks.py
    python T04_tensor_autograd_basics/nn_building_blocks.py --graph   # needs torchviz and Graphviz
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import shutil
import signal
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script, Ctrl-C while torch loads (a second or two) stops it, no traceback
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # (imported, e.g. in a notebook, nothing changes)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `common/` imports from any folder

import torch
import torch.nn.functional as F
from torch import nn

from common import cli
from common.device import seed_everything
from common.run import new_folder
from T04_tensor_autograd_basics.lesson import check, done, section, start


class NeuralNetwork(nn.Module):
    """The official "Build the Neural Network" tutorial's model: 784 -> 512 -> 512 -> 10."""

    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(28 * 28, 512),
            nn.ReLU(),
            nn.Linear(512, 512),
            nn.ReLU(),
            nn.Linear(512, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)
        return self.linear_relu_stack(x)  # raw scores ("logits"): no softmax here, the loss does it


def layer_by_layer(model: NeuralNetwork, images: torch.Tensor) -> dict:
    section(1, "NeuralNetwork, one layer at a time")
    print(model)
    x = model.flatten(images)  # Flatten keeps dim 0 (the batch) and joins the rest: (3, 28, 28) -> (3, 784)
    shapes = [("input", tuple(images.shape)), ("Flatten", tuple(x.shape))]
    relu_minimum = math.inf
    for layer in model.linear_relu_stack:
        x = layer(x)
        shapes.append((type(layer).__name__, tuple(x.shape)))
        if isinstance(layer, nn.ReLU):
            relu_minimum = min(relu_minimum, x.min().item())
    for name, shape in shapes:
        print(f"  {name:<8} -> {shape}")
    check(relu_minimum == 0, "after each ReLU no value is negative (negatives became 0)")
    check([shape for _, shape in shapes] == [(3, 28, 28), (3, 784), (3, 512), (3, 512), (3, 512), (3, 512), (3, 10)],
          "the shapes go (3, 28, 28) -> (3, 784) -> (3, 512) -> ... -> (3, 10): one row of 10 scores per image")
    logits = model(images)
    check(torch.equal(logits, x), "running the layers by hand gives exactly model(images)")
    probabilities = nn.Softmax(dim=1)(logits)  # dim=1: over the 10 classes of each image, not over the batch
    print(f"softmax over dim=1 -> predicted classes {probabilities.argmax(dim=1).tolist()} "
          f"(untrained: meaningless yet); row sums {probabilities.sum(dim=1).detach()}")
    check(torch.allclose(probabilities.sum(dim=1), torch.ones(3)), "each image's probabilities add up to 1")
    return {"shapes": [shape for _, shape in shapes]}


def parameters(model: NeuralNetwork) -> dict:
    section(2, "Parameters: named_parameters(), counting them, initialising them")
    for name, parameter in model.named_parameters():
        print(f"  {name:<28} {str(tuple(parameter.shape)):<11} {parameter.numel():>7,}")
    total = sum(p.numel() for p in model.parameters())
    by_hand = (784 * 512 + 512) + (512 * 512 + 512) + (512 * 10 + 10)  # weights + biases of each Linear
    print(f"total: {total:,} parameters")
    check(total == by_hand == 669_706, "the count is (784*512 + 512) + (512*512 + 512) + (512*10 + 10) = 669,706")
    check(all(p.requires_grad for p in model.parameters()), "every parameter requires grad: the optimizer updates it")

    def init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)  # the trailing _ means "fill in place"
            nn.init.zeros_(module.bias)

    model.apply(init_weights)  # apply() calls the function on every submodule
    first = model.linear_relu_stack[0]
    bound = math.sqrt(6 / (784 + 512))  # Xavier/Glorot uniform: U(-b, b) with b = sqrt(6 / (fan_in + fan_out))
    print(f"after xavier_uniform_: first layer's weights in [{first.weight.min():.4f}, {first.weight.max():.4f}], "
          f"bound sqrt(6 / (784 + 512)) = {bound:.4f}")
    check(first.weight.abs().max() <= bound and first.weight.abs().max() > 0.9 * bound and (first.bias == 0).all(),
          "xavier_uniform_ filled the weights from [-bound, bound] and zeros_ the biases")
    return {"parameters": total}


def conv_and_pool(images: torch.Tensor) -> dict:
    section(3, "Conv2d and MaxPool2d: how the shape changes")
    batch = images.unsqueeze(1)  # (3, 28, 28) -> (3, 1, 28, 28): layers for images want (N, C, H, W)
    conv = nn.Conv2d(in_channels=1, out_channels=6, kernel_size=5)
    padded_conv = nn.Conv2d(1, 6, kernel_size=5, padding=2)
    pool = nn.MaxPool2d(kernel_size=2)
    features, same_size = conv(batch), padded_conv(batch)
    pooled = pool(features)
    print(f"input {tuple(batch.shape)} -> Conv2d(1, 6, 5) {tuple(features.shape)} -> MaxPool2d(2) "
          f"{tuple(pooled.shape)}; with padding=2: {tuple(same_size.shape)}")
    print("  output size = (input + 2 * padding - kernel) // stride + 1: (28 - 5) // 1 + 1 = 24; "
          "(28 + 4 - 5) // 1 + 1 = 28; pooling halves it")
    check(features.shape == (3, 6, 24, 24) and same_size.shape == (3, 6, 28, 28) and pooled.shape == (3, 6, 12, 12),
          "Conv2d(1, 6, 5) makes 6 maps of 24x24 (28x28 with padding=2); MaxPool2d(2) halves them to 12x12")
    conv_parameters = sum(p.numel() for p in conv.parameters())
    check(conv_parameters == 6 * 1 * 5 * 5 + 6,
          f"Conv2d(1, 6, 5) has 6 * 1 * 5 * 5 weights + 6 biases = {conv_parameters} parameters")
    check(torch.equal(pooled[0, 0, 0, 0], features[0, 0, :2, :2].max()), "each pooled value is the max of a 2x2 patch")
    return {"conv": tuple(features.shape), "pooled": tuple(pooled.shape)}


def dropout() -> dict:
    section(4, "Dropout: on in train(), off in eval()")
    layer = nn.Dropout(p=0.5)
    x = torch.ones(10_000)
    layer.train()
    trained = layer(x)
    zeroed = (trained == 0).float().mean().item()
    print(f"train(): {100 * zeroed:.1f}% of the values set to 0, the rest scaled to "
          f"{trained[trained != 0].unique().tolist()} (1 / (1 - p)) so the average stays about 1")
    check(0.45 < zeroed < 0.55 and set(trained.unique().tolist()) == {0.0, 2.0},
          "in train mode about half the values become 0 and the others are doubled")
    layer.eval()
    check(torch.equal(layer(x), x), "in eval mode Dropout passes its input through unchanged")
    return {"dropped_fraction": zeroed}


def batch_norm(images: torch.Tensor) -> dict:
    section(5, "BatchNorm2d: normalise each channel over the batch")
    maps = nn.Conv2d(1, 6, kernel_size=5)(images.unsqueeze(1)) * 3 + 1  # some (3, 6, 24, 24) maps, not centred
    norm = nn.BatchNorm2d(6)
    normalised = norm(maps)  # a new module is in train mode: it uses this batch's mean and variance
    per_channel_mean = normalised.mean(dim=(0, 2, 3))
    per_channel_std = normalised.std(dim=(0, 2, 3), unbiased=False)
    print(f"{tuple(maps.shape)} -> {tuple(normalised.shape)}; per-channel mean after: "
          f"{per_channel_mean.abs().max():.1e} (max abs), std after: {per_channel_std.min():.4f}.."
          f"{per_channel_std.max():.4f}")
    check(normalised.shape == maps.shape, "BatchNorm2d keeps the shape")
    check(per_channel_mean.abs().max() < 1e-5 and (per_channel_std - 1).abs().max() < 1e-3,
          "in train mode each of the 6 channels comes out with mean 0 and standard deviation 1")
    check(norm.num_batches_tracked.item() == 1 and not torch.equal(norm.running_mean, torch.zeros(6)),
          "and its running mean/variance moved towards this batch's (for use in eval mode)")
    norm.eval()
    check(not torch.allclose(norm(maps), normalised),
          "in eval mode it uses the running statistics instead, so the same input gives another output")
    return {"batch_norm_shape": tuple(normalised.shape)}


def losses() -> dict:
    section(6, "CrossEntropyLoss on logits = NLLLoss on log_softmax")
    logits = torch.randn(3, 10)
    targets = torch.tensor([3, 0, 7])
    cross_entropy = nn.CrossEntropyLoss()(logits, targets)
    nll = nn.NLLLoss()(F.log_softmax(logits, dim=1), targets)
    by_hand = -F.log_softmax(logits, dim=1)[torch.arange(3), targets].mean()  # -log p(true class), averaged
    print(f"CrossEntropyLoss(logits) = {cross_entropy.item():.6f}\nNLLLoss(log_softmax(logits)) = {nll.item():.6f}\n"
          f"-mean(log p of the true class) = {by_hand.item():.6f}")
    check(torch.allclose(cross_entropy, nll) and torch.allclose(cross_entropy, by_hand),
          "CrossEntropyLoss = log_softmax + NLLLoss: pick one pair, never softmax twice")
    wrong = nn.CrossEntropyLoss()(F.softmax(logits, dim=1), targets)
    print(f"a common mistake, CrossEntropyLoss(softmax(logits)) = {wrong.item():.6f}: a different, wrong loss")
    check(not torch.allclose(wrong, cross_entropy), "feeding probabilities to CrossEntropyLoss gives the wrong loss")
    return {"cross_entropy": cross_entropy.item(), "nll": nll.item()}


def regression_and_binary_losses() -> dict:
    section(7, "Losses for numbers and for yes/no: MSE, L1, SmoothL1, BCE, BCEWithLogits")
    predictions, targets = [2.5, 0.0, 2.0, 8.0], [3.0, -0.5, 2.0, 7.0]
    prediction, target = torch.tensor(predictions), torch.tensor(targets)
    mse, l1 = nn.MSELoss()(prediction, target).item(), nn.L1Loss()(prediction, target).item()
    smooth = nn.SmoothL1Loss(beta=1.0)(prediction, target).item()
    differences = [p - t for p, t in zip(predictions, targets)]  # -0.5, 0.5, 0.0, 1.0: by hand, in Python
    print(f"predictions {predictions}, targets {targets}:\n  MSELoss = {mse:.4f}, L1Loss = {l1:.4f}, "
          f"SmoothL1Loss(beta=1) = {smooth:.4f}")
    check(math.isclose(mse, sum(d * d for d in differences) / 4, rel_tol=1e-6),
          "MSELoss = mean of the squared differences: (0.25 + 0.25 + 0 + 1) / 4 = 0.375")
    check(math.isclose(l1, sum(abs(d) for d in differences) / 4, rel_tol=1e-6),
          "L1Loss = mean of the absolute differences: (0.5 + 0.5 + 0 + 1) / 4 = 0.5")
    smooth_each = nn.SmoothL1Loss(beta=1.0, reduction="none")(torch.tensor([0.5, 3.0]), torch.zeros(2)).tolist()
    print(f"  SmoothL1Loss(beta=1) of a difference 0.5: {smooth_each[0]} (MSE would give 0.25, L1 0.5); "
          f"of 3.0: {smooth_each[1]} (MSE 9.0, L1 3.0)")
    check(smooth_each == [0.5 * 0.5**2 / 1.0, 3.0 - 0.5 * 1.0],
          "SmoothL1 is 0.5 d^2 / beta below beta (0.125 at d = 0.5) and |d| - 0.5 beta above it (2.5 at d = 3): "
          "gentle near 0 like MSE, growing only linearly for large errors like L1")

    probabilities, labels = [0.9, 0.2, 0.6], [1.0, 0.0, 1.0]
    bce = nn.BCELoss()(torch.tensor(probabilities), torch.tensor(labels)).item()
    bce_by_hand = -sum(y * math.log(p) + (1 - y) * math.log(1 - p) for p, y in zip(probabilities, labels)) / 3
    print(f"BCELoss(probabilities {probabilities}, labels {labels}) = {bce:.6f}; "
          f"-mean(y log p + (1 - y) log(1 - p)) = {bce_by_hand:.6f}")
    check(math.isclose(bce, bce_by_hand, rel_tol=1e-6),
          "BCELoss = -mean(y log p + (1 - y) log(1 - p)), on probabilities p")
    logits = torch.tensor([2.0, -1.0, 0.5])
    with_logits = nn.BCEWithLogitsLoss()(logits, torch.tensor(labels)).item()
    on_sigmoid = nn.BCELoss()(torch.sigmoid(logits), torch.tensor(labels)).item()
    print(f"logits {logits.tolist()}: BCEWithLogitsLoss = {with_logits:.6f}, "
          f"BCELoss(sigmoid(logits)) = {on_sigmoid:.6f}")
    check(math.isclose(with_logits, on_sigmoid, rel_tol=1e-6),
          "for moderate logits BCEWithLogitsLoss(x) = BCELoss(sigmoid(x)): the sigmoid is inside the loss")

    # Why the logits version: a confident wrong answer, logit x with label 0. The true loss is
    # -log(1 - sigmoid(x)) = log(1 + e^x), worked out here in float64. In float32 sigmoid(x) rounds to
    # exactly 1 from about x = 17, log(1 - 1) = -inf, and BCELoss clamps every log at -100.
    print("a confident wrong answer: logit x, label 0; the exact loss is log(1 + e^x), its gradient sigmoid(x)")
    print(f"  {'x':>5}  {'BCELoss(sigmoid(x))':>20}  {'BCEWithLogitsLoss(x)':>20}  {'exact':>11}  "
          "d loss/dx: BCELoss, BCEWithLogitsLoss")
    rows = {}
    for value in (10.0, 30.0, 100.0):
        exact = value + math.log1p(math.exp(-value))
        row = []
        for loss_of in (lambda x: nn.BCELoss()(torch.sigmoid(x), torch.zeros(1)),
                        lambda x: nn.BCEWithLogitsLoss()(x, torch.zeros(1))):
            x = torch.tensor([value], requires_grad=True)
            loss = loss_of(x)
            loss.backward()
            row += [loss.item(), x.grad.item()]
        rows[value] = (*row, exact)
        print(f"  {value:>5}  {row[0]:20.6f}  {row[2]:20.6f}  {exact:11.6f}  {row[1]:.4f}, {row[3]:.4f}")
    sigmoid_loss, sigmoid_grad, logits_loss, logits_grad, exact = rows[10.0]
    check(abs(sigmoid_loss - exact) > 1e-4 and abs(logits_loss - exact) < 1e-5,
          "at x = 10 BCELoss(sigmoid(x)) is already off in the 4th decimal; BCEWithLogitsLoss is right")
    sigmoid_loss, sigmoid_grad, logits_loss, logits_grad, exact = rows[30.0]
    check(sigmoid_loss == 100.0 and math.isclose(logits_loss, exact, rel_tol=1e-6) and sigmoid_grad == 0.0
          and logits_grad == 1.0,
          "at x = 30 BCELoss(sigmoid(x)) is clamped to 100 with gradient 0 (it stops learning); "
          "BCEWithLogitsLoss gives 30 and gradient 1")
    check(rows[100.0][0] == rows[100.0][2] == 100.0 and rows[100.0][1] == 0.0,
          "at x = 100 both give 100.0, BCELoss only because its clamp at 100 happens to meet the true loss; "
          "its gradient is still 0")
    return {"mse": mse, "l1": l1, "smooth_l1": smooth, "bce": bce, "bce_with_logits": with_logits,
            "unstable": rows}


def optimizer_step(model: NeuralNetwork, images: torch.Tensor) -> dict:
    section(8, "One optimizer step: zero_grad, backward, step")
    targets = torch.tensor([1, 4, 9])
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    before = loss_fn(model(images), targets)
    optimizer.zero_grad()  # gradients add up across backward() calls: clear the last ones
    before.backward()  # d(loss)/d(parameter) into each parameter's .grad
    check(all(p.grad is not None for p in model.parameters()), "backward() filled .grad of every parameter")
    optimizer.step()  # parameter -= lr * parameter.grad
    with torch.no_grad():
        after = loss_fn(model(images), targets)
    print(f"loss before the step {before.item():.6f}, after {after.item():.6f}")
    check(after < before, "one step against the gradient lowered the loss on this batch")
    return {"loss_before": before.item(), "loss_after": after.item(), "loss": before}


FIRST_STEP_FORMULAS = {  # the first update of each optimizer, printed with its check in section 9
    "SGD": "lr * g",
    "SGD, momentum=0.9": "lr * g (the velocity starts at g)",
    "RMSprop": "lr * g / (sqrt((1 - alpha) g^2) + eps) = 10 lr * sign(g) with alpha = 0.99",
    "Adagrad": "lr * g / (sqrt(g^2) + eps), about lr * sign(g)",
    "Adam": "lr * m_hat / (sqrt(v_hat) + eps) = lr * g / (|g| + eps), about lr * sign(g)",
}


def quadratic_bowl(w: torch.Tensor) -> torch.Tensor:
    """The problem section 9 solves: (w1 - 3)^2 + 5 (w2 + 1)^2, smallest (0) at w = (3, -1)."""
    return (w[0] - 3) ** 2 + 5 * (w[1] + 1) ** 2


def optimizers_compared(lr: float = 0.05, steps: int = 100) -> dict:
    section(9, "Optimizers side by side: SGD, momentum, RMSprop, Adagrad, Adam")
    gradient = [2 * (0 - 3), 2 * 5 * (0 + 1)]  # of the bowl at the start w = (0, 0), by hand: (-6, 10)
    sign = [math.copysign(1.0, g) for g in gradient]
    # Each optimizer's first step from the same start, by its formula (all running averages start at 0):
    first_steps = {
        "SGD": [lr * g for g in gradient],  # w -= lr * g
        "SGD, momentum=0.9": [lr * g for g in gradient],  # the velocity starts as g itself
        # square_avg = alpha * 0 + (1 - alpha) g^2 with alpha = 0.99: the step is lr * g / (0.1 |g|) = 10 lr
        "RMSprop": [lr * g / (math.sqrt((1 - 0.99) * g * g) + 1e-8) for g in gradient],
        "Adagrad": [lr * g / (math.sqrt(g * g) + 1e-10) for g in gradient],  # sum of g^2 so far is g^2
        # m = 0.1 g and v = 0.001 g^2, each divided by its bias correction (1 - beta): lr * g / (|g| + eps)
        "Adam": [lr * g / (math.sqrt(g * g) + 1e-8) for g in gradient],
    }
    makers = {
        "SGD": lambda params: torch.optim.SGD(params, lr=lr),
        "SGD, momentum=0.9": lambda params: torch.optim.SGD(params, lr=lr, momentum=0.9),
        "RMSprop": lambda params: torch.optim.RMSprop(params, lr=lr),
        "Adagrad": lambda params: torch.optim.Adagrad(params, lr=lr),
        "Adam": lambda params: torch.optim.Adam(params, lr=lr),
    }
    start_loss = quadratic_bowl(torch.zeros(2)).item()
    print(f"minimise (w1 - 3)^2 + 5 (w2 + 1)^2 from w = (0, 0), loss {start_loss}; gradient there (-6, 10); "
          f"lr = {lr} and {steps} steps for each")
    adam_defaults = torch.optim.Adam([torch.zeros(1, requires_grad=True)]).defaults
    print(f"Adam's defaults (optimizer.defaults): betas {adam_defaults['betas']}, eps {adam_defaults['eps']}")
    check(adam_defaults["betas"] == (0.9, 0.999) and adam_defaults["eps"] == 1e-8,
          "Adam's defaults are betas = (0.9, 0.999) and eps = 1e-8, as in the Adam paper")
    print(f"  {'optimizer':<18} {'w after 1 step':>18} {'by hand':>18}   loss after {steps} steps")
    results = {}
    for name, make in makers.items():
        w = torch.zeros(2, requires_grad=True)
        optimizer = make([w])
        path = [w.tolist()]  # where w is after each step, to draw (the notebook plots the five paths)
        for step in range(steps):
            optimizer.zero_grad()
            quadratic_bowl(w).backward()
            optimizer.step()
            path.append(w.tolist())
            if step == 0:
                first = (-w).tolist()  # w started at 0 and moved by -(step): the step taken is -w
        results[name] = {"first_step": first, "loss": quadratic_bowl(w).item(), "path": path}
        by_hand = first_steps[name]
        print(f"  {name:<18} ({-first[0]:+.4f}, {-first[1]:+.4f}) ({-by_hand[0]:+.4f}, {-by_hand[1]:+.4f})   "
              f"{results[name]['loss']:.3g}")
    for name, by_hand in first_steps.items():
        check(all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(results[name]["first_step"], by_hand)),
              f"{name}'s first step (w = 0 - step) is the formula's: {FIRST_STEP_FORMULAS[name]}")
    check(all(math.isclose(a, lr * s, rel_tol=1e-6) for name in ("Adagrad", "Adam")
              for a, s in zip(results[name]["first_step"], sign))
          and all(math.isclose(a, 10 * lr * s, rel_tol=1e-6) for a, s in zip(results["RMSprop"]["first_step"], sign)),
          f"so Adagrad and Adam both start with a step of lr * sign(g) = {lr} per coordinate, whatever the size of g "
          f"(-6 or 10), and RMSprop with 10 lr = {10 * lr}")
    check(all(result["loss"] < start_loss for result in results.values()),
          f"each of the five lowered the loss from {start_loss}")
    return {"optimizers": results}


def graph(loss: torch.Tensor, model: NeuralNetwork, out_dir: Path | None) -> Path | None:
    """Render the computation graph with torchviz, if it and Graphviz are installed."""
    section(10, "The computation graph as a picture (--graph)")
    if importlib.util.find_spec("torchviz") is None or shutil.which("dot") is None:
        print("--graph needs the torchviz package and Graphviz's `dot` program: pip install torchviz, and "
              "install Graphviz from https://graphviz.org/download/")
        return None
    from torchviz import make_dot

    out_dir, _ = new_folder(out_dir, "nn_building_blocks")  # --out-dir, or a new folder under runs/
    dot = make_dot(loss, params=dict(model.named_parameters()))
    path = Path(dot.render(str(out_dir / "graph"), format="png", cleanup=True))
    print(f"wrote {path}")
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(description="T04: nn building blocks, layer by layer, every claim checked.")
    parser.add_argument("--graph", action="store_true",
                        help="also draw the computation graph to graph.png (needs torchviz and Graphviz)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="folder for graph.png (default: a new folder under <repo>/runs)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    seed_everything(args.seed)
    start("T04 - nn building blocks")
    model = NeuralNetwork()
    images = torch.rand(3, 28, 28)  # a batch of three 28x28 "images"
    facts = layer_by_layer(model, images)
    facts |= parameters(model)
    facts |= conv_and_pool(images)
    facts |= dropout()
    facts |= batch_norm(images)
    facts |= losses()
    facts |= regression_and_binary_losses()
    facts |= optimizer_step(model, images)
    facts |= optimizers_compared()
    loss = facts.pop("loss")
    if args.graph:
        facts["graph"] = graph(loss, model, args.out_dir)
    return {**facts, "claims": done()}


if __name__ == "__main__":
    cli.run_main(main)
