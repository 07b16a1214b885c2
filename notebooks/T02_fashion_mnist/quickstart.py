# %% [markdown]
# # T02 · The official PyTorch Quickstart, start to end
#
# PyTorch's "Learn the Basics" Quickstart, one step per cell, in its order: FashionMNIST (28×28
# pictures of clothes) and its loaders, the `NeuralNetwork` (784 → 512 → 512 → 10), the loss and
# the optimizer, `train_loop()` and `test_loop()` for a few epochs, then its ending: save the
# weights, load them into a new `NeuralNetwork` and predict the first test image. The training
# and test functions are the "Optimizing Model Parameters" page's, which the Dataset/DataLoader
# post walks through. Every definition below is copied from `quickstart.py` when the notebook is
# built, so the notebook and the script cannot drift apart; the lines print what the Quickstart
# prints, in its formats.
#
# Run the cells from top to bottom (Shift+Enter).
# %% [markdown] zh-CN
# # T02 · PyTorch 官方 Quickstart，从头到尾
#
# PyTorch “Learn the Basics” 教程里的 Quickstart，一步一个单元格，顺序和教程相同：FashionMNIST（28×28 的
# 衣物图片）和它的 DataLoader，`NeuralNetwork`（784 → 512 → 512 → 10），损失函数和优化器，用 `train_loop()`
# 和 `test_loop()` 训练、测试几个 epoch，最后是教程的结尾：保存权重，把它们加载进一个新的 `NeuralNetwork`，
# 预测第一张测试图片。训练和测试函数来自 “Optimizing Model Parameters” 一页，也就是 Dataset/DataLoader
# 那篇文章讲解的两个函数。下面的每个定义都是生成笔记本时从 `quickstart.py` 原样复制来的，所以笔记本和
# 脚本不会不一致；打印的各行和 Quickstart 的输出格式相同。
#
# 从上到下依次运行单元格（Shift+Enter）。

# %%
#> setup

# %% [markdown]
# ## Settings
#
# The script's flags, as plain variables. These are the tutorial's own settings: 5 epochs of
# plain SGD at lr 0.001, batches of 64 (the whole notebook took 36 s on a 2-core CPU; the
# command is in [notebooks/README.md](../notebooks/README.md)). With
# this small learning rate and no momentum the model learns slowly and is still improving after
# 5 epochs; try `epochs = 10`, or `lr = 1e-2`. `device` is the lesson's default choice: an
# NVIDIA GPU (CUDA) if there is one, then an Apple GPU (MPS), then the CPU; write
# `device = torch.device("cpu")` to force the CPU. `data_dir = None` puts the data where the
# scripts put it: the folder named by the environment variable `PYTORCH_TUTORIAL_DATA_DIR`, else
# the repository's `data/`.
# %% [markdown] zh-CN
# ## 设置
#
# 脚本的命令行参数，这里写成普通变量。这就是教程自己的设置：5 个 epoch、学习率 0.001 的普通 SGD、
# batch 大小 64（整个笔记本在 2 核 CPU 上运行了 36 秒；测量命令见
# [notebooks/README.zh-CN.md](../notebooks/README.zh-CN.md)）。学习率这么小，又没有动量，模型学得很慢，5 个 epoch
# 之后还在进步；可以试试 `epochs = 10` 或 `lr = 1e-2`。`device` 和课程脚本的默认选择相同：有 NVIDIA GPU
# （CUDA）就用它，其次是 Apple GPU（MPS），最后是 CPU；想强制用 CPU，写 `device = torch.device("cpu")`。
# `data_dir = None` 让数据放在脚本放的地方：环境变量 `PYTORCH_TUTORIAL_DATA_DIR` 指定的目录，没有设置时
# 是仓库的 `data/` 目录。

# %%
import time

import matplotlib.pyplot as plt
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset
from torchvision import datasets

from common import data  # finds the dataset, or downloads it, and checks the files

epochs = 5              # the tutorial: 5
batch_size = 64
lr = 1e-3
log_interval = 100      # print the loss every 100 batches, as the tutorial does
seed = 1
data_dir = None
device = torch.device("cuda" if torch.cuda.is_available()
                      else "mps" if torch.backends.mps.is_available() else "cpu")
torch.manual_seed(seed)
generator = torch.Generator().manual_seed(seed)  # the shuffling's own random numbers
print(f"torch {torch.__version__}")

