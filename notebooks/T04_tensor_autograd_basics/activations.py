# %% [markdown]
# # T04 · Activation functions
#
# The posts' part on activation functions (post 003, section 4): sigmoid, tanh, ReLU, leaky ReLU
# and softmax. Each function is computed twice, with NumPy from its formula and with torch, the two
# are checked equal, and autograd's gradient is checked against the derivative worked out by hand.
# Then why sigmoid's gradients vanish and ReLU units can die, and the plots. Every definition and
# section function is copied from `activations.py` when the notebook is built, and each section
# is called right below its definition. It prints what it does and **checks every claim it makes**
# (`[ok]`); a claim that does not hold stops the cell with `ClaimFailed: claim failed: ...`.
#
# Run the cells from top to bottom (Shift+Enter).
# %% [markdown] zh-CN
# # T04 · 激活函数
#
# 文章里讲激活函数的部分（文章 003 第 4 节）：sigmoid、tanh、ReLU、leaky ReLU 和 softmax。每个函数算两遍，
# 一遍用 NumPy 按公式算，一遍用 torch 算，检查二者相等，再把自动微分得到的梯度和手算的导数对照。
# 然后是 sigmoid 的梯度为什么会消失、ReLU 单元为什么会“死掉”，最后是图。每个定义和每节的函数都是
# 生成笔记本时从 `activations.py` 原样复制来的，每一节在定义下面直接调用。它打印自己做了什么，
# 并且**检查它说的每一句话**（`[ok]`）；不成立的说法会让单元格停下，报 `ClaimFailed: claim failed: ...`。
#
# 从上到下依次运行单元格（Shift+Enter）。

# %%
#> setup

# %% [markdown]
# ## Settings
#
# The script's flags, as plain variables. `out_dir = None` saves `activations.png` and
# `softmax.png` where the script does: a new run folder under the repository's `runs/`. `show` is
# the script's `--show`: here it shows the figures under their cell. `x` is `main()`'s grid, -6 to 6
# in steps of 0.05. Everything runs on the CPU, as in the script.
# %% [markdown] zh-CN
# ## 设置
#
# 脚本的命令行参数，这里写成普通变量。`out_dir = None` 让 `activations.png` 和 `softmax.png` 保存到脚本保存的地方：
# 仓库 `runs/` 下新建的运行目录。`show` 就是脚本的 `--show`：在这里，图显示在单元格下面。
# `x` 是 `main()` 里的网格，从 -6 到 6，步长 0.05。和脚本一样，一切都在 CPU 上运行。

# %%
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.run import new_folder
from T04_tensor_autograd_basics.lesson import check, done, section, start

out_dir = None
show = True  # the script's --show
#> activations.py: main "out_dir, _ = new_folder" "start("
start("T04 - Activation functions")
#> activations.py: main "x = np.linspace" "curves ="
print(f"run folder {out_dir}; x: {len(x)} points from {x[0]} to {x[-1]}")

# %% [markdown]
# ## 1. sigmoid, tanh, ReLU, leaky ReLU
#
# The posts' four element-wise functions, each from its formula in NumPy and from torch, with
# their derivatives worked out by hand. Autograd computes the gradient of `outputs.sum()`: each
# output depends on one input only, so that gradient is the derivative at every point.
# %% [markdown] zh-CN
# ## 1. sigmoid、tanh、ReLU、leaky ReLU
#
# 文章里的四个逐元素函数，每个都按公式用 NumPy 算一遍，再用 torch 算一遍，还有手算的导数。自动微分计算
# `outputs.sum()` 的梯度：每个输出只依赖一个输入，所以这个梯度就是每个点上的导数。

# %%
#> activations.py: LEAKY_SLOPE, NUMPY_FUNCTIONS, TORCH_FUNCTIONS, DERIVATIVES, elementwise_functions
curves = elementwise_functions(x)

# %% [markdown]
# ## 2. softmax
#
# The posts' softmax, which they plot "along x" like the others. Softmax works on a whole vector of
# scores: positive numbers that add up to 1. Over a grid of x values its value at a point depends on
# how many points the grid has, so that curve means nothing. And the textbook formula overflows
# for large scores; subtracting the largest score first, as torch does, does not.
# %% [markdown] zh-CN
# ## 2. softmax
#
# 文章里的 softmax，文章像画其他函数一样把它“沿 x”画出来。softmax 作用在一整个分数向量上：
# 得到加起来等于 1 的正数。在一个 x 网格上算时，某一点的值取决于网格有多少个点，所以那条曲线没有意义。
# 另外，教科书上的公式在分数很大时会溢出；像 torch 那样先减去最大的分数就不会。

# %%
#> activations.py: softmax_numpy, softmax_section
softmax = softmax_section(x)

# %% [markdown]
# ## 3. Gradients: sigmoid saturates, ReLU can die
#
# The pros and cons the post lists (post 003, section 4.3), checked: sigmoid's gradient is at most
# 0.25 and almost 0 for large |x|, so through many layers gradients vanish; a ReLU unit whose input is
# always negative gets no gradient at all, while leaky ReLU keeps a small one.
# %% [markdown] zh-CN
# ## 3. 梯度：sigmoid 会饱和，ReLU 会“死掉”
#
# 检查文章列出的优缺点（文章 003 第 4.3 节）：sigmoid 的梯度最大只有 0.25，|x| 大时几乎为 0，
# 所以经过很多层之后梯度会消失；输入总是负数的 ReLU 单元完全得不到梯度，leaky ReLU 则保留一个小梯度。

# %%
#> activations.py: gradients_section
facts = gradients_section(curves, x)

# %% [markdown]
# ## 4. The plots
#
# The script's own plotting functions and its section 4: each function (solid) and its gradient from
# autograd (dashed), then softmax as bars beside the post's "softmax along x" on three grids. Both
# figures are also saved as PNG files in the run folder.
# %% [markdown] zh-CN
# ## 4. 图
#
# 脚本自己的画图函数和它的第 4 节：每个函数（实线）和自动微分得到的梯度（虚线）；然后用柱状图画 softmax，
# 旁边是文章的“沿 x 的 softmax”在三种网格上的样子。两张图也以 PNG 文件保存在运行目录里。

# %%
#> activations.py: plot_activations, plot_softmax
#> activations.py: main "section(4" "Run folder"

# %% [markdown]
# ## All the claims
#
# The script's last lines: where the figures went, and how many claims the cells above checked
# (each run of a cell counts again).
# %% [markdown] zh-CN
# ## 所有说法
#
# 脚本的最后几行：图保存在哪里，以及上面的单元格一共检查了多少个说法（重新运行一个单元格会再计一次）。

# %%
print(f"Run folder: {out_dir} (activations.png, softmax.png)")
claims = done()

# %% [markdown]
# ## Next
#
# - The same sections from a terminal: `python activations.py` (`--show` to open the figures).
# - Change a line and re-run from that cell: `LEAKY_SLOPE = 0.2` in section 1, and the leaky ReLU's
#   gradient in the figure follows.
# - Then `save_load`, the last notebook of this lesson.
# %% [markdown] zh-CN
# ## 接下来
#
# - 在终端里运行同样的几节：`python activations.py`（加 `--show` 打开图）。
# - 改一行，从那个单元格开始重新运行：第 1 节写 `LEAKY_SLOPE = 0.2`，图里 leaky ReLU 的梯度随之改变。
# - 然后是本课的最后一个笔记本 `save_load`。
