"""The trojan claim on Fashion-MNIST: does sparsity help fine-tuning remove a backdoor?

For each seed, a trojaned resnet20s is trained dense and OMP-pruned to 90% and 95% sparsity (main_backdoor.py,
which then runs FT with the reference's defaults: 10 epochs at lr 0.01). Every other point of the grid
--lrs x --epochs fine-tunes the same trojaned model again (--model_path; pruned weights stay zero). Attack
success is the reference's figure (percent of all triggered test images classified as the target). The tables
give mean ± std over seeds and, per grid point, the paired difference sparse - dense of the attack success after
FT with its 95% Student t interval. Runs are reused when rerun, so an interrupted measurement resumes;
--jobs N makes N runs at once in worker processes (one torch thread each).

    python scripts/trojan.py --seeds 1,2,3 --lrs 0.01,0.03,0.1,0.3 --epochs 10,20 --jobs 2 \\
        --save_dir runs/trojan --out docs/results/trojan_fashionmnist
"""
import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import utils  # noqa: E402
from suite.tables import fmt, mean_std, t_interval  # noqa: E402

DATA = ["--dataset", "fashionmnist", "--arch", "resnet20s", "--train_subset", "5000", "--input_size", "14",
        "--no-aug", "--batch_size", "128"]
TRAIN = ["--epochs", "20", "--lr", "0.1", "--decreasing_lr", "10,15"]
ATTACK = ["--num_indexes_to_replace", "450", "--class_to_replace", "0", "--trigger_size", "3", "--unlearn", "FT"]
DEFAULT_FT = (0.01, 10)  # the reference's FT: lr, epochs
RATES = (0.0, 0.9, 0.95)
BEFORE = ("test_acc", "attack_acc")
AFTER = ("test_acc_unlearn", "attack_acc_unlearn")


def csv_of(kind):
    return lambda text: [kind(v) for v in text.split(",")]


def folder(root, seed, rate):
    return os.path.join(root, f"seed_{seed}", f"rate_{rate:g}")


def trojaned_model(root, seed, rate):
    """The trojaned (and pruned) model main_backdoor.py trained in folder(): OMP's last state, or the dense one."""
    return os.path.join(folder(root, seed, rate), "state_1" if rate else "state_0", "checkpoint.pt")


def run(task):
    """One run of main_backdoor.py; its eval_result.json (reused when it exists)."""
    seed, rate, lr, epochs, root = task
    ft = ["--unlearn_lr", f"{lr:g}", "--unlearn_epochs", str(epochs)]
    common = DATA + TRAIN + ATTACK + ft + ["--seed", str(seed), "--train_seed", str(seed)]
    if (lr, epochs) == DEFAULT_FT:
        out = folder(root, seed, rate)
        argv = common + (["--prune", "omp", "--rate", str(rate)] if rate else []) + ["--save_dir", out]
    else:
        out = os.path.join(folder(root, seed, rate), f"ft_lr{lr:g}_ep{epochs}")
        argv = common + ["--model_path", trojaned_model(root, seed, rate), "--save_dir", out]
    path = os.path.join(out, "eval_result.json")
    if not os.path.exists(path):
        from commands import backdoor
        backdoor.main(argv)
    return utils.read_json(path)


def _one_thread():
    import torch
    torch.set_num_threads(1)


def run_all(tasks, jobs):
    if jobs <= 1:
        return [run(t) for t in tasks]
    with ProcessPoolExecutor(jobs, initializer=_one_thread) as pool:
        return list(pool.map(run, tasks))


def cell(results, seeds, rate, key):
    return fmt(dict(zip(("mean", "std"), mean_std([results[(s, rate)][key] for s in seeds]))))


