"""benchmark.py --search with Optuna, on a fake runner (no training): the constraint on the validation accuracy,
resuming after an interruption and after a killed worker without repeating finished trials, arms kept apart,
the collapse-edge rule, and --tuned."""
import json
import shlex

import pytest

import benchmark
from commands import forget as main_forget
from suite import search, tables

RAW, RETRAIN = {"UA": 0.0, "val": 98.0}, {"UA": 6.0, "val": 97.0}


def _record(run, ua, val):
    return {"method": run.method, "masked": run.masked, "seed": run.seed, "sparsity": 0.0, "folder": run.folder,
            "wall_seconds": 1.0, "accuracy": {"val": val},
            "summary": {"UA": ua, "RA": 100.0, "MIA_efficacy": ua, "TA": 95.0}}


class FakeRunner:
    """Records every run it is given. A method's UA is 10 x its learning rate; its validation accuracy collapses
    above `collapse` (plain arm) or `masked_collapse`; `stop_at` raises KeyboardInterrupt on that call."""

    def __init__(self, collapse=0.85, masked_collapse=2.0, stop_at=None):
        self.collapse, self.masked_collapse, self.stop_at = collapse, masked_collapse, stop_at
        self.calls, self.folders = 0, []

    def __call__(self, runs, root):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        records = []
        for run in runs:
            self.folders.append(run.folder)
            if run.method == "original":
                continue
            if run.method in ("raw", "retrain"):
                base = RAW if run.method == "raw" else RETRAIN
                records.append(_record(run, base["UA"], base["val"]))
                continue
            lr = run.options["unlearn_lr"]
            limit = self.masked_collapse if run.masked else self.collapse
            records.append(_record(run, 10 * lr, 98.0 if lr <= limit else 50.0))
        return records, [], {}, 0.0


def _cfg(tmp_path, *flags):
    return benchmark.resolve(benchmark.parse([*flags, "--save_dir", str(tmp_path), "--device", "cpu"]))


def _trials(root, name):
    return search.open_studies(str(root), [name])[name].get_trials(deepcopy=False)


def _states(trials):
    return sorted(t.state.name for t in trials)


def test_summarize_keeps_val_on_every_seed():
    def record(val, ua=2.0):
        return {"summary": {"UA": ua, "RA": 99.0, "MIA_efficacy": 5.0}, "accuracy": {"val": val}}
    bases = [(record(98.0, 0.0), record(97.0)), (record(98.0, 0.0), record(97.0))]
    line = search.summarize([record(98.0), record(90.0)], bases)  # mean val 94: within 5 points, seed 99 is not
    assert line["acts"] and not line["keeps_val"] and line["min_val_change"] == -8.0
    assert search.summarize([record(98.0), record(93.5)], bases)["keeps_val"]
    failed = search.summarize([None, record(98.0)], bases)
    assert failed["failed"] and not failed["keeps_val"] and failed["score"] == search.FAILED_SCORE


def test_space_and_neighbours_come_from_the_grid():
    dists = search.space({"unlearn_lr": [0.1, 0.7], "unlearn_epochs": [5, 10], "neggrad_beta": [0.9, 0.99]})
    lr, epochs, beta = dists["unlearn_lr"], dists["unlearn_epochs"], dists["neggrad_beta"]
    assert lr.log and lr.low == pytest.approx(0.1 / 3) and lr.high == pytest.approx(2.1)
    assert list(epochs.choices) == [5, 10] and not beta.log and (beta.low, beta.high) == (0.9, 0.99)
    near = search.neighbours({"unlearn_lr": 0.3, "unlearn_epochs": 5, "neggrad_beta": 0.99}, dists)
    assert {"unlearn_lr": 0.15, "unlearn_epochs": 5, "neggrad_beta": 0.99} in near
    assert {"unlearn_lr": 0.6, "unlearn_epochs": 5, "neggrad_beta": 0.99} in near
    assert {"unlearn_lr": 0.3, "unlearn_epochs": 10, "neggrad_beta": 0.99} in near
    assert {"unlearn_lr": 0.3, "unlearn_epochs": 5, "neggrad_beta": 0.981} in near and len(near) == 4
    assert search.run_name("FT", {"unlearn_lr": 0.3, "unlearn_epochs": 5}, True, 0.5) == \
        "FT_unlearn_lr0.3_unlearn_epochs5_saliency_0.5"


