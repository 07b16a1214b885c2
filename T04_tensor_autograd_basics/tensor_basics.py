"""T04 · Tensors: creating them, shape/dtype/device, 0-D/bool/int8/complex, arithmetic, reshaping, indexing, devices.

Every section prints what it does and checks what it claims; a claim that does not hold
stops the script with "error: claim failed: ...".

    python T04_tensor_autograd_basics/tensor_basics.py             # the best device available
    python T04_tensor_autograd_basics/tensor_basics.py --no-accel  # CPU only
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script, Ctrl-C while torch loads (a second or two) stops it, no traceback
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # (imported, e.g. in a notebook, nothing changes)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `common/` imports from any folder

import numpy as np
import torch

from common import cli
from common.device import seed_everything, select_device
from T04_tensor_autograd_basics.lesson import check, done, raises, section, start


def creating_tensors() -> None:
    """torch.tensor, as_tensor, from_numpy, zeros/ones/rand/randn, and the trap in torch.Tensor(2, 3)."""
    section(1, "Creating tensors")
    data = [[1, 2], [3, 4]]
    x = torch.tensor(data)  # always copies the data
    print(f"torch.tensor({data}) =\n{x}")
    array = np.array([1.0, 2.0, 3.0])
    copied, shared, bridged = torch.tensor(array), torch.as_tensor(array), torch.from_numpy(array)
    array[0] = 100.0  # change the array after making the three tensors
    print(f"after array[0] = 100: torch.tensor -> {copied.tolist()}, torch.as_tensor -> {shared.tolist()}, "
          f"torch.from_numpy -> {bridged.tolist()}")
    check(copied[0] == 1.0, "torch.tensor(array) copied the data: changing the array did not change it")
    check(shared[0] == 100.0 and bridged[0] == 100.0,
          "torch.as_tensor(array) and torch.from_numpy(array) share the array's memory")

    zeros, ones = torch.zeros(2, 3), torch.ones(2, 3)
    uniform, normal = torch.rand(1000), torch.randn(1000)
    print(f"torch.zeros(2, 3) =\n{zeros}\ntorch.ones(2, 3) =\n{ones}")
    print(f"torch.rand(1000): min {uniform.min():.3f}, max {uniform.max():.3f} (uniform on [0, 1))")
    print(f"torch.randn(1000): mean {normal.mean():.3f}, std {normal.std():.3f} (standard normal)")
    check((zeros == 0).all() and (ones == 1).all(), "zeros() is all 0 and ones() is all 1")
    check(uniform.min() >= 0 and uniform.max() < 1, "rand() draws from [0, 1)")
    check(abs(normal.mean()) < 0.2 and abs(normal.std() - 1) < 0.2, "randn() draws with mean about 0, std about 1")
    print(f"torch.arange(0, 10, 3) = {torch.arange(0, 10, 3).tolist()}, "
          f"torch.linspace(0, 1, 5) = {torch.linspace(0, 1, 5).tolist()}, "
          f"torch.full((2,), 7.0) = {torch.full((2,), 7.0).tolist()}")

    # Old posts write torch.Tensor(2, 3). The numbers are a SHAPE, and the values are whatever
    # bytes were in that memory: sometimes zeros, sometimes garbage. Today: torch.empty(2, 3)
    # when you will overwrite every value anyway, torch.zeros(2, 3) otherwise.
    legacy = torch.Tensor(2, 3)
    print(f"torch.Tensor(2, 3) has shape {tuple(legacy.shape)} (values: uninitialised memory), "
          f"while torch.tensor([2, 3]) = {torch.tensor([2, 3]).tolist()}")
    check(legacy.shape == (2, 3) and torch.empty(2, 3).shape == (2, 3),
          "torch.Tensor(2, 3) and torch.empty(2, 3) make a 2x3 tensor of uninitialised values")
    check(torch.tensor([2, 3]).shape == (2,), "torch.tensor([2, 3]) is the data [2, 3], shape (2,)")


def shape_dtype_device() -> None:
    """The three attributes to print first when something does not fit."""
    section(2, "Shape, dtype and device")
    x = torch.rand(2, 3)
    print(f"x = torch.rand(2, 3): shape {x.shape}, size() {x.size()}, ndim {x.ndim}, numel() {x.numel()}, "
          f"dtype {x.dtype}, device {x.device}")
    check(x.shape == x.size() == (2, 3) and x.numel() == 6, "x.shape is x.size(): (2, 3), 6 elements")
    check(torch.tensor([1.5]).dtype == torch.float32, "Python floats become float32 (torch's default)")
    check(torch.tensor([1]).dtype == torch.int64, "Python ints become int64")
    check(torch.from_numpy(np.array([1.5])).dtype == torch.float64,
          "NumPy's float64 stays float64: call .float() before feeding it to a model")


def dtypes_and_conversions() -> None:
    """.float(), .long(), .to(dtype), type promotion and integer overflow."""
    section(3, "Dtypes and conversions")
    x = torch.tensor([-1.5, 0.5, 1.75])
    print(f"x = {x.tolist()} ({x.dtype}); x.long() = {x.long().tolist()}; x.to(torch.float16) = "
          f"{x.to(torch.float16).tolist()}; x.double().dtype = {x.double().dtype}")
    check(x.long().tolist() == [-1, 0, 1], "converting to an integer dtype cuts toward zero (no rounding)")
    mixed = torch.tensor([1, 2]) + 0.5
    print(f"torch.tensor([1, 2]) + 0.5 = {mixed.tolist()} ({mixed.dtype})")
    check(mixed.dtype == torch.float32, "int tensor + float gives a float tensor (type promotion)")
    check((torch.tensor([7]) / 2).item() == 3.5 and (torch.tensor([7]) // 2).item() == 3,
          "/ always divides exactly (gives a float); // is floor division")
    pixel = torch.tensor([250], dtype=torch.uint8)
    print(f"uint8 250 + 10 = {(pixel + 10).item()} (wraps around at 256)")
    check((pixel + 10).item() == 4, "uint8 arithmetic wraps around: convert images with .float() first")


def zero_d_tensors() -> dict:
    """torch.tensor(3.5): a tensor with no dimensions, as every loss is; .item() gets the number out."""
    section(4, "0-D tensors: one number, no dimensions")
    scalar = torch.tensor(3.5)
    value = scalar.item()
    print(f"s = torch.tensor(3.5): shape {scalar.shape}, dim() {scalar.dim()}, numel() {scalar.numel()}; "
          f"s.item() = {value!r} ({type(value).__name__})")
    check(scalar.dim() == 0 and scalar.shape == torch.Size([]) and scalar.numel() == 1,
          "torch.tensor(3.5) is 0-D: dim() 0, shape torch.Size([]), one element")
    check(value == 3.5 and type(value) is float, ".item() turns a one-element tensor into a plain Python number")
    one = torch.tensor([3.5])
    print(f"torch.tensor([3.5]) is not the same thing: shape {one.shape}, dim() {one.dim()}")
    check(one.dim() == 1 and one.shape == (1,), "torch.tensor([3.5]) is 1-D, shape (1,): a list with one number")
    total = torch.tensor([1.0, 2.0, 3.0]).sum()
    print(f"torch.tensor([1.0, 2.0, 3.0]).sum() = {total} (shape {total.shape})")
    check(total.dim() == 0 and total.item() == 1.0 + 2.0 + 3.0,
          "a reduction over everything (sum(), mean(), a loss) gives a 0-D tensor")
    message = raises(IndexError, lambda: total[0],
                     "a 0-D tensor has nothing to index: that is why the old loss.data[0] fails; use loss.item()")
    print(f"  total[0] -> IndexError: {message}")
    return {"scalar": (tuple(scalar.shape), scalar.dim(), value)}


def more_dtypes() -> dict:
    """bool masks, small integer types (int8 wraps around), complex numbers."""
    section(5, "bool, int8/int32 and complex dtypes")
    values = [3, 8, 1, 9, 5]
    x = torch.tensor(values)
    mask = x > 4
    print(f"x = {values}; mask = x > 4 -> {mask.tolist()} ({mask.dtype}); mask.sum() = {mask.sum().item()}; "
          f"x[mask] = {x[mask].tolist()}; mask.float().mean() = {mask.float().mean().item():.2f}")
    check(mask.dtype == torch.bool and mask.tolist() == [v > 4 for v in values],
          "a comparison gives a bool tensor: one True/False per element")
    check(mask.sum().item() == sum(1 for v in values if v > 4) == 3
          and math.isclose(mask.float().mean().item(), 3 / 5, rel_tol=1e-6),
          "mask.sum() counts the Trues (True adds as 1), and mask.float().mean() is their share, 3/5")
    check((mask & (x < 9)).tolist() == [4 < v < 9 for v in values]
          and (mask | (x == 1)).tolist() == [v > 4 or v == 1 for v in values]
          and (~mask).tolist() == [v <= 4 for v in values],
          "&, | and ~ combine masks element by element (and, or, not)")
    message = raises(RuntimeError, lambda: mask and (x < 9), "Python's `and` on a tensor of several values is an error")
    print(f"  mask and (x < 9) -> RuntimeError: {message}")

    for dtype in (torch.int8, torch.int32):
        info = torch.iinfo(dtype)
        print(f"{dtype}: {info.min:,} to {info.max:,}, element_size() = {torch.zeros(1, dtype=dtype).element_size()} "
              "(bytes per number)")
    check((torch.iinfo(torch.int8).min, torch.iinfo(torch.int8).max) == (-2**7, 2**7 - 1)
          and (torch.iinfo(torch.int32).min, torch.iinfo(torch.int32).max) == (-2**31, 2**31 - 1)
          and torch.zeros(1, dtype=torch.int8).element_size() == 1
          and torch.zeros(1, dtype=torch.int32).element_size() == 4,
          "int8 is 1 byte, -128..127 (-2^7..2^7 - 1); int32 is 4 bytes, -2^31..2^31 - 1")
    small = torch.tensor([127], dtype=torch.int8)
    print(f"int8 127 + 1 = {(small + 1).item()} ({(small + 1).dtype}); as int32: {(small.int() + 1).item()}")
    check((small + 1).dtype == torch.int8 and (small + 1).item() == (127 + 1 + 128) % 256 - 128 == -128,
          "int8 overflow wraps around without an error: 127 + 1 = -128")
    check((small.int() + 1).item() == 128, "convert to a wider type first (.int(), .long()) to get 128")

    z = torch.tensor([3 + 4j, 1 - 1j])
    print(f"z = torch.tensor([3+4j, 1-1j]): dtype {z.dtype}, {z.element_size()} bytes each; "
          f"z.real = {z.real.tolist()}, z.imag = {z.imag.tolist()}, "
          f"z.abs() = {[round(a, 4) for a in z.abs().tolist()]}")
    check(z.dtype == torch.complex64 and z.real.dtype == torch.float32 and z.element_size() == 8,
          "Python complex numbers become complex64: a float32 real part and a float32 imaginary part")
    check(z.real.tolist() == [3.0, 1.0] and z.imag.tolist() == [4.0, -1.0]
          and torch.allclose(z.abs(), torch.tensor([abs(3 + 4j), abs(1 - 1j)]))
          and torch.equal(z * z, torch.tensor([(3 + 4j) ** 2, (1 - 1j) ** 2])),
          "z.real, z.imag, z.abs() = sqrt(real^2 + imag^2) (5 and 1.4142) and z * z follow complex arithmetic")
    return {"mask": mask.tolist(), "mask_sum": mask.sum().item(), "int8_wrap": (small + 1).item(),
            "int_ranges": {str(d): (torch.iinfo(d).min, torch.iinfo(d).max) for d in (torch.int8, torch.int32)},
            "complex": (z.real.tolist(), z.imag.tolist(), z.abs().tolist())}


def arithmetic() -> None:
    """Three spellings of addition, out=, in-place ops with a trailing underscore, * against @."""
    section(6, "Arithmetic, out= and in-place operations")
    x, y = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[10.0, 20.0], [30.0, 40.0]])
    result = torch.empty(2, 2)
    torch.add(x, y, out=result)  # writes into an existing tensor instead of making a new one
    print(f"x + y = {(x + y).tolist()}; torch.add(x, y) = {torch.add(x, y).tolist()}; "
          f"torch.add(x, y, out=result) -> result = {result.tolist()}")
    check(torch.equal(x + y, torch.add(x, y)) and torch.equal(x + y, result), "x + y, torch.add and out= agree")
    address = y.data_ptr()
    y.add_(x)  # a trailing underscore means "change this tensor in place"
    print(f"after y.add_(x): y = {y.tolist()}")
    check(torch.equal(y, result) and y.data_ptr() == address,
          "y.add_(x) changed y itself, in the same memory (no new tensor)")
    print(f"x * x = {(x * x).tolist()} (element by element); x @ x = {(x @ x).tolist()} (matrix product)")
    check(torch.equal(x * x, x.pow(2)) and torch.equal(x @ x, torch.matmul(x, x)) and not torch.equal(x * x, x @ x),
          "* multiplies element by element, @ is the matrix product")


def reshaping() -> None:
    """view, reshape, squeeze, unsqueeze, and the case where view refuses."""
    section(7, "view, reshape, squeeze, unsqueeze")
    x = torch.arange(12)
    grid = x.view(3, 4)
    print(f"x = torch.arange(12); x.view(3, 4) =\n{grid}\nx.view(-1, 6).shape = {tuple(x.view(-1, 6).shape)} "
          f"(-1: work this size out)")
    grid[0, 0] = 100
    check(x[0] == 100, "a view shares memory: changing x.view(3, 4) changed x")
    x[0] = 0
    flipped = grid.t()  # transpose: same memory, read in another order, so no longer contiguous
    print(f"grid.t() is contiguous: {flipped.is_contiguous()}")
    message = raises(RuntimeError, lambda: flipped.view(12),
                     "view() refuses a non-contiguous tensor (such as a transpose)")
    print(f"  grid.t().view(12) -> RuntimeError: {message}")
    reshaped = flipped.reshape(12)  # reshape copies when it has to
    print(f"grid.t().reshape(12) = {reshaped.tolist()}")
    check(torch.equal(reshaped, flipped.contiguous().view(12)),
          "reshape() works there: it copies, like .contiguous().view()")
    image = torch.zeros(1, 28, 28)
    print(f"image {tuple(image.shape)}: squeeze() -> {tuple(image.squeeze().shape)}, "
          f"unsqueeze(0) -> {tuple(image.unsqueeze(0).shape)}")
    check(image.squeeze().shape == (28, 28) and image.unsqueeze(0).shape == (1, 1, 28, 28),
          "squeeze() removes dimensions of size 1; unsqueeze(0) adds a batch dimension")


def indexing() -> None:
    """Rows, columns, slices, masks and index lists; which ones share memory."""
    section(8, "Indexing and slicing")
    x = torch.arange(12).view(3, 4)
    print(f"x =\n{x}")
    print(f"x[0] = {x[0].tolist()}, x[:, 1] = {x[:, 1].tolist()}, x[1:, :2] = {x[1:, :2].tolist()}, "
          f"x[-1, -1] = {x[-1, -1].item()}")
    check(x[:, 1].tolist() == [1, 5, 9] and x[1:, :2].tolist() == [[4, 5], [8, 9]], "x[:, 1] is column 1; "
          "x[1:, :2] is rows 1.. and columns 0-1")
    mask = x > 8
    print(f"x[x > 8] = {x[mask].tolist()}, x[[0, 2]] = {x[[0, 2]].tolist()}")
    check(x[mask].tolist() == [9, 10, 11], "a boolean mask picks the elements where it is True")
    column, picked = x[:, 1], x[mask]
    x[0, 1] = -1
    x[2, 3] = -1
    check(column[0] == -1 and picked[-1] == 11, "a slice is a view of x; a mask (or index list) makes a copy")


def reductions() -> None:
    """sum/mean/max/min over everything or along one dim."""
    section(9, "sum, mean, max and min with dim")
    x = torch.tensor([[1.0, 5.0, 3.0], [4.0, 2.0, 6.0]])
    print(f"x =\n{x}")
    print(f"x.sum() = {x.sum().item()}, x.sum(dim=0) = {x.sum(dim=0).tolist()}, "
          f"x.sum(dim=1) = {x.sum(dim=1).tolist()}, x.mean(dim=1) = {x.mean(dim=1).tolist()}")
    check(x.sum(dim=0).tolist() == [5.0, 7.0, 9.0] and x.sum(dim=1).tolist() == [9.0, 12.0],
          "dim=0 sums down the columns (that dimension disappears), dim=1 along each row")
    values, indices = x.max(dim=1)
    print(f"x.max(dim=1) -> values {values.tolist()}, indices {indices.tolist()}; x.min() = {x.min().item()}; "
          f"x.sum(dim=1, keepdim=True).shape = {tuple(x.sum(dim=1, keepdim=True).shape)}")
    check(values.tolist() == [5.0, 6.0] and indices.tolist() == [1, 2] and torch.equal(indices, x.argmax(dim=1)),
          "max(dim=1) returns the largest value of each row and where it is (the argmax)")
    message = raises(RuntimeError, lambda: torch.tensor([1, 2]).mean(), "mean() of an integer tensor is an error")
    print(f"  torch.tensor([1, 2]).mean() -> RuntimeError: {message}")


def numpy_bridge() -> None:
    """tensor.numpy() and torch.from_numpy() share memory, both ways."""
    section(10, "The NumPy bridge")
    a = np.ones(5)
    t = torch.from_numpy(a)
    np.add(a, 1, out=a)  # change the NumPy array in place
    print(f"a = np.ones(5); t = torch.from_numpy(a); np.add(a, 1, out=a) -> t = {t.tolist()}")
    check(np.shares_memory(a, t.numpy()) and t[0] == 2.0, "torch.from_numpy(a) shares memory with a")
    t = torch.ones(5)
    b = t.numpy()
    t.add_(1)
    print(f"t = torch.ones(5); b = t.numpy(); t.add_(1) -> b = {b.tolist()}")
    check(b[0] == 2.0, "t.numpy() shares memory with t (for a CPU tensor)")
    weights = torch.ones(2, requires_grad=True)
    message = raises(RuntimeError, weights.numpy, "numpy() refuses a tensor that requires grad")
    print(f"  weights.numpy() -> RuntimeError: {message}")
    check(weights.detach().numpy().tolist() == [1.0, 1.0], "weights.detach().numpy() works")


def devices(device: torch.device) -> dict:
    """to(device), .cpu(), is_cuda; return what happened, for the tests."""
    section(11, "Moving tensors between the CPU and an accelerator")
    x = torch.ones(2, 2)
    print(f"chosen device: {device} (see --device, --no-accel; torch.cuda.is_available() = "
          f"{torch.cuda.is_available()})")
    if hasattr(torch, "accelerator"):  # torch 2.6 and newer: one API for CUDA, MPS and other accelerators
        available = torch.accelerator.is_available()
        print(f"torch.accelerator.is_available() = {available}"
              + (f", current_accelerator() = {torch.accelerator.current_accelerator()}" if available else ""))
    check(x.to("cpu") is x, "x.to() returns x itself when it is already there (no copy)")
    moved = x.to(device)  # on an accelerator: a copy in its memory; x itself stays on the CPU
    print(f"x.to({str(device)!r}): device {moved.device}, is_cuda {moved.is_cuda}")
    check(moved.device.type == device.type and moved.is_cuda == (device.type == "cuda"),
          f"x.to(device) lives on {device.type}, and is_cuda says whether that is a CUDA GPU")
    back = (moved * 3).cpu()  # compute where the data is, bring the result back to print or plot it
    check(back.device.type == "cpu" and torch.equal(back, x * 3), "(x.to(device) * 3).cpu() equals x * 3")
    if device.type == "cpu":
        print("  No accelerator in use, so the moves above ran on the CPU. (On a GPU: mixing a CPU tensor "
              "with a GPU tensor is an error, and .numpy() needs .cpu() first.)")
        return {"accelerator": False}
    message = raises(RuntimeError, lambda: moved + torch.ones(2, 2),
                     "adding a CPU tensor to an accelerator tensor is an error")
    print(f"  moved + torch.ones(2, 2) -> RuntimeError: {message}")
    raises(TypeError, moved.numpy, ".numpy() on an accelerator tensor is an error: .cpu() first")
    return {"accelerator": True}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(description="T04: tensors, step by step, with every claim checked.")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    parser.add_device_flags()  # --device, --no-cuda, --no-mps, --no-accel (common/cli.py)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = select_device(args)  # reads --device, --no-cuda, --no-mps, --no-accel
    seed_everything(args.seed)
    start("T04 - Tensor basics")
    creating_tensors()
    shape_dtype_device()
    dtypes_and_conversions()
    facts = zero_d_tensors()
    facts |= more_dtypes()
    arithmetic()
    reshaping()
    indexing()
    reductions()
    numpy_bridge()
    facts |= devices(device)
    return {"device": str(device), **facts, "claims": done()}


if __name__ == "__main__":
    cli.run_main(main)
