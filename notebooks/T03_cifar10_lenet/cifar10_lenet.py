# %% [markdown]
# # T03 · CIFAR-10 in colour with LeNet-5
#
# The CIFAR-10 post, one step per cell: load the 60,000 small colour photographs of CIFAR-10 and
# look at a few, define LeNet-5 (two convolutions, then three fully connected layers), train it
# with `CrossEntropyLoss` and SGD with momentum, test it on a few images and on all 10,000, then
# read the accuracy class by class. Every definition below (`LeNet`, `train()`, `test()`, the
# figure functions, the data and model lines) is copied from `cifar10_lenet.py` when the notebook
# is built, so the notebook and the script cannot drift apart.
#
# Run the cells from top to bottom (Shift+Enter). The settings cell keeps the run short; the
# post's full run is one edit away.
# %% [markdown] zh-CN
# # T03 · 用 LeNet-5 识别彩色的 CIFAR-10
#
# CIFAR-10 这篇文章，一步一个单元格：加载 CIFAR-10 的 60,000 张小彩色照片并看几张，定义 LeNet-5
# （两个卷积层，再接三个全连接层），用 `CrossEntropyLoss` 和带动量的 SGD 训练它，先在几张测试图片上、
# 再在全部 10,000 张上测试，最后逐个类别地看准确率。下面的每个定义（`LeNet`、`train()`、`test()`、
# 画图的函数、数据和模型那几行）都是生成笔记本时从 `cifar10_lenet.py` 原样复制来的，所以笔记本和
# 脚本不会不一致。
#
# 从上到下依次运行单元格（Shift+Enter）。设置单元格让这次运行很短；改一处就是文章的完整设置。

# %%
#> setup

# %% [markdown]
# ## Settings
#
# The script's flags, as plain variables. At the post's batch of 4 an epoch is 12,500 training
# steps: the lesson's benchmarks measured 1,400 to 2,900 training images a second on a 2-core
# CPU, 20 to 35 seconds an epoch, so the two epochs here take about a minute.
# **The post's run is `epochs = 5`**, everything else as it is. `device` is the lesson's
# default choice, and the post's part on training on a GPU: an NVIDIA GPU (CUDA) if there is
# one, then an Apple GPU (MPS), then the CPU; write `device = torch.device("cpu")` to force the
# CPU. `data_dir = None` puts the data where the scripts put it: the folder named by the
# environment variable `PYTORCH_TUTORIAL_DATA_DIR`, else the repository's `data/`. The first run
# downloads CIFAR-10 (about 170 MB).
# %% [markdown] zh-CN
# ## 设置
#
# 脚本的命令行参数，这里写成普通变量。文章的批量大小是 4，一个 epoch 要训练 12,500 步：本课的基准测试
# 在 2 核 CPU 上测得每秒训练 1,400 到 2,900 张图片，一个 epoch 20 到 35 秒，所以这里的两个 epoch
# 大约一分钟。**文章的完整运行是 `epochs = 5`**，其他设置不变。`device` 和课程脚本的默认选择相同，
# 也就是文章里讲在 GPU 上训练的那部分：有 NVIDIA GPU（CUDA）就用它，其次是 Apple GPU（MPS），最后是 CPU；
# 想强制用 CPU，写 `device = torch.device("cpu")`。`data_dir = None` 让数据放在脚本放的地方：
# 环境变量 `PYTORCH_TUTORIAL_DATA_DIR` 指定的目录，没有设置时是仓库的 `data/` 目录。第一次运行会下载
# CIFAR-10（约 170 MB）。

# %%
import time

import matplotlib.pyplot as plt
import torch
from torch import nn, optim
from torch.nn import functional as F
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset
from torchvision import datasets

from common import data  # finds the dataset, or downloads it, and checks the files

epochs = 2              # the post: 5
batch_size = 4          # the post's
test_batch_size = 1000  # changes the speed of testing, never its results
lr = 0.001
momentum = 0.9
log_interval = 2000     # print the average loss every 2000 batches, as the post does
num_images = 4          # test images shown with their predictions, as in the post
seed = 1
data_dir = None
device = torch.device("cuda" if torch.cuda.is_available()
                      else "mps" if torch.backends.mps.is_available() else "cpu")
torch.manual_seed(seed)
generator = torch.Generator().manual_seed(seed)  # the shuffling's own random numbers
print(f"Using device: {device} | torch {torch.__version__}")

