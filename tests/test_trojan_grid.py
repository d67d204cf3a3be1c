"""scripts/trojan.py: every grid point fine-tunes the trojaned model its default run trained, and its table pairs
sparse with dense seed by seed."""
import importlib.util
import math
import os

from scipy.stats import t

from conftest import REPO

spec = importlib.util.spec_from_file_location("trojan", os.path.join(REPO, "scripts", "trojan.py"))
trojan = importlib.util.module_from_spec(spec)
spec.loader.exec_module(trojan)


def fake(attack, test=85.0):
    return {"test_acc": 85.0, "attack_acc": 99.0, "test_acc_unlearn": test, "attack_acc_unlearn": attack}


def test_grid_points_load_the_trojaned_model(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("commands.backdoor.main", lambda argv: calls.append(argv))
    monkeypatch.setattr(trojan.utils, "read_json", lambda path: {"path": path})
    trojan.run((2, 0.95, 0.01, 10, str(tmp_path)))
    trojan.run((2, 0.95, 0.3, 20, str(tmp_path)))
    trojan.run((2, 0.0, 0.3, 20, str(tmp_path)))
    default, grid, dense = calls
    assert default[default.index("--prune") + 1] == "omp" and "--model_path" not in default
    assert default[default.index("--save_dir") + 1] == os.path.join(str(tmp_path), "seed_2", "rate_0.95")
    assert "--prune" not in grid and grid[grid.index("--unlearn_lr") + 1] == "0.3"
    assert grid[grid.index("--model_path") + 1] == os.path.join(str(tmp_path), "seed_2", "rate_0.95", "state_1",
                                                               "checkpoint.pt")
    assert dense[dense.index("--model_path") + 1].endswith(os.path.join("rate_0", "state_0", "checkpoint.pt"))


def test_table_pairs_sparse_with_dense_by_seed():
    seeds, points = [1, 2, 3], [(0.01, 10), (0.3, 20)]
    attack = {(0.01, 10): {0.0: [99, 98, 97], 0.9: [98, 98, 96], 0.95: [99, 97, 97]},
              (0.3, 20): {0.0: [40, 60, 20], 0.9: [30, 41, 25], 0.95: [10, 20, 30]}}
    results = {p: {(s, r): fake(attack[p][r][i]) for i, s in enumerate(seeds) for r in trojan.RATES}
               for p in points}
    md, data = trojan.tables(results, seeds, points)
    diffs = [30 - 40, 41 - 60, 25 - 20]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    half = t.ppf(0.975, 2) * sd / math.sqrt(3)
    got = data["lr0.3_ep20_rate0.9"]["difference_to_dense"]
    assert math.isclose(got["mean"], mean) and math.isclose(got["low"], mean - half)
    interval = f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}]"
    assert f"| 0.3 | 20 | 90% | 85.00 ± 0.00 | 32.00 ± 8.19 | {interval} |" in md
    assert data["lr0.01_ep10_rate0"]["difference_to_dense"]["mean"] == 0
