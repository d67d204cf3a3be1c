"""The trojan claim on Fashion-MNIST: does sparsity help fine-tuning remove a backdoor?

For each seed, a trojaned resnet20s is trained dense and OMP-pruned to 90% and 95% sparsity (main_backdoor.py),
then fine-tuned on the clean examples (FT, the reference's defaults: 10 epochs at lr 0.01). Attack success is
the reference's figure (percent of all triggered test images classified as the target). The table gives
mean ± std over seeds and the paired difference sparse - dense of the attack success after FT with its 95%
Student t interval. Runs are reused when rerun, so an interrupted measurement resumes.

    python scripts/trojan.py --seeds 1,2,3 --save_dir runs/trojan --out docs/results/trojan_fashionmnist
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import utils  # noqa: E402
from commands import backdoor  # noqa: E402
from suite.tables import fmt, mean_std, t_interval  # noqa: E402

DATA = ["--dataset", "fashionmnist", "--arch", "resnet20s", "--train_subset", "5000", "--input_size", "14",
        "--no-aug", "--batch_size", "128"]
TRAIN = ["--epochs", "20", "--lr", "0.1", "--decreasing_lr", "10,15"]
ATTACK = ["--num_indexes_to_replace", "450", "--class_to_replace", "0", "--trigger_size", "3",
          "--unlearn", "FT", "--unlearn_lr", "0.01", "--unlearn_epochs", "10"]
RATES = (0.0, 0.9, 0.95)
KEYS = ("test_acc", "attack_acc", "test_acc_unlearn", "attack_acc_unlearn")


def run(seed, rate, root):
    folder = os.path.join(root, f"seed_{seed}", f"rate_{rate:g}")
    path = os.path.join(folder, "eval_result.json")
    if not os.path.exists(path):
        prune = ["--prune", "omp", "--rate", str(rate)] if rate else []
        backdoor.main(DATA + TRAIN + ATTACK + prune + ["--seed", str(seed), "--train_seed", str(seed),
                                                            "--save_dir", folder])
    return utils.read_json(path)


def table(results, seeds):
    lines = ["| sparsity | seeds | test acc | attack success | test acc after FT | attack success after FT | "
             "after FT: sparse - dense (95% t interval) |", "|---|---|---|---|---|---|---|"]
    out = {}
    dense = [results[(s, 0.0)]["attack_acc_unlearn"] for s in seeds]
    for rate in RATES:
        cells = {k: dict(zip(("mean", "std"), mean_std([results[(s, rate)][k] for s in seeds]))) for k in KEYS}
        diff = t_interval([results[(s, rate)]["attack_acc_unlearn"] - d for s, d in zip(seeds, dense)])
        out[f"{rate:g}"] = {"per_seed": {str(s): {k: results[(s, rate)][k] for k in KEYS} for s in seeds},
                            "difference_to_dense": diff}
        interval = "" if not rate or diff["low"] is None else \
            f"{diff['mean']:+.2f} [{diff['low']:+.2f}, {diff['high']:+.2f}]"
        lines.append(f"| {rate:.0%} | {len(seeds)} | " + " | ".join(fmt(cells[k]) for k in KEYS) + f" | {interval} |")
    return "\n".join(lines), out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--save_dir", default="runs/trojan")
    p.add_argument("--out", default="docs/results/trojan_fashionmnist")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    start = time.time()
    results = {(s, r): run(s, r, args.save_dir) for s in seeds for r in RATES}
    md, data = table(results, seeds)
    minutes = (time.time() - start) / 60
    header = (f"# Trojan cleanse on Fashion-MNIST (FT after poisoning 450 of 4,500 training images)\n\n"
              f"`python scripts/trojan.py --seeds {args.seeds}`; this invocation took {minutes:.1f} minutes "
              f"(runs already finished are reused). Mean ± std over seeds; attack success = percent of all "
              f"triggered test images classified as the target class 0.\n\n")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".md", "w") as f:
        f.write(header + md + "\n")
    utils.write_json({"command": f"python scripts/trojan.py --seeds {args.seeds}", "rates": data},
                     args.out + ".json")
    print(header + md)


if __name__ == "__main__":
    main()
