"""Scalar conversions into Envoy's JSON forms."""

from __future__ import annotations


def duration(ms: int) -> str:
    """Milliseconds as a protobuf Duration string, exactly (never exponent form)."""
    s, frac = divmod(int(ms), 1000)
    return f"{s}s" if not frac else f"{s}.{frac:03d}s"


def fraction(percent: float) -> dict | None:
    """A percentage as a FractionalPercent per million, or None when it is
    finer than Envoy can express (0.0001%)."""
    n = percent * 10000
    if abs(n - round(n)) > 1e-6:
        return None
    return {"numerator": int(round(n)), "denominator": "MILLION"}


def integer_weights(weights: list[float]) -> list[int] | None:
    """Percentages as Envoy's integer cluster weights, scaled by the least
    power of ten that makes every one whole (None beyond 10^6)."""
    for scale in (1, 10, 100, 1000, 10000, 100000, 1000000):
        scaled = [w * scale for w in weights]
        if all(abs(x - round(x)) < 1e-6 for x in scaled):
            return [int(round(x)) for x in scaled]
    return None