def tables(results, seeds, points):
    """Markdown of the trojaned models and of every grid point; the same numbers as a dict."""
    first = results[points[0]]
    lines = ["| sparsity | seeds | test acc | attack success |", "|---|---|---|---|"]
    lines += [f"| {rate:.0%} | {len(seeds)} | " + " | ".join(cell(first, seeds, rate, k) for k in BEFORE) + " |"
              for rate in RATES]
    lines += ["", "| FT lr | FT epochs | sparsity | test acc after FT | attack success after FT | "
              "after FT: sparse - dense (95% t interval) |", "|---|---|---|---|---|---|"]
    out = {}
    for lr, epochs in points:
        res = results[(lr, epochs)]
        dense = [res[(s, 0.0)]["attack_acc_unlearn"] for s in seeds]
        for rate in RATES:
            diff = t_interval([res[(s, rate)]["attack_acc_unlearn"] - d for s, d in zip(seeds, dense)])
            out[f"lr{lr:g}_ep{epochs}_rate{rate:g}"] = {
                "lr": lr, "epochs": epochs, "rate": rate, "difference_to_dense": diff,
                "per_seed": {str(s): {k: res[(s, rate)][k] for k in BEFORE + AFTER} for s in seeds}}
            interval = "" if not rate or diff["low"] is None else \
                f"{diff['mean']:+.2f} [{diff['low']:+.2f}, {diff['high']:+.2f}]"
            lines.append(f"| {lr:g} | {epochs} | {rate:.0%} | " +
                         " | ".join(cell(res, seeds, rate, k) for k in AFTER) + f" | {interval} |")
    return "\n".join(lines), out


def plot(path, data, points):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for rate in RATES:
        for epochs in sorted({e for _, e in points}):
            xs = sorted(lr for lr, e in points if e == epochs)
            rows = [data[f"lr{lr:g}_ep{epochs}_rate{rate:g}"]["per_seed"].values() for lr in xs]
            for ax, key in zip(axes, AFTER):
                ys = [mean_std([r[key] for r in row])[0] for row in rows]
                ax.plot(xs, ys, marker="o", label=f"{rate:.0%} sparse, {epochs} epochs")
    for ax, title in zip(axes, ("test accuracy after FT (%)", "attack success after FT (%)")):
        ax.set_xscale("log")
        ax.set_xlabel("FT learning rate")
        ax.set_title(title)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=csv_of(int), default=[1, 2, 3])
    p.add_argument("--lrs", type=csv_of(float), default=[DEFAULT_FT[0]], help="FT learning rates")
    p.add_argument("--epochs", type=csv_of(int), default=[DEFAULT_FT[1]], help="FT epochs")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, in worker processes")
    p.add_argument("--save_dir", default="runs/trojan")
    p.add_argument("--out", default="docs/results/trojan_fashionmnist")
    args = p.parse_args()
    points = [DEFAULT_FT] + sorted({(lr, e) for lr in args.lrs for e in args.epochs} - {DEFAULT_FT})
    start = time.time()
    first = [(s, r, *DEFAULT_FT, args.save_dir) for s in args.seeds for r in RATES]
    done = dict(zip(first, run_all(first, args.jobs)))  # the trojaned models, before the grid fine-tunes them
    rest = [(s, r, lr, e, args.save_dir) for lr, e in points[1:] for s in args.seeds for r in RATES]
    done.update(zip(rest, run_all(rest, args.jobs)))
    results = {(lr, e): {(s, r): done[(s, r, lr, e, args.save_dir)] for s in args.seeds for r in RATES}
               for lr, e in points}
    md, data = tables(results, args.seeds, points)
    command = "python scripts/trojan.py " + " ".join(
        f"--{k} {','.join(f'{v:g}' for v in getattr(args, k))}" for k in ("seeds", "lrs", "epochs"))
    header = (f"# Trojan cleanse on Fashion-MNIST (FT after poisoning 450 of 4,500 training images)\n\n"
              f"`{command}`; this invocation took {(time.time() - start) / 60:.1f} minutes (runs already "
              f"finished are reused). Mean ± std over seeds; attack success = percent of all triggered test "
              f"images classified as the target class 0. The trojaned models (before FT):\n\n")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".md", "w") as f:
        f.write(header + md + "\n")
    utils.write_json({"command": command, "points": data}, args.out + ".json")
    if len(points) > 1:
        plot(args.out + ".png", data, points)
    print(header + md)


if __name__ == "__main__":
    main()
