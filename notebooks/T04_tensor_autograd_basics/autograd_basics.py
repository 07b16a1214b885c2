# %% [markdown]
# # T04 · Autograd basics
#
# The posts' part on autograd, one section per cell: which tensors autograd follows, the posts'
# two gradient examples checked against the answer worked out by hand, gradients that add up,
# `detach()`, `torch.no_grad()`, the graph behind `grad_fn`, and what the old `Variable` was.
# Each section is a function of `autograd_basics.py`, copied here when the notebook is built and
# called right below its definition. It prints what it does and **checks every claim it makes**
# (`[ok]`); a claim that does not hold stops the cell with `ClaimFailed: claim failed: ...`.
#
# Run the cells from top to bottom (Shift+Enter).
# %% [markdown] zh-CN
# # T04 · 自动微分基础
#
# 文章里讲自动微分的部分，一节一个单元格：自动微分跟踪哪些张量，文章的两个求梯度例子（和手算的结果对照），
# 梯度会累加，`detach()`，`torch.no_grad()`，`grad_fn` 背后的计算图，以及旧的 `Variable` 是什么。
# 每一节是 `autograd_basics.py` 里的一个函数，生成笔记本时原样复制过来，并在定义下面直接调用。
# 它打印自己做了什么，并且**检查它说的每一句话**（`[ok]`）；不成立的说法会让单元格停下，
# 报 `ClaimFailed: claim failed: ...`。
#
# 从上到下依次运行单元格（Shift+Enter）。

# %%
#> setup

# %% [markdown]
# ## Settings
#
# The script has one flag, the random seed: it picks example 1's `x`. Autograd runs wherever the
# tensors are; these small examples stay on the CPU, as in the script.
# %% [markdown] zh-CN
# ## 设置
#
# 脚本只有一个参数：随机种子，它决定例 1 的 `x`。自动微分在张量所在的设备上运行；这些小例子和脚本一样留在 CPU 上。

# %%
import matplotlib.pyplot as plt
import torch

from common.device import seed_everything  # seeds Python, NumPy and torch
from T04_tensor_autograd_basics.lesson import check, done, raises, section, start

seed = 1
seed_everything(seed)
start("T04 - Autograd basics")
print(f"torch {torch.__version__}")

# %% [markdown]
# ## 1. requires_grad
#
# The posts' part on `requires_grad`: a tensor you make with `requires_grad=True` is a leaf that
# autograd follows, and everything computed from it is followed too.
# %% [markdown] zh-CN
# ## 1. requires_grad
#
# 文章里讲 `requires_grad` 的部分：用 `requires_grad=True` 创建的张量是自动微分跟踪的叶子节点，
# 由它算出来的结果也都会被跟踪。

# %%
#> autograd_basics.py: requires_grad
requires_grad()

# %% [markdown]
# ## 2. Example 1: y = x * x; z = y.sum()
#
# The posts' first gradient example. `z.backward()` fills `x.grad` with dz/dx, and by hand
# dz/dxi = 2 xi.
# %% [markdown] zh-CN
# ## 2. 例 1：y = x * x; z = y.sum()
#
# 文章的第一个求梯度例子。`z.backward()` 把 dz/dx 写进 `x.grad`；手算得 dz/dxi = 2 xi。

# %%
#> autograd_basics.py: first_example
example1 = first_example()

# %% [markdown]
# The same example on many points at once, drawn: the function `y = x * x`, the gradient that
# autograd put into `x.grad`, and the derivative `2x` worked out by hand (the dots). Each `y` depends
# on its own `x` only, so the gradient of `y.sum()` is the derivative at every point.
# %% [markdown] zh-CN
# 把同一个例子放到很多点上一起算，画出来：函数 `y = x * x`、自动微分写进 `x.grad` 的梯度，以及手算的导数
# `2x`（圆点）。每个 `y` 只依赖它自己的 `x`，所以 `y.sum()` 的梯度就是每个点上的导数。

# %%
x = torch.linspace(-3, 3, 61, requires_grad=True)
y = x * x
y.sum().backward()
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(x.detach(), y.detach(), label="y = x * x")
ax.plot(x.detach(), x.grad, "--", label="x.grad (autograd)")
ax.plot(x.detach()[::6], 2 * x.detach()[::6], "o", label="2x (by hand)")
ax.axhline(0, color="gray", linewidth=0.5)
ax.set(xlabel="x", title="a function and its gradient from autograd")
ax.legend()
plt.show()

