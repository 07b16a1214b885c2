"""predict.py (T01, T03, T02): the reader's own photo or drawing in, a prediction and a picture out.

Real handwriting isn't available offline, so the tests make "digits" of their own: blocky
random shapes, one per class, placed in 28x28 the way MNIST places digits (a 20-pixel box,
centred by centre of mass). A SimpleNN trained on them in a second is the model. Each test
digit is then photographed: inverted to dark ink on light paper, enlarged, moved off-centre,
put on canvases of other shapes, coloured, noised, saved as PNG or JPEG. predict.py must bring
nearly every photo back to the prediction the model gives the original 28x28 image; the
naive resize must not.
"""

from __future__ import annotations

import pickle
import re
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from common import cli, images, run
from T01_mnist_nn import mnist_nn
from T01_mnist_nn import predict as t01

REPO = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^(?P<path>.+): (?P<best>\S+) \((?P<p>\d+\.\d)%; (\S+) (\d+\.\d)%, (\S+) (\d+\.\d)%\)$")


# --- Digits made the MNIST way, and a SimpleNN trained on them --------------------------------

def class_shapes(seed: int = 3) -> list[np.ndarray]:
    """Ten blocky shapes, 20 pixels tall and 12 to 20 wide, with ink on every edge of their box."""
    rng = np.random.default_rng(seed)
    shapes = []
    for _ in range(10):
        columns = int(rng.integers(3, 6))
        while True:
            grid = rng.random((5, columns)) > 0.5
            if grid[0].any() and grid[-1].any() and grid[:, 0].any() and grid[:, -1].any():
                break
        shapes.append(np.kron(grid, np.ones((4, 4))).astype(np.float32))
    return shapes


def place_like_mnist(shape: np.ndarray, dy: int = 0, dx: int = 0) -> np.ndarray:
    """Put a 20-pixel-tall shape in 28x28 with its centre of mass at the centre (plus a shift)."""
    height, width = shape.shape
    rows, cols = np.indices(shape.shape)
    centre_y, centre_x = (rows * shape).sum() / shape.sum(), (cols * shape).sum() / shape.sum()
    top = int(np.clip(round(13.5 - centre_y) + dy, 0, 28 - height))
    left = int(np.clip(round(13.5 - centre_x) + dx, 0, 28 - width))
    canvas = np.zeros((28, 28), dtype=np.float32)
    canvas[top:top + height, left:left + width] = shape
    return canvas


@pytest.fixture(scope="module")
def digits() -> tuple[mnist_nn.SimpleNN, list[np.ndarray], list[int]]:
    """A SimpleNN trained on the shapes (shifted by up to a pixel, noised), and 20 test digits."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    shapes = class_shapes()
    train_x, train_y = [], []
    for label, shape in enumerate(shapes):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                for _ in range(4):
                    noisy = place_like_mnist(shape, dy, dx) * rng.uniform(0.7, 1.0)
                    train_x.append(np.clip(noisy + rng.normal(0, 0.1, noisy.shape), 0, 1))
                    train_y.append(label)
    x = (torch.tensor(np.stack(train_x), dtype=torch.float32).unsqueeze(1) - mnist_nn.MNIST_MEAN) / mnist_nn.MNIST_STD
    y = torch.tensor(train_y)
    model = mnist_nn.SimpleNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        optimizer.zero_grad()
        F.nll_loss(model(x), y).backward()
        optimizer.step()
    model.eval()
    originals = [place_like_mnist(shape) * level for shape in shapes for level in (1.0, 0.85)]
    labels = [prediction(model, image) for image in originals]
    assert labels == [label for label in range(10) for _ in range(2)]  # the model knows the originals
    return model, originals, labels


def prediction(model: torch.nn.Module, pixels: np.ndarray) -> int:
    """The model's digit for 28x28 pixels 0..1, normalised as mnist_nn.py normalises (not by predict.py's code)."""
    x = (torch.tensor(pixels, dtype=torch.float32).reshape(1, 1, 28, 28) - mnist_nn.MNIST_MEAN) / mnist_nn.MNIST_STD
    with torch.no_grad():
        return int(model(x).argmax())


def photograph(digit: np.ndarray, variant: int, folder: Path, name: str) -> Path:
    """Save `digit` the way a reader might: dark ink on light paper, enlarged, off-centre, noisy, PNG or JPEG."""
    rng = np.random.default_rng(variant)
    scale = (4, 7, 10, 13, 5, 9)[variant % 6]
    canvas_w, canvas_h = [(1.0, 1.0), (2.2, 1.0), (1.0, 1.8), (1.5, 1.3), (3.0, 2.0), (1.2, 2.5)][variant % 6]
    ink = Image.fromarray((digit * 255).astype(np.uint8)).resize((28 * scale, 28 * scale), Image.BILINEAR)
    ink = np.asarray(ink, dtype=np.float32) / 255
    height, width = round(28 * scale * canvas_h), round(28 * scale * canvas_w)
    top = int(rng.integers(0, height - ink.shape[0] + 1))
    left = int(rng.integers(0, width - ink.shape[1] + 1))
    darkness = np.zeros((height, width), dtype=np.float32)
    darkness[top:top + ink.shape[0], left:left + ink.shape[1]] = ink
    paper = np.array([235, 228, 215], dtype=np.float32)  # slightly yellow, not pure white
    pen = np.array([[20, 20, 30], [30, 40, 140], [60, 60, 60]][variant % 3], dtype=np.float32)  # black, blue, pencil
    rgb = paper + darkness[..., None] * (pen - paper) + rng.normal(0, 6, (height, width, 3))
    photo = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    path = folder / f"{name}.{'jpg' if variant % 2 else 'png'}"
    photo.save(path, quality=90) if variant % 2 else photo.save(path)
    return path


def run_main(module, argv: list[str], capsys) -> tuple[int, list[str], list[str]]:
    """Run a predict script's main() as `python predict.py` would; return exit code, stdout and stderr lines.

    A warning would print more lines on stderr: none may reach the reader.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            cli.run_main(lambda: module.main(argv))
            code = 0
        except SystemExit as exit_:
            code = exit_.code
    assert not caught, [str(warning.message)[:200] for warning in caught]
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


