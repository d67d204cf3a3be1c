"""`benchmark.py --privacy K --seeds ...`: U-LiRA across forget sets (suite/privacy.py runs each seed).

Per row of the seeds' tables (retrain aside): the U-LiRA accuracy (percent) and AUC of every seed, their mean and
95% Student t interval over seeds; per method run both ways: the per-seed difference mask - no mask, paired by
seed, with its interval (suite/tables.py's t_interval and paired).
"""
from suite import tables
from suite.presets import REFERENCE

SUMMARY = (("ulira_accuracy_percent", "ulira_accuracy", 100.0, "U-LiRA acc. (%)", 1),
           ("ulira_auc", "ulira_auc", 1.0, "U-LiRA AUC", 3))  # key, row's key, scale, title, digits

SUMMARY_NOTES = """Each seed draws its own split and forget set and makes its own K original, K retrained and
K unlearned models per row (its table below). Per row: the U-LiRA accuracy and AUC of every seed (in the order
of Seeds), their mean ± sample standard deviation and the 95% Student t interval of the mean over seeds, n - 1
degrees of freedom (t = 12.71, 4.30, 3.18 for 2, 3, 4 seeds). Mask - no mask: per seed the row with the
saliency mask minus the row without, paired by seed, with its 95% t interval; an interval that excludes 0 says
the mask moves the attack on forget sets drawn like these. A seed where a row failed is left out of that row."""


def summary(per_seed):
    """[(seed, rows)] -> per row (retrain aside) its U-LiRA accuracy (percent) and AUC per seed with the mean's
    t interval, and per method run both ways the paired difference mask - no mask with its interval."""
    rows = {}
    for seed, seed_rows in per_seed:
        for r in seed_rows:
            if r["method"] == REFERENCE:
                continue
            entry = rows.setdefault((r["method"], r["masked"]), {
                "label": r["label"], "method": r["method"], "masked": r["masked"],
                **{key: {"seeds": [], "values": []} for key, *_ in SUMMARY}})
            if "failed" in r:
                continue
            for key, source, scale, *_ in SUMMARY:
                entry[key]["seeds"].append(seed)
                entry[key]["values"].append(r[source] * scale)
    for entry in rows.values():
        for key, *_ in SUMMARY:
            entry[key].update(tables.t_interval(entry[key]["values"]))
    masking = [{"method": method, "label": entry["label"],
                "comparison": f"{rows[(method, True)]['label']} - {entry['label']}",
                **{key: tables.paired(entry[key], rows[(method, True)][key]) for key, *_ in SUMMARY}}
               for (method, masked), entry in rows.items() if not masked and (method, True) in rows]
    return {"rows": list(rows.values()), "masking": masking}


def summary_md(data):
    def line(entry):
        out = [entry["label"], ", ".join(map(str, entry[SUMMARY[0][0]]["seeds"]))]
        for key, *_, digits in SUMMARY:
            stat = entry[key]
            out += [" / ".join(f"{v:.{digits}f}" for v in stat["values"]) or "—", tables.fmt(stat, digits),
                    tables._interval_cell(stat, digits)]
        return out

    head = [h for *_, title, _ in SUMMARY for h in (f"{title} per seed", "mean ± std", "95% CI")]
    out = ["## U-LiRA across forget sets", "",
           tables._md_table(["Method", "Seeds"] + head, [line(r) for r in data["rows"]]), ""]
    if data["masking"]:
        out += ["## Mask - no mask, paired by seed", "",
                tables._md_table(["Method", "Paired seeds"] + head, [line(m) for m in data["masking"]]), ""]
    return "\n".join(out + [SUMMARY_NOTES])
