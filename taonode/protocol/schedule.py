"""The dispute game's cut schedule (normative: the contracts compute the same numbers).

A segment ``[a, b)`` of ops with ``b - a >= 2`` is split into ``s = min(k, b - a)`` sub-segments
of near-equal length by the cuts ``c_i = a + floor(i * (b - a) / s)`` for ``i = 1 .. s-1``.
Sub-segment ``j`` (0-based) is ``[c_j, c_{j+1})`` with ``c_0 = a`` and ``c_s = b``. Every
sub-segment is non-empty, and the game ends at a segment of length 1 after ``ceil(log_k N)``
rounds at most.
"""

from __future__ import annotations


class ScheduleError(ValueError):
    """A segment or branching factor the game cannot split."""


def _check(a: int, b: int, k: int) -> None:
    if k < 2:
        raise ScheduleError(f"k must be at least 2, got {k}")
    if a < 0 or b - a < 2:
        raise ScheduleError(f"segment [{a}, {b}) cannot be split")


def num_subsegments(a: int, b: int, k: int) -> int:
    _check(a, b, k)
    return min(k, b - a)


def cuts(a: int, b: int, k: int) -> list[int]:
    """The interior cuts the prover must post for segment ``[a, b)``."""
    s = num_subsegments(a, b, k)
    return [a + (i * (b - a)) // s for i in range(1, s)]


def subsegment(a: int, b: int, k: int, index: int) -> tuple[int, int]:
    """Bounds of sub-segment ``index`` of ``[a, b)``."""
    bounds = [a, *cuts(a, b, k), b]
    if not 0 <= index < len(bounds) - 1:
        raise ScheduleError(f"sub-segment {index} outside 0..{len(bounds) - 2}")
    return bounds[index], bounds[index + 1]


def max_rounds(num_ops: int, k: int) -> int:
    """Rounds needed to narrow ``[0, num_ops)`` to one op (the worst case over choices)."""
    if num_ops < 1:
        raise ScheduleError("a model has at least one op")
    rounds = 0
    longest = num_ops
    while longest > 1:
        s = min(k, longest)
        longest = -(-longest // s)
        rounds += 1
    return rounds
