# %% [markdown]
# # T04 · Tensor basics
#
# The posts' part on tensors, one section per cell: creating tensors, their shape, dtype and
# device, conversions, 0-D tensors, bool/int8/complex dtypes, arithmetic, reshaping, indexing,
# reductions, the NumPy bridge and moving tensors to a GPU. Each section is a function of
# `tensor_basics.py`, copied here when the notebook is built, and called right below its
# definition. It prints what it does and **checks every claim it makes**: a claim that holds is
# printed with `[ok]`; one that does not stops the cell with `ClaimFailed: claim failed: ...`.
#
# Run the cells from top to bottom (Shift+Enter). Change a line in a section and run that cell
# again: the checks tell you whether the claim still holds.
# %% [markdown] zh-CN
# # T04 · 张量基础
#
# 文章里讲张量的部分，一节一个单元格：创建张量，张量的形状、数据类型和设备，类型转换，0 维张量，
# bool、int8 和复数类型，算术运算，改变形状，索引，归约，和 NumPy 互转，把张量移到 GPU 上。
# 每一节是 `tensor_basics.py` 里的一个函数，生成笔记本时原样复制过来，并在定义下面直接调用。
# 它打印自己做了什么，并且**检查它说的每一句话**：成立的说法打印成 `[ok]`；不成立的会让单元格停下，
# 报 `ClaimFailed: claim failed: ...`。
#
# 从上到下依次运行单元格（Shift+Enter）。改一节里的一行，再运行那个单元格：检查会告诉你那句话是否还成立。

# %%
#> setup

# %% [markdown]
# ## Settings
#
# The script's flags, as plain variables: the random seed and the device. `device` is the lesson's
# default choice: an NVIDIA GPU (CUDA) if there is one, then an Apple GPU (MPS), then the CPU;
# write `device = torch.device("cpu")` for the script's `--no-accel`. Only the last section uses it.
# %% [markdown] zh-CN
# ## 设置
#
# 脚本的命令行参数，这里写成普通变量：随机种子和设备。`device` 和课程脚本的默认选择相同：有 NVIDIA GPU
# （CUDA）就用它，其次是 Apple GPU（MPS），最后是 CPU；写 `device = torch.device("cpu")` 就相当于脚本的
# `--no-accel`。只有最后一节用到它。

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from common.device import seed_everything  # seeds Python, NumPy and torch
from T04_tensor_autograd_basics.lesson import check, done, raises, section, start

seed = 1
device = torch.device("cuda" if torch.cuda.is_available()
                      else "mps" if torch.backends.mps.is_available() else "cpu")
seed_everything(seed)
start("T04 - Tensor basics")
print(f"Using device: {device} | torch {torch.__version__}")

# %% [markdown]
# ## 1. Creating tensors
#
# The posts' part on creating tensors (post 001, section 2). `torch.tensor` copies its data;
# `torch.as_tensor` and `torch.from_numpy` share the NumPy array's memory. Then the makers of
# zeros, ones and random numbers, and the trap in the old `torch.Tensor(2, 3)`: the numbers are a
# shape, not data.
# %% [markdown] zh-CN
# ## 1. 创建张量
#
# 文章里创建张量的部分（文章 001 第 2 节）。`torch.tensor` 复制数据；`torch.as_tensor` 和
# `torch.from_numpy` 与 NumPy 数组共用内存。然后是生成全 0、全 1 和随机数的函数，以及旧写法
# `torch.Tensor(2, 3)` 的陷阱：这两个数是形状，不是数据。

# %%
#> tensor_basics.py: creating_tensors
creating_tensors()

# %% [markdown]
# The two random makers of this section, drawn: `torch.rand` is flat on [0, 1), `torch.randn` is
# the bell curve of the standard normal distribution (mean 0, standard deviation 1). Weights are
# usually started from numbers like these.
# %% [markdown] zh-CN
# 把这一节的两个随机数函数画出来：`torch.rand` 在 [0, 1) 上均匀分布，`torch.randn` 是标准正态分布的钟形曲线
# （均值 0，标准差 1）。权重通常就从这样的数开始。

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3))
left.hist(torch.rand(10_000).numpy(), bins=50)
left.set(title="torch.rand(10_000): uniform on [0, 1)", xlabel="value", ylabel="count")
right.hist(torch.randn(10_000).numpy(), bins=50, color="tab:orange")
right.set(title="torch.randn(10_000): mean 0, std 1", xlabel="value")
plt.show()

