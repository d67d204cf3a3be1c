"""Every name of the two reference registries runs: the methods only the reference code had (GA_l1, FT_prune_bi,
GA_prune, GA_prune_bi) and its names for ours (unlearn.ALIASES), each on digits with and without a mask, with the
mask contract (masked-out weights bit-identical); --help names them all; an unknown name is one line."""
import re

import pytest
import torch

from commands import forget as main_forget
import trainer
from conftest import DIGITS_ARGS
from unlearn import ALIASES, METHODS
from unlearn.apply import run_name

pytestmark = pytest.mark.usefixtures("one_thread_module")

# OPTML-Group/Unlearn-Sparse's and Unlearn-Saliency's (Classification/) get_unlearn_method, but retrain_ls and
# retrain_sam (Unlearn-Sparse's retraining with label smoothing and with SAM), which are not implemented.
REGISTRIES = ["raw", "retrain", "FT", "FT_l1", "GA", "GA_l1", "RL", "fisher", "fisher_new", "wfisher", "FT_prune",
              "FT_prune_bi", "GA_prune", "GA_prune_bi", "boundary_expanding", "boundary_shrink", "RL_proximal"]
OURS_UNDER_ANOTHER_NAME = [n for n in REGISTRIES if n not in METHODS]
NEW_METHODS = ["GA_l1", "FT_prune_bi", "GA_prune", "GA_prune_bi"]
PRUNINGS = {"FT_prune_bi": 1, "GA_prune": 2, "GA_prune_bi": 2}  # at --unlearn_epochs 2, --epochs 2, --pruning_times 2
RATE = 0.3


def parse(name):
    return main_forget.parse([*DIGITS_ARGS, "--unlearn", name, "--unlearn_epochs", "2", "--unlearn_lr", "0.01",
                              "--epochs", "2", "--lr", "0.01", "--decreasing_lr", "", "--alpha", "1e-4",
                              "--rate", str(RATE), "--pruning_times", "2"])


def pruned_count(n, prunings):
    """Weights pruned out of n by `prunings` rounds of RATE of the remaining (torch rounds each round's count)."""
    total = 0
    for _ in range(prunings):
        total += round(RATE * (n - total))
    return total


def test_reference_names_are_ours_or_aliases():
    assert sorted(OURS_UNDER_ANOTHER_NAME) == sorted(ALIASES)
    assert all(m in METHODS for m in ALIASES.values())
    args = parse("boundary_shrink")
    assert args.unlearn == "BS" and run_name(args) == "BS"  # run and recorded under our name


@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
@pytest.mark.parametrize("name", OURS_UNDER_ANOTHER_NAME + NEW_METHODS)
def test_reference_name_runs_and_keeps_the_mask(setup, name, masked):
    splits, meta = setup
    args = parse(name)
    model = trainer.init_model(meta, 0, "cpu")
    g = torch.Generator().manual_seed(0)
    free = {n: torch.rand(p.shape, generator=g) < 0.5 if masked else torch.ones_like(p, dtype=torch.bool)
            for n, p in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = METHODS[args.unlearn](model, splits, args, torch.device("cpu"), free if masked else None)
    moved = zeros = allowed_conv = 0
    for n, p in out.named_parameters():
        w = p.detach()
        assert torch.equal(w[~free[n]], before[n][~free[n]]), n  # bit-identical outside the mask
        moved += int((w[free[n]] != before[n][free[n]]).sum())
        if w.dim() == 4:
            zeros += int((w[free[n]] == 0).sum())
            allowed_conv += int(free[n].sum())
    assert moved > 0.5 * sum(int(m.sum()) for m in free.values())
    # the pruning methods prune among the allowed conv weights only, and a pruned weight stays 0
    assert zeros == pruned_count(allowed_conv, PRUNINGS.get(args.unlearn, 0))


def test_help_names_every_reference_name_and_an_unknown_name_is_one_line(capsys):
    with pytest.raises(SystemExit) as done:
        main_forget.parse(["--help"])
    assert done.value.code == 0
    choices = re.search(r"--unlearn \{([^}]*)\}", capsys.readouterr().out).group(1).split(",")
    assert set(REGISTRIES) <= set(choices)
    with pytest.raises(SystemExit) as done:
        main_forget.parse(["--unlearn", "retrain_sam"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.count("\n") == 1 and "invalid choice: 'retrain_sam'" in err
