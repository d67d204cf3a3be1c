"""The results page, docs/results/README.md: each claim of the two papers as a question, the command that answers
it, its table and verdicts (made from the committed results.json files by suite/tables.py and suite/stats.py), a
plain reading, and two figures: forget_fraction.png (Avg. Gap against the forget fraction, both arms) and
overview.png (every method and arm: Avg. Gap with its interval against its cost in FT-epochs).

Run by scripts/make_docs.py; the readings (READINGS) are the only typed text and state no number.
"""
import json
import os

from suite import tables
from suite.presets import display, label

# The forget-fraction sweep: (folders, fraction); 10% are the committed Fashion-MNIST tables (same preset values).
FRACTIONS = ((("fashionmnist_random", "fashionmnist_random_baselines"), 0.1),
             (("fashionmnist_forget30", "fashionmnist_forget30_fisher"), 0.3),
             (("fashionmnist_forget50", "fashionmnist_forget50_fisher"), 0.5))
FRACTION_METHODS = ("FT", "GA", "RL", "SalUn_soft", "FT_prune", "fisher_new", "wfisher")

# (folder, kind, question, command). kind: "mask" (the saliency-mask table), "sparse" (dense vs sparse arms),
# "sweep" (several sparsities).
CLAIMS = (
    ("digits_random_30", "mask",
     "SalUn: does the saliency mask bring RL (and the other methods) closer to retraining? Digits, 10% random "
     "forgetting, 30 seeds, the same hyperparameters in both arms; the methods whose 10-seed verdicts reversed "
     "on another CPU (RL, SalUn-soft, SCRUB; EU-k below) and the papers' own.",
     "python benchmark.py --seeds 30 --methods FT,GA,RL,SalUn_soft,fisher_new,wfisher,FT_prune,SCRUB "
     "--save_dir runs/digits_random_30"),
    ("tuned_digits_rl", "mask",
     "SalUn with each arm tuned on its own: RL and RL + mask, each given its own learning rate by 20 Optuna trials "
     "on the search seeds (0, 99; search.md in the folder), then compared on benchmark seeds 1-10; the same seeds "
     "at the shared preset value are RL's line in [digits_random](digits_random/results.md).",
     "python benchmark.py --search --trials 20 --methods RL --launcher local --jobs 2 --save_dir runs/optuna_digits"
     " && python benchmark.py --tuned runs/optuna_digits --seeds 10 --methods RL --launcher local --jobs 2 "
     "--save_dir runs/optuna_digits_tuned"),
    ("tuned_fashionmnist", "mask",
     "Each arm tuned on its own on Fashion-MNIST, 10% random forgetting: RL, FT, GA, l1-sparse, FF and IU, each "
     "method and arm given its own values by 20 Optuna trials on the search seeds (0, 99; search.md in the "
     "folder), then compared on benchmark seeds 1-6; the same methods at the shared preset values, on seeds 1-3, "
     "are in [fashionmnist_random](fashionmnist_random/results.md) (made on another machine, against other gold "
     "standards).",
     "for m in RL FT GA FT_prune wfisher fisher_new; do python benchmark.py --preset fashionmnist --search "
     "--trials 20 --methods $m --launcher local --jobs 2 --save_dir runs/optuna_fashion; done && python "
     "benchmark.py --preset fashionmnist --tuned runs/optuna_fashion --seeds 6 --methods "
     "RL,FT,GA,FT_prune,wfisher,fisher_new --launcher local --jobs 2 --save_dir runs/optuna_fashion_tuned"),
    ("digits_random_30_euk", "mask",
     "The mask and EU-k trained as its authors train it (plain SGD), digits, 30 seeds (measured on another machine "
     "than the table above, so against its own gold standards).",
     "python benchmark.py --seeds 30 --methods EU_k --launcher local --jobs 2 --save_dir runs/digits_random_30_euk"),
    ("digits_sparse", "sparse",
     "Model sparsity: do FT, GA, FF and IU land closer to their gold standard on a 95% sparse model than on the "
     "dense one? Digits, 10% random forgetting, 30 seeds.",
     "python benchmark.py --seeds 30 --methods FT,GA,RL,fisher_new,wfisher --sparsity 0.95 --no-mask "
     "--save_dir runs/digits_random_30"),
    ("digits_sparsity_sweep", "sweep",
     "Model sparsity: does the gap shrink as sparsity grows (0, 50, 90, 95, 99%)? Digits, FT and GA, 10 seeds.",
     "python benchmark.py --seeds 10 --methods FT,GA --sparsity 0.5,0.9,0.95,0.99 --no-mask "
     "--save_dir runs/digits_random_30"),
    ("fashionmnist_claims_random", "sparse",
     "Model sparsity on Fashion-MNIST, 10% random forgetting, 3 seeds: FT, GA, FF and IU on the dense and on the "
     "95% sparse model.",
     "python benchmark.py --preset fashionmnist --seeds 3 --methods FT,GA,fisher_new,wfisher --sparsity 0.95 "
     "--no-mask --launcher local --jobs 2 --save_dir runs/fashionmnist_claims_random"),
    ("fashionmnist_claims_class", "sparse",
     "Model sparsity on Fashion-MNIST, forgetting a whole class (class 0), 3 seeds.",
     "python benchmark.py --preset fashionmnist --scenario class --seeds 3 --methods FT,GA,fisher_new,wfisher "
     "--sparsity 0.95 --no-mask --launcher local --jobs 2 --save_dir runs/fashionmnist_claims_class"),
)

