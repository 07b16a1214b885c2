"""T02's predict.py: the reader's own photo of a garment in, a FashionMNIST class and a picture out.

Real clothes photos aren't available offline. tests/stand_in_data.py's FashionMNIST stand-in (read
by the end-to-end test below) is random pixel patterns that fill the whole 28x28 frame: it
has no shapes to crop or pad. So the recovery tests make "garments" of their own in
FashionMNIST's format: one silhouette per class (tall and thin for trousers, wide and low
for shoes and bags) with a coarse texture, its longest side filling the 28 pixels, the other
side padded, centred, light on black. An MLP trained on them in a few seconds is the model.
Each garment is then photographed (dark on a light table or light on a dark cloth, enlarged,
off-centre, on canvases of other shapes, in colour, with noise, as PNG or JPEG) and
predict.py must bring nearly every photo back to the prediction the model gives the
original 28x28 image; the naive resize must not.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import stand_in_data
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from common import cli, images, run
from T02_fashion_mnist import fashion_mnist
from T02_fashion_mnist import predict as t02
from tests.test_predict import bad_inputs, run_main

REPO = Path(__file__).resolve().parents[1]
NAME = r"[^()%;,]+?"  # class names may hold a space or a slash: "Ankle boot", "T-shirt/top"
LINE = re.compile(rf"^(?P<path>.+): (?P<best>{NAME}) \((?P<p>\d+\.\d)%; ({NAME}) (\d+\.\d)%, ({NAME}) (\d+\.\d)%\)$")
# (height, width) of each class's silhouette: the longest side is always 28, as in FashionMNIST.
BOXES = [(28, 22), (28, 10), (28, 27), (28, 16), (28, 20), (12, 28), (28, 24), (15, 28), (22, 28), (19, 28)]


# --- Garments made the FashionMNIST way, and an MLP trained on them ---------------------------

def garment(label: int, dy: int = 0, dx: int = 0) -> np.ndarray:
    """Class `label`'s silhouette, textured and outlined, centred in 28x28 (plus a shift), light on black."""
    height, width = BOXES[label]
    texture = np.kron(np.random.default_rng(100 + label).random((7, 7)) > 0.5, np.ones((4, 4)))[:height, :width]
    piece = (0.35 + 0.65 * texture).astype(np.float32)
    piece[0], piece[-1], piece[:, 0], piece[:, -1] = 1.0, 1.0, 1.0, 1.0  # the garment's edge
    canvas = np.zeros((28, 28), dtype=np.float32)
    top = int(np.clip((28 - height) // 2 + dy, 0, 28 - height))
    left = int(np.clip((28 - width) // 2 + dx, 0, 28 - width))
    canvas[top:top + height, left:left + width] = piece
    return canvas


def normalise(pixels: np.ndarray) -> torch.Tensor:
    """28x28 (or N x 28 x 28) pixels 0..1, normalised as fashion_mnist.py normalises (not by predict.py's code)."""
    return (torch.tensor(pixels, dtype=torch.float32).reshape(-1, 1, 28, 28) - fashion_mnist.POSTS_MEAN) \
        / fashion_mnist.POSTS_STD


def prediction(model: torch.nn.Module, pixels: np.ndarray) -> int:
    with torch.no_grad():
        return int(model(normalise(pixels)).argmax())


@pytest.fixture(scope="module")
def clothes() -> tuple[fashion_mnist.NeuralNetwork, list[np.ndarray], list[int]]:
    """The posts' MLP trained on the garments (shifted by up to a pixel, dimmed, noised), and 20 test garments."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    train_x, train_y = [], []
    for label in range(10):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                for _ in range(3):
                    noisy = garment(label, dy, dx) * rng.uniform(0.7, 1.0)
                    train_x.append(np.clip(noisy + rng.normal(0, 0.1, noisy.shape), 0, 1))
                    train_y.append(label)
    x, y = normalise(np.stack(train_x)), torch.tensor(train_y)
    model = fashion_mnist.NeuralNetwork()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    for _ in range(40):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    originals = [garment(label) * level for label in range(10) for level in (1.0, 0.85)]
    labels = [prediction(model, image) for image in originals]
    assert labels == [label for label in range(10) for _ in range(2)]  # the model knows the originals
    return model, originals, labels


def photograph(pixels: np.ndarray, variant: int, folder: Path, name: str) -> Path:
    """Save a garment as a reader might photograph it: on a light table (or a dark cloth), enlarged, off-centre."""
    rng = np.random.default_rng(variant)
    scale = (4, 7, 10, 13, 5, 9)[variant % 6]
    canvas_w, canvas_h = [(1.0, 1.0), (2.2, 1.0), (1.0, 1.8), (1.5, 1.3), (3.0, 2.0), (1.2, 2.5)][variant % 6]
    big = Image.fromarray((pixels * 255).astype(np.uint8)).resize((28 * scale, 28 * scale), Image.BILINEAR)
    big = np.asarray(big, dtype=np.float32) / 255
    height, width = round(28 * scale * canvas_h), round(28 * scale * canvas_w)
    top, left = int(rng.integers(0, height - big.shape[0] + 1)), int(rng.integers(0, width - big.shape[1] + 1))
    amount = np.zeros((height, width), dtype=np.float32)
    amount[top:top + big.shape[0], left:left + big.shape[1]] = big
    if variant % 4 == 3:  # a light garment on a dark cloth: already FashionMNIST's way round
        background, colour = np.array([25, 30, 35.0]), np.array([235, 225, 200.0])
    else:  # a dark garment on a light table, slightly yellow: the usual photo, inverted by predict.py
        background = np.array([235, 228, 215.0])
        colour = np.array([[20, 20, 30], [30, 40, 140], [120, 30, 30]][variant % 3], dtype=np.float64)
    rgb = background + amount[..., None] * (colour - background) + rng.normal(0, 6, (height, width, 3))
    photo = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    path = folder / f"{name}.{'jpg' if variant % 2 else 'png'}"
    photo.save(path, quality=90) if variant % 2 else photo.save(path)
    return path


@pytest.fixture
def weights(clothes, tmp_path) -> Path:
    path = tmp_path / "fashion_mnist_mlp.pt"  # the name `fashion_mnist.py --save-model` gives it
    torch.save(clothes[0].state_dict(), path)
    return path


# --- Preprocessing ----------------------------------------------------------------------------

def test_preprocessing_recovers_the_prediction_of_the_original_and_the_naive_resize_does_not(clothes, tmp_path,
                                                                                              one_thread):
    model, originals, labels = clothes
    agree_preprocessed = agree_naive = total = 0
    for index, (pixels, label) in enumerate(zip(originals, labels)):
        for variant in range(3):
            path = photograph(pixels, index + variant, tmp_path, f"garment{index}-{variant}")
            image = images.open_image(path)
            seen = t02.preprocess(image)
            assert seen.shape == (28, 28) and seen.min() >= 0 and seen.max() <= 1
            agree_preprocessed += prediction(model, seen) == label
            agree_naive += prediction(model, images.naive_resize(image)) == label
            total += 1
    assert agree_preprocessed >= 0.9 * total, f"preprocessed: {agree_preprocessed}/{total}"
    assert agree_naive <= 0.4 * total, f"naive resize: {agree_naive}/{total}"


def test_clothes_are_padded_to_square_and_fill_the_frame_unlike_mnist_digits(tmp_path):
    trouser = np.ones((80, 20), dtype=np.float32)
    square = t02.pad_to_square(trouser)
    assert square.shape == (80, 80) and (square[:, 30:50] == 1).all() and square.sum() == trouser.sum()
    # A tall dark garment on a white table, photographed off-centre: in what the network sees it
    # touches the top and bottom rows (no 20x20 box), keeps its 1:4 shape, and sits in the middle.
    photo = np.random.default_rng(0).normal(200, 5, (400, 300))  # a grey, grainy table
    photo[50:330, 200:270] = 30
    Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).save(tmp_path / "trouser.png")
    seen = t02.preprocess(images.open_image(tmp_path / "trouser.png"))
    rows, cols = np.flatnonzero(seen.max(axis=1) > 0.5), np.flatnonzero(seen.max(axis=0) > 0.5)
    assert rows[0] == 0 and rows[-1] == 27, rows
    assert 6 <= len(cols) <= 8 and abs((cols[0] + cols[-1]) / 2 - 13.5) <= 1, cols
    assert (seen[:, :cols[0] - 1] == 0).all() and (seen[:, cols[-1] + 2:] == 0).all()  # the table is exactly 0
    pixels = np.random.default_rng(0).random((28, 28)).astype(np.float32)
    as_in_training = transforms.Normalize((0.5,), (0.5,))(torch.from_numpy(pixels)[None])  # the lesson's Normalize
    assert torch.allclose(t02.to_model_input(pixels)[0], as_in_training, atol=1e-6)


# --- The script -------------------------------------------------------------------------------

def test_prints_class_names_and_draws_the_picture(clothes, weights, tmp_path, capsys, one_thread):
    model, originals, labels = clothes
    chosen = (0, 3, 10, 17)  # T-shirt/top, Trouser, Sandal, Ankle boot
    paths = [str(photograph(originals[i], i, tmp_path, f"photo{i}")) for i in chosen]
    out_dir = tmp_path / "out"
    code, out, err = run_main(t02, [*paths, "--model", str(weights), "--out-dir", str(out_dir), "--no-accel"], capsys)
    assert code == 0, err
    assert err[0] == f"Model: {weights} (mlp, trained on fashion-mnist)"
    assert len(out) == len(chosen)
    for line, path, i in zip(out, paths, chosen):
        match = LINE.match(line)
        assert match and match["path"] == path and match["best"] == t02.CLASSES[labels[i]], line
        probabilities = [float(match[g]) for g in ("p", 5, 7)]
        assert probabilities == sorted(probabilities, reverse=True)
    assert (out_dir / "predictions.png").stat().st_size > 10_000
    run_main(t02, [paths[0], "--model", str(weights), "--out-dir", str(out_dir), "--no-accel"], capsys)
    assert (out_dir / "predictions-2.png").is_file()  # never overwritten
    predictions = t02.main([paths[0], "--model", str(weights), "--out-dir", str(out_dir), "--no-preprocess"])
    assert np.allclose(predictions[0].model_input, images.naive_resize(images.open_image(paths[0])))


def test_the_model_type_is_read_from_the_weights_and_the_cnn_predicts_in_eval_mode(tmp_path, capsys, one_thread):
    photo = np.full((120, 90), 235, dtype=np.uint8)
    photo[20:100, 30:60] = 40
    Image.fromarray(photo).save(tmp_path / "photo.png")
    pixels = t02.preprocess(images.open_image(tmp_path / "photo.png"))
    for name, model_class in fashion_mnist.MODELS.items():
        torch.manual_seed(1)
        model = model_class()
        for module in model.modules():  # learnt batch-norm statistics, far from a fresh layer's 0 and 1
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 3)
        path = tmp_path / f"fashion_mnist_{name.replace('-', '_')}.pt"
        torch.save(model.state_dict(), path)
        loaded, flags = t02.load_model(path, torch.device("cpu"))
        assert type(loaded) is model_class and flags["model"] == name and not loaded.training
        with torch.no_grad():
            expected = torch.softmax(model.eval()(normalise(pixels)), dim=1)[0]
        got = t02.predict(loaded, torch.device("cpu"), t02.to_model_input(pixels))
        assert torch.allclose(torch.tensor(got), expected, atol=1e-5), name
        code, out, err = run_main(t02, [str(tmp_path / "photo.png"), "--model", str(path),
                                        "--out-dir", str(tmp_path / name), "--no-accel"], capsys)
        assert code == 0 and len(out) == 1 and f"({name}, trained on fashion-mnist)" in err[0], (name, err)


def test_a_checkpoint_names_its_model_dataset_and_statistics(clothes, tmp_path, capsys, one_thread):
    model, originals, labels = clothes
    photo = str(photograph(originals[6], 0, tmp_path, "photo"))
    run_dir = tmp_path / "fashion_mnist-20250101-120000"
    run_dir.mkdir()
    flags = {"model": "mlp", "dataset": "fashion-mnist", "measured_stats": True, "mean": 0.2, "std": 0.3}
    torch.save({"script": "fashion_mnist", "model_class": "NeuralNetwork", "model_state_dict": model.state_dict(),
                "args": flags}, run_dir / "checkpoint.pt")  # the fields common/run.py writes
    predictions = t02.main([photo, "--model", str(run_dir / "checkpoint.pt"), "--out-dir", str(tmp_path)])
    with torch.no_grad():  # normalised with the checkpoint's measured statistics, not the posts' 0.5/0.5
        x = (torch.from_numpy(predictions[0].model_input).reshape(1, 1, 28, 28) - 0.2) / 0.3
        expected = torch.softmax(model(x), dim=1)[0]
    assert torch.allclose(torch.tensor(predictions[0].probabilities), expected, atol=1e-5)
    given = t02.main([photo, "--model", str(run_dir / "checkpoint.pt"), "--out-dir", str(tmp_path), "--mean", "0.5",
                      "--std", "0.5"])  # the flags override the checkpoint
    assert np.allclose(given[0].probabilities, t02.predict(model, torch.device("cpu"),
                                                           normalise(given[0].model_input)), atol=1e-6)
    # best_model.pt and renamed weights are plain state dicts: the checkpoint beside them knows the dataset.
    torch.save(model.state_dict(), run_dir / "best_model.pt")
    assert t02.load_model(run_dir / "best_model.pt", torch.device("cpu"))[1] == flags
    capsys.readouterr()
    code, out, err = run_main(t02, [photo, "--model", str(run_dir / "best_model.pt"), "--mean", "nan"], capsys)
    assert code == 2 and len(err) == 1 and "--mean: must be a finite number, got nan" in err[0], err


def test_a_model_trained_on_mnist_digits_gets_t01s_digit_preprocessing(clothes, tmp_path, capsys, one_thread):
    torch.save(clothes[0].state_dict(), tmp_path / "mnist_mlp.pt")  # `--dataset mnist --save-model`'s name
    photo = np.full((200, 150), 240, dtype=np.uint8)
    photo[40:160, 60:80] = 20  # a "1"
    Image.fromarray(photo).save(tmp_path / "one.png")
    predictions = t02.main([str(tmp_path / "one.png"), "--model", str(tmp_path / "mnist_mlp.pt"),
                            "--out-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert "trained on mnist" in err and "T01_mnist_nn/predict.py" in err
    assert np.allclose(predictions[0].model_input, images.preprocess_digit(images.open_image(tmp_path / "one.png")))
    assert LINE.match(out.strip())["best"] in t02.DIGITS


# --- What goes wrong ---------------------------------------------------------------------------

def test_bad_images_give_one_line_each_and_exit_2(weights, tmp_path, capsys, one_thread):
    for name, (path, words) in bad_inputs(tmp_path).items():
        if name == "blank":
            words = "nothing found on the background"  # a garment, not ink, is what is missing
        code, out, err = run_main(t02, [str(path), "--model", str(weights), "--out-dir", str(tmp_path / name)],
                                  capsys)
        assert code == 2 and out == [] and len(err) == 2, (name, err)  # "Model: ..." then the error
        assert err[1].startswith(f"error: {path}: ") and words in err[1], (name, err)
        assert not (tmp_path / name).exists()  # nothing to draw, no folder made


def test_weights_of_another_lesson_or_model_give_one_line_and_exit_2(tmp_path, capsys, one_thread):
    from T01_mnist_nn.mnist_nn import SimpleNN
    from T03_cifar10_lenet.cifar10_lenet import LeNet

    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), "white").save(photo)
    torch.save({"script": "cifar10_lenet", "model_class": "LeNet", "model_state_dict": LeNet().state_dict(),
                "args": {}}, tmp_path / "lenet.pt")
    torch.save({"script": "mnist_nn", "model_class": "SimpleNN", "model_state_dict": {}, "args": {}},
               tmp_path / "simple.pt")
    torch.save(SimpleNN().state_dict(), tmp_path / "mnist_simple_nn.pt")
    (tmp_path / "photo.pt").write_bytes(photo.read_bytes())
    cases = {"lenet.pt": "use the predict.py beside cifar10_lenet.py", "simple.pt": "beside mnist_nn.py",
             "mnist_simple_nn.pt": "none of T02's models (mlp, mlp-deep, cnn)",
             "photo.pt": "not a readable PyTorch checkpoint", "none.pt": "does not exist"}
    for name, words in cases.items():
        code, out, err = run_main(t02, [str(photo), "--model", str(tmp_path / name), "--out-dir", str(tmp_path)],
                                  capsys)
        assert code == 2 and out == [] and len(err) == 1 and words in err[0], (name, err)


def test_finds_the_newest_model_that_fashion_mnist_py_saved(tmp_path, monkeypatch, capsys, clothes, one_thread):
    monkeypatch.setattr(cli, "REPO_ROOT", tmp_path)  # runs/ is then tmp_path/runs
    monkeypatch.setattr(run, "REPO_ROOT", tmp_path)  # (common/run.py makes the new folders)
    photo = str(photograph(clothes[1][2], 0, tmp_path, "photo"))
    code, out, err = run_main(t02, [photo, "--no-accel"], capsys)
    assert code == 2 and len(err) == 1 and "fashion_mnist.py --save-model" in err[0], err
    data_root = tmp_path / "data"
    stand_in_data.write_mnist(data_root, "FashionMNIST", train_size=300, test_size=100)  # the real file format
    run_dir = tmp_path / "runs" / "fashion_mnist-20250101-120000"
    fashion_mnist.main(["--data-dir", str(data_root), "--out-dir", str(run_dir), "--epochs", "1", "--no-accel",
                        "--save-model"])
    capsys.readouterr()
    code, out, err = run_main(t02, [photo, "--no-accel"], capsys)
    assert code == 0 and err[0] == f"Model: {run_dir / 'fashion_mnist_mlp.pt'} (mlp, trained on fashion-mnist)", err
    run_main(t02, [photo, "--no-accel"], capsys)
    assert len(list((tmp_path / "runs").glob("predict-*/predictions.png"))) == 2  # one new folder per run
    code, out_checkpoint, _ = run_main(t02, [photo, "--model", str(run_dir / "checkpoint.pt"), "--no-accel"], capsys)
    assert code == 0 and out_checkpoint == out  # the full checkpoint holds the same weights
    (run_dir / "fashion_mnist_mlp.pt").unlink()  # a run without --save-model: its checkpoint is found
    code, out_found, err = run_main(t02, [photo, "--no-accel"], capsys)
    assert code == 0 and out_found == out and err[0].startswith(f"Model: {run_dir / 'checkpoint.pt'}"), err


@pytest.mark.processes  # starts Python processes: `make test-processes` (CI runs it)
def test_the_script_itself_prints_no_traceback(weights, tmp_path, clothes):
    good = photograph(clothes[1][0], 0, tmp_path, "good")
    result = subprocess.run([sys.executable, str(REPO / "T02_fashion_mnist" / "predict.py"), str(good),
                             str(tmp_path / "missing.png"), "--model", str(weights), "--out-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert LINE.match(result.stdout.strip()) and result.stdout.startswith(f"{good}: ")
    assert f"error: {tmp_path / 'missing.png'}: no such file" in result.stderr.splitlines()
