"""Tests for the per-example privacy evaluation (evaluation/privacy.py, suite/privacy.py, benchmark.py --privacy):
the challenge's epsilon and score on synthetic statistics (identical, separated, a hand-computed threshold, an
independent transcription), U-LiRA against analytic Gaussian values, the plan's models (one forget set, retrained
seeds of their own) and U-LiRA over them on statistics with a known answer, a tiny end-to-end run that resumes,
and two seeds (forget sets) with the summary's t intervals checked by hand."""
import json
import math
import warnings

import numpy as np
import pytest
from scipy.stats import norm

import benchmark
from evaluation import privacy as P

pytestmark = pytest.mark.usefixtures("one_thread_module")


# ---------------------------------------------------------------- the statistic

def test_logit_confidence():
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(20, 10)), rng.integers(0, 10, 20)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    p_y = p[np.arange(20), y]
    assert P.logit_confidence(z, y) == pytest.approx(np.log(p_y) - np.log(1 - p_y), rel=1e-9)
    # p_y within 1e-300 of 1 in float64: still exact (log p_y - log(1 - p_y) = 1000 - 0 here)
    assert P.logit_confidence(np.array([[1000.0, 0.0]]), np.array([0])) == pytest.approx([1000.0])
    assert P.logit_confidence(np.array([[0.0, 1000.0, 1000.0]]), np.array([0])) == pytest.approx([-1000 - math.log(2)])



def test_the_challenge_code_saturates_where_ours_does_not():
    """The challenge's metric.py: float32 exponentials of the max-shifted logits, then 1e-45 in both logarithms."""
    def challenge_confidence(z, y):
        z = z - z.max(1, keepdims=True)
        p = np.array(np.exp(z), dtype=np.float64)
        p /= p.sum(1, keepdims=True)
        right = p[np.arange(len(y)), y]
        p[np.arange(len(y)), y] = 0
        return np.log(right + 1e-45) - np.log(p.sum(1) + 1e-45)

    margins = np.array([5.0, 40.0, 80.0, 110.0, 200.0])
    z = np.stack([margins, np.zeros(5), np.zeros(5)], 1).astype(np.float32)
    y = np.zeros(5, dtype=np.int64)
    ours, theirs = P.logit_confidence(z, y), challenge_confidence(z, y)
    assert ours == pytest.approx(margins - math.log(2), rel=1e-12)
    assert theirs[:3] == pytest.approx(ours[:3], abs=1e-5)  # below about 87 logits: float32 rounding only
    assert theirs[3:] == pytest.approx([45 * math.log(10)] * 2, rel=1e-6)  # saturated at ln(1e45) = 103.6
    assert challenge_confidence(-z, y)[3:] == pytest.approx([-45 * math.log(10)] * 2, rel=1e-6)


# ---------------------------------------------------------------- the challenge's epsilon and score

def test_identical_populations_give_epsilon_0_and_score_1():
    rng = np.random.default_rng(1)
    stats = rng.normal(size=(8, 30)) * rng.uniform(0.5, 3, 30)
    eps = P.epsilons(stats, stats.copy())
    assert eps.tolist() == [0.0] * 30
    assert P.forgetting_score(eps, 8) == 1.0
    acc = [{"retain": 99.0, "test": 95.0}] * 8
    out = P.challenge(stats, stats.copy(), acc, acc)
    assert out["score"] == 1.0 and out["forgetting_score"] == 1.0
    assert P.example_epsilon([2.0] * 4, [2.0] * 4) == 0.0  # two equal constants: nothing tells them apart


def test_separated_populations_give_the_cap_and_score_0():
    rng = np.random.default_rng(2)
    u, r = rng.normal(size=(8, 10)), rng.normal(size=(8, 10)) + 20
    eps = P.epsilons(u, r)
    assert eps.tolist() == [50.0] * 10
    assert P.forgetting_score(eps, 8) == 0.0
    # a population under 1% as wide as the other (e.g. 8 identical unlearned models): the cap as well
    assert P.example_epsilon([3.0] * 8, rng.normal(size=8)) == 50.0
    assert P.example_epsilon(3 + 1e-4 * rng.normal(size=8), rng.normal(size=8)) == 50.0


