# %% [markdown]
# # T04 · Dataset and DataLoader
#
# The posts' part on datasets and loaders (post 002), one section per cell. The posts' `MyDataset`
# template is filled in twice: with points made in code, and with the same points read back from a
# CSV file. Then each `DataLoader` option is switched on by itself, and the batches show what it
# changed. Every class and section function is copied from `dataset_dataloader.py` when the notebook
# is built, and each section is called right below its definition. It prints what it does and
# **checks every claim it makes** (`[ok]`); a claim that does not hold stops the cell with
# `ClaimFailed: claim failed: ...`.
#
# Run the cells from top to bottom (Shift+Enter).
# %% [markdown] zh-CN
# # T04 · Dataset 和 DataLoader
#
# 文章里讲数据集和 `DataLoader` 的部分（文章 002），一节一个单元格。文章的 `MyDataset` 模板被填写两次：
# 一次用代码生成的点，一次从 CSV 文件读回同样的点。然后一次只打开 `DataLoader` 的一个选项，
# 看它让 batch 发生了什么变化。每个类和每节的函数都是生成笔记本时从 `dataset_dataloader.py` 原样复制来的，
# 每一节在定义下面直接调用。它打印自己做了什么，并且**检查它说的每一句话**（`[ok]`）；
# 不成立的说法会让单元格停下，报 `ClaimFailed: claim failed: ...`。
#
# 从上到下依次运行单元格（Shift+Enter）。

# %%
#> setup

# %% [markdown]
# ## Settings
#
# The script's flags, as plain variables. `num_workers` is the script's `--num-workers` (default 2).
# Worker processes that start by `fork` (Linux, and so Colab) see the classes defined in this
# notebook; on Windows and macOS they start afresh and import the code from a file, which a
# notebook does not have, so there the notebook loads in the main process (0). The script shows
# 2 workers on every system. `out_dir = None` writes `points.csv` where the script does: a new run
# folder under the repository's `runs/`. `device` is the lesson's default choice (CUDA, then MPS,
# then the CPU); only the last section uses it.
# %% [markdown] zh-CN
# ## 设置
#
# 脚本的命令行参数，这里写成普通变量。`num_workers` 就是脚本的 `--num-workers`（默认 2）。
# 用 `fork` 启动的工作进程（Linux，也就是 Colab）能看到这个笔记本里定义的类；在 Windows 和 macOS 上，
# 工作进程从头启动，要从文件里导入代码，而笔记本没有这样的文件，所以在那里笔记本在主进程里加载（0）。
# 脚本在所有系统上都演示 2 个工作进程。`out_dir = None` 让 `points.csv` 写到脚本写的地方：
# 仓库 `runs/` 下新建的运行目录。`device` 和课程脚本的默认选择相同（CUDA，其次 MPS，最后 CPU）；
# 只有最后一节用到它。

# %%
import csv
import math
import multiprocessing
import random
import re
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    Sampler,
    SequentialSampler,
    WeightedRandomSampler,
    get_worker_info,
)

from common import cli
from common.device import seed_everything  # seeds Python, NumPy and torch; returns a generator for the loaders
from common.run import new_folder
from T04_tensor_autograd_basics.lesson import check, done, raises, section, start

num_workers = 2 if multiprocessing.get_start_method() == "fork" else 0  # the script: 2
seed = 1
out_dir = None
device = torch.device("cuda" if torch.cuda.is_available()
                      else "mps" if torch.backends.mps.is_available() else "cpu")
#> dataset_dataloader.py: main "generator = seed_everything" "start("
start("T04 - Dataset and DataLoader")
print(f"Using device: {device} | num_workers {num_workers} | run folder {out_dir}")

# %% [markdown]
# ## 1. A Dataset class: `__init__`, `__len__`, `__getitem__`
#
# The posts' `MyDataset` template (post 002, section 1), filled in: 200 points in a square, label 1
# inside the unit circle. `__init__` makes the data once, `__len__` says how many samples there are,
# `__getitem__` returns one sample as (input, target).
# %% [markdown] zh-CN
# ## 1. 一个 Dataset 类：`__init__`、`__len__`、`__getitem__`
#
# 文章的 `MyDataset` 模板（文章 002 第 1 节），填写完整：正方形里的 200 个点，在单位圆内的标签是 1。
# `__init__` 一次性生成数据，`__len__` 给出样本数，`__getitem__` 返回一个样本（输入, 目标）。

# %%
#> dataset_dataloader.py: PointsDataset, my_dataset
points = my_dataset(seed)