# %% [markdown]
# ## 2. Shape, dtype and device
#
# The posts' part on a tensor's attributes: the three to print first when something does not fit.
# Python floats become `float32`, but NumPy's `float64` stays `float64`.
# %% [markdown] zh-CN
# ## 2. 形状、数据类型和设备
#
# 文章里讲张量属性的部分：出了不匹配的错误，最先打印这三个。Python 的浮点数变成 `float32`，
# 但 NumPy 的 `float64` 仍是 `float64`。

# %%
#> tensor_basics.py: shape_dtype_device
shape_dtype_device()

# %% [markdown]
# ## 3. Dtypes and conversions
#
# The posts' part on conversions: `.long()` cuts toward zero, an int tensor plus a float gives a
# float tensor, and `uint8` (the type of image pixels) wraps around at 256.
# %% [markdown] zh-CN
# ## 3. 数据类型和转换
#
# 文章里讲类型转换的部分：`.long()` 向 0 截断，整数张量加浮点数得到浮点张量，`uint8`（图片像素的类型）
# 到 256 会回绕。

# %%
#> tensor_basics.py: dtypes_and_conversions
dtypes_and_conversions()

# %% [markdown]
# ## 4. 0-D tensors
#
# The posts' part on scalars: `torch.tensor(3.5)` has no dimensions, as every loss has. `.item()`
# gets the Python number out; indexing it fails, which is why the old `loss.data[0]` no longer
# works.
# %% [markdown] zh-CN
# ## 4. 0 维张量
#
# 文章里讲标量的部分：`torch.tensor(3.5)` 没有维度，每个损失都是这样。`.item()` 取出 Python 数字；
# 对它做索引会出错，所以旧写法 `loss.data[0]` 不能再用了。

# %%
#> tensor_basics.py: zero_d_tensors
facts = zero_d_tensors()

# %% [markdown]
# ## 5. bool, int8/int32 and complex dtypes
#
# The posts' list of dtypes: a comparison gives a `bool` mask that counts and selects, `int8`
# overflows without a warning, and a Python complex number becomes `complex64`.
# %% [markdown] zh-CN
# ## 5. bool、int8/int32 和复数类型
#
# 文章列出的数据类型：比较得到 `bool` 掩码，可以用来计数和挑选元素；`int8` 溢出时不报错；
# Python 的复数变成 `complex64`。

# %%
#> tensor_basics.py: more_dtypes
facts |= more_dtypes()

# %% [markdown]
# ## 6. Arithmetic and in-place operations
#
# The posts' part on operations: three ways to add, `out=`, a trailing underscore for "change this
# tensor in place", and `*` (element by element) against `@` (the matrix product).
# %% [markdown] zh-CN
# ## 6. 算术运算和原地操作
#
# 文章里讲运算的部分：三种加法写法、`out=`、末尾带下划线表示“原地修改这个张量”，以及 `*`（逐元素相乘）
# 和 `@`（矩阵乘法）的区别。

# %%
#> tensor_basics.py: arithmetic
arithmetic()

# %% [markdown]
# ## 7. view, reshape, squeeze, unsqueeze
#
# The posts' part on reshaping: `view` shares memory and refuses a transposed tensor, `reshape`
# copies when it must, and `unsqueeze(0)` adds the batch dimension a model expects.
# %% [markdown] zh-CN
# ## 7. view、reshape、squeeze、unsqueeze
#
# 文章里讲改变形状的部分：`view` 共用内存，对转置后的张量会拒绝；`reshape` 必要时复制；
# `unsqueeze(0)` 加上模型需要的 batch 维度。

# %%
#> tensor_basics.py: reshaping
reshaping()

# %% [markdown]
# An image is a tensor too. torch keeps a colour image as (channels, height, width); matplotlib,
# PIL and NumPy as (height, width, channels). `permute(1, 2, 0)` reorders the dimensions (a view,
# like `t()`), so the picture below is a torch image shown by matplotlib: red grows from left to
# right, green from top to bottom.
# %% [markdown] zh-CN
# 图片也是张量。torch 把彩色图片存成（通道, 高, 宽）；matplotlib、PIL 和 NumPy 存成（高, 宽, 通道）。
# `permute(1, 2, 0)` 重新排列维度（和 `t()` 一样是视图），所以下面是一张 torch 图片由 matplotlib 显示：
# 红色从左到右变强，绿色从上到下变强。

