"""Unlearning methods: one registry, one signature `method(model, splits, args, device, mask) -> model`.

A method writes only what is particular to it (its loss and its batches); `loop.run` owns the optimizer,
schedule, masking, device, progress and timing.
"""
METHODS = {}
REFERENCE_SGD = (0.9, 5e-4)  # (momentum, weight decay): the reference code's defaults


def register(fn=None, *, sgd=REFERENCE_SGD):
    """Register an unlearning method under its function name: `@register`, or `@register(sgd=(m, wd))` for a
    method whose authors train with momentum m and weight decay wd (used where --momentum / --weight_decay are
    not given; `fn.sgd`)."""
    def add(f):
        f.sgd = sgd
        METHODS[f.__name__] = f
        return f

    return add(fn) if fn else add


# The reference code's names for methods registered here under another name: `--unlearn` accepts them and runs
# (and records) the method they name. FT_l1 is the training that Unlearn-Sparse's and SalUn's FT_prune runs.
ALIASES = {"FT_l1": "FT_prune", "boundary_shrink": "BS", "boundary_expanding": "BE", "RL_proximal": "SalUn_soft"}


def canonical(name):
    """The registered name for `name` (itself, or the method an alias of ALIASES names)."""
    return ALIASES.get(name, name)


from unlearn import methods, fisher, influence, baselines, boundary, pruning  # noqa: E402,F401  (registration)
