# %% [markdown]
# # T04 · Saving and loading
#
# The posts' part on saving and loading (post 002, section 4), one section per cell: a
# `state_dict`, a whole pickled model and why `weights_only` matters, a full checkpoint that resumes
# training exactly, saving over a checkpoint safely, `map_location`, and `eval()` after loading.
# Every definition and section function is copied from `save_load.py` when the notebook is built,
# and each section is called right below its definition. It prints what it does and **checks every
# claim it makes** (`[ok]`); a claim that does not hold stops the cell with
# `ClaimFailed: claim failed: ...`.
#
# Every file goes into a run folder, as the script's do, never into the folder you started Jupyter in.
#
# Run the cells from top to bottom (Shift+Enter).
# %% [markdown] zh-CN
# # T04 · 保存和加载
#
# 文章里讲保存和加载的部分（文章 002 第 4 节），一节一个单元格：状态字典（`state_dict`），整个 pickle 的模型以及
# `weights_only` 为什么重要，能精确继续训练的完整检查点，安全地覆盖检查点，`map_location`，以及加载后的 `eval()`。
# 每个定义和每节的函数都是生成笔记本时从 `save_load.py` 原样复制来的，每一节在定义下面直接调用。
# 它打印自己做了什么，并且**检查它说的每一句话**（`[ok]`）；不成立的说法会让单元格停下，
# 报 `ClaimFailed: claim failed: ...`。
#
# 和脚本一样，每个文件都写进运行目录，绝不写进你启动 Jupyter 的那个目录。
#
# 从上到下依次运行单元格（Shift+Enter）。

# %%
#> setup

# %% [markdown]
# ## Settings
#
# The script's flags, as plain variables. `out_dir = None` writes the `.pt` files where the script
# does: a new run folder under the repository's `runs/` (write a folder's name to choose it).
# `device` is the lesson's default choice: an NVIDIA GPU (CUDA) if there is one, then an Apple GPU
# (MPS), then the CPU; write `device = torch.device("cpu")` for the script's `--no-accel`.
# %% [markdown] zh-CN
# ## 设置
#
# 脚本的命令行参数，这里写成普通变量。`out_dir = None` 让 `.pt` 文件写到脚本写的地方：仓库 `runs/` 下新建的
# 运行目录（写一个目录名就用那个目录）。`device` 和课程脚本的默认选择相同：有 NVIDIA GPU（CUDA）就用它，
# 其次是 Apple GPU（MPS），最后是 CPU；写 `device = torch.device("cpu")` 就相当于脚本的 `--no-accel`。

# %%
import os
import pickle
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from common.device import seed_everything  # seeds Python, NumPy and torch
from common.run import new_folder
from T04_tensor_autograd_basics.lesson import check, done, raises, section, start

seed = 1
out_dir = None
device = torch.device("cuda" if torch.cuda.is_available()
                      else "mps" if torch.backends.mps.is_available() else "cpu")

# %% [markdown]
# ## The model and the run folder
#
# `main()`'s first lines: seed, make the run folder, build the small model every section saves and
# loads (`TinyNet`: 2 → 16 → 2, with `Dropout` so that training and evaluation mode differ), and a
# few inputs (`probe`) to compare outputs on.
# %% [markdown] zh-CN
# ## 模型和运行目录
#
# `main()` 的前几行：设置随机种子，创建运行目录，建立每一节都要保存和加载的小模型（`TinyNet`：2 → 16 → 2，
# 带 `Dropout`，所以训练模式和评估模式的行为不同），以及几个用来比较输出的输入（`probe`）。

# %%
#> save_load.py: TinyNet
#> save_load.py: main "seed_everything(" "weights_path ="

# %% [markdown]
# ## 1. state_dict: the weights, by name
#
# The posts' part on saving the weights: `model.state_dict()` maps each parameter's name to its
# tensor. Save it, build a new model in code, `load_state_dict()`: the same outputs. This is what
# you ship.
# %% [markdown] zh-CN
# ## 1. 状态字典：按名字保存权重
#
# 文章里讲保存权重的部分：`model.state_dict()` 把每个参数的名字对应到它的张量。保存它，在代码里新建一个模型，
# 再 `load_state_dict()`：输出相同。发布模型时发布的就是它。

# %%
#> save_load.py: state_dict_section
weights_path = state_dict_section(model, device, out_dir, probe)

# %% [markdown]
# ## 2. A whole pickled model, and weights_only
#
# The posts' `torch.save(model)`: it pickles the whole object, and unpickling runs whatever the file
# asks for. Since PyTorch 2.6 `torch.load` reads only tensors and plain containers by default
# (`weights_only=True`), and refuses such a file. (In a notebook the class lives in `__main__`, so
# the file asks for `__main__.TinyNet`.)
# %% [markdown] zh-CN
# ## 2. 整个 pickle 的模型，以及 weights_only
#
# 文章里的 `torch.save(model)`：它把整个对象 pickle 下来，而反 pickle 时会执行文件要求的任何东西。
# 从 PyTorch 2.6 起，`torch.load` 默认只读张量和普通容器（`weights_only=True`），会拒绝这样的文件。
# （在笔记本里这个类在 `__main__` 中，所以文件要的是 `__main__.TinyNet`。）

# %%
#> save_load.py: WEIGHTS_ONLY_IS_DEFAULT, whole_model_section
facts = whole_model_section(model, device, out_dir, probe)

