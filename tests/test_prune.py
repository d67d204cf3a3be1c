"""Pruning: exact OMP/IMP sparsities, rewinding, resume, masks that unlearning keeps, saliency mask files."""
import os

import pytest
import torch

from commands import baseline as main_baseline
from commands import forget as main_forget
from commands import imp as main_imp
import pruner
import trainer
import utils
from conftest import hash_tree
from models import build_model
from masks import check_mask

DATA = ["--dataset", "digits", "--arch", "resnet20s", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_thread_module")


def fresh_model(seed=0):
    torch.manual_seed(seed)
    return build_model("resnet20s", num_classes=10, in_channels=1, image_size=8)


def conv_total(model):
    return sum(m.weight.numel() for _, m in pruner.conv_weights(model))


def kept(mask):
    return sum(int(m.sum()) for m in mask.values())


def test_omp_leaves_ten_percent_of_smallest_removed():
    model = fresh_model()
    names_before = list(model.state_dict())
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    mask = pruner.global_prune(model, 0.9)
    n = conv_total(model)
    assert set(mask) == {name for name, _ in pruner.conv_weights(model)}
    assert all(name.endswith("weight") and weights[name].dim() == 4 for name in mask)
    assert kept(mask) == n - round(0.9 * n)
    assert pruner.sparsity(mask) == pytest.approx(0.9, abs=1 / n)
    assert pruner.measured_sparsity(model) == pytest.approx(pruner.sparsity(mask))
    assert list(model.state_dict()) == names_before  # plain tensors again, same keys and order
    pruned = torch.cat([weights[k][~m].abs() for k, m in mask.items()])
    left = torch.cat([weights[k][m].abs() for k, m in mask.items()])
    assert pruned.max() <= left.min()  # global magnitude: every pruned weight is smaller than every kept one
    params = dict(model.named_parameters())
    for k, m in mask.items():
        assert (params[k][~m] == 0).all() and torch.equal(params[k][m], weights[k][m])
    for k, p in params.items():  # non-conv parameters untouched
        if k not in mask:
            assert torch.equal(p, weights[k])


def test_imp_prunes_rate_of_what_remains():
    model = fresh_model()
    n = conv_total(model)
    mask, remaining = None, n
    for _ in range(3):
        new = pruner.global_prune(model, 0.2, mask=mask)
        if mask is not None:
            assert all(not (new[k] & ~mask[k]).any() for k in mask)  # nested: a pruned weight stays pruned
        remaining -= round(0.2 * remaining)
        assert kept(new) == remaining
        mask = new
    assert pruner.density(mask) == pytest.approx(0.8 ** 3, abs=3 / n)


def test_random_prune_has_the_same_count():
    model = fresh_model()
    torch.manual_seed(0)
    mask = pruner.global_prune(model, 0.5, random=True)
    by_magnitude = pruner.global_prune(fresh_model(), 0.5)
    assert kept(mask) == kept(by_magnitude)
    assert any(not torch.equal(mask[k], by_magnitude[k]) for k in mask)


def test_channels_last_weights_prune_alike():
    """On CUDA models are channels_last, which torch's pruning cannot flatten; the result must not change."""
    plain, last = fresh_model(), fresh_model().to(memory_format=torch.channels_last)
    a = pruner.global_prune(plain, 0.7)
    b = pruner.global_prune(last, 0.7)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert last.layer1[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    b = pruner.global_prune(last, 0.5, mask=b)
    assert kept(b) == kept(a) - round(0.5 * kept(a))


# ---------------------------------------------------------------- main_imp end to end

def _recording(calls):
    original = pruner.train_state

    def record(args, splits, device, model, mask, run_dir, extra, start_epoch=0, on_epoch=None):
        calls.append({"state": extra["state"], "start_epoch": start_epoch, "mask": mask,
                      "weights": {k: v.detach().clone() for k, v in model.state_dict().items()}})
        return original(args, splits, device, model, mask, run_dir, extra, start_epoch, on_epoch)

    return record


@pytest.fixture(scope="module")
def omp(tmp_path_factory):
    """OMP at 0.9 with rewinding to epoch 1 of 2; records the weights each state starts from."""
    save = str(tmp_path_factory.mktemp("omp"))
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pruner, "train_state", _recording(calls))
        main_imp.main(DATA + ["--epochs", "2", "--decreasing_lr", "1", "--prune", "omp", "--rate", "0.9",
                              "--prune_type", "rewind_lt", "--rewind_epoch", "1", "--save_dir", save])
    return save, calls


def test_omp_run_files_and_sparsity(omp):
    save, _ = omp
    ckpt = utils.load_torch(os.path.join(save, "state_1", "checkpoint.pt"))
    mask = ckpt["prune_mask"]
    n = sum(m.numel() for m in mask.values())
    assert kept(mask) == n - round(0.9 * n)
    assert ckpt["sparsity"] == pytest.approx(0.9, abs=1 / n)
    file_mask = utils.load_torch(os.path.join(save, "mask_state_1.pt"))
    assert file_mask.keys() == mask.keys() and all(torch.equal(file_mask[k], mask[k]) for k in mask)
    for k, m in mask.items():
        assert m.dtype == torch.bool and (ckpt["state_dict"][k][~m] == 0).all(), k
    summary = utils.read_json(os.path.join(save, "eval_result.json"))
    assert [s["state"] for s in summary["states"]] == [0, 1]
    assert summary["final_model"] == os.path.join(save, "state_1", "checkpoint.pt")
    assert summary["states"][1]["measured_sparsity"] == pytest.approx(0.9, abs=1 / n)
    assert set(summary["states"][1]["accuracy"]) == {"train", "val", "test"}
    assert not os.path.exists(os.path.join(save, ".lock"))


def test_rewinding_restores_recorded_weights(omp, tmp_path):
    save, calls = omp
    assert [c["state"] for c in calls] == [0, 1]
    assert calls[1]["start_epoch"] == 1  # the learning-rate schedule is rewound too
    history = utils.load_torch(os.path.join(save, "state_1", "checkpoint.pt"))["history"]
    assert [r["epoch"] for r in history] == [1, 2]  # and the pruned model trains for the full --epochs
    rewind = utils.load_torch(os.path.join(save, "rewind_weights.pt"))
    assert rewind["epoch"] == 1
    # the weights after epoch 1: the same dense training stopped after one epoch
    base = str(tmp_path / "base")
    main_baseline.main(DATA + ["--epochs", "1", "--decreasing_lr", "1", "--save_dir", base])
    trained = utils.load_torch(os.path.join(base, "checkpoint.pt"))["state_dict"]
    for k, v in trained.items():
        assert torch.equal(rewind["state_dict"][k], v), k
    start, mask = calls[1]["weights"], calls[1]["mask"]
    for k, v in rewind["state_dict"].items():
        if k in mask:
            assert torch.equal(start[k][mask[k]], v[mask[k]]) and (start[k][~mask[k]] == 0).all(), k
        else:
            assert torch.equal(start[k], v), k  # everything else (BN statistics too) is rewound


@pytest.mark.parametrize("prune_type", ["lt", "pt"])
def test_lt_rewinds_to_init_and_pt_keeps_trained(omp, tmp_path, prune_type):
    save, _ = omp
    dense = os.path.join(save, "state_0", "checkpoint.pt")
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pruner, "train_state", lambda *a, **k: calls.append(_snapshot(*a, **k)) or a[3])
        main_imp.main(DATA + ["--epochs", "2", "--prune", "omp", "--rate", "0.5", "--prune_type", prune_type,
                              "--model_path", dense, "--save_dir", str(tmp_path / prune_type)])
    (start, mask), = calls
    if prune_type == "lt":
        state = utils.load_torch(dense)
        expected = trainer.init_model(state["meta"], 1, "cpu").state_dict()
    else:
        expected = utils.load_torch(dense)["state_dict"]
    for k, v in expected.items():
        m = mask.get(k, torch.ones_like(v, dtype=torch.bool))
        assert torch.equal(start[k][m], v[m]) and (start[k][~m] == 0).all(), k
    assert pruner.density(mask) == pytest.approx(0.5, abs=1e-4)


