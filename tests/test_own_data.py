"""The README's "One method on your own model and data", run as written on a small folder of PNGs it makes."""
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess

import numpy as np
import pytest
import torch

import dataset
from conftest import REPO

CLASSES = ("cat", "dog", "emu")


def write_images(root, train=10, test=4, size=8, held_out="test"):
    """root/train/<class>/<i>.png and root/<held_out>/<class>/<i>.png: noise with one colour channel raised per
    class, so a model can learn them."""
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, n in (("train", train), (held_out, test)):
        for k, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 80, (size, size, 3))
                pixels[..., k] += 150
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return root


def readme_blocks():
    """The bash blocks of the README's own-data section, each as a list of commands (continuations joined)."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("## One method on your own model and data", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [[line for line in block.replace("\\\n", " ").splitlines() if line.strip()] for block in blocks]


def run(command, cwd):
    """`python <script> ARGS` as <script>.main(ARGS) in this process; anything else through the shell."""
    argv = shlex.split(command)
    if argv[0] == "python":
        return importlib.import_module(os.path.splitext(argv[1])[0]).main(argv[2:])
    subprocess.run(command, shell=True, cwd=cwd, check=True)


def test_readme_commands_unlearn_a_model_trained_on_an_image_folder(tmp_path, monkeypatch, one_thread):
    write_images(tmp_path / "my_images")
    monkeypatch.chdir(tmp_path)
    train_and_forget, own_model = readme_blocks()
    assert [shlex.split(c)[:2] for c in train_and_forget] == [
        ["python", "main_baseline.py"], ["echo", "[0, 1, 12, 25]"], ["python", "main_forget.py"]]
    for command in train_and_forget:
        result = run(command, tmp_path)
    baseline = json.loads((tmp_path / "runs/mine/eval_result.json").read_text())
    assert baseline["args"]["dataset"] == "imagefolder" and baseline["accuracy"]["test"] > 50
    run_dir = tmp_path / "runs/mine/RL_saliency_0.5"
    assert json.loads((run_dir / "forget_indices.json").read_text()) == [0, 1, 12, 25]
    assert result["run"]["num_forget"] == 4 and result["run"]["dataset"] == "imagefolder"
    assert (run_dir / "mask.pt").exists() and (run_dir / "checkpoint.pt").exists()

    # a model of one's own: a plain state_dict of the registered architecture
    checkpoint = torch.load(tmp_path / "runs/mine/checkpoint.pt", weights_only=True)
    torch.save(checkpoint["state_dict"], tmp_path / "my_model.pt")
    (command,) = own_model
    own = run(command, tmp_path)
    assert (tmp_path / "runs/mine_own/RL_saliency_0.5/eval_result.json").exists()
    for key in ("UA", "RA", "TA", "MIA_efficacy"):
        assert own["summary"][key] == result["summary"][key]


def test_streamed_folder_equals_the_tensors_and_val_stands_in_for_test(tmp_path):
    root = write_images(tmp_path / "images", size=10, held_out="val")
    tensors = dataset.load_dataset("imagefolder", str(root))
    streamed = dataset.load_dataset("imagefolder", str(root), stream=True)
    assert isinstance(streamed.x_train, dataset.ImageFiles) and tensors.num_classes == 3
    assert tensors.x_train.shape == (30, 3, 10, 10) and tensors.x_test.shape == (12, 3, 10, 10)
    assert torch.equal(streamed.x_train[:], tensors.x_train) and torch.equal(streamed.y_test, tensors.y_test)
    assert tensors.y_train.tolist() == [0] * 10 + [1] * 10 + [2] * 10
    resized = dataset.load_dataset("imagefolder", str(root), input_size=6)
    assert resized.x_train.shape == (30, 3, 6, 6)


def test_folder_mistakes_are_one_line(tmp_path):
    root = write_images(tmp_path / "images")
    (root / "test" / "cat").rename(root / "test" / "cow")
    with pytest.raises(dataset.UserError, match="does not hold the same class folders"):
        dataset.load_dataset("imagefolder", str(root))
    shutil.rmtree(root / "test")
    with pytest.raises(dataset.UserError, match="test' is missing"):
        dataset.load_dataset("imagefolder", str(root))


@pytest.mark.parametrize("stream, workers", [(False, 0), (True, 0), (True, 1)])
def test_an_unreadable_image_or_an_empty_class_is_one_line(tmp_path, stream, workers):
    root = write_images(tmp_path / "images")
    (root / "train" / CLASSES[1] / "broken.png").write_text("not an image")
    with pytest.raises(dataset.UserError) as err:
        raw = dataset.load_dataset("imagefolder", str(root), stream=stream, num_workers=workers)
        raw.x_train[:]
    assert str(err.value) == f"cannot read image '{root / 'train' / CLASSES[1] / 'broken.png'}': cannot identify " \
                             f"image file '{root / 'train' / CLASSES[1] / 'broken.png'}'"
    (root / "train" / CLASSES[1] / "broken.png").unlink()
    (root / "train" / "empty").mkdir()
    with pytest.raises(dataset.UserError, match="Found no valid file for the classes empty"):
        dataset.load_dataset("imagefolder", str(root), stream=stream)
