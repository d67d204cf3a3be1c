"""Tests for benchmark.py: aggregation against hand-computed numbers, --collect, --print-commands, presets,
and a tiny end-to-end run (1 seed, FT and GA, 1 epoch) with failure recording and resume."""
import csv
import functools
import json
import math
import os
import shlex

import pytest

import benchmark
from commands import baseline as main_baseline
from commands import forget as main_forget
from commands import imp as main_imp
from suite import presets, tables
from suite.runs import plan
from unlearn import METHODS
from utils import UserError

SUMMARIES = {  # (method, masked, seed): (UA, RA, TA, MIA, RTE)
    ("retrain", False, 1): (5.0, 100.0, 90.0, 10.0, 2.0),
    ("retrain", False, 2): (7.0, 98.0, 92.0, 14.0, 4.0),
    ("FT", False, 1): (1.0, 99.0, 91.0, 2.0, 0.1),
    ("FT", False, 2): (3.0, 97.0, 90.0, 6.0, 0.3),
    ("FT", True, 1): (4.0, 100.0, 90.0, 9.0, 0.2),
    ("FT", True, 2): (6.0, 98.0, 91.0, 12.0, 0.2),
    ("GA", False, 1): (8.0, 96.0, 88.0, 20.0, 0.05),
}


def write_results(root):
    """eval_result.json files in the benchmark's layout, plus an original model's result and a failed run."""
    for (method, masked, seed), (ua, ra, ta, mia, rte) in SUMMARIES.items():
        name = f"{method}_saliency_0.5" if masked else method
        folder = root / f"seed_{seed}" / name
        folder.mkdir(parents=True)
        result = {"accuracy": {"retain": ra, "forget": 100 - ua, "val": 99.0, "test": ta},
                  "summary": {"UA": ua, "RA": ra, "TA": ta, "MIA_efficacy": mia, "RTE_minutes": rte},
                  "run": {"unlearn": method, "mask": "saliency 0.5" if masked else None, "seed": seed,
                          "dataset": "digits", "arch": "resnet20s", "num_forget": 121, "class_to_replace": -1}}
        (folder / "eval_result.json").write_text(json.dumps(result))
    for seed in (1, 2):
        (root / f"seed_{seed}" / "original").mkdir()
        (root / f"seed_{seed}" / "original" / "eval_result.json").write_text(json.dumps({"accuracy": {"test": 95}}))
    (root / "seed_2" / "GA").mkdir()
    (root / "seed_2" / "GA" / "failed.json").write_text(json.dumps(
        {"error": "loss became nan at epoch 1, step 1", "run": {"unlearn": "GA", "seed": 2, "masked": False}}))


def test_mean_std():
    assert tables.mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert tables.mean_std([4.0]) == (4.0, 0.0)
    assert tables.mean_std([]) == (None, None)
    assert tables.mean_std([1.0, float("nan"), None, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))


