"""The paired mask comparison: Student t intervals against hand computations, the verdicts, per-seed values."""
import math

import pytest

from suite import tables


def test_t_interval_by_hand():
    ci = tables.t_interval([1, 2, 3, 4])
    # mean 2.5, sd sqrt(5/3) = 1.291, t(0.975, 3) = 3.182, half width 3.182 x 1.291 / 2 = 2.054
    assert ci["n"] == 4 and ci["mean"] == 2.5 and ci["std"] == pytest.approx(1.2910, abs=1e-4)
    assert ci["half_width"] == pytest.approx(2.054, abs=1e-3)
    assert (ci["low"], ci["high"]) == (pytest.approx(0.446, abs=1e-3), pytest.approx(4.554, abs=1e-3))
    two = tables.t_interval([-3.0, -2.75])  # t(0.975, 1) = 12.706
    assert two["half_width"] == pytest.approx(12.706 * 0.25 / math.sqrt(2) / math.sqrt(2), abs=1e-3)
    assert tables.t_interval([1.0, 2.0, 3.0], confidence=0.9)["half_width"] == pytest.approx(2.920 / math.sqrt(3),
                                                                                              abs=1e-3)


def test_t_interval_needs_two_values():
    assert tables.t_interval([5.0]) == {"n": 1, "mean": 5.0, "std": 0.0, "half_width": None, "low": None,
                                        "high": None}
    assert tables.t_interval([])["mean"] is None and tables.t_interval([None, float("nan")])["n"] == 0


@pytest.mark.parametrize("low,high,expected", [
    (-2.0, -0.1, "mask reduces the gap"),
    (0.1, 2.0, "mask increases the gap"),
    (-1.0, 1.0, "no detectable difference"),
    (-1.0, 0.0, "no detectable difference"),  # an interval touching 0 does not exclude it
    (None, None, "n/a"),
])
def test_verdict(low, high, expected):
    assert tables.verdict({"low": low, "high": high}) == expected


def _records():
    """retrain at 0 everywhere, so a run's Avg. Gap is its UA / 4."""
    def rec(method, masked, seed, gap):
        return {"method": method, "masked": masked, "seed": seed,
                "summary": {"UA": 4 * gap, "RA": 0.0, "TA": 0.0, "MIA_efficacy": 0.0, "RTE_minutes": 0.1}}
    out = [rec("retrain", False, s, 0.0) for s in (1, 2, 3)]
    out += [rec("RL", False, s, g) for s, g in zip((1, 2, 3), (3.0, 4.0, 5.0))]
    out += [rec("RL", True, s, 2.0) for s in (1, 2, 3)]
    out += [rec("GA", False, s, 1.0) for s in (1, 2, 3)]
    out += [rec("GA", True, s, g) for s, g in zip((1, 2, 3), (3.0, 3.5, 3.2))]
    out += [rec("FT", False, s, 1.0) for s in (1, 2, 3, 4)]  # seed 4 has no retrain: no gap
    out += [rec("FT", True, s, g) for s, g in ((1, 2.0), (3, 2.5))]  # seed 2 failed with the mask
    return out


def test_masking_pairs_by_seed():
    masking = {m["method"]: m for m in tables.masking_table(tables.aggregate(_records()))}
    rl = masking["RL"]  # differences -1, -2, -3: mean -2, sd 1, half width 4.303 / sqrt(3) = 2.484
    assert rl["comparison"] == "RL + mask (SalUn) - RL" and rl["difference"]["values"] == [-1.0, -2.0, -3.0]
    assert (rl["difference"]["low"], rl["difference"]["high"]) == (pytest.approx(-4.484, abs=1e-3),
                                                                   pytest.approx(0.484, abs=1e-3))
    assert rl["verdict"] == "no detectable difference"
    assert masking["GA"]["verdict"] == "mask increases the gap"  # 2, 2.5, 2.2: [1.61, 2.86]
    ft = masking["FT"]["difference"]
    assert ft["seeds"] == [1, 3] and ft["values"] == [1.0, 1.5] and masking["FT"]["without_mask"]["n"] == 3
    line = tables.salun_vs_rl(list(masking.values()))
    assert line == ("SalUn vs RL: Avg. Gap of SalUn (RL + mask) minus RL's, paired over 3 seeds: mean -2.00, "
                    "95% CI [-4.48, 0.48]: no detectable difference.")
    assert ("| RL | 4.00 ± 1.00 | 2.00 ± 0.00 | 3 | -2.00 ± 1.00 | [-4.48, 0.48] | 0.0742 / 0.0742 (primary) | "
            "no detectable difference | -1.00 (n/a) / -2.50 (0) |") in tables.mask_table(list(masking.values()))


def test_per_seed_values():
    entries = tables.per_seed(_records())
    assert [(e["method"], e["masked"]) for e in entries][:4] == [("retrain", False)] * 3 + [("FT", False)]
    assert entries[6] == {"method": "FT", "masked": False, "seed": 4, "sparsity": 0.0, "UA": 4.0, "MIA_efficacy": 0.0,
                          "RA": 0.0, "TA": 0.0, "avg_gap": None, "RTE_minutes": 0.1}
    assert [e["avg_gap"] for e in entries if e["method"] == "RL" and e["masked"]] == [2.0, 2.0, 2.0]
