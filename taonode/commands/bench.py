"""``taonode bench``: run benchmarks."""

from taonode.commands._placeholder import placeholder

register = placeholder("bench", "run benchmarks")
