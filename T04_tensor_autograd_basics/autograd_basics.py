"""T04 · Autograd: requires_grad, backward(), accumulating gradients, detach(), no_grad() and the graph.

The posts' two examples are run and their gradients checked against the answer worked
out by hand. Every claim is checked while the script runs.

    python T04_tensor_autograd_basics/autograd_basics.py
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script, Ctrl-C while torch loads (a second or two) stops it, no traceback
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # (imported, e.g. in a notebook, nothing changes)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `common/` imports from any folder

import torch

from common import cli
from common.device import seed_everything
from T04_tensor_autograd_basics.lesson import check, done, raises, section, start


def requires_grad() -> None:
    """Which tensors autograd follows."""
    section(1, "requires_grad: which tensors autograd follows")
    x = torch.ones(2, 2, requires_grad=True)  # a "leaf": made by you, not computed from others
    y = x * 3
    plain = torch.ones(2, 2)
    print(f"x = torch.ones(2, 2, requires_grad=True): is_leaf {x.is_leaf}, grad {x.grad}")
    print(f"y = x * 3: requires_grad {y.requires_grad}, grad_fn {y.grad_fn.name()}")
    check(x.is_leaf and x.grad is None, "before any backward() a leaf's .grad is None")
    check(y.requires_grad and not y.is_leaf, "a result computed from x requires grad too (it is not a leaf)")
    check(not (plain * 3).requires_grad, "tensors are made with requires_grad=False unless you ask")
    plain.requires_grad_()  # the in-place switch, for a tensor that already exists
    check(plain.requires_grad, "tensor.requires_grad_() turns it on afterwards")


def first_example() -> dict:
    """The posts' y = x * x; z = y.sum(): dz/dx = 2x."""
    section(2, "Example 1: y = x * x; z = y.sum() gives x.grad = 2x")
    x = torch.randn(3, requires_grad=True)
    y = x * x
    z = y.sum()  # backward() needs a single number to start from
    z.backward()  # fills x.grad with dz/dx
    print(f"x      = {x.detach()}\nx.grad = {x.grad}\n2 * x  = {2 * x.detach()}")
    print("By hand: z = x1^2 + x2^2 + x3^2, so dz/dxi = 2 xi.")
    check(torch.allclose(x.grad, 2 * x.detach()), "x.grad equals 2x, the derivative worked out by hand")
    return {"example1_x": x.detach().clone(), "example1_grad": x.grad.clone()}


def second_example() -> torch.Tensor:
    """The posts' y = x + 2; z = y * y * 5; out = z.mean() on ones(2, 3): every gradient is 5."""
    section(3, "Example 2: y = x + 2; z = y * y * 5; out = z.mean() gives 5 everywhere")
    x = torch.ones(2, 3, requires_grad=True)
    y = x + 2
    z = y * y * 5
    out = z.mean()
    out.backward()
    print(f"out = {out.item()}\nx.grad =\n{x.grad}")
    print("By hand: out = (1/6) * sum of 5 (xi + 2)^2, so d out/dxi = (1/6) * 10 (xi + 2) = 10 * 3 / 6 = 5 at xi = 1.")
    check(out.item() == 45.0, "out = 5 * (1 + 2)^2 = 45")
    check(torch.equal(x.grad, torch.full((2, 3), 5.0)), "every entry of x.grad is 5")
    return x.grad.clone()


def non_scalar_backward() -> None:
    """backward() on a vector needs the vector to multiply the Jacobian by."""
    section(4, "backward() on a tensor that is not a single number")
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * x
    message = raises(RuntimeError, y.backward, "y.backward() on a vector is an error")
    print(f"  y.backward() -> RuntimeError: {message}")
    y.backward(gradient=torch.ones_like(y))  # same as y.sum().backward()
    print(f"y.backward(gradient=torch.ones_like(y)) -> x.grad = {x.grad.tolist()}")
    check(torch.equal(x.grad, 2 * x.detach()), "passing gradient=ones is the same as y.sum().backward()")


def accumulation() -> dict:
    """Gradients add up across backward() calls until you clear them."""
    section(5, "Gradients accumulate: zero them before each step")
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    history = []
    for call in range(1, 4):
        (x * x).sum().backward()  # each call builds a fresh graph and ADDS 2x to x.grad
        history.append(x.grad.tolist())
        print(f"after backward() number {call}: x.grad = {x.grad.tolist()}")
    check(torch.equal(x.grad, 3 * 2 * x.detach()), "three backward() calls left 3 * 2x in x.grad: they add up")
    x.grad.zero_()  # what optimizer.zero_grad() does for every parameter (it sets them to None by default)
    print(f"after x.grad.zero_(): x.grad = {x.grad.tolist()}")
    check(torch.equal(x.grad, torch.zeros(2)), "x.grad.zero_() cleared them")
    out = (x * x).sum()
    out.backward()
    message = raises(RuntimeError, out.backward, "calling backward() twice on the same graph is an error")
    print(f"  out.backward() again -> RuntimeError: {message}")
    print("  (backward() frees the graph to save memory; pass retain_graph=True only if you really need it twice)")
    return {"accumulated": history}


