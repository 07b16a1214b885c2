# %% [markdown]
# # T04 · nn building blocks
#
# The layers, losses and optimizers a network is made of, one section per cell: the official
# "Build the Neural Network" tutorial's `NeuralNetwork` taken apart layer by layer on a batch of
# three 28×28 images, its parameters, then `Conv2d`, `MaxPool2d`, `Dropout` and `BatchNorm2d` on
# their own, the common losses, one optimizer step, and five optimizers on one small problem.
# Every class and section function is copied from `nn_building_blocks.py` when the notebook is
# built, and each section is called right below its definition. It prints what it does and
# **checks every claim it makes** (`[ok]`); a claim that does not hold stops the cell with
# `ClaimFailed: claim failed: ...`.
#
# Run the cells from top to bottom (Shift+Enter).
# %% [markdown] zh-CN
# # T04 · 神经网络的组成部分
#
# 组成一个网络的层、损失函数和优化器，一节一个单元格：把官方教程“Build the Neural Network”的
# `NeuralNetwork` 在一个由三张 28×28 图片组成的 batch 上逐层拆开，看它的参数，再单独试 `Conv2d`、
# `MaxPool2d`、`Dropout` 和 `BatchNorm2d`，然后是常用的损失函数、优化器的一步，以及五个优化器解同一个小问题。
# 每个类和每节的函数都是生成笔记本时从 `nn_building_blocks.py` 原样复制来的，每一节在定义下面直接调用。
# 它打印自己做了什么，并且**检查它说的每一句话**（`[ok]`）；不成立的说法会让单元格停下，
# 报 `ClaimFailed: claim failed: ...`。
#
# 从上到下依次运行单元格（Shift+Enter）。

# %%
#> setup

# %% [markdown]
# ## Settings
#
# The script's flags, as plain variables: the random seed, `draw_graph` (the script's `--graph`,
# which needs the torchviz package and Graphviz) and `out_dir = None`, where `graph.png` would go:
# a new run folder under the repository's `runs/`, as in the script. Everything here runs on the
# CPU, as in the script.
# %% [markdown] zh-CN
# ## 设置
#
# 脚本的命令行参数，这里写成普通变量：随机种子、`draw_graph`（脚本的 `--graph`，需要 torchviz 包和 Graphviz），
# 以及 `out_dir = None`，也就是 `graph.png` 写到的地方：和脚本一样，是仓库 `runs/` 下新建的运行目录。
# 这里的一切都和脚本一样在 CPU 上运行。

# %%
import importlib.util
import math
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

from common.device import seed_everything  # seeds Python, NumPy and torch
from common.run import new_folder
from T04_tensor_autograd_basics.lesson import check, done, section, start

seed = 1
draw_graph = False  # the script's --graph
out_dir = None
seed_everything(seed)
start("T04 - nn building blocks")
print(f"torch {torch.__version__}")

# %% [markdown]
# ## 1. NeuralNetwork, one layer at a time
#
# The posts' part on the official tutorial's network (`Flatten`, `Linear`, `ReLU`, `Sequential`):
# 784 → 512 → 512 → 10. Running its layers one by one shows each shape, and gives exactly what
# `model(images)` gives. The model returns raw scores (logits); `Softmax(dim=1)` turns each image's
# row into probabilities.
# %% [markdown] zh-CN
# ## 1. NeuralNetwork，一次一层
#
# 文章里讲官方教程网络的部分（`Flatten`、`Linear`、`ReLU`、`Sequential`）：784 → 512 → 512 → 10。
# 一层一层地运行，可以看到每一层输出的形状，结果和 `model(images)` 完全相同。模型返回原始分数（logits）；
# `Softmax(dim=1)` 把每张图片那一行变成概率。

# %%
#> nn_building_blocks.py: NeuralNetwork, layer_by_layer
#> nn_building_blocks.py: main "model = NeuralNetwork()" "facts = layer_by_layer"
facts = layer_by_layer(model, images)

# %% [markdown]
# ## 2. Parameters
#
# The posts' part on parameters and their initialisation: `named_parameters()`, counting them
# (669,706), and filling them again with Xavier's uniform initialisation through `model.apply()`.
# %% [markdown] zh-CN
# ## 2. 参数
#
# 文章里讲参数和初始化的部分：`named_parameters()`，数一数一共多少个（669,706 个），再用 `model.apply()`
# 以 Xavier 均匀分布重新初始化。

# %%
#> nn_building_blocks.py: parameters
facts |= parameters(model)

# %% [markdown]
# ## 3. Conv2d and MaxPool2d
#
# The posts' part on convolution and pooling: how each changes the shape. Image layers want
# (N, C, H, W); a 5×5 convolution without padding makes 28×28 into 24×24, and pooling halves it.
# %% [markdown] zh-CN
# ## 3. Conv2d 和 MaxPool2d
#
# 文章里讲卷积层和池化的部分：它们怎样改变形状。处理图片的层要求 (N, C, H, W)；不填充的 5×5 卷积把
# 28×28 变成 24×24，池化再减半。