def test_epsilon_of_a_hand_computed_case():
    # retrained (larger median: the positive class) [10, 11, 12, 13], unlearned [0, 1, 2, 11.5]. The best rules
    # misclassify one of each: single threshold t in (10, 11] (13, 12, 11 and 11.5 above it) and windows such as
    # [10.5, 13.5]. FPR = FNR = 1/4 gives log((1 - 1e-5 - 1/4) / (1/4)); a rule with only one kind of error
    # (e.g. t in (2, 10]) is discarded, and no window holds three retrained values without 11.5.
    eps = P.example_epsilon([0.0, 1.0, 2.0, 11.5], [10.0, 11.0, 12.0, 13.0])
    assert eps == pytest.approx(math.log((1 - 1e-5 - 0.25) / 0.25), rel=1e-12)
    # K = 4: buckets up to ceil(ln 3) = 2, [1, 1.5) is worth 1/4
    assert P.buckets(4) == [(0.5, 1.0), (1.0, 0.5), (1.5, 0.25), (2.0, 0.125)]
    assert P.forgetting_score([eps], 4) == 0.25


def test_buckets_and_final_score():
    assert P.buckets(2) == []  # ceil(ln 1) = 0: no epsilon earns points
    assert [p for _, p in P.buckets(16)] == [1, 0.5, 0.25, 0.125, 0.0625, 0.03125]  # ceil(ln 15) = 3
    assert P.example_points([0.0, 0.49, 0.5, 2.99, 3.0, 50.0], 16).tolist() == [1, 1, 0.5, 0.03125, 0, 0]
    assert P.final_score(0.5, [90, 100], [100, 100], [80, 80], [100, 60]) == pytest.approx(0.5 * 0.95 * 1.0)


def _transcribed_epsilon(u, r, delta=1e-5, cap=50.0):
    """The challenge's per-example epsilon as metric.py computes it: explicit threshold lists, comparisons of
    every model's value with every threshold, float rates, NaN-aware maxima."""
    pos, neg = (r, u) if np.median(r) > np.median(u) else (u, r)
    big, small = max(np.ptp(pos), np.ptp(neg)), min(np.ptp(pos), np.ptp(neg))
    if big > 0 and small / big < 0.01:
        return cap
    # double threshold: the positive class is the peakier population
    p, q = (neg, pos) if np.ptp(pos) >= np.ptp(neg) else (pos, neg)
    w = np.ptp(p)
    lo, hi = p.min() + w - 2.0, p.max() + 2.0
    rights = np.linspace(lo, hi, int(np.ceil((hi - lo) * 100)))
    left = np.concatenate([np.linspace(t - w - 2.0, t - w + 2.0, 400) for t in rights])
    right = np.repeat(rights, 400)
    tpr_d = ((left[:, None] <= p[None]) & (p[None] <= right[:, None])).mean(1)
    fpr_d = ((left[:, None] <= q[None]) & (q[None] <= right[:, None])).mean(1)
    # single threshold
    both = np.concatenate([pos, neg])
    t = np.linspace(both.min(), both.max(), int(np.ceil((both.max() - both.min()) * 100)))
    tpr_s, fpr_s = (pos[None] >= t[:, None]).mean(1), (neg[None] >= t[:, None]).mean(1)
    tpr, fpr = np.concatenate([tpr_d, tpr_s]), np.concatenate([fpr_d, fpr_s])
    fnr, tnr = 1 - tpr, 1 - fpr
    eps = np.zeros(len(tpr))
    eps[(fpr + fnr == 0) & (tpr + tnr == 2)] = np.inf
    eps[(eps == 0) & (fpr * fnr == 0)] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # all-NaN columns
        value = np.clip(np.nanmax([np.log(1 - delta - fpr) - np.log(fnr), np.log(1 - delta - fnr) - np.log(fpr)],
                                  axis=0), 0, None)
    eps = np.where(eps == 0, value, eps)
    eps = eps[~np.isnan(eps)]
    return float(np.clip(eps.max(), 0, cap)) if len(eps) else 0.0