# %% [markdown]
# ## 1. Loading and normalising CIFAR-10
#
# *The post: loading CIFAR-10, normalising it to -1..1, the two loaders and the ten class names.*
#
# torchvision reads the CIFAR-10 files: 50,000 training and 10,000 test images, 32×32 pixels in
# three colours. The post's transform is `ToTensor()` (pixels to 0..1) then
# `Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))` (0..1 to -1..1). The script does exactly that
# once, for all the images, and keeps the result in a `TensorDataset`. The training loader
# shuffles; the test loader does not, so the same test images come first in every run. The
# class names are the post's short ones, in CIFAR-10's label order (label 0 is `plane`). These
# are `main()`'s lines.
# %% [markdown] zh-CN
# ## 1. 加载 CIFAR-10 并归一化
#
# *文章：加载 CIFAR-10，归一化到 -1..1，两个 DataLoader，以及十个类别名。*
#
# torchvision 读取 CIFAR-10 文件：50,000 张训练图片和 10,000 张测试图片，每张 32×32 像素，三个颜色通道。
# 文章的变换是 `ToTensor()`（像素变成 0 到 1）再 `Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))`
# （0..1 变成 -1..1）。脚本对所有图片一次做完这两步，把结果放进 `TensorDataset`。训练集的 `DataLoader`
# 打乱顺序，测试集的不打乱，所以每次运行排在最前面的都是同样几张测试图片。类别名用文章的简写，
# 顺序是 CIFAR-10 的标签顺序（标签 0 是 `plane`）。下面就是 `main()` 里的这几行。

# %%
#> cifar10_lenet.py: CLASSES

#> cifar10_lenet.py: MEAN

#> cifar10_lenet.py: main "# 1. Data" "# 2."
print(f"{len(train_set):,} training images, {len(test_set):,} test images")

# %% [markdown]
# One batch of training images, as `train()` will see it, with their class names. The post
# takes it with `dataiter.next()`, a method that no longer exists: today it is
# `next(iter(train_loader))`. To draw the images, `x * 0.5 + 0.5` undoes `Normalize`.
# %% [markdown] zh-CN
# 一个 batch 的训练图片，也就是 `train()` 每一步拿到的东西，标题是它们的类别名。文章用
# `dataiter.next()` 取出这个 batch，这个方法今天已经没有了，要写成 `next(iter(train_loader))`。
# 画图前用 `x * 0.5 + 0.5` 撤销 `Normalize`。

# %%
images, labels = next(iter(train_loader))
print(f"images: {tuple(images.shape)}, labels: {tuple(labels.shape)}")
print(" ".join(f"{CLASSES[label]:>5s}" for label in labels.tolist()))  # the post prints the names so
shown = images[:8].cpu()
fig, axes = plt.subplots(1, len(shown), figsize=(1.6 * len(shown), 2), squeeze=False)
for ax, image, label in zip(axes.flat, shown, labels.tolist()):
    # matplotlib wants height x width x colour; the model, colour x height x width.
    ax.imshow((image.permute(1, 2, 0) * torch.tensor(STD) + torch.tensor(MEAN)).clamp(0, 1).numpy())
    ax.set_title(CLASSES[label])
    ax.axis("off")
plt.show()

# %% [markdown]
# ## 2. The network: LeNet-5
#
# *The post: defining the network, `Net`.*
#
# Two stages of 5×5 convolution, ReLU and 2×2 max-pooling turn a 3×32×32 image into 16×5×5
# feature maps; three fully connected layers take those 400 numbers to 120, 84 and 10 scores,
# one per class. The last layer has no ReLU and no softmax: `CrossEntropyLoss` wants the raw
# scores (logits). The post calls the class `Net`; the layers keep the post's names, so the
# post's weights load into `LeNet` unchanged.
# %% [markdown] zh-CN
# ## 2. 网络：LeNet-5
#
# *文章：定义网络 `Net`。*
#
# 两级 5×5 卷积、ReLU 和 2×2 最大池化，把一张 3×32×32 的图片变成 16×5×5 的特征图；三个全连接层把这
# 400 个数变成 120 个、84 个，最后是 10 个分数，每个类别一个。最后一层没有 ReLU，也没有 softmax：
# `CrossEntropyLoss` 要的是原始分数（logits）。文章把这个类叫作 `Net`；各层沿用文章的名字，所以文章的
# 权重可以原样加载到 `LeNet` 里。

# %%
#> cifar10_lenet.py: LeNet

# %% [markdown]
# ## 3. Loss and optimizer
#
# *The post: `CrossEntropyLoss`, and SGD with momentum.*
#
# `nn.CrossEntropyLoss()` applies `log_softmax` to the scores and takes the negative
# log-likelihood of the true class. SGD at lr 0.001 with momentum 0.9: each step moves the
# weights against the gradient, plus 0.9 of the previous step, which smooths the zig-zag of
# small, noisy batches. The post keeps the learning rate constant: no scheduler.
# %% [markdown] zh-CN
# ## 3. 损失函数和优化器
#
# *文章：`CrossEntropyLoss`，以及带动量的 SGD。*
#
# `nn.CrossEntropyLoss()` 先对分数做 `log_softmax`，再取真实类别的负对数似然。SGD 的学习率是 0.001，
# 动量是 0.9：每一步把权重往梯度的反方向移动一点，再加上上一步的 0.9 倍，这样能平滑小 batch 带来的
# 来回摆动。文章的学习率始终不变，没有学习率调度器。

