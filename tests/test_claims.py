"""The claims' machinery: Holm's correction and the split halves against hand computations, the sparse arm (its
models exactly as sparse as pruned, its own gold standard), and the forget ratio (the exact forget-set size)."""
import json
import os

import pytest
import torch

import benchmark
import dataset
from suite import stats, tables
from suite.runs import plan
from utils import UserError


def test_holm_by_hand():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> max(0.06, 0.04) = 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.2, None, 0.01]) == [pytest.approx(0.2), None, pytest.approx(0.02)]  # None: not counted
    assert stats.holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1, never below an earlier one
    assert stats.holm([0.04]) == [0.04]  # a family of one is not corrected


def test_p_value_by_hand():
    # mean 2.5, sd sqrt(5/3), t = 2.5 / (1.2910 / 2) = 3.8730 with 3 degrees of freedom: two-sided p = 0.0305
    assert stats.p_value([1, 2, 3, 4]) == pytest.approx(0.03047, abs=1e-4)
    assert stats.p_value([1.0]) is None and stats.p_value([2.0, 2.0]) == 0.0 and stats.p_value([0.0, 0.0]) == 1.0


def _comparison(method, values):
    return {"method": method, "difference": {"seeds": list(range(1, len(values) + 1)), "values": values,
                                             **tables.t_interval(values)}}


def test_families_are_corrected_apart():
    primary = _comparison("RL", [-1.0, -1.1, -0.9, -1.2])  # alone in its family: p unchanged
    others = [_comparison("FT", [0.1, -0.1, 0.05, -0.05]), _comparison("GA", [1.0, 1.2, 0.9, 1.1])]
    stats.correct([primary, *others], stats.PRIMARY_MASK)
    assert primary["family"] == "primary" and primary["p_holm"] == primary["p"] and primary["holm"] == "reduces"
    ft, ga = others
    assert {ft["family"], ga["family"]} == {"secondary"}
    assert ga["p_holm"] == pytest.approx(min(1, 2 * ga["p"])) and ga["holm"] == "increases"  # the smaller p: x 2
    assert ft["p_holm"] == pytest.approx(max(ft["p"], ga["p_holm"])) and ft["holm"] == "no detectable difference"


def test_split_halves():
    assert stats.halves([3, 1, 2, 5, 4], [30, 10, 20, 50, 40]) == [([1, 2], [10, 20]), ([3, 4, 5], [30, 40, 50])]
    agree = _comparison("RL", [-1.0, -1.2, -0.8, -1.1, -0.9, -1.05])
    disagree = _comparison("FT", [-1.0, -1.1, -1.2, 1.0, 1.1, 1.2])
    stats.split_check([agree, disagree], tables.t_interval)
    assert agree["stable"] is True and [h["direction"] for h in agree["halves"]] == ["reduces", "reduces"]
    assert disagree["stable"] is False and [h["direction"] for h in disagree["halves"]] == ["reduces", "increases"]
    assert disagree["halves"][0]["seeds"] == [1, 2, 3] and disagree["halves"][1]["mean"] == pytest.approx(1.1)
    assert "**differ**" in tables._halves_cell(disagree) and "differ" not in tables._halves_cell(agree)


def test_sparse_table_pairs_arms_by_seed():
    def rec(method, seed, gap, sparsity=0.0):  # retrain at 0 in both arms: Avg. Gap = UA / 4
        return {"method": method, "masked": False, "seed": seed, "sparsity": sparsity,
                "summary": {"UA": 4 * gap, "RA": 0.0, "TA": 0.0, "MIA_efficacy": 0.0, "RTE_minutes": 0.1}}
    records = [rec("retrain", s, 0.0, sp) for s in (1, 2, 3) for sp in (0.0, 0.95)]
    records += [rec("raw", s, g, sp) for s, g, sp in ((1, 3, 0), (2, 3, 0), (3, 3, 0), (1, 1, .95), (2, 1.5, .95),
                                                       (3, 1, .95))]
    records += [rec("FT", s, g) for s, g in ((1, 2.0), (2, 2.5), (3, 2.2))]
    records += [rec("FT", s, g, 0.95) for s, g in ((1, 1.0), (2, 1.1), (3, 1.3))]
    sparse = {c["method"]: c for c in tables.sparse_table(tables.aggregate(records))}
    ft = sparse["FT"]
    assert ft["difference"]["values"] == pytest.approx([-1.0, -1.4, -0.9]) and ft["family"] == "primary"
    assert ft["verdict"] == "sparse reduces the gap" and ft["dense"]["mean"] == pytest.approx(2.2333, abs=1e-4)
    assert ft["vs_original"]["dense"]["values"] == pytest.approx([-1.0, -0.5, -0.8])  # FT - Original, dense arm
    assert ft["vs_original"]["sparse"]["values"] == pytest.approx([0.0, -0.4, 0.3])
    assert sparse["raw"]["family"] == "secondary" and "vs_original" not in sparse["raw"]
    assert "| FT | 95% | 2.23 ± 0.25 | 1.13 ± 0.15 | 3 |" in tables.sparse_md(list(sparse.values()))


