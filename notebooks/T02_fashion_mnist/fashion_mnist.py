# %% [markdown]
# # T02 · FashionMNIST: an MLP, a deeper MLP and a CNN
#
# The FashionMNIST posts, one step per cell: the model of PyTorch's "Build the Neural Network"
# tutorial (784 → 512 → 512 → 10), trained with SGD on 28×28 pictures of clothes; why it does
# worse there than on MNIST digits; the post's deeper MLP, `NeuralNetwork_v1`, which doesn't
# help; and its CNN with batch norm and dropout, `ConvNeuralNetwork`, which does. Then the
# curves, sixteen predictions and the confusion matrix, and (optional) a validation set with
# early stopping. Every definition below (the three models, `train()`, `test()`, the data and
# model lines, the figures) is copied from `fashion_mnist.py` when the notebook is built, so the
# notebook and the script cannot drift apart.
#
# Run the cells from top to bottom (Shift+Enter). The settings cell chooses the model.
# %% [markdown] zh-CN
# # T02 · FashionMNIST：MLP、更深的 MLP 和 CNN
#
# FashionMNIST 那组文章，一步一个单元格：PyTorch “Build the Neural Network” 教程里的模型
# （784 → 512 → 512 → 10），用 SGD 在 28×28 的衣物图片上训练；为什么它在这里比在 MNIST 手写数字上差；
# 文章里更深的 MLP `NeuralNetwork_v1`，没有帮助；带批标准化和 dropout 的 CNN `ConvNeuralNetwork`，
# 有帮助。然后是曲线、16 张图片的预测和混淆矩阵，以及（可选的）验证集和及时停止。下面的每个定义（三个模型、
# `train()`、`test()`、数据和模型那几行、画图函数）都是生成笔记本时从 `fashion_mnist.py` 原样复制来的，
# 所以笔记本和脚本不会不一致。
#
# 从上到下依次运行单元格（Shift+Enter）。在设置单元格里选择模型。

# %%
#> setup

# %% [markdown]
# ## Settings
#
# The script's flags, as plain variables; the defaults are the posts' run: 5 epochs of SGD at
# lr 0.01 with momentum 0.9, batches of 64. **`model_name` chooses the network**: `"mlp"` (the
# tutorial's `NeuralNetwork`), `"mlp-deep"` (the post's `NeuralNetwork_v1`) or `"cnn"` (the
# post's `ConvNeuralNetwork`, several times slower per epoch on a CPU; this lesson's NOTES.md has
# the times measured on a 2-core CPU). `dataset = "mnist"` gives the posts' first run, the same
# MLP on digits. After a change, run again from this cell down.
#
# The post checks the GPU with `nvcc --version`; PyTorch needs only the NVIDIA driver, and
# `device` below is the lesson's default choice: CUDA if there is one, then an Apple GPU (MPS),
# then the CPU; write `device = torch.device("cpu")` to force the CPU. `data_dir = None` puts
# the data where the scripts put it: the folder named by `PYTORCH_TUTORIAL_DATA_DIR`, else the
# repository's `data/`.
# %% [markdown] zh-CN
# ## 设置
#
# 脚本的命令行参数，这里写成普通变量；默认值就是文章的设置：5 个 epoch、学习率 0.01、动量 0.9 的 SGD，
# batch 大小 64。**`model_name` 选择网络**：`"mlp"`（教程的 `NeuralNetwork`）、`"mlp-deep"`（文章的
# `NeuralNetwork_v1`）或 `"cnn"`（文章的 `ConvNeuralNetwork`，在 CPU 上每个 epoch 慢好几倍；本课的 NOTES.zh-CN.md
# 里有在 2 核 CPU 上测出的时间）。`dataset = "mnist"` 就是文章的第一次运行：同一个 MLP 识别手写数字。
# 改了设置之后，从这个单元格开始往下重新运行。
#
# 文章用 `nvcc --version` 检查 GPU；PyTorch 只需要 NVIDIA 驱动。下面的 `device` 和课程脚本的默认选择相同：
# 有 CUDA 就用它，其次是 Apple GPU（MPS），最后是 CPU；想强制用 CPU，写 `device = torch.device("cpu")`。
# `data_dir = None` 让数据放在脚本放的地方：环境变量 `PYTORCH_TUTORIAL_DATA_DIR` 指定的目录，没有设置时
# 是仓库的 `data/` 目录。