# %%
#> nn_building_blocks.py: conv_and_pool
facts |= conv_and_pool(images)

# %% [markdown]
# What those 6 maps look like, on a picture with edges instead of the section's random pixels: a
# white frame. Each of the six 5×5 filters (top row) is still untrained random numbers, yet each
# already answers to some edges more than others (middle row: the 24×24 feature maps). Max pooling
# keeps the strongest answer of each 2×2 patch (bottom row: 12×12). The layer is made with the
# random-number state set aside, so the sections below print what the script prints.
# %% [markdown] zh-CN
# 这 6 张特征图是什么样子？换一张有边缘的图片来看，而不是这一节的随机像素：一个白色的方框。
# 六个 5×5 的卷积核（第一行）都还是没训练过的随机数，但每个已经对某些边缘反应更强（第二行：24×24 的特征图）。
# 最大池化保留每个 2×2 小块里最强的反应（第三行：12×12）。创建这一层时把随机数状态先放在一边，
# 所以下面各节打印的和脚本一样。

# %%
frame = torch.zeros(1, 1, 28, 28)  # (N, C, H, W): one grey image
frame[..., 6:22, 6:22] = 1.0
frame[..., 10:18, 10:18] = 0.0
with torch.random.fork_rng():  # set the random-number state aside, and put it back after the block
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 6, kernel_size=5)
with torch.no_grad():
    maps = conv(frame)
    pooled = nn.MaxPool2d(kernel_size=2)(maps)
fig, axes = plt.subplots(3, 7, figsize=(12, 5.5))
for ax in axes.flat:
    ax.axis("off")
axes[1, 0].imshow(frame[0, 0], cmap="gray")
axes[1, 0].set_title("input 28x28")
for channel in range(6):
    axes[0, channel + 1].imshow(conv.weight[channel, 0].detach(), cmap="coolwarm")
    axes[0, channel + 1].set_title(f"filter {channel}")
    axes[1, channel + 1].imshow(maps[0, channel], cmap="viridis")
    axes[1, channel + 1].set_title("map 24x24")
    axes[2, channel + 1].imshow(pooled[0, channel], cmap="viridis")
    axes[2, channel + 1].set_title("pooled 12x12")
plt.show()

# %% [markdown]
# ## 4. Dropout
#
# The posts' part on dropout: in `train()` mode about half the values become 0 (with `p=0.5`) and
# the rest are doubled, so the average stays the same; in `eval()` mode it does nothing.
# %% [markdown] zh-CN
# ## 4. 丢弃
#
# 文章里讲丢弃的部分：训练模式（`train()`）下大约一半的值变成 0（`p=0.5`），其余的乘以 2，平均值不变；
# 评估模式（`eval()`）下它什么也不做。

# %%
#> nn_building_blocks.py: dropout
facts |= dropout()

# %% [markdown]
# ## 5. BatchNorm2d
#
# The posts' part on batch normalisation: in training mode each channel comes out with mean 0 and
# standard deviation 1 over the batch, and the running statistics move towards this batch's; in
# evaluation mode they are used instead.
# %% [markdown] zh-CN
# ## 5. BatchNorm2d
#
# 文章里讲批标准化的部分：训练模式下每个通道在整个 batch 上的均值变成 0、标准差变成 1，同时滑动统计量
# 朝这个 batch 的统计量移动；评估模式下改用滑动统计量。

# %%
#> nn_building_blocks.py: batch_norm
facts |= batch_norm(images)

# %% [markdown]
# ## 6. CrossEntropyLoss and NLLLoss
#
# The posts' part on the loss functions (post 001, sections 6-7): `CrossEntropyLoss` on logits is
# `NLLLoss` on `log_softmax`. Pick one pair; feeding probabilities to `CrossEntropyLoss` gives a
# different, wrong loss.
# %% [markdown] zh-CN
# ## 6. CrossEntropyLoss 和 NLLLoss
#
# 文章里讲损失函数的部分（文章 001 第 6-7 节）：对 logits 用 `CrossEntropyLoss`，等于对 `log_softmax`
# 用 `NLLLoss`。二者选一对；把概率交给 `CrossEntropyLoss` 会得到另一个错误的损失。

# %%
#> nn_building_blocks.py: losses
facts |= losses()

# %% [markdown]
# ## 7. MSE, L1, SmoothL1, BCE and BCEWithLogits
#
# The posts' losses for numbers and for yes/no answers, each checked against its formula, and why
# `BCEWithLogitsLoss` is the one to use: for a confident wrong answer `BCELoss(sigmoid(x))` is clamped
# at 100 with gradient 0, and stops learning.
# %% [markdown] zh-CN
# ## 7. MSE、L1、SmoothL1、BCE 和 BCEWithLogits
#
# 文章里用于数值和是/否问题的损失函数，每个都和公式对照；以及为什么该用 `BCEWithLogitsLoss`：
# 对一个很自信的错误答案，`BCELoss(sigmoid(x))` 被截断在 100，梯度是 0，不再学习。