def _snapshot(args, splits, device, model, mask, run_dir, extra, start_epoch=0, on_epoch=None):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, mask


def test_imp_pt_starts_every_state_from_the_dense_model(omp, tmp_path):
    """pt rewinds to the dense model each round (the reference); pruning ranks the last state's weights."""
    save, _ = omp
    dense = os.path.join(save, "state_0", "checkpoint.pt")
    calls = []

    def train(*a, **k):  # stands in for training: the weights change
        calls.append(_snapshot(*a, **k))
        with torch.no_grad():
            for p in a[3].parameters():
                p.mul_(-2)
        return a[3]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pruner, "train_state", train)
        main_imp.main(DATA + ["--epochs", "2", "--prune", "imp", "--pruning_times", "2", "--rate", "0.5",
                              "--prune_type", "pt", "--model_path", dense, "--save_dir", str(tmp_path)])
    expected = utils.load_torch(dense)["state_dict"]
    for start, mask in calls:
        for k, v in expected.items():
            m = mask.get(k, torch.ones_like(v, dtype=torch.bool))
            assert torch.equal(start[k][m], v[m]) and (start[k][~m] == 0).all(), k
    assert pruner.density(calls[1][1]) == pytest.approx(0.25, abs=1e-4)


def test_imp_three_rounds_and_resume(omp, tmp_path):
    save, _ = omp
    out = str(tmp_path / "imp")
    argv = DATA + ["--epochs", "1", "--prune", "imp", "--pruning_times", "3", "--rate", "0.2", "--prune_type", "pt",
                   "--model_path", os.path.join(save, "state_0", "checkpoint.pt"), "--save_dir", out]
    records = main_imp.main(argv)
    assert [r["state"] for r in records] == [0, 1, 2, 3]
    masks = [utils.load_torch(os.path.join(out, f"mask_state_{i}.pt")) for i in (1, 2, 3)]
    n = sum(m.numel() for m in masks[0].values())
    remaining = n
    for i, mask in enumerate(masks):
        remaining -= round(0.2 * remaining)
        assert kept(mask) == remaining
        if i:
            assert all(not (mask[k] & ~masks[i - 1][k]).any() for k in mask)
    assert records[-1]["sparsity"] == pytest.approx(1 - 0.8 ** 3, abs=3 / n)
    final = utils.load_torch(os.path.join(out, "state_3", "checkpoint.pt"))
    for k, m in final["prune_mask"].items():
        assert (final["state_dict"][k][~m] == 0).all()
    # finished states are reused: a resumed run rewrites nothing but the summary
    before = hash_tree(out)
    main_imp.main(argv + ["--resume"])
    after = hash_tree(out)
    assert {k: v for k, v in after.items() if k != "eval_result.json"} == \
           {k: v for k, v in before.items() if k != "eval_result.json"}
    # a state interrupted after its last epoch checkpoint is finished from that checkpoint
    os.remove(os.path.join(out, "state_3", "eval_result.json"))
    records = main_imp.main(argv + ["--resume"])
    assert records[-1]["sparsity"] == pytest.approx(1 - 0.8 ** 3, abs=3 / n)
    assert hash_tree(out)["state_3/checkpoint.pt"] == before["state_3/checkpoint.pt"]


