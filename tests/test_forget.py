"""main_forget.py end to end: every method with and without a mask, run folders, bad input."""
import json
import os

import pytest
import torch

from commands import baseline as main_baseline
from commands import forget as main_forget
from conftest import hash_tree
from dataset import load_dataset, split_train_val
from unlearn import METHODS

COMMON = ["--dataset", "digits", "--arch", "resnet20s", "--num_indexes_to_replace", "60", "--device", "cpu",
          "--batch_size", "64"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("orig")
    main_baseline.main(["--dataset", "digits", "--arch", "resnet20s", "--epochs", "3", "--decreasing_lr", "2",
                        "--save_dir", str(d), "--device", "cpu", "--batch_size", "64"])
    return d


def forget(save_dir, *extra):
    return main_forget.main(COMMON + ["--save_dir", str(save_dir), "--unlearn_epochs", "1", "--iu_samples", "64",
                                      "--fisher_samples", "64", "--alpha", "1e-6", "--epochs", "1", "--lr", "0.01",
                                      *extra])  # --epochs, --lr: GA_prune's and GA_prune_bi's


@pytest.mark.parametrize("masked", [False, True], ids=["dense", "mask0.5"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_runs(trained, tmp_path, method, masked):
    save = tmp_path / "runs"
    extra = ["--model_path", str(trained / "checkpoint.pt"), "--unlearn", method]
    result = forget(save, *extra, *(["--mask_ratio", "0.5"] if masked else []))
    run = save / (f"{method}_saliency_0.5" if masked else method)
    on_disk = json.loads((run / "eval_result.json").read_text())
    assert on_disk["summary"] == pytest.approx(result["summary"], nan_ok=True)
    assert set(on_disk) == {"accuracy", "SVC_MIA_forget_efficacy", "SVC_MIA_training_privacy", "summary", "run",
                            "eval_seconds"}
    assert on_disk["summary"]["UA"] == pytest.approx(100 - on_disk["accuracy"]["forget"])
    assert 0 <= on_disk["summary"]["MIA_efficacy"] <= 100
    assert len(json.loads((run / "forget_indices.json").read_text())) == 60
    assert on_disk["run"]["mask_density"] == pytest.approx(0.5 if masked else 1.0, abs=1e-6)
    assert (run / "checkpoint.pt").exists() and (run / "args.json").exists()
    if masked:
        mask = torch.load(run / "mask.pt", weights_only=True)
        sum_kept = sum(int(m.sum()) for m in mask.values())
        assert sum_kept == round(0.5 * sum(m.numel() for m in mask.values()))


def test_resume_reuses_finished_run(trained, tmp_path):
    extra = ["--model_path", str(trained / "checkpoint.pt"), "--unlearn", "FT"]
    first = forget(tmp_path, *extra)
    stamp = os.stat(tmp_path / "FT" / "checkpoint.pt").st_mtime_ns
    again = forget(tmp_path, *extra, "--resume")
    assert again["summary"] == first["summary"]
    assert os.stat(tmp_path / "FT" / "checkpoint.pt").st_mtime_ns == stamp


def test_default_model_path_is_save_dir_checkpoint(trained):
    result = forget(trained, "--unlearn", "raw", "--run_name", "raw_default")
    assert result["run"]["unlearn"] == "raw"


def bad_cases(trained, tmp):
    model = str(trained / "checkpoint.pt")
    other = torch.load(model, weights_only=True)["state_dict"]
    torch.save({"conv1.weight": torch.ones(3, 3, dtype=torch.bool)}, tmp / "wrong_shape.pt")
    torch.save({"features.0.weight": torch.ones(3, dtype=torch.bool)}, tmp / "other_arch.pt")
    torch.save({"conv1.weight": torch.full(other["conv1.weight"].shape, 2.0)}, tmp / "values.pt")
    torch.save({"state_dict": other, "meta": None}, tmp / "as_model.pt")
    bad_classes = dict(torch.load(model, weights_only=True))
    bad_classes["meta"] = dict(bad_classes["meta"], num_classes=7)
    torch.save(bad_classes, tmp / "seven.pt")
    torch.save(dict(bad_classes, meta=dict(bad_classes["meta"], dataset="fashionmnist")), tmp / "fashion.pt")
    torch.save({k: torch.ones_like(v, dtype=torch.bool) for k, v in other.items() if k.endswith("conv1.weight")},
               tmp / "half.pt")
    train, _ = split_train_val(load_dataset("digits").y_train.numpy(), 2)
    (tmp / "all.json").write_text(json.dumps([int(i) for i in train]))
    return [
        (["--model_path", model, "--mask", str(tmp / "wrong_shape.pt")], "shape"),
        (["--model_path", model, "--mask", str(tmp / "other_arch.pt")], "does not have"),
        (["--model_path", model, "--mask", str(tmp / "values.pt")], "other than 0 and 1"),
        (["--model_path", model, "--mask", model], "either with --mask or with --model_path"),
        (["--model_path", model, "--mask", str(tmp / "half.pt"), "--mask_path", str(tmp / "half.pt")],
         "not both"),
        (["--model_path", model, "--mask_path", model], "looks like a model"),
        (["--model_path", model, "--indexes_to_replace", str(tmp / "all.json")], "nothing is left to retain"),
        (["--model_path", model, "--arch", "resnet18"], "is a resnet20s, not --arch resnet18"),
        (["--model_path", str(tmp / "fashion.pt")], "trained on fashionmnist, not --dataset digits"),
        (["--model_path", model, "--mask_ratio", "1.5"], "outside"),
        (["--model_path", model, "--mask_ratio", "0"], "outside"),
        (["--model_path", model, "--unlearn", "nope"], "invalid choice"),
        (["--model_path", str(tmp / "missing.pt")], "does not exist"),
        (["--model_path", str(tmp / "seven.pt")], "7 classes"),
        (["--model_path", model, "--unlearn", "GA", "--unlearn_lr", "1e12"], "diverged"),
        (["--model_path", model, "--unlearn", "fisher_new", "--alpha", "1e30"], "diverged"),
    ]


def test_bad_input_one_line_and_nothing_overwritten(trained, tmp_path, capsys):
    save = tmp_path / "save"
    forget(save, "--model_path", str(trained / "checkpoint.pt"), "--unlearn", "raw")
    for argv, message in bad_cases(trained, tmp_path):
        before = hash_tree(save)
        with pytest.raises(SystemExit) as exit_info:
            forget(save, "--unlearn", "FT", *argv) if "--unlearn" not in argv else forget(save, *argv)
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2, argv
        assert message in err and "\n" not in err and "Traceback" not in err, (argv, err)
        after = hash_tree(save)
        assert {k: v for k, v in after.items() if k in before} == before, argv
    assert not (save / "GA" / "eval_result.json").exists()


def test_mask_may_name_a_pruned_model(trained, tmp_path):
    """Unlearn-Sparse's --mask: the model to unlearn, whose zero weights stay zero."""
    state = torch.load(trained / "checkpoint.pt", weights_only=True)
    sd = dict(state["state_dict"])
    zeros = {}
    for name, w in sd.items():
        if w.dim() == 4:
            cut = w.abs().flatten().kthvalue(w.numel() // 2).values
            sd[name] = torch.where(w.abs() <= cut, torch.zeros_like(w), w)
            zeros[name] = sd[name] == 0
    torch.save({"state_dict": sd}, tmp_path / "pruned.pt")  # the reference's layout: weights only
    result = forget(tmp_path / "runs", "--mask", str(tmp_path / "pruned.pt"), "--unlearn", "FT")
    assert 0.3 < result["run"]["sparsity"] < 0.6
    out = torch.load(tmp_path / "runs" / "FT_pruned" / "checkpoint.pt", weights_only=True)["state_dict"]
    for name, z in zeros.items():
        assert (out[name][z] == 0).all() and (out[name][~z] != 0).all()
