# %% [markdown]
# # T05 · From one process to many: DistributedDataParallel and torchrun
#
# T02's CNN on FashionMNIST, trained by several processes at once. A notebook is one process,
# so this one *starts* the lesson's script: first as one process, then under `torchrun` as two,
# the way you would in a terminal (the `!` cells are shell commands). In between it shows the
# script's own distributed steps (copied from `ddp_fashion_mnist.py` when the notebook is built)
# and, at the end, the two runs side by side.
# %% [markdown] zh-CN
# # T05 · 从一个进程到多个进程：DistributedDataParallel 和 torchrun
#
# T02 的 CNN 在 FashionMNIST 上，由几个进程一起训练。一个笔记本只是一个进程，所以这里是*启动*课程脚本：
# 先作为一个进程，再用 `torchrun` 启动两个进程，和在终端里一样（`!` 开头的单元格是 shell 命令）。中间展示
# 脚本自己的分布式步骤（生成笔记本时从 `ddp_fashion_mnist.py` 复制过来），最后把两次运行放在一起比较。

# %%
#> setup

# %% [markdown]
# ## Settings
#
# One epoch per run keeps this short (the lesson's default is 5; `epochs = 5` for the whole run).
# Each run gets its own run folder under the repository's `runs/`. `sys.executable -m
# torch.distributed.run` is `torchrun` itself, started with this notebook's Python, so it is
# found whatever the terminal's PATH. The data goes where every lesson puts it
# (`PYTORCH_TUTORIAL_DATA_DIR`, else the repository's `data/`).
# %% [markdown] zh-CN
# ## 设置
#
# 每次运行只训练 1 个 epoch，让笔记本跑得快（课程的默认值是 5；完整运行写 `epochs = 5`）。每次运行在仓库的
# `runs/` 下有自己的运行目录。`sys.executable -m torch.distributed.run` 就是 `torchrun` 本身，用这个笔记本的
# Python 启动，所以不管终端的 PATH 是什么都能找到。数据放在每课都放的地方（`PYTORCH_TUTORIAL_DATA_DIR`，
# 没有设置时是仓库的 `data/`）。

# %%
import argparse
import datetime
import json
import time

import matplotlib.pyplot as plt
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from common.device import select_device

epochs = 1              # the lesson's default: 5
processes = 2           # --nproc-per-node: how many processes on this machine
stamp = time.strftime("%Y%m%d-%H%M%S")
one_process_run = root / "runs" / f"ddp_fashion_mnist-notebook-{stamp}-1"
two_process_run = root / "runs" / f"ddp_fashion_mnist-notebook-{stamp}-{processes}"
script = "ddp_fashion_mnist.py"
torchrun = f'"{sys.executable}" -m torch.distributed.run'  # torchrun, with this notebook's Python

# %% [markdown]
# ## 1. One process
#
# Started with plain `python`, the script finds none of torchrun's variables (`RANK`,
# `WORLD_SIZE`, ...) and trains as one process, exactly as T02 would.
# %% [markdown] zh-CN
# ## 1. 一个进程
#
# 直接用 `python` 启动时，脚本找不到 torchrun 设置的环境变量（`RANK`、`WORLD_SIZE` 等），就作为一个进程训练，
# 和 T02 完全一样。

# %%
!"{sys.executable}" {script} --epochs {epochs} --out-dir "{one_process_run}"

# %% [markdown]
# ## 2. Two processes with torchrun
#
# `--standalone` lets torchrun pick a meeting point on this machine; `--nproc-per-node 2` starts
# two copies of the script. Each holds the whole model and trains on its half of every batch;
# in `backward()` DDP averages the two halves' gradients, so both copies take the same step.
# Only rank 0 prints.
# %% [markdown] zh-CN
# ## 2. 用 torchrun 启动两个进程
#
# `--standalone` 让 torchrun 在本机上选一个会合点；`--nproc-per-node 2` 启动脚本的两个副本。每个副本都有完整的
# 模型，训练每个 batch 的一半；在 `backward()` 里 DDP 把两半的梯度取平均，所以两个副本走同样的一步。
# 只有 rank 0 打印输出。