@pytest.mark.parametrize("method", ["FT", "GA", "RL", "FT_prune", "retrain"])
def test_unlearning_keeps_pruned_weights_zero(omp, tmp_path, method):
    save, _ = omp
    model_path = os.path.join(save, "state_1", "checkpoint.pt")
    pruned = utils.load_torch(model_path)
    result = main_forget.main(DATA + ["--model_path", model_path, "--unlearn", method, "--unlearn_epochs", "1",
                                      "--num_indexes_to_replace", "40", "--alpha", "1e-4",
                                      "--save_dir", str(tmp_path)])
    out = utils.load_torch(os.path.join(tmp_path, method, "checkpoint.pt"))
    moved = 0
    for k, m in pruned["prune_mask"].items():
        assert (out["state_dict"][k][~m] == 0).all(), k
        moved += int((out["state_dict"][k][m] != pruned["state_dict"][k][m]).sum())
    assert moved > 0
    zeros = {name: sum(int((c["state_dict"][k] == 0).sum()) for k in c["prune_mask"]) for name, c in
             (("pruned", pruned), ("unlearned", out))}
    assert zeros["unlearned"] == zeros["pruned"]  # retrain too: the retrained model is exactly as sparse
    assert result["run"]["sparsity"] == pytest.approx(pruned["sparsity"])


def test_saliency_masks(omp, tmp_path):
    save, _ = omp
    out = str(tmp_path / "sal")
    model_path = os.path.join(save, "state_0", "checkpoint.pt")
    main_imp.main(DATA + ["--prune", "saliency", "--model_path", model_path, "--num_indexes_to_replace", "40",
                          "--mask_ratios", "0.1,0.5,1.0", "--save_dir", out])
    model = trainer.build(utils.load_torch(model_path)["meta"])
    total = sum(p.numel() for p in model.parameters())
    for r in (0.1, 0.5, 1.0):
        mask = check_mask(utils.load_torch(os.path.join(out, f"with_{r}.pt")), model, "mask")
        assert kept(mask) == int(total * r)  # the reference's count
        assert mask.keys() == dict(model.named_parameters()).keys()
    low, high = (utils.load_torch(os.path.join(out, f"with_{r}.pt")) for r in (0.1, 0.5))
    assert all(not (low[k] & ~high[k]).any() for k in low)  # one score ranking: the masks are nested
    forget = utils.read_json(os.path.join(out, "forget_indices.json"))
    assert len(forget) == 40 and len(set(forget)) == 40


@pytest.mark.parametrize("extra,words", [
    (["--prune", "saliency"], "--model_path"),
    (["--prune_type", "rewind_lt", "--rewind_epoch", "3", "--epochs", "3"], "--rewind_epoch"),
    (["--rate", "1.0"], "--rate"),
    (["--pruning_times", "0"], "--pruning_times"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, extra, words):
    keep = tmp_path / "keep.json"
    keep.write_text('{"old": 1}\n')
    with pytest.raises(SystemExit) as err:
        main_imp.main(DATA + ["--save_dir", str(tmp_path)] + extra)
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0]
    assert os.listdir(tmp_path) == ["keep.json"] and keep.read_text() == '{"old": 1}\n'