# %%
import time

import matplotlib.pyplot as plt
import torch
from torch import nn, optim
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset
from torchvision import datasets

from common import data  # finds the dataset, or downloads it, and checks the files

model_name = "mlp"         # "mlp": NeuralNetwork, "mlp-deep": NeuralNetwork_v1, "cnn": ConvNeuralNetwork
dataset = "fashion-mnist"  # or "mnist"
epochs = 5                 # the posts: 5
batch_size = 64
test_batch_size = 1000     # the posts: 64 (the same results, only slower)
optimizer_name = "sgd"     # or "adam" (then try lr = 0.001)
lr = 0.01
momentum = 0.9
scheduler_name = "none"    # "step": StepLR, lr *= gamma every step_size epochs
step_size = 2
gamma = 0.5
log_interval = 100         # print the average loss of the last 100 steps, every 100 steps
measured_stats = False     # True: normalise with the training images' own mean and std, not 0.5 and 0.5
val_size = None            # a number: hold out that many training images as a validation set
seed = 1
data_dir = None
device = torch.device("cuda" if torch.cuda.is_available()
                      else "mps" if torch.backends.mps.is_available() else "cpu")
torch.manual_seed(seed)
generator = torch.Generator().manual_seed(seed)  # the shuffling's own random numbers
print(f"Using device: {device} | torch {torch.__version__}")

# %% [markdown]
# ## 1. Building the network
#
# The tutorial's model. `nn.Flatten()` turns each 28×28 picture into 784 numbers; `nn.Sequential`
# chains `Linear(784, 512)`, ReLU, `Linear(512, 512)`, ReLU and `Linear(512, 10)`: ten scores
# (logits), one per class. The loss, `nn.CrossEntropyLoss`, applies the softmax itself, so the
# model ends with a plain `Linear` layer: no ReLU and no softmax after it.
# %% [markdown] zh-CN
# ## 1. 搭建网络
#
# 教程里的模型。`nn.Flatten()` 把每张 28×28 的图片展平成 784 个数；`nn.Sequential` 依次连接
# `Linear(784, 512)`、ReLU、`Linear(512, 512)`、ReLU 和 `Linear(512, 10)`：十个分数（logits），每类一个。
# 损失函数 `nn.CrossEntropyLoss` 自己会做 softmax，所以模型最后是一个普通的 `Linear` 层，后面没有 ReLU，
# 也没有 softmax。

# %%
#> fashion_mnist.py: NeuralNetwork

# %% [markdown]
# The post's sections 4.1-4.2 follow three made-up "images" through these layers, one at a
# time. `nn.Flatten()` keeps dimension 0, the batch; `nn.Linear(in, out)` computes
# `x @ W.T + b` for each row, with `W` of shape (out, in); ReLU turns negatives into 0.
# %% [markdown] zh-CN
# 文章 4.1-4.2 节让三张随机生成的“图片”一层一层地经过这些层。`nn.Flatten()` 保留第 0 维，也就是 batch；
# `nn.Linear(in, out)` 对每一行计算 `x @ W.T + b`，其中 `W` 的形状是 (out, in)；ReLU 把负数变成 0。

# %%
input_image = torch.rand(3, 28, 28)  # three 28x28 "images", no channel dimension
flat_image = nn.Flatten()(input_image)
print("Flatten:", flat_image.shape)
hidden1 = nn.Linear(28 * 28, 20)(flat_image)
print("Linear(784, 20):", hidden1.shape)
hidden1 = nn.ReLU()(hidden1)
print("ReLU, smallest value:", hidden1.min().item())
print("the whole model:", NeuralNetwork()(input_image).shape)