def test_epsilon_matches_an_independent_transcription():
    rng = np.random.default_rng(3)
    k, n = 5, 6
    u = rng.normal(size=(k, n)) * rng.uniform(0.3, 2, n)
    r = rng.normal(size=(k, n)) * rng.uniform(0.3, 2, n) + rng.uniform(-2, 2, n)
    u[:, 0] = r[:, 0] + rng.normal(scale=0.05, size=k)  # nearly the same
    r[:, 1] = u[:, 1] + 3.0  # shifted
    r[:, 2] = u[:, 2]  # identical
    expected = [_transcribed_epsilon(u[:, i], r[:, i]) for i in range(n)]
    assert P.epsilons(u, r).tolist() == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert expected[1] == 50.0 and expected[2] == 0.0 and any(0 < e < 50 for e in expected)
    assert P.forgetting_score(P.epsilons(u, r), k) == pytest.approx(
        np.mean([next((pt for up, pt in P.buckets(k) if e < up), 0.0) for e in expected]))


# ---------------------------------------------------------------- U-LiRA

def test_ulira_on_gaussians_matches_the_analytic_values():
    rng = np.random.default_rng(4)
    k, n, shift = 40, 300, 1.0
    centre = rng.normal(scale=5, size=n)  # every example has its own mean; the attack is per example
    out = centre + rng.normal(size=(k, n))
    unlearned = centre + shift + rng.normal(size=(k, n))
    res = P.ulira(unlearned, out)
    # equal variances: AUC = Phi(shift / sqrt(2)), best accuracy Phi(shift / 2), TPR at FPR f: 1 - Phi(z_f - shift)
    assert res["auc"] == pytest.approx(norm.cdf(shift / math.sqrt(2)), abs=0.02)
    assert res["accuracy"] == pytest.approx(norm.cdf(shift / 2), abs=0.02)
    assert res["tpr_at_1pct_fpr"] == pytest.approx(1 - norm.cdf(norm.ppf(0.99) - shift), abs=0.03)
    assert len(res["example_accuracy"]) == n
    same = P.ulira(centre + rng.normal(size=(k, n)), out)
    assert same["auc"] == pytest.approx(0.5, abs=0.03) and same["accuracy"] == pytest.approx(0.5, abs=0.03)


def test_auc_and_tpr_against_sklearn():
    from sklearn.metrics import roc_auc_score, roc_curve
    rng = np.random.default_rng(5)
    labels = rng.random(2000) < 0.5
    scores = rng.normal(size=2000) + labels + np.round(rng.random(2000), 1)  # with ties
    assert P.roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), rel=1e-12)
    fpr, tpr, _ = roc_curve(labels, scores)
    assert P.tpr_at_fpr(scores, labels, 0.01) == pytest.approx(tpr[fpr <= 0.01].max())
    assert P.tpr_at_fpr(scores, labels, 0.1) == pytest.approx(tpr[fpr <= 0.1].max())


# ---------------------------------------------------------------- the plan's models

def plan_of(tmp_path, k, methods):
    from suite import privacy as S
    cfg = benchmark.resolve(benchmark.parse(["--seeds", "1,", "--methods", methods, "--save_dir", str(tmp_path)]))
    return S.Plan(cfg, k, 1)