# %% [markdown]
# ## 1. Working with data
#
# torchvision reads the FashionMNIST files: 60,000 training and 10,000 test pictures, ten
# classes of clothes. The tutorial's transform is `ToTensor()` alone: pixels from 0..255 to
# 0..1, no `Normalize`. The script does exactly that once, for all the images, and keeps them in
# a `TensorDataset`; then come the two `DataLoader`s of 64 images. One difference from the
# tutorial: the training loader shuffles (a fixed order lets the model learn the order); the
# test loader never does. These are `main()`'s lines, and they print the Quickstart's look at
# one batch and the device.
# %% [markdown] zh-CN
# ## 1. 处理数据
#
# torchvision 读取 FashionMNIST 文件：60,000 张训练图片和 10,000 张测试图片，共十类衣物。教程的变换只有
# `ToTensor()`：像素从 0..255 变成 0..1，不做 `Normalize`。脚本对所有图片一次做完这一步，把结果放进
# `TensorDataset`，再建两个每 batch 64 张图片的 `DataLoader`。和教程有一处不同：训练集的 `DataLoader`
# 打乱顺序（顺序固定，模型会学到顺序本身），测试集的从不打乱。下面就是 `main()` 里的这几行，它们打印
# Quickstart 对一个 batch 的查看结果和所用的设备。

# %%
#> quickstart.py: main "# 1. Data" "# 2."

# %% [markdown]
# A few training pictures with their class names: the Quickstart's `classes` list, label 0 to 9.
# %% [markdown] zh-CN
# 几张训练图片和它们的类别名：Quickstart 的 `classes` 列表，标签 0 到 9。

# %%
#> quickstart.py: classes

X, y = next(iter(train_dataloader))
fig, axes = plt.subplots(1, 8, figsize=(12, 2))
for ax, image, label in zip(axes, X.cpu(), y.cpu()):
    ax.imshow(image[0], cmap="gray")
    ax.set_title(classes[label], fontsize=9)
    ax.axis("off")
plt.show()

# %% [markdown]
# ## 2. Creating models
#
# `NeuralNetwork` flattens each picture into 784 numbers, then two hidden layers of 512 units
# with ReLU, then 10 scores, one per class. The last layer has no ReLU and no softmax: the loss
# below takes the raw scores (logits). The class and layer names are the tutorial's, so its
# saved weights load into this class.
# %% [markdown] zh-CN
# ## 2. 创建模型
#
# `NeuralNetwork` 把每张图片展平成 784 个数，经过两个 512 个单元、带 ReLU 的隐藏层，输出 10 个分数，
# 每类一个。最后一层后面没有 ReLU，也没有 softmax：下面的损失函数要的是原始分数（logits）。类名和层名
# 都和教程相同，所以教程保存的权重可以直接加载进这个类。

# %%
#> quickstart.py: NeuralNetwork

# %% [markdown]
# ## 3. Optimizing the model parameters
#
# The model on the device, printed; `nn.CrossEntropyLoss()`, which applies the softmax itself;
# plain SGD at the settings' learning rate, without momentum. These are `main()`'s lines.
# %% [markdown] zh-CN
# ## 3. 优化模型参数
#
# 把模型放到设备上并打印出来；`nn.CrossEntropyLoss()`，它自己会做 softmax；按设置里的学习率、不带动量的
# 普通 SGD。下面就是 `main()` 里的这几行。

# %%
#> quickstart.py: main "# 2." "# 3."

# %% [markdown]
# `train_loop()` runs one epoch: for every batch, the prediction and the loss, `backward()` for
# the gradients, `step()` to move the weights, `zero_grad()` to clear the gradients for the next
# batch; every 100 batches it prints `loss: ...  [images so far/60000]`. `test_loop()` computes
# the accuracy and the average loss on the test set, without gradients, and prints
# `Test Error:` with them.
# %% [markdown] zh-CN
# `train_loop()` 训练一个 epoch：对每个 batch 算出预测和损失，`backward()` 求梯度，`step()` 更新权重，
# `zero_grad()` 清掉梯度，留给下一个 batch；每 100 个 batch 打印一行 `loss: ...  [已用图片数/60000]`。
# `test_loop()` 在测试集上计算准确率和平均损失，不需要梯度，并在 `Test Error:` 下面打印它们。

# %%
#> quickstart.py: train_loop, test_loop