@pytest.fixture
def weights(digits, tmp_path) -> Path:
    path = tmp_path / "mnist_simple_nn.pt"
    torch.save(digits[0].state_dict(), path)
    return path


# --- T01 ---------------------------------------------------------------------------------------

def test_preprocessing_recovers_the_prediction_of_the_original_and_the_naive_resize_does_not(digits, tmp_path,
                                                                                              one_thread):
    model, originals, labels = digits
    agree_preprocessed = agree_naive = total = 0
    for index, (digit, label) in enumerate(zip(originals, labels)):
        for variant in range(3):
            path = photograph(digit, index + variant, tmp_path, f"digit{index}-{variant}")
            image = images.open_image(path)
            seen = images.preprocess_digit(image)
            assert seen.shape == (28, 28) and seen.min() >= 0 and seen.max() <= 1
            agree_preprocessed += prediction(model, seen) == label
            agree_naive += prediction(model, images.naive_resize(image)) == label
            total += 1
    assert agree_preprocessed >= 0.9 * total, f"preprocessed: {agree_preprocessed}/{total}"
    assert agree_naive <= 0.4 * total, f"naive resize: {agree_naive}/{total}"


def test_light_ink_on_black_grayscale_and_transparent_drawings_work_too(digits, tmp_path, one_thread):
    model, originals, labels = digits
    white_on_black = Image.fromarray((originals[6] * 255).astype(np.uint8)).resize((300, 300), Image.BILINEAR)
    white_on_black.save(tmp_path / "white.png")  # a grayscale ("L") PNG, already MNIST's way round
    drawing = np.zeros((250, 400, 4), dtype=np.uint8)  # black ink on a transparent background
    enlarged = np.asarray(Image.fromarray((originals[12] * 255).astype(np.uint8)).resize((200, 200)))
    drawing[20:220, 150:350, 3] = enlarged
    Image.fromarray(drawing, "RGBA").save(tmp_path / "transparent.png")
    assert prediction(model, images.preprocess_digit(images.open_image(tmp_path / "white.png"))) == labels[6]
    assert prediction(model, images.preprocess_digit(images.open_image(tmp_path / "transparent.png"))) == labels[12]