# %%
#> cifar10_lenet.py: main "# 2." "# 3."
print(model)
print(f"Parameters: {sum(p.numel() for p in model.parameters()):,}")

# %% [markdown]
# ## 4. Training
#
# *The post: training the network, and its `[1,  2000] loss:` lines.*
#
# `train()` runs one epoch: for every batch, clear the old gradients, compute the scores and
# the loss, `backward()` for the gradients, `step()` to move the weights. Every 2,000 batches it
# prints the average loss of those batches in the post's format, `[epoch, batch] loss:`. The
# post adds up `loss.data[0]`, which fails today; `train()` adds the loss to a tensor and reads
# it with `.item()` only when it prints.
# %% [markdown] zh-CN
# ## 4. 训练
#
# *文章：训练网络，以及 `[1,  2000] loss:` 这样的行。*
#
# `train()` 训练一个 epoch：对每个 batch，先清掉上一步的梯度，算出分数和损失，`backward()` 求梯度，
# `step()` 更新权重。每 2,000 个 batch 按文章的格式 `[epoch, batch] loss:` 打印这些 batch 的平均损失。
# 文章累加的是 `loss.data[0]`，今天会报错；`train()` 把损失加到一个张量上，只在打印时用 `.item()`
# 取出数值。

# %%
#> cifar10_lenet.py: train

# %% [markdown]
# `test()` is the post's count of correct answers on the 10,000 test images, without gradients
# (`torch.no_grad()`, which the post leaves out). It also records every image's true and
# predicted class in a **confusion matrix** (row = true class, column = predicted class):
# overall accuracy is its diagonal over its total, and the accuracy of each class comes from it
# in section 6.
# %% [markdown] zh-CN
# `test()` 就是文章里在 10,000 张测试图片上数对了多少张的那一步，不需要梯度（`torch.no_grad()`，
# 文章没有写）。它还把每张图片的真实类别和预测类别记进一个**混淆矩阵**（行是真实类别，列是预测类别）：
# 总体准确率是对角线之和除以总数，第 6 节的每个类别的准确率也从它算出。

# %%
#> cifar10_lenet.py: test

# %% [markdown]
# The epoch loop: train, then test, once per epoch, so that the test line after each epoch
# shows how the accuracy grows. The script's loop is the same, with checkpoints, `--resume` and
# Ctrl-C handling around it (`TrainingRun` in `common/run.py`).
# %% [markdown] zh-CN
# epoch 循环：每个 epoch 先训练、再测试，每个 epoch 之后的测试行显示准确率怎样提高。脚本里的循环
# 也是这样，只是外面多了检查点、`--resume` 和 Ctrl-C 的处理（`common/run.py` 里的 `TrainingRun`）。

# %%
history = []
for epoch in range(1, epochs + 1):
    train_metrics = train(model, device, train_loader, optimizer, loss_fn=criterion, epoch=epoch,
                          log_interval=log_interval)
    test_metrics = test(model, device, test_loader, loss_fn=criterion)
    confusion = test_metrics.pop("confusion")  # the 10 x 10 table, for section 6
    history.append({"epoch": epoch, **train_metrics, **test_metrics})
print("Finished Training")  # the post's words at this point

# %% [markdown]
# ## 5. Testing on a few images
#
# *The post: the first four test images, and the `GroundTruth:` and `Predicted:` lines.*
#
# `show_predictions()` takes the first `num_images` test images, prints the true and the
# predicted classes spaced as the post prints them, and draws the images with both; `(x)` marks
# a wrong guess. On real CIFAR-10 the first four are a cat, two ships and a plane, so the
# `GroundTruth:` line reads `cat  ship  ship plane`, as in the post.
# %% [markdown] zh-CN
# ## 5. 在几张测试图片上试一试
#
# *文章：前四张测试图片，以及 `GroundTruth:` 和 `Predicted:` 两行。*
#
# `show_predictions()` 取前 `num_images` 张测试图片，按文章的间距打印真实类别和预测类别，并把图片和
# 这两个类别画出来；`(x)` 表示猜错了。在真正的 CIFAR-10 上，前四张是一只猫、两艘船和一架飞机，
# 所以 `GroundTruth:` 一行是 `cat  ship  ship plane`，与文章相同。

