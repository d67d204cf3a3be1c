"""A method's facts live in its registry entry: adding one is a function in unlearn/ with @register (display name,
one-shot or trained, maskable, its own flags) plus a preset entry, and the command line, tables, benchmark plan
and main_forget.py then know it (docs/methods.md, "Adding a method")."""
import contextlib
import io
import json

import pytest
import torch

import benchmark
from commands import forget as main_forget
from conftest import DIGITS_ARGS
from suite.presets import METHOD_ORDER, PRESETS, label, order_key
from suite.runs import plan
from unlearn import ALIASES, METHODS, flag, register
from unlearn.apply import run_name


@pytest.fixture
def toy(monkeypatch):
    """A one-shot method that scales the weights its mask allows by --toy_scale, and its digits preset entry."""

    @register(display="Toy", one_shot=True, flags=[flag("--toy_scale", type=float, default=1.0,
                                                         help="toy: factor of the weights the mask allows")])
    def toy(model, splits, args, device, mask, run_dir=None):
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.mul_(torch.where(mask[name], args.toy_scale, 1.0) if mask and name in mask else args.toy_scale)
        return model

    monkeypatch.setitem(PRESETS["digits"]["methods"], "toy", {"toy_scale": 0.5})
    yield toy
    del METHODS["toy"]


def help_text():
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main_forget.parse(["--help"])
    return out.getvalue()


def test_help_lists_every_method_alias_and_method_flag():
    text = help_text()
    for name in list(METHODS) + list(ALIASES):
        assert name in text
    for method in METHODS.values():
        for name, _ in method.flags:
            assert name in text


def test_a_new_method_is_known_to_the_command_line_tables_and_benchmark(toy, tmp_path):
    args = main_forget.parse(["--unlearn", "toy", "--toy_scale", "0.5"])
    assert args.unlearn == "toy" and args.toy_scale == 0.5 and run_name(args) == "toy"
    assert "--toy_scale" in help_text() and main_forget.parse([]).toy_scale == 1.0
    assert label("toy", True) == "Toy + mask" and order_key("toy", False)[0] == len(METHOD_ORDER)  # last row
    cfg = benchmark.resolve(benchmark.parse(["--seeds", "1,", "--methods", "toy", "--save_dir", str(tmp_path)]))
    runs = [r for r in plan(cfg, str(tmp_path)) if r.method == "toy"]
    assert [r.masked for r in runs] == [False, True]
    assert all(r.argv[r.argv.index("--toy_scale") + 1] == "0.5" for r in runs)


def test_a_new_method_runs_through_main_forget(toy, digits_run, tmp_path):
    result = main_forget.main([*DIGITS_ARGS, "--unlearn", "toy", "--toy_scale", "0.5", "--mask_ratio", "0.5",
                               "--num_indexes_to_replace", "40", "--model_path", str(digits_run.checkpoint),
                               "--save_dir", str(tmp_path), "--fast_eval"])
    assert result["run"]["unlearn"] == "toy"
    run_dir = tmp_path / "toy_saliency_0.5"
    mask = torch.load(run_dir / "mask.pt", weights_only=True)
    before = torch.load(digits_run.checkpoint, weights_only=True)["state_dict"]
    after = torch.load(run_dir / "checkpoint.pt", weights_only=True)["state_dict"]
    for name, m in mask.items():
        assert torch.equal(after[name], torch.where(m, before[name] * 0.5, before[name]))
    assert json.loads((run_dir / "args.json").read_text())["toy_scale"] == 0.5