def test_each_step_does_what_mnist_did():
    tall = np.ones((80, 20), dtype=np.float32)  # a cropped "1"
    assert images.fit_into_box(tall, 20).shape == (20, 5)  # longer side 20, aspect ratio kept
    corner = np.zeros((10, 6), dtype=np.float32)
    corner[:3, :3] = 1.0  # all the mass in the top-left corner
    placed = images.centre_by_mass(corner, 28)
    rows, cols = np.indices(placed.shape)
    assert abs((rows * placed).sum() / placed.sum() - 13.5) <= 0.5
    assert abs((cols * placed).sum() / placed.sum() - 13.5) <= 0.5
    assert placed.sum() == corner.sum()  # moved, nothing cut off
    page = np.random.default_rng(0).normal(0.9, 0.02, (50, 50)).astype(np.float32)  # grey, grainy paper
    page[20:30, 20:30] = 0.1  # dark ink on it
    ink = images.remove_background(images.ink_on_black(page))
    assert ink[25, 25] == 1.0 and (ink[:20] == 0).all()  # strong ink at 1, the paper's grain gone
    assert images.crop_to_ink(ink).shape == (10, 10)
    pixels = np.random.default_rng(0).random((28, 28)).astype(np.float32)
    as_in_training = transforms.Normalize((mnist_nn.MNIST_MEAN,), (mnist_nn.MNIST_STD,))(torch.from_numpy(pixels)[None])
    assert torch.allclose(t01.to_model_input(pixels)[0], as_in_training, atol=1e-6)  # the lesson's Normalize


def test_prints_one_line_per_image_and_draws_the_picture(digits, weights, tmp_path, capsys, one_thread):
    model, originals, labels = digits
    paths = [str(photograph(originals[i], i, tmp_path, f"photo{i}")) for i in (0, 7, 15)]
    out_dir = tmp_path / "out"
    code, out, err = run_main(t01, [*paths, "--model", str(weights), "--out-dir", str(out_dir), "--no-accel"], capsys)
    assert code == 0, err
    assert len(out) == 3
    for line, path, i in zip(out, paths, (0, 7, 15)):
        match = LINE.match(line)
        assert match and match["path"] == path and match["best"] == str(labels[i]), line
        probabilities = sorted((float(match[g]) for g in ("p", 5, 7)), reverse=True)
        assert probabilities == [float(match["p"]), float(match[5]), float(match[7])]  # best first
    assert (out_dir / "predictions.png").stat().st_size > 10_000
    # A second run never overwrites the first picture.
    run_main(t01, [paths[0], "--model", str(weights), "--out-dir", str(out_dir), "--no-accel"], capsys)
    assert (out_dir / "predictions-2.png").is_file()
    assert images.describe_prediction("photos/seven.png", [0.0, 0.019, 0.004] + [0.0] * 4 + [0.971, 0.002, 0.004],
                                      t01.DIGITS) == "photos/seven.png: 7 (97.1%; 1 1.9%, 2 0.4%)"


def test_no_preprocess_uses_the_naive_resize(digits, weights, tmp_path, capsys, one_thread):
    path = photograph(digits[1][0], 0, tmp_path, "photo")
    predictions = t01.main([str(path), "--model", str(weights), "--out-dir", str(tmp_path), "--no-preprocess"])
    assert np.allclose(predictions[0].model_input, images.naive_resize(images.open_image(path)))


def test_finds_the_newest_trained_model_and_makes_a_new_run_folder(mnist_root, tmp_path, monkeypatch, capsys,
                                                                    digits, one_thread):
    monkeypatch.setattr(cli, "REPO_ROOT", tmp_path)  # runs/ is then tmp_path/runs
    monkeypatch.setattr(run, "REPO_ROOT", tmp_path)  # (common/run.py makes the new folders)
    photo = str(photograph(digits[1][0], 0, tmp_path, "photo"))
    code, out, err = run_main(t01, [photo, "--no-accel"], capsys)
    assert code == 2 and len(err) == 1 and "mnist_nn.py --save-model" in err[0], err
    run_dir = tmp_path / "runs" / "mnist_nn-test"
    mnist_nn.main(["--data-dir", str(mnist_root), "--out-dir", str(run_dir), "--epochs", "1", "--no-accel",
                   "--save-model"])
    capsys.readouterr()
    code, out, err = run_main(t01, [photo, "--no-accel"], capsys)
    assert code == 0 and err[0] == f"Model: {run_dir / 'mnist_simple_nn.pt'}", err
    run_main(t01, [photo, "--no-accel"], capsys)
    assert len(list((tmp_path / "runs").glob("predict-*/predictions.png"))) == 2  # one new folder per run
    # The full training checkpoint holds the same weights.
    code, out_checkpoint, _ = run_main(t01, [photo, "--model", str(run_dir / "checkpoint.pt"), "--no-accel"], capsys)
    assert code == 0 and out_checkpoint == out
    (run_dir / "mnist_simple_nn.pt").unlink()  # a run without --save-model: its checkpoint is found
    code, out_found, err = run_main(t01, [photo, "--no-accel"], capsys)
    assert code == 0 and out_found == out and err[0].startswith(f"Model: {run_dir / 'checkpoint.pt'}"), err


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG file that says it is width x height pixels but holds no pixel data: what Pillow's open() reads."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grey
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
                     + chunk(b"IEND", b""))
    return path