# %%
#> cifar10_lenet.py: show_predictions

# %%
lines, fig = show_predictions(model, test_set, num_images)
print("\n".join(lines))
plt.show()

# %% [markdown]
# ## 6. Accuracy on all the test images, and per class
#
# *The post: the accuracy on the 10,000 test images, then the accuracy of each class.*
#
# From the last epoch's confusion matrix: `post_style_lines()` prints the post's closing
# lines, `Accuracy of the network on the 10000 test images: ... %` and one
# `Accuracy of plane : ... %` line per class. Like the post's `'%d %%'`, they drop the
# decimals (61.9% prints as 61 %). The post's own run (5 epochs) reports about 61%, with cats
# and birds the hardest classes and cars, ships and planes the easiest.
# %% [markdown] zh-CN
# ## 6. 全部测试图片上的准确率，以及每个类别的准确率
#
# *文章：在 10,000 张测试图片上的准确率，然后是每个类别的准确率。*
#
# 用最后一个 epoch 的混淆矩阵：`post_style_lines()` 打印文章结尾的那几行，
# `Accuracy of the network on the 10000 test images: ... %`，再为每个类别打印一行
# `Accuracy of plane : ... %`。和文章的 `'%d %%'` 一样，小数部分直接舍去（61.9% 打印成 61 %）。
# 文章自己的运行（5 个 epoch）报告约 61%，猫和鸟最难，汽车、船和飞机最容易。

# %%
#> cifar10_lenet.py: per_class_accuracy, post_style_lines, per_class_figure

# %%
for line in post_style_lines(confusion):
    print(line)

# %% [markdown]
# The same per-class accuracies as a bar chart (the script's `per_class.png`), with the
# overall accuracy and chance (10%) as lines: a class far below the green line is one the
# network confuses with others.
# %% [markdown] zh-CN
# 同样的每个类别的准确率，画成柱状图（脚本的 `per_class.png`），总体准确率和随机猜测（10%）画成两条线：
# 远低于绿线的类别，就是网络常和别的类别搞混的那些。

# %%
fig = per_class_figure(confusion)
plt.show()

# %% [markdown]
# ## 7. The curves
#
# The training and test loss after each epoch, and the test accuracy (the script's
# `curves.png`). When the training loss keeps falling while the test loss rises, the network is
# memorising the training images (overfitting) rather than learning.
# %% [markdown] zh-CN
# ## 7. 曲线
#
# 每个 epoch 之后的训练损失、测试损失和测试准确率（脚本的 `curves.png`）。如果训练损失还在下降，
# 测试损失却开始上升，网络就是在记住训练图片（过拟合），而不是在学习。

# %%
done = [row["epoch"] for row in history]
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
left.plot(done, [row["train_loss"] for row in history], "o-", label="train")
left.plot(done, [row["test_loss"] for row in history], "o-", label="test")
left.set(xlabel="epoch", ylabel="loss", title="loss", xticks=done)
left.legend()
right.plot(done, [100 * row["test_accuracy"] for row in history], "o-", color="tab:green")
right.set(xlabel="epoch", ylabel="accuracy (%)", title="test accuracy", xticks=done)
plt.show()

# %% [markdown]
# ## Next
#
# - The post's run from a terminal, with a run folder, checkpoints and `--resume`:
#   `python cifar10_lenet.py` (5 epochs, batch 4).
# - Change one line and re-run from that cell: `epochs = 5`; `batch_size = 64` with
#   `lr = 0.01` (several times faster epochs); wider layers in the `LeNet` cell, e.g.
#   `nn.Conv2d(3, 32, 5)` and `nn.Conv2d(32, 64, 5)`, with `fc1` taking `64 * 5 * 5` inputs.
#   The README's "Why LeNet stops near 60%, and what to try next" has more.
# - Your own photo: `predict.py` (see this lesson's README).
# %% [markdown] zh-CN
# ## 接下来
#
# - 在终端里做文章的完整训练，带运行目录、检查点和 `--resume`：`python cifar10_lenet.py`
#   （5 个 epoch，batch 4）。
# - 改一行，从那个单元格开始重新运行：`epochs = 5`；`batch_size = 64` 配 `lr = 0.01`（每个 epoch
#   快好几倍）；在 `LeNet` 那个单元格里把层加宽，例如 `nn.Conv2d(3, 32, 5)` 和 `nn.Conv2d(32, 64, 5)`，
#   `fc1` 的输入改成 `64 * 5 * 5`。README 的“为什么 LeNet 停在 60% 左右，接下来可以试什么”一节还有更多。
# - 识别你自己的照片：`predict.py`（见本课的 README）。