def test_collect_matches_hand_computed(tmp_path):
    write_results(tmp_path / "runs")
    out = tmp_path / "out"
    rows, masking = benchmark.main.__wrapped__(["--collect", str(tmp_path / "runs"), "--save_dir", str(out)])
    by = {r["label"]: r for r in rows}
    assert [r["label"] for r in rows] == ["Retrain", "FT", "FT + mask", "GA"]
    ft = by["FT"]
    assert ft["UA"]["mean"] == pytest.approx(2.0) and ft["UA"]["std"] == pytest.approx(math.sqrt(2))
    assert ft["MIA_efficacy"]["mean"] == pytest.approx(4.0) and ft["TA"]["mean"] == pytest.approx(90.5)
    assert ft["RTE_minutes"]["mean"] == pytest.approx(0.2)
    # seed 1: (|1-5| + |99-100| + |91-90| + |2-10|) / 4 = 3.5; seed 2: (4 + 1 + 2 + 8) / 4 = 3.75
    assert ft["avg_gap"]["values"] == pytest.approx([3.5, 3.75])
    assert ft["avg_gap"]["mean"] == pytest.approx(3.625)
    assert ft["avg_gap"]["std"] == pytest.approx(0.25 / math.sqrt(2))
    # masked: seed 1 (1 + 0 + 0 + 1) / 4 = 0.5; seed 2 (1 + 0 + 1 + 2) / 4 = 1.0
    assert by["FT + mask"]["avg_gap"]["values"] == pytest.approx([0.5, 1.0])
    assert by["Retrain"]["avg_gap"]["mean"] == 0.0 and by["Retrain"]["UA"]["mean"] == pytest.approx(6.0)
    assert by["Retrain"]["UA"]["std"] == pytest.approx(math.sqrt(2))
    # GA: one seed finished (gap (3 + 4 + 2 + 10) / 4 = 4.75, std 0), one failed
    assert by["GA"]["avg_gap"]["mean"] == pytest.approx(4.75) and by["GA"]["avg_gap"]["std"] == 0.0
    assert by["GA"]["seeds"] == [1] and by["GA"]["failed_seeds"] == [2]
    assert all(r["published"] is None for r in rows)  # digits: no published figures
    # masking table: per-seed difference (0.5 - 3.5, 1.0 - 3.75) = (-3, -2.75); t(0.975, 1) = 12.706,
    # half width 12.706 x 0.1768 / sqrt(2) = 1.588: interval [-4.46, -1.29], below 0
    assert len(masking) == 1 and masking[0]["method"] == "FT" and masking[0]["comparison"] == "FT + mask - FT"
    assert masking[0]["without_mask"]["mean"] == pytest.approx(3.625)
    assert masking[0]["with_mask"]["mean"] == pytest.approx(0.75)
    difference = masking[0]["difference"]
    assert difference["seeds"] == [1, 2] and difference["values"] == pytest.approx([-3.0, -2.75])
    assert difference["mean"] == pytest.approx(-2.875) and difference["std"] == pytest.approx(0.25 / math.sqrt(2))
    assert difference["low"] == pytest.approx(-4.4633, abs=1e-3)
    assert difference["high"] == pytest.approx(-1.2867, abs=1e-3)
    assert masking[0]["verdict"] == "mask reduces the gap"
    # files
    md = (out / "results.md").read_text()
    assert "| FT + mask | 5.00 ± 1.41 | 10.50 ± 2.12 | 99.00 ± 1.41 | 90.50 ± 0.71 | 0.75 ± 0.35 |" in md
    assert "| GA |" in md and "1 (1 failed)" in md and "loss became nan" in md
    assert "| FT | 3.62 ± 0.18 | 0.75 ± 0.35 | 2 | -2.88 ± 0.18 | [-4.46, -1.29] | 0.0277 / 0.0277 (secondary) | " \
           "mask reduces the gap |" in md  # p: t = 2.875 / (0.177 / sqrt 2) = 23.0, 1 degree of freedom
    assert "Student t interval of the mean difference with n - 1 degrees of freedom" in md
    assert "SalUn vs RL" not in md  # RL was not run
    with open(out / "results.csv") as f:
        lines = list(csv.DictReader(f))
    assert [ln["label"] for ln in lines] == ["Retrain", "FT", "FT + mask", "GA"]
    assert float(lines[1]["avg_gap_mean"]) == pytest.approx(3.625)
    saved = json.loads((out / "results.json").read_text())
    assert saved["masking"][0]["difference"]["high"] == pytest.approx(-1.2867, abs=1e-3) and len(saved["runs"]) == 7
    assert "Student t" in saved["masking"][0]["interval"] and len(saved["per_seed"]) == 7
    assert {"method": "FT", "masked": True, "seed": 2, "sparsity": 0.0, "UA": 6.0, "MIA_efficacy": 12.0, "RA": 98.0,
            "TA": 91.0, "avg_gap": 1.0, "RTE_minutes": 0.2} in saved["per_seed"]
    for name in ("avg_gap.png", "mask_difference.png", "ua_vs_ta.png"):
        assert (out / name).stat().st_size > 0