def train_seed(plan, key):
    """The train seed that set the initialization of a model: a retrained model's own, else its original's."""
    from commands import baseline as main_baseline
    from commands import forget as main_forget
    if key in plan.retrained:
        args = main_forget.parse(plan.forget_argv(key))
        assert args.unlearn == "retrain"
        return args.train_seed
    return main_baseline.parse(plan.original(key[2]).argv).train_seed


def test_every_model_of_a_run_has_the_same_forget_indices(tmp_path):
    import dataset
    from commands import baseline as main_baseline
    from commands import forget as main_forget
    plan = plan_of(tmp_path, 4, "FT,RL")
    args = [main_baseline.parse(plan.original(t).argv) for t in plan.seeds]
    args += [main_forget.parse(plan.forget_argv(key)) for key in plan.retrained + plan.unlearned]
    assert len(args) == 4 + 4 + 4 * 7  # per row: 4 runs on O_1 and one on each of the 3 other originals
    forgets = {tuple(dataset.splits_from_args(a, "cpu").forget) for a in args}
    assert len(forgets) == 1 and len(next(iter(forgets))) == 121


def test_retrained_seeds_are_disjoint_from_every_other_model(tmp_path):
    from commands import forget as main_forget
    plan = plan_of(tmp_path, 4, "FT,RL")
    retrained = {train_seed(plan, key) for key in plan.retrained}
    originals = {train_seed(plan, key) for key in plan.unlearned}
    unlearning = {main_forget.parse(plan.forget_argv(key)).train_seed for key in plan.unlearned}
    assert len(retrained) == 4 and originals == set(plan.seeds) and unlearning == set(plan.seeds)
    assert not retrained & (originals | unlearning)


def seeded_statistics(plan, shift, rho=0.6, n=4000):
    """Statistics of every model of the plan: per example a centre, a part set by the train seed of the model's
    initialization (variance rho; shared by an original's unlearned copies), independent noise (variance
    1 - rho) and, for unlearned models, `shift`."""
    rng = np.random.default_rng(7)
    centre = rng.normal(scale=3, size=n)
    out = {}
    for key in plan.retrained + plan.unlearned:
        init = np.random.default_rng([train_seed(plan, key), 11]).normal(size=n)
        conf = centre + math.sqrt(rho) * init + math.sqrt(1 - rho) * rng.normal(size=n)
        conf += 0 if key in plan.retrained else shift
        out[key] = {"confidence": conf.tolist(), "accuracy": {"retain": 100.0, "test": 90.0, "forget": 100.0}}
    return out


@pytest.mark.parametrize("shift", [0.0, 8.0])
def test_ulira_over_the_plan_gives_the_known_answer(tmp_path, monkeypatch, shift):
    """K = 8 on statistics whose answer is known: identical populations (shift 0) give about 0.5 although a
    model's initialization explains 60% of its variance; populations 8 standard deviations apart give about 1.
    Were the retrained models initialized as their partners U(O_t), the identical case would give accuracy
    0.41-0.42 and AUC 0.37-0.38. Leave-one-out alone sits slightly below chance at K = 8 (a target's own mean
    has one model less): 0.49-0.50 over RNG seeds (0.495 here); 4,000 examples make the spread about 0.005, so
    0.03 is a wide margin. Deterministic: numpy's generator and float64 arithmetic."""
    from suite import privacy as S
    plan = plan_of(tmp_path, 8, "FT")
    # U-LiRA is the point here; the challenge's epsilons (tested above) cost 16 ms per example
    monkeypatch.setattr(P, "epsilons", lambda u, r: np.zeros(np.shape(u)[1]))
    rows = S.evaluate_rows(plan, seeded_statistics(plan, shift), {})
    assert [r["label"] for r in rows] == ["Retrain", "FT", "FT + mask"]
    for r in rows[1:]:
        if shift == 0:
            assert abs(r["ulira_accuracy"] - 0.5) < 0.03 and abs(r["ulira_auc"] - 0.5) < 0.03, r["label"]
        else:
            assert r["ulira_accuracy"] > 0.99 and r["ulira_auc"] > 0.999 and r["ulira_tpr_at_1pct_fpr"] > 0.99