# %% [markdown]
# ## 3. Example 2: y = x + 2; z = y * y * 5; out = z.mean()
#
# The posts' second example, on `torch.ones(2, 3)`: every entry of `x.grad` is 5, as the chain rule
# says by hand.
# %% [markdown] zh-CN
# ## 3. 例 2：y = x + 2; z = y * y * 5; out = z.mean()
#
# 文章的第二个例子，输入是 `torch.ones(2, 3)`：`x.grad` 的每个元素都是 5，和用链式法则手算的一样。

# %%
#> autograd_basics.py: second_example
grad_example2 = second_example()

# %% [markdown]
# ## 4. backward() on a tensor that is not a single number
#
# The posts' part on `backward()`: it starts from one number. On a vector it needs
# `gradient=...`, and `gradient=ones` is the same as `.sum().backward()`.
# %% [markdown] zh-CN
# ## 4. 对不是单个数的张量调用 backward()
#
# 文章里讲 `backward()` 的部分：它从一个数开始。对向量调用时需要 `gradient=...`，
# `gradient=ones` 和 `.sum().backward()` 一样。

# %%
#> autograd_basics.py: non_scalar_backward
non_scalar_backward()

# %% [markdown]
# ## 5. Gradients accumulate
#
# The posts' part on zeroing gradients: each `backward()` adds to `.grad`. That is why every
# training step starts with `optimizer.zero_grad()`.
# %% [markdown] zh-CN
# ## 5. 梯度会累加
#
# 文章里讲梯度清零的部分：每次 `backward()` 都加到 `.grad` 上。所以每个训练步骤都先调用 `optimizer.zero_grad()`。

# %%
#> autograd_basics.py: accumulation
accumulated = accumulation()

# %% [markdown]
# ## 6. detach()
#
# The posts' part on `detach()`: the same numbers in the same memory, but autograd treats them as
# a constant, so only the other factor is followed.
# %% [markdown] zh-CN
# ## 6. detach()
#
# 文章里讲 `detach()` 的部分：同样的数、同一块内存，但自动微分把它当作常数，所以只跟踪另一个因子。

# %%
#> autograd_basics.py: detaching
detaching()

# %% [markdown]
# ## 7. torch.no_grad()
#
# The posts' part on `no_grad()`: no graph is recorded, which is what evaluation and a weight
# update written by hand need.
# %% [markdown] zh-CN
# ## 7. torch.no_grad()
#
# 文章里讲 `no_grad()` 的部分：不记录计算图，评估和手写的权重更新都需要这样。

# %%
#> autograd_basics.py: no_grad
no_grad()

# %% [markdown]
# ## 8. The computation graph: grad_fn
#
# The posts' part on the computation graph: each result's `grad_fn` names the operation that made
# it, and `next_functions` leads back to `AccumulateGrad`, which writes `x.grad`.
# %% [markdown] zh-CN
# ## 8. 计算图：grad_fn
#
# 文章里讲计算图的部分：每个结果的 `grad_fn` 是产生它的运算，顺着 `next_functions` 往回走，
# 一直到写入 `x.grad` 的 `AccumulateGrad`。

# %%
#> autograd_basics.py: computation_graph
graph = computation_graph()

# %% [markdown]
# ## 9. Variable
#
# The posts' `Variable(...)`: gone since PyTorch 0.4 (2018). It still imports, and gives back a
# plain tensor; `loss.data[0]` is `loss.item()` today.
# %% [markdown] zh-CN
# ## 9. Variable
#
# 文章里的 `Variable(...)`：从 PyTorch 0.4（2018 年）起就不需要了。它还能导入，返回的是普通张量；
# `loss.data[0]` 今天写作 `loss.item()`。

# %%
#> autograd_basics.py: variable
variable()

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
# - The same sections from a terminal: `python autograd_basics.py`.
# - In the figure cell, try `y = torch.sin(x)`: `x.grad` becomes `cos(x)` (the dots still show 2x).
# - Then `dataset_dataloader`, the next notebook of this lesson.
# %% [markdown] zh-CN
# ## 接下来
#
# - 在终端里运行同样的几节：`python autograd_basics.py`。
# - 在画图的单元格里试试 `y = torch.sin(x)`：`x.grad` 变成 `cos(x)`（圆点仍是 2x）。
# - 然后是本课的下一个笔记本 `dataset_dataloader`。