# %% [markdown]
# ## 2. The data
#
# torchvision reads the files: 60,000 training and 10,000 test pictures. The posts' transform
# is `ToTensor()` (pixels to 0..1) then `Normalize((0.5,), (0.5,))` (to -1..1). `normalised()`
# does exactly that once, for all the images, and keeps them in a `TensorDataset`.
# `split_validation()` and `measured_statistics()` serve two settings that are off by default
# (`val_size`, `measured_stats`).
# %% [markdown] zh-CN
# ## 2. 数据
#
# torchvision 读取数据文件：60,000 张训练图片和 10,000 张测试图片。文章的变换是 `ToTensor()`（像素变成
# 0 到 1）再 `Normalize((0.5,), (0.5,))`（变成 -1 到 1）。`normalised()` 对所有图片一次做完这两步，
# 把结果放进 `TensorDataset`。`split_validation()` 和 `measured_statistics()` 用于两个默认关闭的设置
# （`val_size`、`measured_stats`）。

# %%
#> fashion_mnist.py: POSTS_MEAN, normalised, split_validation, measured_statistics

# %% [markdown]
# `main()`'s data lines: the dataset, the normalised tensors and the loaders. The training loader
# shuffles; the test loader never does.
# %% [markdown] zh-CN
# `main()` 里处理数据的几行：数据集、归一化后的张量和 `DataLoader`。训练集的 `DataLoader` 打乱顺序，
# 测试集的从不打乱。

# %%
#> fashion_mnist.py: main "# 1. Data" "# 2."

# %% [markdown]
# One batch, as `train()` will see it, and the ten classes. T-shirt/top, Shirt, Pullover and
# Coat share nearly the same outline: keep them in mind for the confusion matrix.
# %% [markdown] zh-CN
# 一个 batch，也就是 `train()` 每一步拿到的东西，以及十个类别。T-shirt/top、Shirt、Pullover 和 Coat
# 的轮廓几乎一样：看混淆矩阵时请记住这一点。

# %%
images, labels = next(iter(train_loader))
print(f"{len(train_set):,} training and {len(test_set):,} test images; classes: {classes}")
print(f"one batch: images {tuple(images.shape)}, labels {tuple(labels.shape)}; "
      f"pixels from {images.min():.0f} to {images.max():.0f} after Normalize")
fig, axes = plt.subplots(1, 8, figsize=(12, 2))
for ax, image, label in zip(axes, images.cpu(), labels.cpu()):
    ax.imshow(image[0] * std + mean, cmap="gray", vmin=0, vmax=1)  # undo Normalize to show it
    ax.set_title(classes[label], fontsize=9)
    ax.axis("off")
plt.show()

# %% [markdown]
# ## 3. Training and testing
#
# `train()` runs one epoch: for every batch, the output and the loss, `zero_grad()` to clear
# the last step's gradients, `backward()` for the new ones, `step()` to move the weights. Every
# 100 steps it prints the posts' line, `Epoch [e/E], Step [s/S], Loss: ...`, with the average
# loss of those 100 steps. `test()` prints `Test Accuracy:` as the post does, and a line with
# the counts; `evaluate()` is the part it shares with validation.
# %% [markdown] zh-CN
# ## 3. 训练和测试
#
# `train()` 训练一个 epoch：对每个 batch 算出输出和损失，`zero_grad()` 清掉上一步的梯度，`backward()`
# 求新的梯度，`step()` 更新权重。每 100 步打印文章的那一行 `Epoch [e/E], Step [s/S], Loss: ...`，
# 其中是这 100 步的平均损失。`test()` 像文章一样打印 `Test Accuracy:`，再打印一行计数；`evaluate()`
# 是它和验证共用的部分。

# %%
#> fashion_mnist.py: train, evaluate, test

