"""Unlearning methods: one registry, one signature `method(model, splits, args, device, mask) -> model`, and
every fact the rest of the code asks of a method in its entry (`register`).

A method writes only what is particular to it (its loss and its batches); `loop.run` owns the optimizer,
schedule, masking, device, progress and timing.
"""
import importlib
import pkgutil

METHODS = {}
REFERENCE_SGD = (0.9, 5e-4)  # (momentum, weight decay): the reference code's defaults


def flag(name, **options):
    """A method's own command-line flag, as argparse's `add_argument(name, **options)`."""
    return name, options


def register(fn=None, *, display=None, one_shot=False, maskable=True, flags=(), sgd=REFERENCE_SGD):
    """Register an unlearning method under its function name: `@register`, or `@register(...)` with its facts,
    which the rest of the code reads from the function (`METHODS[name].one_shot`):

    display  -- its name in tables and figures (default: the registered name);
    one_shot -- it changes the weights without training: under torchrun every rank runs it (its statistics shared
                out with `distributed.all_sum`, its only collective) and takes rank 0's weights;
    maskable -- False for a method the benchmark never runs under a mask (the original model, the gold standard);
    flags    -- its own command-line flags (`flag(...)`), listed under "method options" wherever the unlearning
                flags are; a flag several methods read is declared once and given to each of them;
    sgd      -- (momentum m, weight decay wd) its authors train with, used where --momentum / --weight_decay are
                not given."""
    def add(f):
        f.display, f.one_shot, f.maskable, f.flags, f.sgd = display or f.__name__, one_shot, maskable, flags, sgd
        METHODS[f.__name__] = f
        return f

    return add(fn) if fn else add


def method_flags():
    """{flag name: add_argument options} of every registered method, each flag once, in registration order."""
    return dict(f for method in METHODS.values() for f in method.flags)


# The reference code's names for methods registered here under another name: `--unlearn` accepts them and runs
# (and records) the method they name. FT_l1 is the training that Unlearn-Sparse's and SalUn's FT_prune runs.
ALIASES = {"FT_l1": "FT_prune", "boundary_shrink": "BS", "boundary_expanding": "BE", "RL_proximal": "SalUn_soft"}


def canonical(name):
    """The registered name for `name` (itself, or the method an alias of ALIASES names)."""
    return ALIASES.get(name, name)


# Every module of the package is imported, so a method registers by being defined in any of them (a new file too).
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