# ---------------------------------------------------------------- benchmark.py --privacy, end to end

TINY = ["--privacy", "2", "--seeds", "1,", "--methods", "FT,GA", "--epochs", "1", "--unlearn_epochs", "1",
        "--device", "cpu"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    save = tmp_path_factory.mktemp("privacy")
    return save, benchmark.main.__wrapped__(TINY + ["--save_dir", str(save)])


def test_tiny_privacy_end_to_end(tiny):
    from suite import privacy as S
    save, out = tiny
    # 2 originals, 2 retrained, and per row 3 models (U(O_1, t_1), U(O_1, t_2), U(O_2, t_2))
    assert out["counts"] == {"made": 16, "reused": 0, "failed": 0}
    rows = {r["label"]: r for r in out["per_seed"][0]["rows"]}
    assert list(rows) == ["Retrain", "FT", "FT + mask", "GA", "GA + mask"]
    for name in ("FT", "FT + mask", "GA", "GA + mask"):
        r = rows[name]
        assert len(r["epsilon"]) == 121 and all(0 <= e <= 50 for e in r["epsilon"])
        assert r["forgetting_score"] == 0.0 and r["score"] == 0.0  # K = 2: no bucket below ceil(ln 1) = 0
        assert 0 <= r["ulira_accuracy"] <= 1 and 0 <= r["ulira_auc"] <= 1 and 0 <= r["ulira_tpr_at_1pct_fpr"] <= 1
        assert 0 <= r["RA"] <= 100 and 0 <= r["TA"] <= 100
    saved = json.loads((save / "privacy.json").read_text())
    assert len(saved["forget_indices"]) == 121 and saved["meta"]["settings"]["K"] == 2
    md = (save / "privacy.md").read_text()
    assert "| GA + mask |" in md and "U-LiRA AUC" in md
    # one seed: the files, title and page of a single forget set, as before several seeds were possible
    assert md == S.render(saved) and md.startswith("# Per-example privacy: digits, K = 2\n")
    assert "across forget sets" not in md and set(saved) == {"meta", "forget_indices", "rows"}
    assert sorted(p.name for p in save.iterdir()) == ["privacy", "privacy.json", "privacy.md", "privacy_epsilon.png",
                                                      "seed_1"]
    assert (save / "privacy_epsilon.png").stat().st_size > 0
    model = save / "privacy" / "seed_1" / "models" / "FT_saliency" / "o1001_u1001.json"
    stats = json.loads(model.read_text())
    assert len(stats["confidence"]) == 121 and stats["args"]["unlearn"] == "FT" and stats["args"]["train_seed"] == 1001
    assert (save / "seed_1" / "original" / "checkpoint.pt").is_file()  # the benchmark's own original model


def test_tiny_privacy_reuses_everything(tiny):
    save, first = tiny
    again = benchmark.main.__wrapped__(TINY + ["--save_dir", str(save), "--no-plots"])
    assert again["counts"] == {"made": 0, "reused": 16, "failed": 0}
    assert again["per_seed"][0]["rows"] == first["per_seed"][0]["rows"]


def test_tiny_privacy_refuses_other_settings(tiny, capsys):
    save, _ = tiny
    with pytest.raises(SystemExit) as err:
        benchmark.main([*TINY[:8], "--unlearn_epochs", "2", "--device", "cpu", "--save_dir", str(save)])
    assert err.value.code == 2
    assert "was made with --unlearn_epochs 1, this evaluation asks for 2" in capsys.readouterr().err


@pytest.mark.parametrize("k", ["1", "0", "-3"])
def test_too_few_models_is_one_line(tmp_path, capsys, k):
    with pytest.raises(SystemExit) as err:
        benchmark.main(["--privacy", k, "--save_dir", str(tmp_path / "p")])
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "K >= 2" in lines[0]
    assert not (tmp_path / "p").exists()


def test_statistics_are_those_of_main_forget(tiny, tmp_path):
    """A model made in-process (with and without the mask) is the model main_forget.py makes with its arguments."""
    import dataset
    from commands import forget as main_forget
    import trainer
    from suite import privacy as S
    save, out = tiny
    plan = out["per_seed"][0]["plan"]
    for key in (("GA", False, 1, 1001), ("GA", True, 1, 1001)):
        argv = plan.forget_argv(key) + ["--save_dir", str(tmp_path), "--run_name", f"m{int(key[1])}"]
        main_forget.main.__wrapped__(argv)
        args = main_forget.parse(argv)
        splits = dataset.splits_from_args(args, "cpu")
        model, _ = trainer.load_model(str(tmp_path / f"m{int(key[1])}" / "checkpoint.pt"), args, splits.raw, "cpu")
        stored = json.loads(open(plan.stats_path(key)).read())
        assert S.statistics(model, splits, "cpu") == {k: stored[k] for k in ("confidence", "accuracy")}


def test_worker_processes_give_the_same_statistics(tiny, tmp_path):
    """--launcher local --jobs 2: the masked models made in 2 worker processes equal the in-process ones."""
    import shutil
    save, first = tiny
    shutil.copytree(save / "seed_1", tmp_path / "seed_1")  # the original model O_1
    shutil.copytree(save / "privacy", tmp_path / "privacy")  # O_1001 and every model's statistics
    shutil.rmtree(tmp_path / "privacy" / "seed_1" / "models" / "GA_saliency")  # made again by 2 workers
    out = benchmark.main.__wrapped__(TINY + ["--save_dir", str(tmp_path), "--no-plots", "--launcher", "local",
                                             "--jobs", "2"])
    assert out["counts"] == {"made": 3, "reused": 13, "failed": 0}
    assert out["per_seed"][0]["rows"] == first["per_seed"][0]["rows"]


# ---------------------------------------------------------------- several seeds (forget sets)

T_1 = 12.706204736174698  # Student t, 97.5% quantile, 1 degree of freedom


@pytest.fixture(scope="module")
def two_seeds(tiny, tmp_path_factory):
    """Seeds 1 and 2 with FT only; seed 1's models come from the tiny run (reused), seed 2's are made."""
    import shutil
    save = tmp_path_factory.mktemp("privacy_seeds")
    for name in ("seed_1", "privacy"):
        shutil.copytree(tiny[0] / name, save / name)
    argv = [*TINY[:2], "--seeds", "1,2", "--methods", "FT", *TINY[6:], "--save_dir", str(save)]
    return save, argv, benchmark.main.__wrapped__(argv)


def test_two_seeds_summary_is_the_t_interval_of_the_seeds(two_seeds):
    from suite import privacy as S
    save, _, out = two_seeds
    # seed 1: every FT model reused (GA's files stay unused); seed 2: 2 originals, 2 retrained, 2 x 3 FT models
    assert out["counts"] == {"made": 10, "reused": 10, "failed": 0}
    saved = json.loads((save / "privacy.json").read_text())
    assert [p["meta"]["settings"]["seed (split and forget set)"] for p in saved["per_seed"]] == [1, 2]
    assert saved["per_seed"][0]["forget_indices"] != saved["per_seed"][1]["forget_indices"]
    rows = [{r["label"]: r for r in p["rows"]} for p in saved["per_seed"]]
    summary = {r["label"]: r for r in saved["summary"]["rows"]}
    assert list(summary) == ["FT", "FT + mask"]
    for name in ("FT", "FT + mask"):
        a, b = (100 * r[name]["ulira_accuracy"] for r in rows)
        stat = summary[name]["ulira_accuracy_percent"]
        assert stat["seeds"] == [1, 2] and stat["values"] == pytest.approx([a, b])
        assert stat["mean"] == pytest.approx((a + b) / 2) and stat["std"] == pytest.approx(abs(a - b) / math.sqrt(2))
        assert stat["high"] - stat["mean"] == pytest.approx(T_1 * abs(a - b) / 2)
        assert summary[name]["ulira_auc"]["values"] == pytest.approx([r[name]["ulira_auc"] for r in rows])
    (masking,) = saved["summary"]["masking"]
    d = [r["FT + mask"]["ulira_auc"] - r["FT"]["ulira_auc"] for r in rows]
    assert masking["comparison"] == "FT + mask - FT" and masking["ulira_auc"]["values"] == pytest.approx(d)
    diff = masking["ulira_accuracy_percent"]
    half = T_1 * abs(diff["values"][0] - diff["values"][1]) / 2
    assert diff["mean"] == pytest.approx(sum(diff["values"]) / 2)
    assert (diff["low"], diff["high"]) == pytest.approx((diff["mean"] - half, diff["mean"] + half))
    md = (save / "privacy.md").read_text()
    assert md == S.render(saved) and md.startswith("# Per-example privacy over 2 forget sets: digits, K = 2\n")
    assert f"| [{diff['low']:.1f}, {diff['high']:.1f}] |" in md
    assert "## Per-example privacy: digits, seed 1, K = 2" in md and "## Per-example privacy: digits, seed 2" in md
    assert (save / "privacy_epsilon_seed_2.png").is_file() and not (save / "privacy_epsilon.png").exists()


def test_two_seeds_have_their_own_folders_and_a_rerun_reuses_everything(two_seeds):
    save, argv, first = two_seeds
    model = json.loads((save / "privacy" / "seed_2" / "models" / "FT" / "o1002_u1002.json").read_text())
    assert model["args"]["seed"] == 2 and model["args"]["train_seed"] == 1002
    assert (save / "privacy" / "seed_2" / "originals" / "train_seed_1002").is_dir()
    assert (save / "seed_2" / "original" / "checkpoint.pt").is_file()
    again = benchmark.main.__wrapped__(argv + ["--no-plots"])
    assert again["counts"] == {"made": 0, "reused": 20, "failed": 0}
    assert again["summary"] == first["summary"]


def test_summary_leaves_out_a_failed_seed():
    from suite.privacy_summary import summary
    rows = {s: [{"label": "RL", "method": "RL", "masked": False, "ulira_accuracy": acc, "ulira_auc": 0.5},
                {"label": "RL + mask (SalUn)", "method": "RL", "masked": True, "ulira_accuracy": acc - 0.01,
                 "ulira_auc": 0.5}] for s, acc in ((1, 0.6), (2, 0.7), (3, 0.8))}
    rows[2][1] = {"label": "RL + mask (SalUn)", "method": "RL", "masked": True, "failed": "diverged"}
    out = summary(sorted(rows.items()))
    assert out["rows"][0]["ulira_accuracy_percent"]["n"] == 3
    assert out["rows"][1]["ulira_accuracy_percent"]["seeds"] == [1, 3]
    assert out["masking"][0]["ulira_accuracy_percent"]["seeds"] == [1, 3]
    assert out["masking"][0]["ulira_accuracy_percent"]["mean"] == pytest.approx(-1.0)


@pytest.mark.parametrize("seeds, says", [("1,1001", "seeds 1 and 1001 would share the train seed 1001"),
                                         ("1,501", "seeds 1 and 501 would share the train seed 501"),
                                         ("3,3", "lists seed 3 twice")])
def test_seeds_sharing_train_seeds_are_one_line(tmp_path, capsys, seeds, says):
    with pytest.raises(SystemExit) as err:
        benchmark.main(["--privacy", "2", "--seeds", seeds, "--save_dir", str(tmp_path / "p")])
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and says in lines[0]
    assert not (tmp_path / "p").exists()