# %%
#> nn_building_blocks.py: regression_and_binary_losses
facts |= regression_and_binary_losses()

# %% [markdown]
# ## 8. One optimizer step
#
# The posts' part on one training step: `zero_grad()` (gradients add up otherwise), `backward()`
# (a gradient in every parameter's `.grad`), `step()` (move each parameter against it). The loss on
# this batch goes down.
# %% [markdown] zh-CN
# ## 8. 优化器的一步
#
# 文章里讲一个训练步骤的部分：`zero_grad()`（否则梯度会累加），`backward()`（每个参数的 `.grad` 里有了梯度），
# `step()`（让每个参数朝梯度的反方向移动）。这个 batch 上的损失下降了。

# %%
#> nn_building_blocks.py: optimizer_step
facts |= optimizer_step(model, images)

# %% [markdown]
# ## 9. Optimizers side by side
#
# The posts' optimizers (SGD, SGD with momentum, RMSprop, Adagrad, Adam) on one problem, the bowl
# (w1 - 3)² + 5 (w2 + 1)², from w = (0, 0), at the same learning rate. Each first step is checked
# against its update rule.
# %% [markdown] zh-CN
# ## 9. 优化器对比
#
# 文章里的优化器（SGD、带动量的 SGD、RMSprop、Adagrad、Adam）解同一个问题：从 w = (0, 0) 出发，
# 用同样的学习率，求 (w1 - 3)² + 5 (w2 + 1)² 的最小值。每个优化器的第一步都和它的更新公式对照。

# %%
#> nn_building_blocks.py: FIRST_STEP_FORMULAS, quadratic_bowl, optimizers_compared
facts |= optimizers_compared()

# %% [markdown]
# The five paths, over the bowl's contour lines: where `w` was after each of the 100 steps (the
# section records them). Plain SGD slides down the steep side first; momentum overshoots and swings
# back; Adagrad and Adam start with the same small step in both coordinates, whatever the size of
# the gradient, and RMSprop with a ten times larger one. Adagrad's steps keep shrinking (it divides
# by all the squared gradients so far), so after 100 steps it is still far from the minimum.
# %% [markdown] zh-CN
# 五条路径，画在这个碗形函数的等高线上：每走一步之后 `w` 的位置，一共 100 步（这一节记录了它们）。
# 普通 SGD 先沿陡的方向滑下去；带动量的 SGD 冲过头再摆回来；Adagrad 和 Adam 一开始在两个坐标上走同样小的一步，
# 不管梯度有多大；RMSprop 的第一步是它们的十倍。Adagrad 的步子越来越小（它除以到目前为止所有梯度的平方和），
# 所以 100 步之后离最小值还很远。

# %%
w1, w2 = torch.meshgrid(torch.linspace(-1, 5, 121), torch.linspace(-3, 1, 81), indexing="xy")
fig, ax = plt.subplots(figsize=(7, 5))
ax.contour(w1, w2, quadratic_bowl(torch.stack([w1, w2])), levels=20, colors="lightgray")
for name, result in facts["optimizers"].items():
    path = torch.tensor(result["path"])
    ax.plot(path[:, 0], path[:, 1], ".-", markersize=3, label=f"{name} (loss {result['loss']:.3g})")
ax.plot(3, -1, "k*", markersize=12, label="minimum (3, -1)")
ax.set(xlabel="w1", ylabel="w2", title="the five optimizers from (0, 0)")
ax.legend(fontsize=8, loc="lower left")
plt.show()

# %% [markdown]
# ## 10. The computation graph as a picture
#
# With `draw_graph = True` in the settings (and the torchviz package and Graphviz installed), the
# graph behind section 8's loss is drawn to `graph.png` in the run folder. The `autograd_basics`
# notebook walks the same kind of graph through `grad_fn`.
# %% [markdown] zh-CN
# ## 10. 把计算图画出来
#
# 在设置里写 `draw_graph = True`（并装好 torchviz 包和 Graphviz），第 8 节的损失背后的计算图就会画到运行目录里的
# `graph.png`。`autograd_basics` 笔记本通过 `grad_fn` 走过的也是这样的图。

# %%
#> nn_building_blocks.py: graph
loss = facts.pop("loss")
if draw_graph:
    facts["graph"] = graph(loss, model, out_dir)

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
# - The same sections from a terminal: `python nn_building_blocks.py` (`--graph` for the picture).
# - Change a line and re-run its cell: `nn.Dropout(p=0.2)` in section 4, or `lr=0.1` for
#   `optimizers_compared` in section 9 (and the figure below it).
# - Then `activations`, the next notebook of this lesson.
# %% [markdown] zh-CN
# ## 接下来
#
# - 在终端里运行同样的几节：`python nn_building_blocks.py`（加 `--graph` 画计算图）。
# - 改一行，重新运行它的单元格：第 4 节的 `nn.Dropout(p=0.2)`，或者第 9 节调用 `optimizers_compared` 时写
#   `lr=0.1`（以及它下面的图）。
# - 然后是本课的下一个笔记本 `activations`。