def test_search_resumes_without_repeating_trials_and_keeps_arms_apart(tmp_path, monkeypatch):
    monkeypatch.setattr(search, "HEARTBEAT", 1)
    monkeypatch.setattr(search, "GRACE", 1)
    monkeypatch.setattr(search, "POLL", 0.2)
    cfg = _cfg(tmp_path, "--methods", "FT")
    root = tmp_path / "search"
    plain, masked = "digits-random-FT-plain", "digits-random-FT-mask0.5"
    first = FakeRunner(stop_at=3)  # call 1: the search seeds' models; 2: the first round; 3: interrupted
    with pytest.raises(KeyboardInterrupt):
        search.search(cfg, trials=3, runner=first)
    for name in (plain, masked):  # one trial finished, one handed back (failed, and queued with its values)
        assert _states(_trials(root, name)) == ["COMPLETE", "FAIL", "WAITING"]
    done = {name: [t.user_attrs["values"] for t in _trials(root, name) if t.state.name == "COMPLETE"]
            for name in (plain, masked)}
    handed_back = {name: next(t.system_attrs["fixed_params"] for t in _trials(root, name)
                              if t.state.name == "WAITING") for name in (plain, masked)}
    # a worker takes the plain arm's handed-back trial and is killed: the trial stays RUNNING with a last
    # heartbeat, and must not block the search
    store = search.storage(str(root))
    study = search.open_studies(str(root), [plain])[plain]
    killed, killed_values = search._ask(study, search.space(cfg["search"]["FT"]))  # as a worker asks
    assert killed.params == handed_back[plain]
    store.record_heartbeat(killed._trial_id)
    second = FakeRunner()
    summary = search.search(cfg, trials=3, runner=second)
    for name in (plain, masked):
        trials = _trials(root, name)
        complete = [t for t in trials if t.state.name == "COMPLETE"]
        assert len(complete) == 3 and summary["studies"][name]["complete_trials"] == 3
        values = [t.user_attrs["values"] for t in complete]
        assert values[0] == done[name][0]  # the finished trial was kept
        assert {k: search.rounded(v) for k, v in handed_back[name].items()} in values[1:]
    assert sum(t.state.name == "FAIL" for t in _trials(root, plain)) == 2  # interrupted, and the killed worker's
    assert killed_values in [t.user_attrs["values"] for t in _trials(root, plain) if t.state.name == "COMPLETE"]
    trial_runs = [f for f in second.folders if "FT_unlearn_lr" in f]
    for name in (plain, masked):  # no finished trial ran again
        for values in done[name]:
            folder = search.run_name("FT", values, name == masked, 0.5)
            assert not any(f.endswith("/" + folder) for f in trial_runs)
    # arms apart: the masked study's runs are masked runs, the plain one's are not
    masked_runs = [f for f in first.folders + second.folders if f.endswith("_saliency_0.5")]
    assert masked_runs and all(f.endswith("_saliency_0.5") for f in masked_runs)
    for name, flag in ((plain, False), (masked, True)):
        for t in _trials(root, name):
            if t.state.name == "COMPLETE":
                assert search.run_name("FT", t.user_attrs["values"], flag, 0.5).endswith("_saliency_0.5") == flag
    third = FakeRunner()
    again = search.search(cfg, trials=3, runner=third)  # complete: asks nothing, only reuses
    assert not any("FT_unlearn_lr" in f and f not in second.folders + first.folders for f in third.folders)
    assert {n: s["chosen"]["values"] for n, s in again["studies"].items()} == \
        {n: s["chosen"]["values"] for n, s in summary["studies"].items()}