# %% [markdown]
# The dataset drawn: every sample is a point and its label. About a fifth of them (π/16) fall
# inside the circle, so the two classes are unbalanced; section 8 comes back to that.
# %% [markdown] zh-CN
# 把数据集画出来：每个样本是一个点和它的标签。大约五分之一（π/16）的点落在圆内，所以两类样本数不均衡；
# 第 8 节会再讲这一点。

# %%
inside = points.labels == 1
fig, ax = plt.subplots(figsize=(6.5, 4.5))
ax.scatter(*points.points[~inside].numpy().T, s=12, label="label 0 (outside)")
ax.scatter(*points.points[inside].numpy().T, s=12, label="label 1 (inside)")
ax.add_patch(plt.Circle((0, 0), 1, fill=False, color="gray"))
ax.set(aspect="equal", xlabel="x", ylabel="y", title=f"PointsDataset: {len(points)} samples")
ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1))
plt.show()

# %% [markdown]
# ## 2. The same template, reading a CSV file
#
# The posts' template usually reads files. The script writes the points to `points.csv` in its run
# folder, and `CsvPointsDataset` reads them back, sample for sample the same.
# %% [markdown] zh-CN
# ## 2. 同一个模板，读 CSV 文件
#
# 文章的模板通常读文件。脚本把这些点写进运行目录里的 `points.csv`，`CsvPointsDataset` 再把它们读回来，
# 每个样本都和原来的一样。

# %%
#> dataset_dataloader.py: CsvPointsDataset, write_points_csv, csv_dataset
csv_dataset(points, out_dir)

# %% [markdown]
# ## 3. transform and target_transform
#
# The posts' part on transforms: `transform` changes each input (here: standardise each feature
# with the training set's mean and standard deviation), `target_transform` each label (here: one-hot).
# Both run in `__getitem__`, one sample at a time.
# %% [markdown] zh-CN
# ## 3. transform 和 target_transform
#
# 文章里讲变换的部分：`transform` 改变每个输入（这里用训练集的均值和标准差把每个特征标准化），
# `target_transform` 改变每个标签（这里变成 one-hot）。两者都在 `__getitem__` 里一个样本一个样本地做。

# %%
#> dataset_dataloader.py: Standardize, OneHot, transforms_demo
transformed = transforms_demo(out_dir, points)

# %% [markdown]
# ## 4. A DataLoader, and what a batch looks like
#
# The posts' `DataLoader`: it stacks samples into batches, batch dimension first. The old
# `dataiter.next()` is `next(iter(loader))` today.
# %% [markdown] zh-CN
# ## 4. DataLoader，以及一个 batch 的样子
#
# 文章里的 `DataLoader`：它把样本堆成 batch，batch 维度在最前面。旧写法 `dataiter.next()` 今天写作
# `next(iter(loader))`。

# %%
#> dataset_dataloader.py: first_batch
facts = first_batch(transformed, generator)

# %% [markdown]
# ## 5. A batch of images is (N, C, H, W)
#
# The posts say a batch has the shape `[batch_size, input_size]`. For images that is true only after
# flattening: a batch of MNIST-style images is (N, 1, 28, 28), and a `Linear(784, ...)` needs
# `batch.view(batch.size(0), -1)` first.
# %% [markdown] zh-CN
# ## 5. 一个图片 batch 的形状是 (N, C, H, W)
#
# 文章说一个 batch 的形状是 `[batch_size, input_size]`。对图片来说，只有展平之后才是这样：MNIST 式图片的
# batch 是 (N, 1, 28, 28)，`Linear(784, ...)` 需要先做 `batch.view(batch.size(0), -1)`。

# %%
#> dataset_dataloader.py: TinyImages, image_batches
facts |= image_batches()

# %% [markdown]
# ## 6. batch_size and drop_last
#
# From here on each `DataLoader` option is switched on by itself, on a dataset whose sample `i` is
# just the number `i`, so the batches show which samples they hold.
# %% [markdown] zh-CN
# ## 6. batch_size 和 drop_last
#
# 从这里开始，一次只打开 `DataLoader` 的一个选项，数据集的第 `i` 个样本就是数字 `i`，
# 所以每个 batch 直接显示它装了哪些样本。

# %%
#> dataset_dataloader.py: IndexDataset, batch_indices, batch_size_and_drop_last
facts |= batch_size_and_drop_last()

# %% [markdown]
# ## 7. shuffle
#
# A new order every epoch, and the same orders again with a generator seeded alike. Shuffle the
# training set, never the test set.
# %% [markdown] zh-CN
# ## 7. shuffle
#
# 每个 epoch 一个新顺序；用同样随机种子的生成器，顺序就能重现。训练集要打乱，测试集不要打乱。