def test_collect_published_figures_for_cifar10(tmp_path):
    folder = tmp_path / "seed_1" / "RL_saliency_0.5"
    folder.mkdir(parents=True)
    run = {"unlearn": "RL", "mask": "saliency 0.5", "seed": 1, "dataset": "cifar10", "arch": "resnet18",
           "num_forget": 4500, "class_to_replace": -1}
    summary = {"UA": 3.0, "RA": 99.0, "TA": 93.0, "MIA_efficacy": 15.0, "RTE_minutes": 2.5}
    (folder / "eval_result.json").write_text(json.dumps({"summary": summary, "run": run}))
    rows, _ = benchmark.main.__wrapped__(["--collect", str(tmp_path), "--save_dir", str(tmp_path / "o"),
                                          "--no-plots"])
    assert rows[0]["label"] == "RL + mask (SalUn)"
    assert rows[0]["published"] == [2.85, 14.39, 99.62, 93.93, 1.15, 2.66]
    assert "2.85 / 14.39 / 99.62 / 93.93 / 1.15 / 2.66" in (tmp_path / "o" / "results.md").read_text()


def test_collect_errors(tmp_path, capsys):
    with pytest.raises(UserError, match="no eval_result.json"):
        benchmark.main.__wrapped__(["--collect", str(tmp_path)])
    with pytest.raises(SystemExit) as err:
        benchmark.main(["--collect", str(tmp_path / "missing")])
    assert err.value.code == 2 and "is not a folder" in capsys.readouterr().err
    write_results(tmp_path / "a")
    write_results(tmp_path / "b")
    with pytest.raises(UserError, match="two results for FT, seed 1"):
        benchmark.main.__wrapped__(["--collect", str(tmp_path / "a"), str(tmp_path / "b")])


def test_print_commands(tmp_path, capsys):
    save = str(tmp_path / "bench")
    benchmark.main(["--print-commands", "--seeds", "2", "--methods", "FT", "--save_dir", save, "--device", "cpu"])
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert "must finish before the others" in err
    assert len(lines) == 2 + 2 * 3  # two originals, then per seed: retrain, FT, FT + mask
    for i, line in enumerate(lines):
        argv = shlex.split(line)
        assert argv[:2] == ["python", "-u"]
        module = main_baseline if argv[2] == "main_baseline.py" else main_forget
        args = module.parse(argv[3:])  # every printed command is valid for its script
        assert args.device == "cpu" and args.resume and args.num_indexes_to_replace == 121
        if i < 2:
            assert argv[2] == "main_baseline.py" and args.seed == args.train_seed == i + 1
            assert args.save_dir == os.path.join(save, f"seed_{i + 1}", "original") and args.epochs == 12
        else:
            assert argv[2] == "main_forget.py"
            assert args.model_path == os.path.join(save, f"seed_{args.seed}", "original", "checkpoint.pt")
    forget = [main_forget.parse(shlex.split(ln)[3:]) for ln in lines[2:]]
    assert [(a.seed, a.unlearn, a.mask_ratio) for a in forget] == [
        (1, "retrain", None), (1, "FT", None), (1, "FT", 0.5), (2, "retrain", None), (2, "FT", None), (2, "FT", 0.5)]
    retrain = forget[0]
    assert retrain.unlearn_epochs == 12 and retrain.unlearn_lr == 0.1 and retrain.decreasing_lr == [6, 9]
    assert forget[1].unlearn_lr == presets.PRESETS["digits"]["methods"]["FT"]["unlearn_lr"]


def test_save_every_steps_reaches_every_run(tmp_path):
    """--save_every_steps is in the command line of every planned run (what each launcher runs or submits), and
    in none by default."""
    argv = ["--seeds", "1,", "--methods", "FT", "--sparsity", "0.5", "--save_dir", str(tmp_path)]
    scripts = {"main_baseline.py": main_baseline, "main_imp.py": main_imp, "main_forget.py": main_forget}
    runs = plan(benchmark.resolve(benchmark.parse([*argv, "--save_every_steps", "7"])), str(tmp_path))
    assert {r.script for r in runs} == set(scripts)
    assert all(scripts[r.script].parse(r.argv).save_every_steps == 7 for r in runs)
    default = plan(benchmark.resolve(benchmark.parse(argv)), str(tmp_path))
    assert not any("--save_every_steps" in r.argv for r in default)