def test_collapse_edge_rule_rejects_a_value_whose_neighbour_collapses(tmp_path, capsys):
    cfg = _cfg(tmp_path, "--methods", "GA")
    root = tmp_path / "search"
    root.mkdir()
    names = ["digits-random-GA-plain", "digits-random-GA-mask0.5"]
    studies = search.open_studies(str(root), names)
    for study in studies.values():  # the trials, in this order, instead of TPE's
        for lr in (0.55, 0.3, 0.8, 0.88):
            study.enqueue_trial({"unlearn_lr": lr})
    runner = FakeRunner(collapse=0.85, masked_collapse=2.0)
    summary = search.search(cfg, trials=4, runner=runner)
    plain, masked = (summary["studies"][n] for n in names)
    # plain: 0.88 collapses itself; 0.55 scores best but 1.1 collapses; 0.8 next, but 1.6 collapses; then 0.3
    assert [p["values"]["unlearn_lr"] for p in plain["probes"]] == [0.55, 0.8, 0.3]
    assert [p["edge"] for p in plain["probes"]] == [True, True, False]
    assert plain["chosen"]["values"] == {"unlearn_lr": 0.3} and not plain["chosen"]["edge"]
    assert not next(t for t in plain["trials"] if t["values"]["unlearn_lr"] == 0.88)["keeps_val"]
    # masked: nothing collapses below 2, so the best score (0.55) is kept: each arm at its own value
    assert masked["chosen"]["values"] == {"unlearn_lr": 0.55} and len(masked["probes"]) == 1
    md = (root / "search.md").read_text()
    assert "| digits-random-GA-plain | GA | plain | unlearn_lr=0.3 | 4 |" in md and "unlearn_lr=1.1: -48.00" in md
    saved = json.loads((root / "search.json").read_text())
    assert saved["studies"][names[1]]["chosen"]["values"] == {"unlearn_lr": 0.55}
    # --tuned: each arm at its own value; the table says which
    capsys.readouterr()
    benchmark.main(["--print-commands", "--tuned", str(tmp_path), "--methods", "GA", "--seeds", "1,",
                    "--save_dir", str(tmp_path / "bench")])
    runs = {(a.unlearn, a.mask_ratio): a for a in (main_forget.parse(shlex.split(ln)[3:])
                                                   for ln in capsys.readouterr().out.splitlines()[1:])}
    assert runs[("GA", None)].unlearn_lr == 0.3 and runs[("GA", 0.5)].unlearn_lr == 0.55
    values = benchmark.arm_values(benchmark.resolve(benchmark.parse(["--tuned", str(root), "--methods", "GA"])))
    assert values[("GA", True)].startswith("`--unlearn_epochs 5 --unlearn_lr 0.55` (search trial")
    assert values[("retrain", False)].endswith("(preset)")
    record = {"method": "GA", "masked": True, "seed": 1, "sparsity": 0.0,
              "summary": {"UA": 1.0, "RA": 99.0, "TA": 90.0, "MIA_efficacy": 2.0, "RTE_minutes": 0.1}}
    rows = tables.aggregate([record])
    rows[0]["values"] = values[("GA", True)]
    assert tables.main_table(rows).splitlines()[0].endswith("| Values |") and values[("GA", True)] in \
        tables.main_table(rows)


@pytest.mark.parametrize("argv,message", [
    (["--search", "--trials", "0"], "--trials"),
    (["--trials", "5"], "--trials goes with --search"),
    (["--tuned", "{tmp}"], "no finished search in"),
    (["--tuned", "{tmp}", "--search"], "not with --search"),
])
def test_bad_search_flags(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as err:
        benchmark.main([a.format(tmp=tmp_path) for a in argv] + ["--save_dir", str(tmp_path / "b")])
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert message in lines[-1] and lines[-1].startswith(("error:", "benchmark.py: error:"))
    assert not (tmp_path / "b").exists()