# %%
height, width = 48, 64
image = torch.zeros(3, height, width)                          # (C, H, W), as torch holds images
image[0] = torch.linspace(0, 1, width)                         # red: one row, broadcast to every row
image[1] = torch.linspace(0, 1, height).unsqueeze(1)           # green: one column, broadcast to every column
image[2] = 0.5                                                 # blue: the same everywhere
print(f"image {tuple(image.shape)} -> image.permute(1, 2, 0) {tuple(image.permute(1, 2, 0).shape)}")
plt.figure(figsize=(4, 3))
plt.imshow(image.permute(1, 2, 0).numpy())
plt.title("a (3, 48, 64) tensor as a picture")
plt.show()

# %% [markdown]
# ## 8. Indexing and slicing
#
# The posts' part on indexing: rows, columns, slices, masks and index lists. A slice is a view of
# the tensor; a mask or an index list makes a copy.
# %% [markdown] zh-CN
# ## 8. 索引和切片
#
# 文章里讲索引的部分：行、列、切片、掩码和索引列表。切片是原张量的视图；掩码和索引列表会复制。

# %%
#> tensor_basics.py: indexing
indexing()

# %% [markdown]
# ## 9. sum, mean, max and min with dim
#
# The posts' part on reductions: `dim=0` reduces down the columns, `dim=1` along each row, and
# `max(dim=1)` also says where the largest value is (the argmax a classifier predicts with).
# %% [markdown] zh-CN
# ## 9. 带 dim 的 sum、mean、max 和 min
#
# 文章里讲归约的部分：`dim=0` 沿列归约，`dim=1` 沿每一行归约；`max(dim=1)` 还给出最大值的位置
# （分类器用它做预测的 argmax）。

# %%
#> tensor_basics.py: reductions
reductions()

# %% [markdown]
# ## 10. The NumPy bridge
#
# The posts' part on NumPy: `torch.from_numpy` and `.numpy()` share memory both ways, and a tensor
# that requires grad needs `.detach()` first.
# %% [markdown] zh-CN
# ## 10. 和 NumPy 互转
#
# 文章里讲 NumPy 的部分：`torch.from_numpy` 和 `.numpy()` 两个方向都共用内存；需要梯度的张量要先
# `.detach()`。

# %%
#> tensor_basics.py: numpy_bridge
numpy_bridge()

# %% [markdown]
# ## 11. Moving tensors between the CPU and an accelerator
#
# The posts' part on the GPU: `x.to(device)`, computing where the data is, and `.cpu()` to bring a
# result back. On a CPU-only machine the moves run on the CPU, and the cell says so.
# %% [markdown] zh-CN
# ## 11. 在 CPU 和加速器之间移动张量
#
# 文章里讲 GPU 的部分：`x.to(device)`，在数据所在的设备上计算，再用 `.cpu()` 把结果取回来。
# 在只有 CPU 的机器上，这些移动都在 CPU 上进行，单元格会说明这一点。

# %%
#> tensor_basics.py: devices
facts |= devices(device)

# %% [markdown]
# ## All the claims
#
# The script's last line: how many claims the cells above checked (each run of a cell counts again).
# %% [markdown] zh-CN
# ## 所有说法
#
# 脚本的最后一行：上面的单元格一共检查了多少个说法（重新运行一个单元格会再计一次）。

# %%
claims = done()

# %% [markdown]
# ## Next
#
# - The same sections from a terminal: `python tensor_basics.py` (add `--no-accel` for the CPU).
# - Change a line and re-run its cell: `torch.tensor(array)` → `torch.as_tensor(array)` in
#   section 1, or `dtype=torch.int16` for `small` in section 5, and see which claim stops.
# - Then `autograd_basics`, the next notebook of this lesson.
# %% [markdown] zh-CN
# ## 接下来
#
# - 在终端里运行同样的几节：`python tensor_basics.py`（加 `--no-accel` 只用 CPU）。
# - 改一行，重新运行它的单元格：把第 1 节的 `torch.tensor(array)` 换成 `torch.as_tensor(array)`，
#   或在第 5 节给 `small` 写 `dtype=torch.int16`，看哪个说法不成立。
# - 然后是本课的下一个笔记本 `autograd_basics`。
