"""Unlearning methods: one registry, one signature `method(model, splits, args, device, mask) -> model`.

A method writes only what is particular to it (its loss and its batches); `loop.run` owns the optimizer,
schedule, masking, device, progress and timing.
"""
METHODS = {}


def register(fn):
    """Register an unlearning method under its function name."""
    METHODS[fn.__name__] = fn
    return fn


from unlearn import methods, fisher, influence, baselines, boundary  # noqa: E402,F401  (registration)