# %% [markdown]
# The Quickstart's loop: train, test, once per epoch, then `Done!`. The script's loop is the
# same, with a run folder, checkpoints, `--resume` and Ctrl-C handling around it (`TrainingRun`
# in `common/run.py`). `history` keeps each epoch's numbers for the curves.
# %% [markdown] zh-CN
# Quickstart 的循环：每个 epoch 训练、测试各一次，最后打印 `Done!`。脚本里的循环也是这样，只是外面多了
# 运行目录、检查点、`--resume` 和 Ctrl-C 的处理（`common/run.py` 里的 `TrainingRun`）。`history`
# 记下每个 epoch 的数字，用来画曲线。

# %%
history = []
for t in range(epochs):
    print(f"Epoch {t + 1}\n-------------------------------")
    train_metrics = train_loop(train_dataloader, model, loss_fn, optimizer, log_interval=log_interval)
    test_metrics = test_loop(test_dataloader, model, loss_fn)
    history.append({"epoch": t + 1, **train_metrics, **test_metrics})
print("Done!")

# %% [markdown]
# The training and test loss after each epoch, and the test accuracy. With lr 0.001 and no
# momentum both losses are still falling: more epochs, or a larger learning rate, would help.
# `fashion_mnist.py` trains the same model with the posts' settings (lr 0.01, momentum 0.9).
# %% [markdown] zh-CN
# 每个 epoch 之后的训练损失、测试损失和测试准确率。学习率 0.001、没有动量，两条损失曲线都还在下降：
# 多训练几个 epoch，或者加大学习率，都会更好。`fashion_mnist.py` 用文章的设置（学习率 0.01、动量 0.9）
# 训练同一个模型。

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
# ## 4. Saving models
#
# The Quickstart's way: save the model's `state_dict` (its weights, by layer name), not the
# model object. `model.pth` goes to the current folder, this lesson's folder, as in the
# tutorial (git ignores `*.pth`); the script saves it in its run folder instead.
# %% [markdown] zh-CN
# ## 4. 保存模型
#
# Quickstart 的做法：保存模型的 `state_dict`（按层名存放的权重），而不是模型对象本身。和教程一样，
# `model.pth` 写到当前目录，也就是本课的目录（git 忽略 `*.pth` 文件）；脚本则把它保存在运行目录里。

# %%
torch.save(model.state_dict(), "model.pth")
print("Saved PyTorch Model State to model.pth")

# %% [markdown]
# ## 5. Loading models
#
# A new `NeuralNetwork`, its weights loaded from `model.pth` (`weights_only=True`: only
# tensors, no code, is read from the file), switched to evaluation mode, predicts the first
# test picture. This is the function the script calls after saving.
# %% [markdown] zh-CN
# ## 5. 加载模型
#
# 一个新的 `NeuralNetwork`，从 `model.pth` 加载权重（`weights_only=True`：只从文件里读张量，不读代码），
# 切换到评估模式，预测第一张测试图片。这就是脚本保存权重之后调用的函数。

# %%
#> quickstart.py: load_and_predict


predicted, actual = load_and_predict("model.pth", test_data, device)
print(f'Predicted: "{predicted}", Actual: "{actual}"')

# %% [markdown]
# The picture it saw.
# %% [markdown] zh-CN
# 它看到的那张图片。

# %%
fig, ax = plt.subplots(figsize=(2.5, 2.8))
ax.imshow(test_data[0][0][0].cpu(), cmap="gray")
ax.set_title(f"predicted: {predicted}\nactual: {actual}", fontsize=9,
             color="black" if predicted == actual else "red")
ax.axis("off")
plt.show()

# %% [markdown]
# ## Next
#
# - The same run from a terminal, with a run folder, checkpoints and `--resume`:
#   `python quickstart.py` (add `--epochs 10`, `--lr 1e-2`, ...).
# - The posts' own model and settings, the deeper MLP and the CNN: the notebook
#   `fashion_mnist.ipynb` beside this one.
# %% [markdown] zh-CN
# ## 接下来
#
# - 在终端里做同样的训练，带运行目录、检查点和 `--resume`：`python quickstart.py`（可以加
#   `--epochs 10`、`--lr 1e-2` 等）。
# - 文章自己的模型和设置、更深的 MLP 和 CNN：旁边的笔记本 `fashion_mnist.ipynb`。