def test_print_commands_presets(capsys):
    benchmark.main(["--print-commands", "--preset", "cifar10-class", "--seeds", "1,"])
    lines = capsys.readouterr().out.splitlines()
    first = main_baseline.parse(shlex.split(lines[0])[3:])
    assert (first.dataset, first.arch, first.epochs, first.lr, first.decreasing_lr) == \
        ("cifar10", "resnet18", 182, 0.1, [91, 136])
    runs = {(a.unlearn, a.mask_ratio): a for a in (main_forget.parse(shlex.split(ln)[3:]) for ln in lines[1:])}
    assert all(a.class_to_replace == 0 and a.num_indexes_to_replace is None for a in runs.values())
    assert (runs[("retrain", None)].unlearn_epochs, runs[("retrain", None)].unlearn_lr) == (160, 0.1)
    assert (runs[("FT", None)].unlearn_epochs, runs[("FT", None)].unlearn_lr) == (10, 0.01)
    assert (runs[("GA", None)].unlearn_epochs, runs[("GA", None)].unlearn_lr) == (5, 1e-4)
    assert (runs[("RL", 0.5)].unlearn_epochs, runs[("RL", 0.5)].unlearn_lr) == (10, 0.013)
    assert (runs[("FT_prune", None)].unlearn_lr, runs[("FT_prune", None)].alpha) == (0.01, 5e-4)
    assert ("retrain", 0.5) not in runs and ("raw", 0.5) not in runs


def test_presets_are_complete():
    for name, cfg in presets.PRESETS.items():
        assert cfg["scenario"] in ("random", "class") and cfg["seeds"] >= 1, name
        assert set(cfg["methods"]) <= set(METHODS), name
        assert presets.REFERENCE in cfg["methods"] and "raw" in cfg["methods"], name
        for method, grid in cfg.get("search", {}).items():
            assert method in cfg["methods"] and all(k in main_forget.parse([]).__dict__ for k in grid), name
    assert presets.flags({"unlearn_lr": 1e-4, "no_l1_epochs": 2, "no_aug": True, "x": None}) == \
        ["--unlearn_lr", "0.0001", "--no-l1-epochs", "2", "--no-aug"]


@pytest.mark.parametrize("argv,message", [
    (["--seeds", "x"], "neither a seed count"),
    (["--methods", "FT,nope"], "no method 'nope'"),
    (["--preset", "imagenet"], "invalid choice"),
    (["--mask_ratio", "0"], "outside"),
])
def test_bad_flags(argv, message, capsys):
    with pytest.raises(SystemExit) as err:
        benchmark.main(argv + ["--print-commands"])
    assert err.value.code == 2
    assert message in capsys.readouterr().err


def test_seeds_arg():
    assert benchmark.seeds_arg("3") == [1, 2, 3]
    assert benchmark.seeds_arg("1,5,9") == [1, 5, 9]
    assert benchmark.seeds_arg("4,") == [4]


# ---------------------------------------------------------------- a tiny benchmark, end to end

TINY = ["--seeds", "1,", "--methods", "FT,GA", "--epochs", "1", "--unlearn_epochs", "1", "--device", "cpu"]


def _counts(out):
    assert set(out["counts"]) == {"ran", "reused", "failed"}
    return out["counts"]["ran"], out["counts"]["reused"], out["counts"]["failed"]


def _diverge(model, splits, args, device, mask, run_dir=None):
    raise UserError("loss became nan at epoch 1, step 1; the run diverged, lower the learning rate")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """1 seed, FT (real) and GA (made to diverge), 1 training epoch: every code path of a benchmark run."""
    save = tmp_path_factory.mktemp("tiny_bench")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(METHODS, "GA", functools.wraps(METHODS["GA"])(_diverge))  # GA's registry entry, diverging
        out = benchmark.main.__wrapped__(TINY + ["--save_dir", str(save)])
    return save, out


def test_tiny_benchmark_end_to_end(tiny):
    save, out = tiny
    assert _counts(out) == (4, 0, 2)  # original, retrain, FT, FT + mask made; GA and GA + mask failed
    by = {r["label"]: r for r in out["rows"]}
    assert list(by) == ["Retrain", "FT", "FT + mask", "GA", "GA + mask"]
    assert by["GA"]["seeds"] == [] and by["GA"]["failed_seeds"] == [1]
    assert by["FT"]["seeds"] == [1] and by["FT"]["avg_gap"]["mean"] >= 0
    for r in out["records"]:
        assert os.path.isfile(os.path.join(r["folder"], "eval_result.json"))
    assert (save / "seed_1" / "original" / "checkpoint.pt").is_file()
    assert (save / "seed_1" / "FT_saliency_0.5" / "mask.pt").is_file()
    assert "loss became nan" in json.loads((save / "seed_1" / "GA" / "failed.json").read_text())["error"]
    md = (save / "results.md").read_text()
    assert "| GA | failed |" in md and "FT + mask" in md
    assert [m["verdict"] for m in out["masking"]] == ["n/a", "n/a"]  # one seed (FT), none (GA): no interval
    assert {"results.md", "results.csv", "results.json", "avg_gap.png", "mask_difference.png", "ua_vs_ta.png"} <= \
        set(os.listdir(save))
    assert os.path.isfile(save / "logs" / "seed_1_FT.log")