# %%
#> dataset_dataloader.py: shuffling
facts |= shuffling(seed)

# %% [markdown]
# ## 8. A sampler: WeightedRandomSampler
#
# The posts' `sampler` option: a sampler decides which samples come and how often. Weights of
# 1 / (count of the class) draw the rare class as often as the common one.
# %% [markdown] zh-CN
# ## 8. 采样器：WeightedRandomSampler
#
# 文章里的 `sampler` 选项：采样器决定取哪些样本、取几次。权重设为 1 /（该类的样本数），
# 少的一类就和多的一类被取得一样多。

# %%
#> dataset_dataloader.py: sampler_demo
facts |= sampler_demo(points, generator)

# %% [markdown]
# ## 9. batch_sampler
#
# The posts' `batch_sampler` option: you decide which samples form each batch. A batch sampler of our
# own groups sentences of similar length, so they need less padding (`pad_batch`, the collate
# function of section 10, pads them).
# %% [markdown] zh-CN
# ## 9. batch_sampler
#
# 文章里的 `batch_sampler` 选项：由你决定哪些样本组成一个 batch。我们自己写的批采样器把长度相近的句子放在一起，
# 需要的填充更少（填充由第 10 节的整理函数 `pad_batch` 来做）。

# %%
#> dataset_dataloader.py: SentencesDataset, ShortestFirstBatchSampler, pad_batch, batch_sampler_demo
facts |= batch_sampler_demo()

# %% [markdown]
# ## 10. collate_fn
#
# The posts' `collate_fn` option: the function that turns a list of samples into a batch. The
# default one stacks them and so cannot batch sentences of different lengths; `pad_batch` can.
# %% [markdown] zh-CN
# ## 10. collate_fn
#
# 文章里的 `collate_fn` 选项：把一组样本变成一个 batch 的函数。默认的函数把样本堆叠起来，
# 所以不能处理长度不同的句子；`pad_batch` 可以。

# %%
#> dataset_dataloader.py: collate_demo
facts |= collate_demo()

# %% [markdown]
# ## 11. num_workers
#
# The posts' `num_workers` option: worker processes load batches while the model computes, taking
# turns, one whole batch each. With `num_workers = 0` the main process loads every batch itself.
# %% [markdown] zh-CN
# ## 11. num_workers
#
# 文章里的 `num_workers` 选项：模型计算的同时，工作进程轮流加载 batch，每个进程一次加载一整个 batch。
# `num_workers = 0` 时主进程自己加载每个 batch。

# %%
#> dataset_dataloader.py: seed_worker, workers_demo
facts |= workers_demo(num_workers, generator)

# %% [markdown]
# ## 12. pin_memory
#
# The posts say `pin_memory=True` loads the data into GPU memory. It does not: the batch stays in
# page-locked memory on the host, which the GPU copies from faster, and only `.to(device)` moves it.
# %% [markdown] zh-CN
# ## 12. pin_memory
#
# 文章说 `pin_memory=True` 把数据加载到 GPU 内存里。其实不是：batch 仍在主机的锁页内存里，GPU 从这里复制更快；
# 只有 `.to(device)` 才把它移到 GPU 上。

# %%
#> dataset_dataloader.py: PIN_MEMORY_WARNS_FROM, torch_release, pin_memory_demo
facts |= pin_memory_demo(device, transformed)

# %% [markdown]
# ## All the claims
#
# The script's last lines: where the CSV file went, and how many claims the cells above checked
# (each run of a cell counts again).
# %% [markdown] zh-CN
# ## 所有说法
#
# 脚本的最后几行：CSV 文件写到了哪里，以及上面的单元格一共检查了多少个说法（重新运行一个单元格会再计一次）。

# %%
print(f"Run folder: {out_dir} (points.csv)")
claims = done()

# %% [markdown]
# ## Next
#
# - The same sections from a terminal: `python dataset_dataloader.py` (`--num-workers 0` to load in
#   the main process).
# - Change one option and re-run its cell, and see which claim no longer holds: `batch_size=3` in
#   section 6, or `shuffle=True` for `in_order` in section 7.
# - Then `nn_building_blocks`, the next notebook of this lesson.
# %% [markdown] zh-CN
# ## 接下来
#
# - 在终端里运行同样的几节：`python dataset_dataloader.py`（`--num-workers 0` 在主进程里加载）。
# - 改一个选项，重新运行它的单元格，看哪个说法不再成立：第 6 节的 `batch_size=3`，或第 7 节给 `in_order` 加上 `shuffle=True`。
# - 然后是本课的下一个笔记本 `nn_building_blocks`。