def _conv_zeros(path):
    state = torch.load(path, weights_only=True)
    return state, {k: v for k, v in state["state_dict"].items() if v.dim() == 4}


@pytest.fixture(scope="module")
def sparse_bench(tmp_path_factory):
    save = tmp_path_factory.mktemp("sparse_bench")
    argv = ["--seeds", "1,", "--methods", "FT,GA", "--epochs", "1", "--unlearn_epochs", "1", "--device", "cpu",
            "--sparsity", "0.9", "--no-mask", "--no-plots", "--save_dir", str(save)]
    return save, benchmark.main.__wrapped__(argv)


def test_sparse_arm_models_are_exactly_as_sparse_as_pruned(sparse_bench):
    save, out = sparse_bench
    arm = save / "seed_1" / "sparse_0.9"
    pruned, weights = _conv_zeros(arm / "state_1" / "checkpoint.pt")
    mask = pruned["prune_mask"]
    total = sum(m.numel() for m in mask.values())
    assert set(mask) == set(weights) and total - sum(int(m.sum()) for m in mask.values()) == round(0.9 * total)
    assert all(torch.equal(weights[k] != 0, mask[k]) for k in mask)  # zero exactly where pruned (and only there)
    for method in ("retrain", "raw", "FT", "GA"):  # the gold standard and every method keep the zeros
        _, after = _conv_zeros(arm / method / "checkpoint.pt")
        assert all(not after[k][~mask[k]].any() for k in mask), method
        result = json.loads((arm / method / "eval_result.json").read_text())["run"]
        assert result["sparsity"] == pytest.approx(0.9, abs=1 / total) and result["mask_density"] < 0.11
    _, dense = _conv_zeros(save / "seed_1" / "retrain" / "checkpoint.pt")
    assert all(bool((v != 0).all()) for v in dense.values())  # the dense arm's gold standard is dense
    labels = [r["label"] for r in out["rows"]]
    assert labels == ["Original", "Retrain", "FT", "GA", "Original (90% sparse)", "Retrain (90% sparse)",
                      "FT (90% sparse)", "GA (90% sparse)"]  # --no-mask: no masked arm
    sparse = tables.sparse_table(out["rows"])
    assert [c["method"] for c in sparse] == ["raw", "FT", "GA"] and all(c["difference"]["n"] == 1 for c in sparse)
    assert "Avg. Gap on the dense and on the sparse original model" in (save / "results.md").read_text()


def test_sparse_arm_resumes_and_collects(sparse_bench):
    save, first = sparse_bench
    argv = ["--seeds", "1,", "--methods", "FT,GA", "--epochs", "1", "--unlearn_epochs", "1", "--device", "cpu",
            "--sparsity", "0.9", "--no-mask", "--no-plots", "--save_dir", str(save)]
    again = benchmark.main.__wrapped__(argv)
    assert again["counts"] == {"ran": 0, "reused": 10, "failed": 0}  # 2 originals, 2 arms x 4 runs
    rows, _ = benchmark.main.__wrapped__(["--collect", str(save), "--save_dir", str(save / "collected"), "--no-plots"])
    assert [r["label"] for r in rows] == [r["label"] for r in first["rows"]]


def test_forget_ratio_gives_the_exact_size(tmp_path):
    raw = dataset.load_dataset("digits")
    cfg = benchmark.resolve(benchmark.parse(["--forget_ratio", "0.3", "--seeds", "1,", "--save_dir", str(tmp_path)]))
    train = len(dataset.split_train_val(raw.y_train.numpy(), 1)[0])
    assert train == 1217 and cfg["num_forget"] == 365  # round(0.3 x 1,217 = 365.1)
    run = next(r for r in plan(cfg, str(tmp_path)) if r.method == "FT")
    assert run.argv[run.argv.index("--num_indexes_to_replace") + 1] == "365"
    splits = dataset.make_splits(raw, 1, -1, cfg["num_forget"])
    assert len(splits.forget) == 365 and len(splits.retain) == 1217 - 365 and len(set(splits.forget)) == 365


@pytest.mark.parametrize("argv,message", [
    (["--forget_ratio", "0.5", "--scenario", "class"], "forgets a whole class"),
    (["--forget_ratio", "1.5"], "outside"),
    (["--sparsity", "0.9,0.9"], "distinct fractions"),
    (["--sparsity", "0.95", "--privacy", "4"], "--sparsity runs with"),
])
def test_bad_claim_flags(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        benchmark.main(argv + ["--save_dir", str(tmp_path / "x")])
    assert exit_.value.code != 0 and message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x")


def test_forget_ratio_error_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="whole class"):
        benchmark.resolve(benchmark.parse(["--forget_ratio", "0.5", "--scenario", "class"]))