# %%
!{torchrun} --standalone --nproc-per-node {processes} {script} --epochs {epochs} --out-dir "{two_process_run}"

# %% [markdown]
# ## 3. What the script adds to T02
#
# **Join the process group.** Read the ranks torchrun set, pick the device (`cuda:LOCAL_RANK` on
# GPUs) and the backend (gloo on CPUs, NCCL on NVIDIA GPUs), and call
# `dist.init_process_group`. Run as plain `python`, there is no group at all.
# %% [markdown] zh-CN
# ## 3. 脚本比 T02 多了什么
#
# **加入进程组。** 读取 torchrun 设置的 rank，选择设备（GPU 上是 `cuda:LOCAL_RANK`）和后端（CPU 上用 gloo，
# NVIDIA GPU 上用 NCCL），然后调用 `dist.init_process_group`。直接用 `python` 运行时，根本没有进程组。

# %%
#> ddp_fashion_mnist.py: join_process_group

# %% [markdown]
# **Deal the data, wrap the model, add up the test.** These are `main()`'s lines: every process
# holds the whole dataset; `DistributedSampler` deals each epoch's shuffle out like cards (process
# r gets positions r, r+W, ...), with `set_epoch(epoch)` before each epoch so the shuffle changes;
# `DDP(model)` averages the gradients in `backward()`; each process tests its own share of the
# test images and the sums are all-reduced, so every image counts once.
# %% [markdown] zh-CN
# **分发数据、包装模型、汇总测试结果。** 下面是 `main()` 里的几行：每个进程都持有整个数据集；
# `DistributedSampler` 像发牌一样分发每个 epoch 的打乱顺序（进程 r 拿到第 r、r+W、…… 个位置），每个 epoch 之前
# 调用 `set_epoch(epoch)`，顺序才会变；`DDP(model)` 在 `backward()` 里对梯度取平均；每个进程测试自己那一份
# 测试图片，再用 all-reduce 把总和加起来，每张图片只算一次。

# %%
#> ddp_fashion_mnist.py: test

# %% [markdown]
# `train()` is T02's, unchanged: DDP hides the averaging inside `backward()`. The data and model
# lines of `main()` need a process group, so they are not run here; read them in
# `ddp_fashion_mnist.py` (`# 1. Data` and `# 2. Model`).
# %% [markdown] zh-CN
# `train()` 就是 T02 的，一点没变：DDP 把取平均藏在了 `backward()` 里面。`main()` 里数据和模型那几行需要
# 进程组，所以这里不运行；请在 `ddp_fashion_mnist.py` 里阅读（`# 1. Data` 和 `# 2. Model` 两段）。

# %% [markdown]
# ## 4. One process and two, side by side
#
# Rank 0 wrote each run's `metrics.json`. On a laptop's CPU two processes share the same cores,
# so they are rarely faster; the point is that the script is the same, and that on two GPUs or
# two machines each process gets its own.
# %% [markdown] zh-CN
# ## 4. 一个进程和两个进程的比较
#
# 每次运行的 `metrics.json` 由 rank 0 写出。在笔记本电脑的 CPU 上，两个进程共用同样的核心，所以很少更快；
# 重点是脚本完全相同，而在两块 GPU 或两台机器上，每个进程都有自己的硬件。

# %%
runs = {"1 process": one_process_run, f"{processes} processes": two_process_run}
metrics = {name: json.loads((folder / "metrics.json").read_text()) for name, folder in runs.items()}
for name, rows in metrics.items():
    last = rows[-1]
    print(f"{name}: test accuracy {100 * last['test_accuracy']:.1f}%, "
          f"{last['train_images_per_second']:,.0f} training images/s")
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
names = list(metrics)
left.bar(names, [100 * rows[-1]["test_accuracy"] for rows in metrics.values()], color=["tab:blue", "tab:orange"])
left.set(ylabel="test accuracy (%)", title=f"after {epochs} epoch(s)")
right.bar(names, [rows[-1]["train_images_per_second"] for rows in metrics.values()], color=["tab:blue", "tab:orange"])
right.set(ylabel="images/s", title="training speed")
plt.show()
