# %% [markdown]
# # T01 · MNIST with a simple neural network
#
# The first post's model, one step per cell: load the MNIST digits, batch them, define a network
# with one hidden layer (784 → 128 → 10), train it with Adadelta and test it, then look at the
# curves and at a few predictions. Every definition below (`SimpleNN`, `train()`, `test()`, the
# data and model lines) is copied from `mnist_nn.py` when the notebook is built, so the notebook
# and the script cannot drift apart.
#
# Run the cells from top to bottom (Shift+Enter). The settings cell keeps the run short; the
# post's full run is one edit away.
# %% [markdown] zh-CN
# # T01 · 用简单神经网络识别 MNIST
#
# 第一篇文章的模型，一步一个单元格：加载 MNIST 手写数字，分成 batch，定义一个只有一个隐藏层的
# 网络（784 → 128 → 10），用 Adadelta 训练并测试，最后看曲线和几张图片的预测结果。下面的每个定义
# （`SimpleNN`、`train()`、`test()`、数据和模型那几行）都是生成笔记本时从 `mnist_nn.py` 原样复制来的，
# 所以笔记本和脚本不会不一致。
#
# 从上到下依次运行单元格（Shift+Enter）。设置单元格让这次运行很短；改一处就是文章的完整设置。

# %%
#> setup

# %% [markdown]
# ## Settings
#
# The script's flags, as plain variables. Three epochs are enough to watch the network learn.
# **The post's run is `epochs = 14`.** `device` is the lesson's default choice: an NVIDIA GPU
# (CUDA) if there is one, then an Apple GPU (MPS), then the CPU; write `device = torch.device("cpu")`
# to force the CPU. `data_dir = None` puts the data where the scripts put it: the folder named by
# the environment variable `PYTORCH_TUTORIAL_DATA_DIR`, else the repository's `data/`.
# %% [markdown] zh-CN
# ## 设置
#
# 脚本的命令行参数，这里写成普通变量。3 个 epoch 足够看到网络在学习。
# **文章的完整运行是 `epochs = 14`。** `device` 和课程脚本的默认选择相同：有 NVIDIA GPU（CUDA）就用它，
# 其次是 Apple GPU（MPS），最后是 CPU；想强制用 CPU，写 `device = torch.device("cpu")`。
# `data_dir = None` 让数据放在脚本放的地方：环境变量 `PYTORCH_TUTORIAL_DATA_DIR` 指定的目录，
# 没有设置时是仓库的 `data/` 目录。

# %%
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset
from torchvision import datasets

from common import data  # finds the dataset, or downloads it, and checks the files

epochs = 3              # the post: 14
batch_size = 64
test_batch_size = 1000
lr = 1.0
gamma = 0.7             # lr *= gamma after each epoch; 1 keeps it constant, as the post does
log_interval = 300      # print a training line every 300 batches
seed = 1
data_dir = None
device = torch.device("cuda" if torch.cuda.is_available()
                      else "mps" if torch.backends.mps.is_available() else "cpu")
torch.manual_seed(seed)
generator = torch.Generator().manual_seed(seed)  # the shuffling's own random numbers
print(f"Using device: {device} | torch {torch.__version__}")

# %% [markdown]
# ## 1. The data
#
# torchvision reads the MNIST files: 60,000 training and 10,000 test digits, 28×28 pixels from
# 0 to 255. The post's transform is `ToTensor()` (pixels to 0..1) then
# `Normalize((0.1307,), (0.3081,))` (subtract the training set's mean, divide by its standard
# deviation). The script does exactly that once, for all the images, and keeps the result in a
# `TensorDataset`. The training loader shuffles; the test loader does not. These are `main()`'s
# lines.
# %% [markdown] zh-CN
# ## 1. 数据
#
# torchvision 读取 MNIST 文件：60,000 张训练图片和 10,000 张测试图片，每张 28×28 像素，取值 0 到 255。
# 文章的变换是 `ToTensor()`（像素变成 0 到 1）再 `Normalize((0.1307,), (0.3081,))`（减去训练集的均值，
# 除以标准差）。脚本对所有图片一次做完这两步，把结果放进 `TensorDataset`。训练集的 `DataLoader`
# 打乱顺序，测试集的不打乱。下面就是 `main()` 里的这几行。

# %%
#> mnist_nn.py: MNIST_MEAN
#> mnist_nn.py: main "# 1. Data" "# 2."

# %% [markdown]
# One batch, as `train()` will see it: 64 images of 1×28×28, and their 64 labels.
# %% [markdown] zh-CN
# 一个 batch，也就是 `train()` 每一步拿到的东西：64 张 1×28×28 的图片和它们的 64 个标签。

# %%
images, labels = next(iter(train_loader))
print(f"images: {tuple(images.shape)} {images.dtype}, labels: {tuple(labels.shape)} {labels.dtype}")
print(f"pixel mean {images.mean():.2f}, std {images.std():.2f} (about 0 and 1 after Normalize)")
fig, axes = plt.subplots(1, 8, figsize=(10, 1.8))
for ax, image, label in zip(axes, images.cpu(), labels.cpu()):
    ax.imshow(image[0], cmap="gray")
    ax.set_title(str(label.item()))
    ax.axis("off")
plt.show()