def test_tiny_benchmark_resumes(tiny):
    save, first = tiny
    again = benchmark.main.__wrapped__(TINY + ["--save_dir", str(save), "--no-plots"])  # GA is the real one now
    assert _counts(again) == (2, 4, 0)  # only the failed runs are made again
    assert not (save / "seed_1" / "GA" / "failed.json").exists()
    assert [r["summary"] for r in again["records"] if r["method"] != "GA"] == [r["summary"] for r in first["records"]]
    assert [r["label"] for r in again["rows"]] == ["Retrain", "FT", "FT + mask", "GA", "GA + mask"]
    assert all(r["seeds"] == [1] and not r["failed_seeds"] for r in again["rows"])
    rows, _ = benchmark.main.__wrapped__(["--collect", str(save), "--save_dir", str(save / "collected"),
                                          "--no-plots"])
    assert [(r["label"], r["avg_gap"]["mean"]) for r in rows] == \
        [(r["label"], r["avg_gap"]["mean"]) for r in again["rows"]]
    third = benchmark.main.__wrapped__(TINY + ["--save_dir", str(save), "--no-plots"])
    assert _counts(third) == (0, 6, 0)
    assert third["run_minutes"] == pytest.approx(again["run_minutes"])  # the runs' times are kept
    assert again["run_minutes"] > first["run_minutes"] > 0
    assert "min summed over the runs' wall times" in (save / "results.md").read_text()


def test_tiny_benchmark_refuses_other_settings(tiny, capsys):
    save, _ = tiny
    with pytest.raises(SystemExit) as err:
        benchmark.main([*TINY[:6], "--unlearn_epochs", "2", "--device", "cpu", "--save_dir", str(save)])
    assert err.value.code == 2
    assert "--unlearn_epochs 1, this benchmark asks for 2" in capsys.readouterr().err


def test_bad_device_fails_before_any_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        benchmark.main(["--device", "nonsense", "--seeds", "1,", "--save_dir", str(tmp_path / "b")])
    assert err.value.code == 2 and "unknown device" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_a_run_folder_locked_by_a_live_run_stops_the_benchmark(tmp_path, capsys):
    lock = tmp_path / "seed_1" / "original" / ".lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(str(os.getpid()))  # this test's process: alive
    with pytest.raises(SystemExit) as err:
        benchmark.main([*TINY, "--save_dir", str(tmp_path)])
    assert err.value.code == 2 and "another run" in capsys.readouterr().err
    assert lock.read_text() == str(os.getpid()) and not (lock.parent / "failed.json").exists()


def test_impossible_forget_set_fails_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(presets.PRESETS["digits"], "num_forget", 5000)
    with pytest.raises(SystemExit) as err:
        benchmark.main(["--seeds", "1,", "--save_dir", str(tmp_path / "b")])
    assert err.value.code == 2 and "--num_indexes_to_replace 5000 is larger" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("content,message", [
    ([1, 2], "is not a run result"),
    ({"summary": {"UA": "high"}, "run": {"unlearn": "FT", "seed": 1}}, "lacks the summary numbers"),
    ({"summary": {"UA": 1, "RA": 2, "TA": 3, "MIA_efficacy": 4}}, "lacks the summary numbers"),
])
def test_collect_refuses_a_broken_result(tmp_path, content, message):
    (tmp_path / "FT").mkdir()
    (tmp_path / "FT" / "eval_result.json").write_text(json.dumps(content))
    with pytest.raises(UserError, match=message):
        benchmark.main.__wrapped__(["--collect", str(tmp_path), "--save_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