# %% [markdown]
# ## 4. Two more models: a deeper MLP and a CNN
#
# **Why the MLP does worse on clothes.** It flattens the picture first, so it sees 784 unrelated
# numbers: it doesn't know which pixels are neighbours. For digits the rough shape of the ink is
# enough; a T-shirt, a shirt, a pullover and a coat have nearly the same outline and differ in
# details (a collar, buttons, sleeves). The posts report 97.45% on MNIST and 87.60% on
# FashionMNIST after 5 epochs.
#
# **The post's deeper MLP (section 7.2.1)**, 784-1024-1024-512-512-10, has four times the
# weights and reaches about 87%, no better: more layers of the same kind still read a flat list
# of pixels. Set `model_name = "mlp-deep"` to see it.
# %% [markdown] zh-CN
# ## 4. 另外两个模型：更深的 MLP 和 CNN
#
# **为什么 MLP 识别衣物更差。** 它先把图片展平，看到的是 784 个互不相关的数：它不知道哪些像素是相邻的。
# 对数字来说，笔画的大致形状就够了；T 恤、衬衫、套头衫和外套的轮廓几乎一样，差别在细节（领子、纽扣、袖子）。
# 文章报告训练 5 个 epoch 后 MNIST 上是 97.45%，FashionMNIST 上是 87.60%。
#
# **文章里更深的 MLP（7.2.1 节）**，784-1024-1024-512-512-10，权重是原来的四倍，准确率约 87%，没有提高：
# 同一种层再多，读到的仍然是一串展平的像素。设置 `model_name = "mlp-deep"` 就能看到。

# %%
#> fashion_mnist.py: NeuralNetwork_v1

# %% [markdown]
# **The post's CNN** reads neighbourhoods: each 3×3 convolution filter looks at a pixel with
# the ones around it and slides over the whole picture, so a collar detector works wherever the
# collar is. Each block is convolution, batch norm, ReLU and a 2×2 max-pool (28 → 14 → 7 → 3),
# then three linear layers with batch norm, ReLU and dropout 0.4. Batch norm lets SGD train the
# deeper network quickly; dropout keeps the head from memorising the training set. The post
# reports 91.53%. Set `model_name = "cnn"`.
# %% [markdown] zh-CN
# **文章的 CNN** 看的是邻域：每个 3×3 的卷积核同时看一个像素和它周围的像素，并在整张图片上滑动，所以一个
# 识别领子的卷积核不管领子在哪里都能用。每个卷积块依次是卷积层、批标准化、ReLU 和 2×2 最大池化
# （28 → 14 → 7 → 3），然后是三个全连接层，带批标准化、ReLU 和 0.4 的 dropout。批标准化让 SGD 能很快
# 训练这个更深的网络；dropout 防止全连接部分死记训练集。文章报告的准确率是 91.53%。设置 `model_name = "cnn"`。

# %%
#> fashion_mnist.py: ConvNeuralNetwork

# %% [markdown]
# `build_model()` turns the settings' name into the network, on the device.
# %% [markdown] zh-CN
# `build_model()` 把设置里的名字变成网络，并放到设备上。

# %%
#> fashion_mnist.py: MODELS, build_model

# %% [markdown]
# ## 5. Model, loss, optimizer and learning-rate schedule
#
# `main()`'s lines: the chosen model, `nn.CrossEntropyLoss()`, SGD with momentum (or Adam), and
# a `StepLR` schedule that keeps the learning rate constant unless `scheduler_name = "step"`.
# %% [markdown] zh-CN
# ## 5. 模型、损失函数、优化器和学习率调度器
#
# `main()` 里的这几行：选中的模型、`nn.CrossEntropyLoss()`、带动量的 SGD（或 Adam），以及 `StepLR`
# 学习率调度器；除非设置 `scheduler_name = "step"`，学习率保持不变。

# %%
#> fashion_mnist.py: main "# 2." "# 3." model=model_name optimizer=optimizer_name scheduler=scheduler_name

print(model)
print(f"Parameters: {sum(p.numel() for p in model.parameters()):,}")

# %% [markdown]
# ## 6. The epoch loop
#
# Train, test, step the schedule, once per epoch. The script's loop is the same, with a run
# folder, a checkpoint after every epoch, `--resume` and Ctrl-C handling around it
# (`TrainingRun` in `common/run.py`).
# %% [markdown] zh-CN
# ## 6. epoch 循环
#
# 每个 epoch：训练、测试、学习率调度器走一步。脚本里的循环也是这样，只是外面多了运行目录、每个 epoch
# 之后的检查点、`--resume` 和 Ctrl-C 的处理（`common/run.py` 里的 `TrainingRun`）。