# %% [markdown]
# ## 2. The network
#
# `SimpleNN` flattens each digit into 784 numbers, then one hidden layer of 128 units with ReLU,
# then 10 outputs, one per digit. It returns log-probabilities (`log_softmax`), which `nll_loss`
# in `train()` and `test()` turns into the cross-entropy loss. (The post counts the input as a
# layer and calls this network three-layer; it is the same network.)
# %% [markdown] zh-CN
# ## 2. 网络
#
# `SimpleNN` 把每张数字图片展平成 784 个数，经过一个 128 个单元、带 ReLU 的隐藏层，输出 10 个数，
# 每个数字一个。它返回对数概率（`log_softmax`），`train()` 和 `test()` 里的 `nll_loss` 再把它变成
# 交叉熵损失。（文章把输入也算作一层，称它为三层网络；网络是同一个。）

# %%
#> mnist_nn.py: SimpleNN

# %% [markdown]
# ## 3. Training and testing
#
# `train()` runs one epoch: for every batch, clear the old gradients, compute the output and
# the loss, `backward()` for the gradients, `step()` to move the weights. `test()` computes the
# average loss and the accuracy on the test set, without gradients.
# %% [markdown] zh-CN
# ## 3. 训练和测试
#
# `train()` 训练一个 epoch：对每个 batch，先清掉上一步的梯度，算出输出和损失，`backward()` 求梯度，
# `step()` 更新权重。`test()` 在测试集上计算平均损失和准确率，不需要梯度。

# %%
#> mnist_nn.py: train, test

# %% [markdown]
# ## 4. Model, optimizer and learning-rate schedule
#
# Adadelta at lr 1.0, as in the post. The `StepLR` schedule comes from pytorch/examples;
# `gamma = 1` in the settings keeps the learning rate constant, as the post does.
# %% [markdown] zh-CN
# ## 4. 模型、优化器和学习率调度器
#
# 和文章一样，用学习率 1.0 的 Adadelta。`StepLR` 学习率调度器来自 pytorch/examples；
# 在设置里写 `gamma = 1`，学习率就保持不变，和文章一样。

# %%
#> mnist_nn.py: main "# 2." "# 3."
print(model)

# %% [markdown]
# ## 5. The epoch loop
#
# Train, test, step the schedule, once per epoch. The script's loop is the same, with
# checkpoints, `--resume` and Ctrl-C handling around it (`TrainingRun` in `common/run.py`).
# %% [markdown] zh-CN
# ## 5. epoch 循环
#
# 每个 epoch：训练、测试、学习率调度器走一步。脚本里的循环也是这样，只是外面多了检查点、`--resume`
# 和 Ctrl-C 的处理（`common/run.py` 里的 `TrainingRun`）。

# %%
history = []
for epoch in range(1, epochs + 1):
    train_metrics = train(model, device, train_loader, optimizer, epoch=epoch, log_interval=log_interval)
    test_metrics = test(model, device, test_loader)
    scheduler.step()
    history.append({"epoch": epoch, **train_metrics, **test_metrics})

# %% [markdown]
# ## 6. The curves
#
# The training and test loss after each epoch, and the test accuracy.
# %% [markdown] zh-CN
# ## 6. 曲线
#
# 每个 epoch 之后的训练损失、测试损失和测试准确率。

# %%
done = [row["epoch"] for row in history]
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
left.plot(done, [row["train_loss"] for row in history], "o-", label="train")
left.plot(done, [row["test_loss"] for row in history], "o-", label="test")
left.set(xlabel="epoch", ylabel="loss", title="loss")
left.legend()
right.plot(done, [100 * row["test_accuracy"] for row in history], "o-", color="tab:green")
right.set(xlabel="epoch", ylabel="accuracy (%)", title="test accuracy")
plt.show()

# %% [markdown]
# ## 7. Predictions
#
# The first 16 test digits, each titled with the model's answer and the true label; wrong answers
# in red.
# %% [markdown] zh-CN
# ## 7. 预测
#
# 前 16 张测试图片，标题是模型的预测和真实标签；预测错的用红色。

# %%
images, labels = next(iter(test_loader))
model.eval()
with torch.no_grad():
    predicted = model(images[:16]).argmax(dim=1)
fig, axes = plt.subplots(2, 8, figsize=(10, 3.2))
for ax, image, label, guess in zip(axes.flat, images.cpu(), labels.cpu(), predicted.cpu()):
    ax.imshow(image[0], cmap="gray")
    ax.set_title(f"{guess.item()} ({label.item()})", color="black" if guess == label else "red")
    ax.axis("off")
plt.show()

# %% [markdown]
# ## Next
#
# - The same run from a terminal, with a run folder, checkpoints and `--resume`:
#   `python mnist_nn.py --epochs 14`.
# - Change one line and re-run from that cell: a hidden layer of 256 units, `lr = 0.5`,
#   `gamma = 1`, `batch_size = 128`.
# - Your own handwriting: `predict.py` (see this lesson's README).
# %% [markdown] zh-CN
# ## 接下来
#
# - 在终端里做同样的训练，带运行目录、检查点和 `--resume`：`python mnist_nn.py --epochs 14`。
# - 改一行，从那个单元格开始重新运行：隐藏层改成 256 个单元、`lr = 0.5`、`gamma = 1`、`batch_size = 128`。
# - 识别你自己写的数字：`predict.py`（见本课的 README）。
