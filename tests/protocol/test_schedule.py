from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taonode.protocol.schedule import ScheduleError, cuts, max_rounds, num_subsegments, subsegment


@given(st.integers(0, 10_000), st.integers(2, 5000), st.integers(2, 16))
def test_cuts_partition_segment_succeeds(a: int, length: int, k: int) -> None:
    b = a + length
    bounds = [a, *cuts(a, b, k), b]
    assert len(bounds) - 1 == num_subsegments(a, b, k) == min(k, length)
    assert all(lo < hi for lo, hi in itertools.pairwise(bounds))
    sizes = [hi - lo for lo, hi in itertools.pairwise(bounds)]
    assert max(sizes) - min(sizes) <= 1
    for j in range(len(bounds) - 1):
        assert subsegment(a, b, k, j) == (bounds[j], bounds[j + 1])


@given(st.integers(1, 100_000), st.integers(2, 16))
def test_max_rounds_is_ceil_log_succeeds(n: int, k: int) -> None:
    expected = 0 if n == 1 else math.ceil(math.log(n, k) - 1e-9)
    assert max_rounds(n, k) == expected


def test_cuts_single_op_reverts() -> None:
    with pytest.raises(ScheduleError):
        cuts(3, 4, 8)
    with pytest.raises(ScheduleError):
        cuts(0, 10, 1)
