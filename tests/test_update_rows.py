"""scripts/update_rows.py: a re-run of some methods replaces exactly their rows, and only when its gold standards
are the table's to the last bit."""
import importlib.util
import json
import os

import pytest

from conftest import REPO
from suite import tables

spec = importlib.util.spec_from_file_location("update_rows", os.path.join(REPO, "scripts", "update_rows.py"))
update_rows = importlib.util.module_from_spec(spec)
spec.loader.exec_module(update_rows)


def _rec(method, masked, seed, ua, ta=90.0):
    return {"method": method, "masked": masked, "seed": seed, "sparsity": 0.0, "folder": f"{method}{masked}{seed}",
            "summary": {"UA": ua, "MIA_efficacy": 10.0, "RA": 100.0, "TA": ta, "RTE_minutes": 0.1 * seed}}


def _table(folder, records, ft_lr):
    cfg = {"methods": {"retrain": {}, "FT": {"unlearn_lr": ft_lr}, "GA": {"unlearn_lr": 0.1}},
           "run_methods": ["retrain", "FT", "GA"]}
    meta = {"title": "t", "config": cfg, "settings": {"methods": "", "time": f"{ft_lr} min"}}
    rows = tables.aggregate(records)
    tables.write_outputs(str(folder), meta, rows, tables.masking_table(rows), records, [], plots=False)


def test_rows_replaced_and_the_rest_kept(tmp_path):
    gold = [_rec("retrain", False, s, 5.0 + s) for s in (1, 2)]
    ga = [_rec("GA", m, s, 1.0 + s + m) for s in (1, 2) for m in (False, True)]
    _table(tmp_path / "table", gold + ga + [_rec("FT", m, s, 0.0) for s in (1, 2) for m in (False, True)], 0.3)
    _table(tmp_path / "rerun", gold + [_rec("FT", m, s, 4.0 + s) for s in (1, 2) for m in (False, True)], 0.03)
    rows = update_rows.update(str(tmp_path / "table"), str(tmp_path / "rerun"), ["FT"], plots=False)
    data = json.loads((tmp_path / "table" / "results.json").read_text())
    by = {r["label"]: r for r in rows}
    assert by["FT"]["UA"]["values"] == [5.0, 6.0] and by["FT"]["avg_gap"]["mean"] == pytest.approx(1 / 4)
    assert by["GA + mask"]["UA"]["values"] == [3.0, 4.0]  # untouched
    assert data["meta"]["config"]["methods"]["FT"] == {"unlearn_lr": 0.03}
    assert "FT: --unlearn_lr 0.03" in data["meta"]["settings"]["methods"]
    assert len(data["runs"]) == len(gold) + len(ga) + 4


def test_a_different_gold_standard_writes_nothing(tmp_path, capsys):
    _table(tmp_path / "table", [_rec("retrain", False, 1, 5.0), _rec("FT", False, 1, 0.0)], 0.3)
    _table(tmp_path / "rerun", [_rec("retrain", False, 1, 5.0, ta=90.5), _rec("FT", False, 1, 4.0)], 0.03)
    before = (tmp_path / "table" / "results.json").read_text()
    with pytest.raises(SystemExit) as err:
        update_rows.main([str(tmp_path / "table"), str(tmp_path / "rerun"), "--methods", "FT"])
    assert err.value.code == 2
    assert "the re-run's retrained model differs" in capsys.readouterr().err
    assert (tmp_path / "table" / "results.json").read_text() == before


def test_drop_removes_the_rows_and_the_method_from_the_settings(tmp_path, capsys):
    gold = [_rec("retrain", False, s, 5.0 + s) for s in (1, 2)]
    ga = [_rec("GA", m, s, 1.0 + s + m) for s in (1, 2) for m in (False, True)]
    _table(tmp_path, gold + ga + [_rec("FT", m, s, 0.0) for s in (1, 2) for m in (False, True)], 0.3)
    rows = update_rows.main([str(tmp_path), "--methods", "FT", "--drop", "--no-plots"])
    assert [r["label"] for r in rows] == ["Retrain", "GA", "GA + mask"]
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["meta"]["config"]["run_methods"] == ["retrain", "GA"]
    assert "FT" not in data["meta"]["settings"]["methods"]
    with pytest.raises(SystemExit):
        update_rows.main([str(tmp_path), "--methods", "FT", "--drop"])
    assert "no run of FT to drop" in capsys.readouterr().err