def detaching() -> None:
    """detach(): the same numbers, cut off from the graph."""
    section(6, "detach(): stop gradients flowing through a value")
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    constant = x.detach()  # shares x's memory, but autograd treats it as a constant
    print(f"x.detach(): requires_grad {constant.requires_grad}, same memory as x: "
          f"{constant.data_ptr() == x.data_ptr()}")
    check(not constant.requires_grad and constant.data_ptr() == x.data_ptr(),
          "detach() gives the same values in the same memory, with requires_grad=False")
    (x * constant).sum().backward()
    print(f"z = (x * x.detach()).sum(): x.grad = {x.grad.tolist()} (x, not 2x: only one factor is followed)")
    check(torch.equal(x.grad, x.detach()), "with one factor detached the gradient is x instead of 2x")


def no_grad() -> None:
    """torch.no_grad(): no graph at all, for evaluation and for updating weights by hand."""
    section(7, "torch.no_grad(): evaluation and hand-written weight updates")
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    with torch.no_grad():
        evaluated = w * 2
    print(f"inside torch.no_grad(): (w * 2).requires_grad = {evaluated.requires_grad}, "
          f"grad_fn = {evaluated.grad_fn}")
    check(not evaluated.requires_grad and evaluated.grad_fn is None, "inside no_grad() no graph is recorded")
    loss = (w ** 2).sum()  # smallest at w = 0
    loss.backward()
    learning_rate = 0.1
    with torch.no_grad():  # an update is not part of the model's computation: don't record it
        w -= learning_rate * w.grad
    w.grad = None
    new_loss = (w ** 2).sum()
    print(f"one step of gradient descent by hand: loss {loss.item():.3f} -> {new_loss.item():.3f}, "
          f"w = {w.detach()}")
    check(new_loss < loss and w.is_leaf and w.requires_grad,
          "the hand-written step lowered the loss and w is still a leaf that requires grad")
    message = raises(RuntimeError, lambda: w.sub_(1.0), "changing a leaf in place outside no_grad() is an error")
    print(f"  w.sub_(1.0) outside no_grad() -> RuntimeError: {message}")


def computation_graph() -> list[str]:
    """grad_fn links each result to the operation that made it."""
    section(8, "The computation graph: grad_fn")
    x = torch.ones(2, 3, requires_grad=True)
    out = ((x + 2) * (x + 2) * 5).mean()
    names = []
    node = out.grad_fn
    while node is not None:  # follow the first input of each operation back towards x
        names.append(type(node).__name__)
        inputs = [fn for fn, _ in node.next_functions if fn is not None]
        node = inputs[0] if inputs else None
    print("out.grad_fn, then back through next_functions:\n  " + " <- ".join(names))
    check(names[0].startswith("MeanBackward") and any(n.startswith("MulBackward") for n in names)
          and any(n.startswith("AddBackward") for n in names) and names[-1] == "AccumulateGrad",
          "the graph runs mean <- mul <- add back to AccumulateGrad, which writes x.grad")
    check(x.grad_fn is None, "a leaf made by you has no grad_fn")
    return names


def variable() -> None:
    """What Variable was, and what replaced it."""
    section(9, "Variable: what it was and why it is gone")
    print("Before PyTorch 0.4 (2018) a tensor had to be wrapped in Variable(tensor, requires_grad=True)\n"
          "for autograd to follow it. Since 0.4 every tensor can do that itself, and Variable(...) just\n"
          "returns a plain tensor. Old forms and today's: Variable(t) -> t (or t.requires_grad_()),\n"
          "loss.data[0] -> loss.item(), volatile=True -> with torch.no_grad():.")
    from torch.autograd import Variable  # still importable, only so that old code keeps running

    old = Variable(torch.ones(2), requires_grad=True)
    check(type(old) is torch.Tensor and old.requires_grad,
          "Variable(t, requires_grad=True) gives back an ordinary torch.Tensor")
    loss = (old * 3).sum()
    print(f"loss.item() = {loss.item()} (a Python float; loss.data[0] fails on a 0-d tensor today)")
    raises(IndexError, lambda: loss.data[0], "loss.data[0] is an IndexError: use loss.item()")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(description="T04: autograd, step by step, with every claim checked.")
    parser.add_argument("--seed", type=int, default=1, help="random seed for example 1's x (default: 1)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    seed_everything(args.seed)
    start("T04 - Autograd basics")
    requires_grad()
    example1 = first_example()
    grad_example2 = second_example()
    non_scalar_backward()
    accumulated = accumulation()
    detaching()
    no_grad()
    graph = computation_graph()
    variable()
    return {**example1, "example2_grad": grad_example2, **accumulated, "graph": graph,
            "claims": done()}


if __name__ == "__main__":
    cli.run_main(main)
