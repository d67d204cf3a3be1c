"""Replace some methods' rows of a committed benchmark table with those of a re-run of only these methods, or
drop them (when they were re-run as a table of their own on another machine, whose gold standards differ).

    python scripts/update_rows.py docs/results/digits_random_30 runs/digits_random_30_euk --methods EU_k
    python scripts/update_rows.py docs/results/fashionmnist_random_baselines --methods SSD --drop

The re-run (benchmark.py --methods M,... with the table's preset, scenario and seeds) trains the same original
models and gold standards again; they are compared with the table's: every seed's retrain summary must be equal
to the last bit (the same code and machine reproduce them), else the rows could not be compared and nothing is
written. Then the methods' runs (both arms) and failures are replaced, the table's recorded configuration takes
the re-run's values for them, and results.md, .csv, .json and the plots are written again in the table's folder.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import utils  # noqa: E402
from suite import tables  # noqa: E402
from suite.presets import REFERENCE, flags  # noqa: E402
from utils import UserError  # noqa: E402


def _load(folder):
    return utils.read_json(os.path.join(folder, "results.json"), "benchmark results")


def _gold(data):
    return {r["seed"]: r["summary"] for r in data["runs"] if r["method"] == REFERENCE and not r.get("sparsity")}


def _write(table_dir, table, runs, failures, plots):
    published = any(row["published"] for row in table["rows"])
    rows = tables.aggregate(runs, failures, published)
    written = tables.write_outputs(table_dir, table["meta"], rows, tables.masking_table(rows), runs, failures, plots)
    print("wrote " + ", ".join(written))
    return rows


def drop(table_dir, methods, plots=True):
    table = _load(table_dir)
    missing = [m for m in methods if not any(r["method"] == m for r in table["runs"])]
    if missing or REFERENCE in methods:
        raise UserError(f"the table has no run of {missing[0]} to drop" if missing else "the gold standard stays")
    cfg = table["meta"]["config"]
    cfg["run_methods"] = [m for m in cfg["run_methods"] if m not in methods]
    table["meta"]["settings"]["methods"] = "; ".join(f"{m}: {' '.join(flags(cfg['methods'][m])) or '-'}"
                                                     for m in cfg["run_methods"])
    return _write(table_dir, table, [r for r in table["runs"] if r["method"] not in methods],
                  [f for f in table["failed"] if f["method"] not in methods], plots)


def update(table_dir, rerun_dir, methods, plots=True):
    table, rerun = _load(table_dir), _load(rerun_dir)
    old, new = _gold(table), _gold(rerun)
    if sorted(new) != sorted(old):
        raise UserError(f"the re-run has seeds {sorted(new)}, the table {sorted(old)}")
    differ = [s for s in old if {k: v for k, v in new[s].items() if k != "RTE_minutes"} !=
              {k: v for k, v in old[s].items() if k != "RTE_minutes"}]
    if differ:
        raise UserError(f"seed {differ[0]}: the re-run's retrained model differs from the table's; re-run the "
                        "whole table instead")
    missing = [m for m in methods if not any(r["method"] == m for r in rerun["runs"])]
    if missing:
        raise UserError(f"the re-run has no run of {missing[0]}")
    keep = lambda r: r["method"] not in methods  # noqa: E731
    runs = [r for r in table["runs"] if keep(r)] + [r for r in rerun["runs"] if not keep(r)]
    failures = [f for f in table["failed"] if keep(f)] + [f for f in rerun["failed"] if not keep(f)]
    meta = table["meta"]
    cfg = meta["config"]
    for m in methods:
        cfg["methods"][m] = rerun["meta"]["config"]["methods"][m]
    settings = meta["settings"]
    settings["methods"] = "; ".join(f"{m}: {' '.join(flags(cfg['methods'][m])) or '-'}" for m in cfg["run_methods"])
    settings["time"] += f"; {', '.join(methods)} re-run (scripts/update_rows.py): {rerun['meta']['settings']['time']}"
    return _write(table_dir, table, runs, failures, plots)


@utils.cli
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", help="folder of the committed table (results.json)")
    p.add_argument("rerun", nargs="?", help="save_dir of the re-run of some of its methods")
    p.add_argument("--methods", required=True, type=lambda t: [m for m in t.split(",") if m])
    p.add_argument("--drop", action="store_true", help="remove the methods' rows instead (no re-run)")
    p.add_argument("--no-plots", dest="plots", action="store_false")
    args = p.parse_args(argv)
    if args.drop == bool(args.rerun):
        raise UserError("give either a re-run folder or --drop")
    if args.drop:
        return drop(args.table, args.methods, args.plots)
    return update(args.table, args.rerun, args.methods, args.plots)


if __name__ == "__main__":
    main()