# %%
history = []
for epoch in range(1, epochs + 1):
    train_metrics = train(model, device, train_loader, optimizer, loss_fn=loss_fn, epoch=epoch, epochs=epochs,
                          log_interval=log_interval)
    test_metrics = test(model, device, test_loader, loss_fn=loss_fn)
    scheduler.step()
    history.append({"epoch": epoch, **train_metrics, **test_metrics})

# %% [markdown]
# ## 7. The curves
#
# The training and test loss after each epoch, and the training and test accuracy. A test loss
# that rises while the training loss still falls is overfitting.
# %% [markdown] zh-CN
# ## 7. 曲线
#
# 每个 epoch 之后的训练损失和测试损失，以及训练准确率和测试准确率。训练损失还在下降、测试损失却开始上升，
# 就是过拟合。

# %%
done = [row["epoch"] for row in history]
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
left.plot(done, [row["train_loss"] for row in history], "o-", label="train")
left.plot(done, [row["test_loss"] for row in history], "o-", label="test")
left.set(xlabel="epoch", ylabel="loss", title="loss")
left.legend()
right.plot(done, [100 * row["train_accuracy"] for row in history], "o-", label="train")
right.plot(done, [100 * row["test_accuracy"] for row in history], "o-", label="test")
right.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
right.legend()
fig.suptitle(f"{type(model).__name__} on {dataset}")
plt.show()

# %% [markdown]
# ## 8. Look at what it gets wrong
#
# The model's answer for every test picture, then the first 16 of them, each titled with the
# predicted and the true class (a wrong guess in red, marked `(x)`). These are the functions the
# script uses for its `predictions.png` and `confusion_matrix.png`.
# %% [markdown] zh-CN
# ## 8. 看看它错在哪里
#
# 先得到模型对每张测试图片的回答，再看前 16 张，标题是预测的类别和真实的类别（预测错的用红色，并标上
# `(x)`）。脚本画 `predictions.png` 和 `confusion_matrix.png` 用的就是这几个函数。

# %%
#> fashion_mnist.py: predicted_classes, predictions_figure, confusion_matrix_figure

predicted = predicted_classes(model, device, test_loader)
targets = test_set.tensors[1].cpu()
predictions_figure(test_set, predicted, classes, mean, std)
plt.show()

# %% [markdown]
# The confusion matrix: row = the true class, column = the predicted class, each row divided by
# that class's number of test images. The diagonal is each class's accuracy; a dark cell off
# the diagonal is a confusion. If the Shirt row spreads over T-shirt/top, Pullover and Coat, the
# model mixes up the garments that share an outline. Run it with `model_name = "mlp"` and
# `model_name = "cnn"` to see where the CNN's extra points come from.
# %% [markdown] zh-CN
# 混淆矩阵：行是真实类别，列是预测类别，每一行除以该类的测试图片数。对角线是每一类的准确率；对角线以外颜色深的
# 格子就是混淆。如果 Shirt 这一行分散到 T-shirt/top、Pullover 和 Coat 上，说明模型把轮廓相同的衣物弄混了。
# 分别用 `model_name = "mlp"` 和 `model_name = "cnn"` 运行，看看 CNN 多出来的准确率来自哪里。

# %%
confusion_matrix_figure(targets, predicted, classes, f"{type(model).__name__} on {dataset}")
plt.show()