def bad_inputs(folder: Path) -> dict[str, tuple[Path, str]]:
    """Files a reader might pass by mistake, each with the words its error line must contain."""
    (folder / "notes.png").write_text("not an image at all\n")
    Image.new("RGB", (1, 1), "white").save(folder / "dot.png")
    blank = np.clip(np.random.default_rng(0).normal(240, 4, (300, 200, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(blank).save(folder / "blank.jpg", quality=85)  # a photo of an empty sheet
    png_header(folder / "huge.png", 8000, 7000)  # 56 megapixels: over our limit, under Pillow's
    png_header(folder / "warned.png", 10000, 10000)  # 100 megapixels: Pillow warns (2 lines) before our limit
    png_header(folder / "bomb.png", 20000, 20000)  # 400 megapixels: Pillow's DecompressionBombError, no OSError
    noise = np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "cut.png")
    (folder / "cut.png").write_bytes((folder / "cut.png").read_bytes()[:200])  # a download that stopped early
    return {"missing": (folder / "missing.png", "no such file"), "text": (folder / "notes.png", "not an image"),
            "1x1": (folder / "dot.png", "too small"), "blank": (folder / "blank.jpg", "no ink found"),
            "huge": (folder / "huge.png", "too large"), "warned": (folder / "warned.png", "too large"),
            "bomb": (folder / "bomb.png", "too large"), "cut": (folder / "cut.png", "cannot decode it"),
            "folder": (folder, "not a file")}


def test_bad_images_give_one_line_each_and_exit_2(weights, tmp_path, capsys, digits, one_thread):
    for name, (path, words) in bad_inputs(tmp_path).items():
        code, out, err = run_main(t01, [str(path), "--model", str(weights), "--out-dir", str(tmp_path / name)],
                                  capsys)
        assert code == 2 and out == [] and len(err) == 2, (name, err)  # "Model: ..." then the error
        assert err[1].startswith(f"error: {path}: ") and words in err[1], (name, err)
        assert not (tmp_path / name).exists()  # nothing to draw, no folder made
    # Bad images among good ones: the good ones are still classified and drawn.
    good = str(photograph(digits[1][0], 0, tmp_path, "good"))
    code, out, err = run_main(t01, [str(tmp_path / "bomb.png"), good, str(tmp_path / "missing.png"), good,
                                    "--model", str(weights), "--out-dir", str(tmp_path / "mixed")], capsys)
    assert code == 2 and len(out) == 2 and len(err) == 4, err  # Model, two errors, Picture
    assert (tmp_path / "mixed" / "predictions.png").is_file()


def test_weights_of_another_lesson_or_model_give_one_line_and_exit_2(tmp_path, capsys, digits):
    from T03_cifar10_lenet.cifar10_lenet import LeNet

    photo = str(photograph(digits[1][0], 0, tmp_path, "photo"))
    lenet = LeNet()
    torch.save({"script": "cifar10_lenet", "model_class": "LeNet", "model_state_dict": lenet.state_dict(),
                "args": {}}, tmp_path / "ckpt.pt")  # the fields common/run.py writes
    torch.save(lenet.state_dict(), tmp_path / "lenet.pt")
    (tmp_path / "photo.pt").write_bytes(Path(photo).read_bytes())
    with open(tmp_path / "pickled.pt", "wb") as f:
        pickle.dump({"fc1.weight": [1.0]}, f, protocol=4)  # torch warns about the protocol: no extra lines
    broken = {name: value.clone() for name, value in digits[0].state_dict().items()}
    broken["fc2.bias"][3] = float("nan")  # a diverged model
    torch.save(broken, tmp_path / "nan.pt")
    torch.save({"fc1.weight": "not a tensor"}, tmp_path / "dict.pt")
    cases = {"ckpt.pt": "written by cifar10_lenet.py, not SimpleNN: use the predict.py beside cifar10_lenet.py",
             "lenet.pt": "weights of another model, not SimpleNN's", "photo.pt": "not a readable PyTorch checkpoint",
             "pickled.pt": "not a readable PyTorch checkpoint", "nan.pt": "not finite numbers (fc2.bias)",
             "dict.pt": "does not hold a model's weights", "none.pt": "does not exist", ".": "is a folder"}
    for name, words in cases.items():
        code, out, err = run_main(t01, [photo, "--model", str(tmp_path / name), "--out-dir", str(tmp_path)], capsys)
        assert code == 2 and out == [] and len(err) == 1 and words in err[0], (name, err)


@pytest.mark.processes  # starts Python processes: `make test-processes` (CI runs it)
def test_the_script_itself_prints_no_traceback(weights, tmp_path, digits):
    good = photograph(digits[1][0], 0, tmp_path, "good")
    bomb = png_header(tmp_path / "bomb.png", 20000, 20000)  # Pillow's DecompressionBombError, in a real process
    result = subprocess.run([sys.executable, str(REPO / "T01_mnist_nn" / "predict.py"), str(bomb), str(good),
                             str(tmp_path / "missing.png"), "--model", str(weights), "--out-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert LINE.match(result.stdout.strip()) and result.stdout.startswith(f"{good}: ")
    errors = result.stderr.splitlines()
    assert f"error: {tmp_path / 'missing.png'}: no such file" in errors
    assert f"error: {bomb}: image too large (at most 50 megapixels): shrink it first" in errors, errors
    assert len(errors) == 4, errors  # Model, two errors, Picture: no warning lines


# --- T03 ---------------------------------------------------------------------------------------

def test_t03_centre_crops_a_photo_to_what_lenet_saw_and_names_the_class(tmp_path, capsys, one_thread):
    from T03_cifar10_lenet import predict as t03
    from T03_cifar10_lenet.cifar10_lenet import CLASSES, MEAN, STD, LeNet

    torch.manual_seed(0)
    model = LeNet().eval()
    torch.save(model.state_dict(), tmp_path / "cifar10_lenet.pt")
    rng = np.random.default_rng(1)
    originals = [np.kron(rng.random((4, 4, 3)), np.ones((8, 8, 1))).astype(np.float32) for _ in range(4)]
    paths = []
    for i, original in enumerate(originals):  # a 32x32 image, enlarged 8x, in the middle of a wider photo
        photo = np.zeros((256, 256 + 120, 3), dtype=np.uint8)
        photo[:, 60:316] = np.kron(original * 255, np.ones((8, 8, 1))).astype(np.uint8)
        photo[:, :60], photo[:, 316:] = 250, 5  # whatever is beside the object is cropped away
        paths.append(str(tmp_path / f"photo{i}.png"))
        Image.fromarray(photo).save(paths[-1])
    code, out, err = run_main(t03, [*paths, "--model", str(tmp_path / "cifar10_lenet.pt"),
                                    "--out-dir", str(tmp_path / "out"), "--no-accel"], capsys)
    assert code == 0 and len(out) == 4, err
    for line, path, original in zip(out, paths, originals):
        match = LINE.match(line)
        with torch.no_grad():
            x = transforms.Normalize(MEAN, STD)(torch.from_numpy(original).permute(2, 0, 1))  # as in training
            assert torch.allclose(t03.to_model_input(original)[0], x, atol=1e-6)
            expected = CLASSES[int(model(x.unsqueeze(0)).argmax())]
        assert match and match["path"] == path and match["best"] == expected, line
    assert (tmp_path / "out" / "predictions.png").is_file()
    seen = t03.preprocess(images.open_image(paths[0]))
    assert seen.shape == (32, 32, 3) and np.abs(seen - originals[0]).mean() < 0.02


def test_t03_refuses_other_lessons_and_bad_images(weights, tmp_path, capsys):
    from T03_cifar10_lenet import predict as t03

    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), "orange").save(photo)
    code, out, err = run_main(t03, [str(photo), "--model", str(weights), "--out-dir", str(tmp_path)], capsys)
    assert code == 2 and len(err) == 1 and "another model, not LeNet's" in err[0], err  # T01's weights
    torch.save({"script": "mnist_nn", "model_class": "SimpleNN", "model_state_dict": {}, "args": {}},
               tmp_path / "checkpoint.pt")
    code, out, err = run_main(t03, [str(photo), "--model", str(tmp_path / "checkpoint.pt")], capsys)
    assert code == 2 and len(err) == 1 and "use the predict.py beside mnist_nn.py" in err[0], err
    from T03_cifar10_lenet.cifar10_lenet import LeNet

    torch.save(LeNet().state_dict(), tmp_path / "cifar10_lenet.pt")
    for name, (path, words) in bad_inputs(tmp_path).items():
        if name == "blank":
            continue  # a plain photo of a wall is a valid photo for CIFAR-10
        code, out, err = run_main(t03, [str(path), "--model", str(tmp_path / "cifar10_lenet.pt"),
                                        "--out-dir", str(tmp_path / name)], capsys)
        assert code == 2 and out == [] and words in err[-1], (name, err)
