"""Backdoor: trigger placement and value, poisoning a copy, attack success by hand, bad input, a tiny run."""
import os

import pytest
import torch
from torch import nn

import dataset
from commands import backdoor as main_backdoor
import utils
from conftest import hash_tree, run_script
from commands.backdoor import add_trigger, attack_success, check_trigger, poison, trigger_value
from utils import UserError

DATA = ["--dataset", "digits", "--arch", "resnet20s", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_thread_module")


def test_trigger_position_and_value():
    x = torch.full((2, 3, 8, 8), 0.5)
    out = add_trigger(x, 2, 0.0)
    patch = torch.zeros(8, 8, dtype=torch.bool)
    patch[4:6, 4:6] = True  # 2x2, two pixels from the bottom and right edges
    assert (out[:, :, patch] == 0.0).all()
    assert (out[:, :, ~patch] == 0.5).all()
    assert (x == 0.5).all()  # the input is not modified
    assert (add_trigger(torch.zeros(1, 1, 8, 8), 6, 1.0)[0, 0, :6, :6] == 1.0).all()
    assert trigger_value("digits") == 1.0 and trigger_value("fashionmnist") == 1.0  # black backgrounds
    assert trigger_value("cifar10") == 0.0 and trigger_value("svhn") == 0.0


def test_trigger_where_the_reference_puts_it():
    # the reference zeroes data[:, -2 - size:-2, -2 - size:-2, :] of its NHWC images
    x = torch.rand(3, 3, 32, 32)
    nhwc = x.permute(0, 2, 3, 1).numpy().copy()
    nhwc[:, -2 - 4:-2, -2 - 4:-2, :] *= 0
    assert torch.equal(add_trigger(x, 4, 0.0), torch.from_numpy(nhwc).permute(0, 3, 1, 2))
    changed = (add_trigger(x, 4, 0.0) != x).any(dim=(0, 1)).nonzero()
    assert changed.min(dim=0).values.tolist() == [26, 26] and changed.max(dim=0).values.tolist() == [29, 29]


def test_trigger_must_fit_with_margin():
    check_trigger(6, (1, 8, 8))
    with pytest.raises(UserError, match="does not fit"):
        check_trigger(7, (1, 8, 8))
    with pytest.raises(UserError, match="at most 30"):
        check_trigger(31, (3, 32, 32))


def test_poison_modifies_a_copy_of_the_forget_examples():
    raw = dataset.load_dataset("digits")
    x0, y0 = raw.x_train.clone(), raw.y_train.clone()
    clean = dataset.make_splits(raw, 2, -1, 50)
    # the poisoned examples are the random forget-set selection of dataset.py
    positions = dataset.select_forget(raw.y_train.numpy()[clean.train], -1, 50, 2)
    assert list(clean.forget) == list(clean.train[positions])
    p = poison(clean, 3, 2, 1.0)
    assert torch.equal(raw.x_train, x0) and torch.equal(raw.y_train, y0)  # shared data untouched
    idx = torch.as_tensor(p.forget)
    assert (p.raw.y_train[idx] == 3).all()
    assert torch.equal(p.raw.x_train[idx], add_trigger(x0[idx], 2, 1.0))
    others = torch.ones(len(x0), dtype=torch.bool)
    others[idx] = False
    assert torch.equal(p.raw.x_train[others], x0[others]) and torch.equal(p.raw.y_train[others], y0[others])
    xf, yf = p.xy("forget")
    assert (yf == 3).all() and (xf[:, 0, 4:6, 4:6] == 1.0).all()
    assert len(p.retain) == len(clean.train) - 50
    assert torch.equal(p.raw.x_test, raw.x_test)


class Lookup(nn.Module):
    """Predicts a fixed class per image, read from the image's id stored in its top-left pixel;
    the id's prediction changes when the trigger pixel (5, 5) is white."""

    def __init__(self, clean, triggered):
        super().__init__()
        self.clean, self.triggered = torch.tensor(clean), torch.tensor(triggered)

    def forward(self, x):
        ids = (x[:, 0, 0, 0] * 10).round().long()
        pred = torch.where(x[:, 0, 5, 5] == 1.0, self.triggered[ids], self.clean[ids])
        return nn.functional.one_hot(pred, 4).float() * 10


def test_attack_success_by_hand():
    x = torch.zeros(5, 1, 8, 8)
    x[:, 0, 0, 0] = torch.arange(5) / 10
    y = torch.tensor([0, 1, 2, 1, 3])
    model = Lookup(clean=[0, 1, 2, 1, 3], triggered=[0, 0, 3, 0, 2])
    # target 0: ids 0, 1 and 3 are called 0, 3 of 5 (the reference's count); of the 4 images of other
    # classes, ids 1 and 3
    assert attack_success(model, x, y, 0, 2, 1.0, "cpu") == pytest.approx((60.0, 50.0))
    # target 2: only id 4 is called 2: 1 of 5, and 1 of the 4 images not of class 2
    assert attack_success(model, x, y, 2, 2, 1.0, "cpu") == pytest.approx((20.0, 25.0))
    # a black trigger leaves the pixel at 0: the clean predictions, where only the class-0 image is called 0
    assert attack_success(model, x, y, 0, 2, 0.0, "cpu") == pytest.approx((20.0, 0.0))


@pytest.mark.parametrize("extra,words", [
    (["--rate", "1.5"], "--rate"),
    (["--rate", "0"], "--rate"),
    (["--trigger_size", "7"], "--trigger_size 7 does not fit"),
    (["--class_to_replace", "10"], "--class_to_replace 10"),
    (["--class_to_replace", "-1"], "--class_to_replace -1"),
    (["--pruning_times", "0"], "--pruning_times"),
    (["--prune", "saliency"], "--mask_ratio"),
    (["--num_indexes_to_replace", "5000"], "--num_indexes_to_replace 5000"),
    (["--model_path", "missing.pt"], "missing.pt"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_overwritten(tmp_path, capsys, extra, words):
    save = tmp_path / "run"
    (save / "state_0").mkdir(parents=True)
    (save / "eval_result.json").write_text('{"attack_acc": 99.0}\n')
    (save / "state_0" / "checkpoint.pt").write_bytes(b"old checkpoint")
    before = hash_tree(save)
    argv = DATA + ["--num_indexes_to_replace", "100", "--trigger_size", "2", "--save_dir", str(save)] + extra
    with pytest.raises(SystemExit) as err:
        main_backdoor.main(argv)
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], lines
    assert hash_tree(save) == before


def test_trojan_then_unlearn_on_a_pruned_model(tmp_path):
    save = str(tmp_path)
    result = main_backdoor.main(DATA + ["--epochs", "1", "--num_indexes_to_replace", "100", "--trigger_size", "2",
                                        "--class_to_replace", "7", "--prune", "omp", "--rate", "0.5",
                                        "--prune_type", "pt", "--unlearn", "FT", "--unlearn_epochs", "1",
                                        "--save_dir", save])
    saved = utils.read_json(os.path.join(save, "eval_result.json"))
    for key in ("test_acc", "attack_acc", "attack_acc_nontarget", "test_acc_unlearn", "attack_acc_unlearn",
                "attack_acc_nontarget_unlearn"):
        assert 0.0 <= saved[key] <= 100.0 and saved[key] == pytest.approx(result[key])
    assert saved["target"] == 7 and saved["num_poisoned"] == 100 and saved["trigger_value"] == 1.0
    assert saved["sparsity"] == pytest.approx(0.5, abs=1e-4)
    assert saved["args"]["unlearn"] == "FT"
    out = utils.load_torch(os.path.join(save, "FT", "checkpoint.pt"))
    for k, m in out["prune_mask"].items():
        assert (out["state_dict"][k][~m] == 0).all(), k
    assert len(utils.read_json(os.path.join(save, "FT", "forget_indices.json"))) == 100


def test_command_line_reports_bad_target_in_one_line(tmp_path):
    proc = run_script("main_backdoor.py", DATA + ["--num_indexes_to_replace", "100", "--class_to_replace", "12",
                                                  "--save_dir", tmp_path / "run"])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --class_to_replace 12 (the backdoor's target class) is outside the classes 0..9"]
    assert not (tmp_path / "run").exists()