# Learning-rate curves (benchmark.py --curves): (folder, command).
CURVES = (("curves_digits", "python benchmark.py --curves --seeds 3 --launcher local --jobs 2 "
                            "--save_dir runs/curves_digits"),)

TROJAN = "trojan_fashionmnist"  # scripts/trojan.py's output, docs/results/<TROJAN>.{md,json,png}
PRIVACY = "privacy_digits"  # the per-example privacy run whose U-LiRA accuracies the overview shows
COLLAPSE = 5.0  # test accuracy this many points below the gold standard's: the model broke down

# folder (or "forget_fraction") -> a plain reading of what its verdicts say; no figures: those are generated.
READINGS = {
    "digits_random_30":
        "The one primary comparison finds the mask narrowing RL's gap, but the effect is small against the spread "
        "between seeds, the masked arm is the lower on barely more than half of the seeds, and the two halves of "
        "the seeds disagree: not a verdict to expect on another machine's draw. No other method moves detectably "
        "once the comparisons are corrected for their number, so the 10-seed verdicts that reversed on another "
        "CPU (SalUn-soft, SCRUB) were chance. FT and GA break down on some seeds in both arms at about the "
        "same rate: at these values the mask does not prevent it.",
    "tuned_digits_rl":
        "Tuned on its own, the masked arm takes a higher learning rate than the unmasked one, as a step that moves "
        "only half of the weights would suggest; on the benchmark seeds that value makes SalUn forget more than "
        "retraining does (UA and MIA-Efficacy above the gold standard's), and SalUn lands further from retraining "
        "than RL at its own best on most seeds, with the same sign in both halves. At the shared preset value the "
        "same seeds show no detectable difference. Tuning each arm does not reveal an advantage of the mask here; "
        "a search on two seeds near the edge of overshoot is itself a noisy choice.",
    "tuned_fashionmnist":
        "Tuned on its own, each arm settles on nearly the same value as the other (FT's masked arm on a little "
        "higher learning rate, IU's on a lower strength, FF's on the same), and on the benchmark seeds neither RL "
        "nor any of FT, GA, FF and IU lands detectably closer to retraining with the mask. l1-sparse does, on "
        "every seed and after Holm's correction, but the second half of the seeds alone is too small to confirm "
        "it, and it is the one method whose two arms chose very different values: the masked arm a learning rate "
        "several times higher with a far weaker l1 penalty, away from the edge of collapse, the unmasked arm a "
        "value at that edge. That is what SalUn's stability argument predicts (the mask lets the step grow "
        "before validation accuracy breaks), seen here for l1-sparse only, not for RL. FT, GA "
        "and IU sit at the edge of collapse in both arms and FF in the unmasked one (the chosen "
        "value has a neighbour that breaks validation accuracy); IU's choice breaks the model down on two "
        "benchmark seeds in each arm. On the three seeds they share, the tuned values bring no method but "
        "l1-sparse closer than the shared preset values did (a table made on another machine).",
    "digits_random_30_euk":
        "Trained with its authors' plain SGD, EU-k lands no closer to retraining with the mask than without it, "
        "and the masked arm is the lower on fewer than half of the seeds: the mask neither helps nor hurts EU-k "
        "detectably, as it did not with the reference's SGD.",
    "digits_sparse":
        "Pruning to 95% sparsity does not bring FT, GA or IU detectably closer to their own gold standard, though "
        "all three point that way and each breaks down on fewer seeds when sparse; FF lands further from its gold "
        "standard (a verdict the halves of the seeds do not share). Within the sparse arm FT, RL and IU move the "
        "model detectably closer to retraining than the untouched sparse model, which on the dense model they do "
        "not: sparsity makes these methods act more like retraining without moving the untouched model. The "
        "paper's headline, every approximate method closer on the sparse model, is not reproduced here.",
    "digits_sparsity_sweep":
        "No sparsity level moves FT or GA detectably. The mean gaps are smallest at 90-95% sparsity as the paper "
        "describes, but the dense means are inflated by a few broken-down seeds; at 99% GA breaks down on most "
        "seeds and the untouched sparse model drifts further from its own gold standard. The gap does not shrink "
        "steadily as sparsity grows.",
    "fashionmnist_claims_random":
        "On every seed each method is closer to its gold standard on the sparse model, but so is the untouched "
        "model, by about as much: pruning and retraining moves the original toward its own gold standard. "
        "Measured against the untouched model of their own arm, GA and FF do nothing in either arm, and FT and IU "
        "do about the same in both: the sparse arm's advantage here is pruning's, not the methods'. Three seeds "
        "give no verdict after correction.",
    "fashionmnist_claims_class":
        "Forgetting a whole class, FT and FF land close to retraining in both arms, and GA and IU break down on "
        "every seed in both arms; sparsity changes none of them detectably.",
    "curves_digits":
        "The mask does not widen the range of learning rates over which RL, FT, GA, l1-sparse or SalUn-soft stay "
        "near their best: their headroom is the same with and without it on every seed but one (l1-sparse). One "
        "step (3x) above its best RL overshoots on every seed with the mask as without it, and FT collapses a step "
        "later in both arms. Below the best both methods do next to nothing, "
        "so there is no range for the mask to widen on that side. No mask ratio from 0.1 to 0.9 moves RL or FT "
        "detectably at the preset's learning rate. Three seeds and steps of 3x: an advantage narrower than one "
        "step would not show.",
    TROJAN:
        "At the reference's FT learning rate nothing is removed, dense or sparse, even with twice the epochs. A "
        "higher rate starts to remove the backdoor, and the highest of the grid removes it almost down to the "
        "triggered images of the target class itself; over 20 epochs, whose training milestones lower the rate "
        "for the last ones, test accuracy is kept, over 10 it is not. At no point of the grid is the sparse "
        "models' attack success after FT detectably different from the dense model's: the means lean toward the "
        "sparse models at most points, but where FT half-removes the backdoor the seeds spread over tens of "
        "points. The paper's claim, that sparsity lets FT remove a backdoor it leaves in a dense model, is not "
        "reproduced here: a stronger FT removes it from the dense model as well.",
    "forget_fraction":
        "Most methods' gaps grow with the forget set, but the mask shrinks none of them at any size: with the "
        "values chosen at 10%, no method is detectably closer to retraining with the mask at 30% or 50%, and "
        "masked FT is further at 30%. RL's mask effect does not turn in the mask's favour as the forget set "
        "grows. These are shared hyperparameters; each arm tuned on its own may answer differently.",
}