# %% [markdown]
# ## 3. A full checkpoint: save, reload, resume
#
# The posts' checkpoint holds four keys: `epoch`, `model_state_dict`, `optimizer_state_dict` and
# `loss`. The script adds the random-number states, and then resuming gives exactly the run that was
# never interrupted. Restoring the weights without the optimizer's state does not.
# %% [markdown] zh-CN
# ## 3. 完整的检查点：保存、重新加载、继续训练
#
# 文章的检查点有四个键：`epoch`、`model_state_dict`、`optimizer_state_dict` 和 `loss`。脚本再加上随机数状态，
# 这样继续训练得到的和从未中断的那次训练完全一样。只恢复权重、不恢复优化器的状态，就不一样了。

# %%
#> save_load.py: EPOCHS_BEFORE_SAVE, LEARNING_RATE, make_loader, train_epochs, same, random_states, restore_random_states
#> save_load.py: checkpoint_section
facts |= checkpoint_section(device, out_dir, seed)

# %% [markdown]
# The losses of that section, epoch by epoch: three epochs before the save, then three more three
# ways. The resumed run (dots) lies exactly on the uninterrupted one; the run that restored only the
# weights, with a fresh Adam, takes other steps (squares off the line).
# %% [markdown] zh-CN
# 这一节的损失，一个 epoch 一个点：保存之前的三个 epoch，然后用三种方式再训练三个 epoch。继续训练的那次（圆点）
# 和从未中断的那次完全重合；只恢复权重、用一个新的 Adam 的那次走的是另一些步子（方块不在线上）。

# %%
before = range(1, EPOCHS_BEFORE_SAVE + 1)
after = range(EPOCHS_BEFORE_SAVE + 1, EPOCHS_BEFORE_SAVE + EPOCHS_AFTER_SAVE + 1)
fig, ax = plt.subplots(figsize=(7, 4))
ax.plot(before, facts["before_save"], "o-", color="black", label="before the save")
ax.plot(after, facts["straight"], "-", linewidth=4, alpha=0.4, label="uninterrupted")
ax.plot(after, facts["resumed"], "o", label="resumed from checkpoint.pt")
ax.plot(after, facts["without_optimizer"], "s--", label="weights only, fresh optimizer")
ax.axvline(EPOCHS_BEFORE_SAVE + 0.5, color="gray", linestyle=":")
ax.set(xlabel="epoch", ylabel="average training loss", title="saving and resuming")
ax.legend()
plt.show()

# %% [markdown]
# ## 4. Saving over a checkpoint safely
#
# A training run saves over its checkpoint after every epoch. A plain `torch.save` cut short (a
# crash, Ctrl-C, a full disk) leaves a torn file and no good checkpoint; saving to a temporary file
# and renaming it over the old one keeps the last good one. The training lessons save this way.
# %% [markdown] zh-CN
# ## 4. 安全地覆盖检查点
#
# 训练时每个 epoch 之后都覆盖保存检查点。普通的 `torch.save` 如果中途停下（程序崩溃、Ctrl-C、磁盘满了），
# 会留下一个损坏的文件，好的检查点也没了；先保存到临时文件，再把它重命名、替换旧文件，就能保住上一个好的检查点。
# 各个训练课程都这样保存。

# %%
#> save_load.py: CrashWhileSaving, StopsTheSave, save_atomically, atomic_section
facts |= atomic_section(out_dir / "checkpoint.pt")

# %% [markdown]
# ## 5. map_location
#
# The posts' part on loading on another device: `map_location="cpu"` loads a checkpoint saved on a
# GPU on a machine without one; `map_location=device` puts every tensor on the chosen device.
# %% [markdown] zh-CN
# ## 5. map_location
#
# 文章里讲在另一个设备上加载的部分：`map_location="cpu"` 让在 GPU 上保存的检查点能在没有 GPU 的机器上加载；
# `map_location=device` 把每个张量放到选定的设备上。

# %%
#> save_load.py: map_location_section
facts |= map_location_section(weights_path, device)

# %% [markdown]
# ## 6. eval() after loading
#
# The posts' loading code, finished: a freshly built model is in training mode, and `load_state_dict()`
# does not change that, so `Dropout` is still on. Call `model.eval()` before predicting.
# %% [markdown] zh-CN
# ## 6. 加载后调用 eval()
#
# 把文章的加载代码补完整：新建的模型处于训练模式，`load_state_dict()` 不会改变这一点，所以 `Dropout` 仍然开着。
# 预测之前要调用 `model.eval()`。

# %%
#> save_load.py: eval_section
facts |= eval_section(model, device, weights_path, probe)

# %% [markdown]
# ## All the claims
#
# The script's last lines: the run folder with the three files, and how many claims the cells above
# checked (each run of a cell counts again).
# %% [markdown] zh-CN
# ## 所有说法
#
# 脚本的最后几行：存放三个文件的运行目录，以及上面的单元格一共检查了多少个说法（重新运行一个单元格会再计一次）。

# %%
print(f"Run folder: {out_dir}: {', '.join(sorted(path.name for path in out_dir.iterdir()))}")
claims = done()

# %% [markdown]
# ## Next
#
# - The same sections from a terminal: `python save_load.py` (`--no-accel` for the CPU,
#   `--out-dir` to choose the folder).
# - The training lessons (T01-T03) save and resume this way: `--save-model`, `--resume`.
# %% [markdown] zh-CN
# ## 接下来
#
# - 在终端里运行同样的几节：`python save_load.py`（`--no-accel` 只用 CPU，`--out-dir` 指定目录）。
# - 训练课程（T01-T03）就是这样保存和继续训练的：`--save-model`、`--resume`。
