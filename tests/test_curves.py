"""Tests for benchmark.py --curves (suite/curves.py): the stability width and the per-point numbers against hand
computations, and a tiny end-to-end run that a second invocation reuses."""
import math
import shutil

import pytest

import benchmark
from suite import claims, curves


def test_headroom_counts_only_learning_rates_above_the_best():
    lrs = [1.0, 3.0, 9.0, 27.0, 81.0]
    assert curves.headroom(lrs, [5.0, 2.5, 2.0, 2.9, 10.0]) == pytest.approx(math.log10(27 / 9))
    assert curves.headroom(lrs, [2.1, 2.5, 2.0, 9.0, 2.2]) == 0.0  # within 1 point again at 81, but not contiguous
    assert curves.headroom(lrs, [1.4, 1.3, 0.5, 1.2, 1.4]) == pytest.approx(math.log10(81 / 9))
    assert curves.headroom(lrs, [3.0, 2.0, 2.5, None, 2.1]) == pytest.approx(math.log10(9 / 3))  # None diverged


def _record(folder, method, masked, seed, ua, mia, ra, ta):
    return {"folder": folder, "method": method, "masked": masked, "seed": seed, "sparsity": 0.0,
            "summary": {"UA": ua, "MIA_efficacy": mia, "RA": ra, "TA": ta}}


def test_summarize_against_hand_computation(monkeypatch):
    monkeypatch.setattr(curves, "FACTORS", (1.0, 10.0))
    cfg = {"methods": {"GA": {"unlearn_lr": 0.1}}, "mask_ratio": 0.5}
    records = [_record("r1", "retrain", False, 1, 4.0, 10.0, 100.0, 90.0),
               _record("r2", "retrain", False, 2, 6.0, 12.0, 100.0, 92.0)]
    points = {}
    table = {  # (lr, ratio, seed): (UA, MIA, RA, TA)
        (0.1, None, 1): (0.0, 2.0, 100.0, 91.0), (0.1, None, 2): (2.0, 4.0, 99.0, 92.0),
        (0.1, 0.5, 1): (3.0, 8.0, 100.0, 90.0), (0.1, 0.5, 2): (5.0, 9.0, 100.0, 91.0),
        (1.0, None, 1): (60.0, 70.0, 40.0, 38.0), (1.0, None, 2): (50.0, 60.0, 50.0, 48.0),
        (1.0, 0.5, 1): (8.0, 20.0, 95.0, 86.0), (1.0, 0.5, 2): (9.0, 15.0, 96.0, 88.0),
    }
    for (lr, ratio, seed), values in table.items():
        folder = f"GA{lr}{ratio}{seed}"
        points[folder] = ("GA", lr, ratio)
        records.append(_record(folder, "GA", ratio is not None, seed, *values))
    out = curves.summarize(records, points, cfg, ["GA"])["GA"]
    # seed 1 at lr 0.1 without the mask: (|0-4| + |2-10| + |100-100| + |91-90|) / 4 = 3.25; seed 2: (4+8+1+0)/4
    first = out["curve"]["no mask"][0]
    assert first["lr"] == 0.1 and first["gap"]["mean"] == pytest.approx((3.25 + 3.25) / 2)
    masked = out["curve"]["mask"][0]["gap"]  # seed 1: (1+2+0+0)/4 = 0.75; seed 2: (1+3+0+1)/4 = 1.25
    assert masked["mean"] == pytest.approx(1.0) and masked["low"] < 1.0 < masked["high"]
    assert out["difference"][0]["mean"] == pytest.approx(1.0 - 3.25)
    # test accuracy more than 5 points below the seed's retrain (85, 87): both unmasked seeds, no masked one
    assert out["curve"]["no mask"][1]["collapsed"] == 2 and out["curve"]["mask"][1]["collapsed"] == 0
    # headroom: unmasked seed 1 gaps (3.25 at 0.1, far above at 1.0) -> 0 decades; masked seed 1: 0.75 at 0.1,
    # (5 + 10 + 5 + 4) / 4 = 6 at 1.0 -> 0
    assert out["stability_decades"]["no mask"]["mean"] == 0.0 and out["stability_decades"]["mask"]["mean"] == 0.0
    assert "mask_ratio" not in out  # GA is not in the mask-ratio sweep


def test_tiny_curves_end_to_end_and_reused(tmp_path, monkeypatch):
    monkeypatch.setattr(curves, "FACTORS", (1.0, 3.0))
    monkeypatch.setattr(curves, "RATIOS", (0.3,))
    argv = ["--curves", "--seeds", "1,", "--methods", "RL", "--epochs", "1", "--unlearn_epochs", "1",
            "--device", "cpu", "--no-plots", "--save_dir", str(tmp_path)]
    first = benchmark.main.__wrapped__(argv)
    assert first["counts"] == {"ran": 7, "reused": 0, "failed": 0}  # original, retrain, 2 lrs x 2 arms, ratio 0.3
    rl = first["methods"]["RL"]
    assert [p["lr"] for p in rl["curve"]["mask"]] == [0.003, 0.009000000000000001]
    assert [p["ratio"] for p in rl["mask_ratio"]] == [0.3, 0.5, 1.0]
    assert all(p["seeds"] == [1] for p in rl["curve"]["no mask"] + rl["mask_ratio"])
    assert (tmp_path / "seed_1" / "curve_RL_lr0.003_mask0.3" / "eval_result.json").is_file()
    assert "## RL (preset learning rate 0.003)" in (tmp_path / "curves.md").read_text()
    again = benchmark.main.__wrapped__(argv)
    assert again["counts"] == {"ran": 0, "reused": 7, "failed": 0}
    assert again["methods"] == first["methods"]
    results = tmp_path / "results" / "curves_digits"
    results.mkdir(parents=True)
    shutil.copy(tmp_path / "curves.json", results / "curves.json")
    section = "\n".join(claims.curves_section(str(tmp_path / "results")))
    best = min(rl["curve"]["mask"], key=lambda p: p["gap"]["mean"])
    assert "| RL | 0.003 | " in section and f"{best['lr']:.3g}: {best['gap']['mean']:.2f}" in section
    assert "Not run yet" not in section


def test_curves_need_a_learning_rate(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        benchmark.main(["--curves", "--methods", "fisher_new", "--save_dir", str(tmp_path)])
    assert err.value.code != 0
    assert "'fisher_new' has no learning rate" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