def load(results_dir, folder):
    path = os.path.join(results_dir, folder, "results.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    rows = tables.aggregate(data["runs"], data["failed"])
    return {"meta": data["meta"], "rows": rows, "masking": tables.masking_table(rows),
            "sparse": tables.sparse_table(rows)}


def _ci(stat):
    if stat is None or stat.get("low") is None:
        return "—"
    return f"{stat['mean']:+.2f} [{stat['low']:+.2f}, {stat['high']:+.2f}]"


def _names(items):
    return ", ".join(items) if items else "none"


def verdict_sentences(comparisons, what):
    """The primary comparisons one by one, the secondary ones grouped by their Holm verdict, and any halves that
    disagree."""
    out = []
    for c in comparisons:
        if c["family"] == "primary":
            name = "SalUn vs RL" if what == "mask" else c["comparison"]
            halves = {True: "the halves agree", False: "the halves disagree", None: "halves too small"}[c["stable"]]
            out.append(f"- **{name}** (primary): difference {_ci(c['difference'])} (95% CI), p = {c['p']:.3g}, "
                       f"Holm p = {c['p_holm']:.3g}: {_verdict(c, what)}; {halves}.")
    secondary = [c for c in comparisons if c["family"] == "secondary"]
    if secondary:
        groups = {}
        for c in secondary:
            groups.setdefault(_verdict(c, what), []).append(c["label"] if what == "mask" else c["comparison"])
        out.append(f"- Secondary (Holm over {len(secondary)}): " +
                   "; ".join(f"{v}: {_names(names)}" for v, names in groups.items()) + ".")
    unstable = [c["comparison"] for c in comparisons if c["stable"] is False]
    out.append(f"- Halves of the seeds that disagree: {_names(unstable)}.")
    return out


def _verdict(c, what):
    return c["holm"] if c["holm"] in ("n/a", "no detectable difference") else f"{what} {c['holm']} the gap"


def _by_seed(row, key):
    return dict(zip(row["seeds"], row[key]["values"]))


def _collapsed(rows):
    """(method, masked, sparsity) -> seeds on which the model's test accuracy fell more than COLLAPSE points
    below its own gold standard's (the arm's retrained model of that seed)."""
    gold = {r["sparsity"] or 0: _by_seed(r, "TA") for r in rows if r["method"] == "retrain"}
    out = {}
    for r in rows:
        ref = gold.get(r["sparsity"] or 0, {})
        out[(r["method"], bool(r["masked"]), r["sparsity"] or 0)] = [
            s for s, ta in _by_seed(r, "TA").items() if s in ref and ta < ref[s] - COLLAPSE]
    return out


def seed_sentences(comparisons, rows, what):
    """Robust to a few broken-down seeds, which dominate a mean: on how many seeds the second arm is lower, and
    on how many seeds each arm's model broke down (test accuracy more than COLLAPSE points below its gold
    standard's)."""
    collapsed = _collapsed(rows)
    lower, broken = [], []
    for c in comparisons:
        name = c["label"] if what == "mask" else f"{c['label']} ({100 * c['sparsity']:g}%)"
        values = c["difference"]["values"]
        lower.append(f"{name} {sum(v < 0 for v in values)} of {len(values)}")
        second = (c["method"], True, 0) if what == "mask" else (c["method"], False, c["sparsity"])
        pair = [collapsed.get((c["method"], False, 0)), collapsed.get(second)]
        if None not in pair and any(pair):
            broken.append(f"{name} {len(pair[0])} / {len(pair[1])}")
    arms = ("masked", "no mask / + mask") if what == "mask" else ("sparse", "dense / sparse")
    return [f"- Seeds on which the {arms[0]} arm's Avg. Gap is the lower: " + "; ".join(lower) + ".",
            f"- Seeds on which the model broke down (test accuracy more than {COLLAPSE:g} points below its gold "
            f"standard's), {arms[1]}: " + ("; ".join(broken) or "none") + "."]


def original_sentences(sparse):
    """Each method's change against the untouched model of its own arm."""
    out = []
    for c in sparse:
        vs = c.get("vs_original")
        if vs:
            out.append(f"{c['label']}: dense {_ci(vs['dense'])}, sparse {_ci(vs['sparse'])}")
    return ["- Method minus Original within each arm (95% CI): " + "; ".join(out) + "."] if out else []


def sweep_table(rows, sparse):
    by_key = {(c["method"], c["sparsity"]): c for c in sparse}
    methods = list(dict.fromkeys(c["method"] for c in sparse))
    arms = sorted({c["sparsity"] for c in sparse})
    header = ["Method", "dense"] + [f"{100 * s:g}% sparse" for s in arms]
    dense = {r["method"]: r for r in rows if not r["sparsity"] and not r["masked"]}
    lines = []
    for m in methods:
        cells = [display(m), tables.fmt(dense[m]["avg_gap"]) if m in dense else "—"]
        for s in arms:
            c = by_key.get((m, s))
            cells.append("—" if c is None else f"{tables.fmt(c['sparse'])}; vs dense {_ci(c['difference'])}")
        lines.append(cells)
    return tables._md_table(header, lines)


def claim_section(results_dir, folder, kind, question, command):
    data = load(results_dir, folder)
    out = [f"### {question}", "", f"`{command}` ([tables and settings]({folder}/results.md))", ""]
    if data is None:
        return out + ["Not run yet.", ""]
    out += [f"Time: {data['meta']['settings'].get('time', '—')}.", ""]
    if data["masking"]:
        out += ["Saliency mask (mask - no mask, Avg. Gap):", "", tables.mask_table(data["masking"]), ""]
        out += verdict_sentences(data["masking"], "mask") + seed_sentences(data["masking"], data["rows"], "mask")
        out += [""]
    if data["sparse"] and kind == "sweep":
        out += ["Avg. Gap to each arm's own gold standard (mean ± std; vs dense: paired difference, 95% CI):", "",
                sweep_table(data["rows"], data["sparse"]), "", f"![sparsity]({folder}/sparsity.png)", ""]
        out += verdict_sentences(data["sparse"], "sparsity") + seed_sentences(data["sparse"], data["rows"], "sparse")
        out += [""]
    elif data["sparse"]:
        out += ["Sparse arm (sparse - dense, Avg. Gap to each arm's own gold standard):", "",
                tables.sparse_md(data["sparse"]), ""]
        out += verdict_sentences(data["sparse"], "sparsity") + seed_sentences(data["sparse"], data["rows"], "sparse")
        out += original_sentences(data["sparse"]) + [""]
    if folder in READINGS:
        out += ["**Reading.** " + READINGS[folder], ""]
    return out


def fraction_section(results_dir):
    out = ["### SalUn's regime: does the mask matter more as the forget set grows (10%, 30%, 50%)?", "",
           "Fashion-MNIST, 3 seeds, the same hyperparameters at every size: "
           "`python benchmark.py --preset fashionmnist --seeds 3 --methods FT,GA,RL,SalUn_soft,FT_prune "
           "--forget_ratio R --launcher local --jobs 2 --save_dir runs/fashionmnist_forgetNN`, and FF and IU with "
           "`--methods fisher_new,wfisher` into `runs/fashionmnist_forgetNN_fisher` (10%: the committed "
           "[fashionmnist_random](fashionmnist_random/results.md) and "
           "[fashionmnist_random_baselines](fashionmnist_random_baselines/results.md) tables, same values, whose "
           "original models were trained on another CPU: in effect other draws of the same seeds).", ""]
    header = ["Method", "Forget fraction", "Avg. Gap (no mask)", "Avg. Gap (+ mask)", "mask - no mask, 95% CI",
              "Verdict (Holm)"]
    lines = []
    for folders, fraction in FRACTIONS:
        for folder in folders:
            data = load(results_dir, folder)
            for m in (data or {}).get("masking", []):
                if m["method"] in FRACTION_METHODS:
                    lines.append([m["label"], f"{fraction:.0%}", tables.fmt(m["without_mask"]),
                                  tables.fmt(m["with_mask"]), _ci(m["difference"]), _verdict(m, "mask")])
    if not lines:
        return out + ["Not run yet.", ""]
    lines.sort(key=lambda cells: (cells[0], cells[1]))
    out += [tables._md_table(header, lines), "", "![forget fraction](forget_fraction.png)", ""]
    if "forget_fraction" in READINGS:
        out += ["**Reading.** " + READINGS["forget_fraction"], ""]
    return out


def _best(curve):
    """The arm's learning rate with the lowest mean Avg. Gap, and that gap with its interval."""
    best = min((p for p in curve if p["gap"]["mean"] is not None), key=lambda p: p["gap"]["mean"])
    return f"{best['lr']:.3g}: {_plain(best['gap'])}"


def _plain(stat):
    """Mean [95% CI] without signs (a quantity, not a difference)."""
    interval = "" if stat["low"] is None else f" [{stat['low']:.2f}, {stat['high']:.2f}]"
    return f"{stat['mean']:.2f}{interval}"


def curves_section(results_dir):
    out = ["### SalUn's stability: does the mask keep a method from overshooting as its learning rate grows?", ""]
    for folder, command in CURVES:
        path = os.path.join(results_dir, folder, "curves.json")
        out += [f"`{command}` ([every point]({folder}/curves.md))", ""]
        if not os.path.exists(path):
            out += ["Not run yet.", ""]
            continue
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        out += [f"{data['meta']['title']}; seeds {data['meta']['settings']['seeds']}; time: "
                f"{data['meta']['settings']['time']}. Headroom: decades of learning rate from an arm's lowest Avg. "
                "Gap up to where the gap leaves 1 point of it (per seed; mean and 95% CI). Collapsed: points x seeds "
                f"whose test accuracy fell more than {COLLAPSE:g} points below their retrain's.", ""]
        header = ["Method", "preset lr", "best lr: gap, no mask", "best lr: gap, + mask", "headroom, no mask",
                  "headroom, + mask", "headroom: mask - no mask", "collapsed, no mask / + mask"]
        lines = []
        for method, e in data["methods"].items():
            st, curve = e["stability_decades"], e["curve"]
            lines.append([display(method), f"{e['preset_lr']:g}", _best(curve["no mask"]),
                          _best(curve["mask"]), _plain(st["no mask"]), _plain(st["mask"]),
                          _ci(st["mask - no mask"]),
                          " / ".join(str(sum(p["collapsed"] for p in curve[a])) for a in ("no mask", "mask"))])
        out += [tables._md_table(header, lines), "", f"![curves]({folder}/curves.png)", ""]
        if folder in READINGS:
            out += ["**Reading.** " + READINGS[folder], ""]
    return out


def trojan_section(results_dir):
    path = os.path.join(results_dir, TROJAN + ".json")
    out = ["### Model sparsity and a backdoor: does FT remove a trojan more readily from a sparse model?", ""]
    if not os.path.exists(path):
        return out + ["Not run yet.", ""]
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    out += [f"`{data['command']}` ([every number]({TROJAN}.md)): Fashion-MNIST, 450 of 4,500 training images "
            "poisoned, dense and OMP-sparse trojaned models fine-tuned on the clean rest over a learning-rate x "
            "epochs grid (the reference's FT: lr 0.01, 10 epochs). Mean over seeds; sparse - dense: the paired "
            "difference of attack success after FT, 95% CI.", ""]
    points, cells = {}, {}
    for e in data["points"].values():
        points.setdefault((e["lr"], e["epochs"]), {})[e["rate"]] = e
    for (lr, epochs), by_rate in sorted(points.items()):
        seeds = by_rate[0.0]["per_seed"].values()
        mean = {r: {k: tables.mean_std([s[k] for s in by_rate[r]["per_seed"].values()])[0]
                    for k in ("test_acc_unlearn", "attack_acc_unlearn")} for r in by_rate}
        cells[(lr, epochs)] = [f"{lr:g}", str(epochs), str(len(seeds))]
        cells[(lr, epochs)] += [" / ".join(f"{mean[r][k]:.1f}" for r in sorted(by_rate))
                                for k in ("test_acc_unlearn", "attack_acc_unlearn")]
        cells[(lr, epochs)] += [_ci(by_rate[r]["difference_to_dense"]) for r in sorted(by_rate) if r]
    rates = sorted({e["rate"] for e in data["points"].values()})
    header = ["FT lr", "FT epochs", "seeds", "test acc after FT (" + " / ".join(f"{r:.0%}" for r in rates) + ")",
              "attack success after FT (same)"] + [f"{r:.0%} - dense" for r in rates if r]
    out += [tables._md_table(header, list(cells.values())), "", f"![trojan]({TROJAN}.png)", ""]
    if TROJAN in READINGS:
        out += ["**Reading.** " + READINGS[TROJAN], ""]
    return out


def page(results_dir):
    out = ["# What the measurements say about the papers' claims", "",
           "<!-- Generated by scripts/make_docs.py from docs/results/*/results.json and suite/claims.py. -->", "",
           "Each section asks one question, gives the command that answers it (runs resume; results land in the "
           "named folder, copied here), its table, and its verdicts. Avg. Gap: mean |method - gold standard| over "
           "UA, MIA-Efficacy, RA and TA, per seed; every comparison is paired by seed. Primary comparisons were "
           "fixed in advance (SalUn vs RL; sparse vs dense for the seed paper's FT, GA, FF and IU); every other "
           "comparison of a table is corrected with Holm's method, and every verdict is repeated on each half of "
           "the seeds: another CPU is in effect another draw of seeds, so a verdict the halves disagree on is not "
           "one to rely on. Statistics: [suite/stats.py](../../suite/stats.py).", "",
           "![overview](overview.png)", ""]
    for claim in CLAIMS:
        out += claim_section(results_dir, *claim)
    out += fraction_section(results_dir)
    out += curves_section(results_dir)
    out += trojan_section(results_dir)
    return "\n".join(out)


# ---------------------------------------------------------------- figures

def _interval(values):
    return tables.t_interval(values)


def fraction_figure(plt, results_dir):
    series = {}
    for folders, fraction in FRACTIONS:
        for folder in folders:
            data = load(results_dir, folder)
            for r in (data or {}).get("rows", []):
                if r["method"] in FRACTION_METHODS and not r["sparsity"] and r["avg_gap"]["values"]:
                    series.setdefault((r["method"], r["masked"]), []).append(
                        (fraction, _interval(r["avg_gap"]["values"])))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    methods = list(dict.fromkeys(m for m, _ in series))
    for i, method in enumerate(methods):
        for masked, style in ((False, "-"), (True, "--")):
            points = sorted(series.get((method, masked), []), key=lambda p: p[0])
            if points:
                xs = [100 * f + 0.6 * (i - len(methods) / 2) for f, _ in points]
                ax.errorbar(xs, [c["mean"] for _, c in points], yerr=[c["half_width"] or 0 for _, c in points],
                            ls=style, marker="o" if not masked else "^", capsize=3, color=f"C{i}",
                            label=label(method, masked))
    ax.set_xlabel("forget set (% of the training set, random)")
    ax.set_ylabel("Avg. Gap to retrain (mean, 95% t interval)")
    ax.set_title("Fashion-MNIST, 3 seeds: solid no mask, dashed + saliency mask", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    return fig


def overview_figure(plt, results_dir):
    """Digits, 30 seeds: every method and arm (dense, + mask, 95% sparse), Avg. Gap with its 95% t interval
    against its cost in FT-epochs (its unlearning minutes / the minutes of one FT epoch); U-LiRA's accuracy
    (digits, K = 16) next to the name where it was measured."""
    dense, sparse = load(results_dir, "digits_random_30"), load(results_dir, "digits_sparse")
    if dense is None:
        return None
    ulira = {}
    privacy_path = os.path.join(results_dir, PRIVACY, "privacy.json")
    if os.path.exists(privacy_path):
        with open(privacy_path, encoding="utf-8") as f:
            ulira = {r["label"]: r["ulira_accuracy"] for r in json.load(f)["rows"]
                     if r.get("ulira_accuracy") is not None}
    ft = next(r for r in dense["rows"] if r["method"] == "FT" and not r["masked"])
    epoch = ft["RTE_minutes"]["mean"] / dense["meta"]["config"]["methods"]["FT"]["unlearn_epochs"]
    rows = dense["rows"] + [r for r in (sparse or {}).get("rows", []) if r["sparsity"]]
    fig, ax = plt.subplots(figsize=(9, 5))
    for r in rows:
        if r["method"] in ("raw", "retrain") or not r["avg_gap"]["values"]:
            continue
        arm = 2 if r["sparsity"] else int(r["masked"])
        ci = _interval(r["avg_gap"]["values"])
        x = max(r["RTE_minutes"]["mean"] / epoch, 1e-2)
        ax.errorbar(x, ci["mean"], yerr=ci["half_width"] or 0, fmt="os^"[arm], color=f"C{arm}", capsize=2,
                    markersize=5)
        name = display(r["method"])
        key = label(r["method"], r["masked"])
        if not r["sparsity"] and key in ulira:
            name += f" (U-LiRA {ulira[key]:.2f})"
        ax.annotate(name, (x, ci["mean"]), fontsize=6, xytext=(3, 2), textcoords="offset points")
    for arm, name in enumerate(("dense, no mask", "dense + saliency mask", "95% sparse (own gold standard)")):
        ax.errorbar([], [], fmt="os^"[arm], color=f"C{arm}", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("cost in FT-epochs (unlearning time / time of one FT epoch), log scale")
    ax.set_ylabel("Avg. Gap to the gold standard (mean, 95% t interval)")
    ax.set_title("Digits, 10% random forgetting, 30 seeds (sparse arm: FT, GA, RL, FF, IU); in brackets U-LiRA "
                 "accuracy, K = 16 (0.5 = no trace)", fontsize=9)
    ax.legend(fontsize=8)
    return fig


def figures(results_dir):
    """Write forget_fraction.png and overview.png into results_dir (those whose data exist); returns the paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    for name, make in (("forget_fraction.png", fraction_figure), ("overview.png", overview_figure)):
        fig = make(plt, results_dir)
        if fig is not None:
            fig.tight_layout()
            out.append(os.path.join(results_dir, name))
            fig.savefig(out[-1], dpi=120)
            plt.close(fig)
    return out