# %% [markdown]
# ## 9. Choose on validation, stop in time (optional)
#
# Every choice made by looking at test accuracy (which epoch to keep, which learning rate is
# best) fits the test set a little. Hold some training images out as a validation set, choose
# with them, and look at the test set once, at the end. Early stopping does that for the number
# of epochs: stop when the validation accuracy has not improved for `--patience` epochs, and
# keep the best epoch's weights.
#
# This cell runs the script itself, `fashion_mnist.main()`, with the README's step 7 flags: it
# is `python fashion_mnist.py --val-size 5000 --patience 3 --epochs 20`, with its own run
# folder under `runs/`, its checkpoints and its log. With the MLP, the whole notebook, this
# cell included, took 58 s on a 2-core CPU ([notebooks/README.md](../notebooks/README.md) has
# the command); `"cnn"`, as in the README, is several times slower per epoch.
# %% [markdown] zh-CN
# ## 9. 用验证集做选择，及时停止（可选）
#
# 看着测试准确率做的每个选择（保留哪个 epoch、哪个学习率最好）都会让结果稍稍贴合测试集。从训练图片里留出
# 一部分作为验证集，用它来做选择，最后只看一次测试集。及时停止就是这样决定 epoch 数的：验证准确率连续
# `--patience` 个 epoch 没有提高就停止，并保留最好那个 epoch 的权重。
#
# 这个单元格运行脚本本身，也就是 `fashion_mnist.main()`，用 README 第 7 步的参数：相当于
# `python fashion_mnist.py --val-size 5000 --patience 3 --epochs 20`，有它自己在 `runs/` 下的运行目录、
# 检查点和日志。用 MLP 时，整个笔记本（包括这个单元格）在 2 核 CPU 上运行了 58 秒
（测量命令见 [notebooks/README.zh-CN.md](../notebooks/README.zh-CN.md)）；换成 README 里的 `"cnn"`，每个 epoch 要慢好几倍。

# %%
import fashion_mnist  # the lesson script: main() takes its command line as a list of strings

held_out = len(train_part[1]) // 12  # 5,000 of the 60,000 training images, one in 12
flags = ["--model", "mlp", "--dataset", dataset, "--val-size", str(held_out), "--patience", "3", "--epochs", "20"]
if data_dir is not None:
    flags += ["--data-dir", str(data_dir)]
stopped = fashion_mnist.main(flags)

# %% [markdown]
# The validation and test accuracy of each epoch of that run, and the epoch it kept: the best on
# validation. The test accuracy was never used to choose.
# %% [markdown] zh-CN
# 那次运行每个 epoch 的验证准确率和测试准确率，以及它保留的 epoch：验证集上最好的那个。选择时从没用到测试准确率。

# %%
best = max(stopped, key=lambda row: row["val_accuracy"])  # the earliest of equals, as the script keeps
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot([row["epoch"] for row in stopped], [100 * row["val_accuracy"] for row in stopped], "o-", label="validation")
ax.plot([row["epoch"] for row in stopped], [100 * row["test_accuracy"] for row in stopped], "o-", label="test")
ax.axvline(best["epoch"], color="gray", linestyle=":", label=f"kept: epoch {best['epoch']}")
ax.set(xlabel="epoch", ylabel="accuracy (%)", title="early stopping")
ax.legend()
plt.show()

# %% [markdown]
# ## Next
#
# - The same runs from a terminal, each with its run folder, a checkpoint after every epoch and
#   `--resume` (the posts' checkpoint section): `python fashion_mnist.py --model cnn`.
# - Learning rates, batch sizes, SGD against Adam, a `StepLR` schedule:
#   `python compare_hyperparameters.py`. TensorBoard: add `--tensorboard`.
# - Your own photos of clothes: `predict.py` (see this lesson's README).
# - The official Quickstart, start to end: the notebook `quickstart.ipynb` beside this one.
# %% [markdown] zh-CN
# ## 接下来
#
# - 在终端里做同样的训练，每次都有自己的运行目录、每个 epoch 之后的检查点和 `--resume`（文章讲检查点的那一节）：
#   `python fashion_mnist.py --model cnn`。
# - 学习率、批量大小、SGD 和 Adam 的对比、`StepLR` 学习率调度器：`python compare_hyperparameters.py`。
#   TensorBoard：加上 `--tensorboard`。
# - 识别你自己拍的衣物照片：`predict.py`（见本课的 README）。
# - 官方 Quickstart，从头到尾：旁边的笔记本 `quickstart.ipynb`。
