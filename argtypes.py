"""Checked argument types for argparse: numbers within bounds, epoch lists, mask ratios (one line per bad value)."""
import argparse
import math


def _number(kind, low=None, high=None, low_open=False, high_open=False):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a valid {kind.__name__}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"'{text}' is not a finite number")
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            lo = "-inf" if low is None else f"{'(' if low_open else '['}{low}"
            hi = "inf)" if high is None else f"{high}{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"{text} is outside {lo}, {hi}")
        return value

    parse.__name__ = kind.__name__
    return parse


nonneg_int = _number(int, 0)
pos_int = _number(int, 1)
nonneg_float = _number(float, 0.0)
pos_float = _number(float, 0.0, low_open=True)
fraction = _number(float, 0.0, 1.0, low_open=True, high_open=True)  # (0, 1)
ratio = _number(float, 0.0, 1.0, low_open=True)  # (0, 1]
probability = _number(float, 0.0, 1.0)  # [0, 1]


def milestones(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of epochs") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"'{text}' holds a negative epoch")
    return values


def ratios(text):
    try:
        return [ratio(v) for v in text.split(",") if v.strip()]
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"mask ratio {err}") from None
