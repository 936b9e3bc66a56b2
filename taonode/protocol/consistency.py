"""Leaf and cut consistency: what two frontier manifests must agree on, digests only.

Attack stopped (issue 11, "carry-over tamper"): a prover rewrites a value that passes
*unchanged* across a cut (a residual such as ``add_2`` of the reference Transformer, scaled by
1.05 from cut 14 on) and computes every later op honestly from it. Each op's own inputs and
outputs are then honest, so a committee that only re-executes op ``a`` from ``S_a`` to
``S_{a+1}`` votes WITHIN_TOLERANCE and the honest challenger loses. The rule below makes the
carried value part of what is judged:

1. **Names.** The manifest behind the frontier digest at cut ``c`` lists exactly
   ``model.frontiers[c]`` (no value missing, none extra). A missing name would hide a value;
   an extra one would let a prover smuggle a second copy of a value past the carry check.
2. **Carry.** For a segment ``[lo, hi)``, every value in both ``S_lo`` and ``S_hi`` (produced
   before ``lo`` and read at or after ``hi``: no op inside the segment may change it) has the
   same tensor digest in both manifests.

At a leaf ``[a, a+1)`` the two together say ``S_{a+1} = (S_a − values whose last reader is op
a) ∪ outputs(a)`` with identical digests for every carried value, because the model's
frontiers are built that way (:func:`taonode.runtime.graph.from_program`, checked over every
reference model in the tests). Both checks read manifests only: no tensor is fetched or
computed, so the committee and the challenger run them before any tensor math.

A break of this rule is provable from data the prover itself committed (two manifests proven
against frontier digests it posted), independent of any tolerance: the committee votes
THEORETICAL_VIOLATION, and the challenger scores the sub-segment as infinitely deviating.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from taonode.protocol.manifest import FrontierManifest

Frontiers = Sequence[Sequence[str]]
"""``model.frontiers``: the sorted value names of ``S_c`` for ``c = 0..N``."""


class CutError(ValueError):
    """A cut outside ``0..N`` or a segment with ``lo > hi`` (a caller's bug or bad chain data)."""


@dataclass(frozen=True)
class Inconsistency:
    """One break of the rule: at which cut, what kind, and a one-line description."""

    cut: int
    kind: str
    """``"names"`` (rule 1) or ``"carried"`` (rule 2)."""
    detail: str


def _check_segment(frontiers: Frontiers, lo: int, hi: int) -> None:
    n = len(frontiers) - 1
    if not 0 <= lo <= hi <= n:
        raise CutError(f"segment [{lo}, {hi}) outside 0..{n}")


def carried_values(frontiers: Frontiers, lo: int, hi: int) -> tuple[str, ...]:
    """Values that cross ``[lo, hi)`` untouched: in both ``S_lo`` and ``S_hi``.

    A value of ``S_hi`` produced inside the segment is never in ``S_lo`` (frontier values are
    produced before their cut), so the intersection is exactly "carried, not produced inside".
    """
    _check_segment(frontiers, lo, hi)
    start = set(frontiers[lo])
    return tuple(name for name in frontiers[hi] if name in start)


def produced_values(frontiers: Frontiers, lo: int, hi: int) -> tuple[str, ...]:
    """Values of ``S_hi`` the segment produces (``S_hi − S_lo``): the only ones re-execution
    judges; the carried ones are judged by digest."""
    _check_segment(frontiers, lo, hi)
    start = set(frontiers[lo])
    return tuple(name for name in frontiers[hi] if name not in start)


def manifest_names_problem(
    frontiers: Frontiers, cut: int, manifest: FrontierManifest
) -> Inconsistency | None:
    """Rule 1 at ``cut``: ``None`` when the manifest lists exactly ``frontiers[cut]``."""
    _check_segment(frontiers, cut, cut)
    want = set(frontiers[cut])
    have = set(manifest.names())
    if want == have:
        return None
    missing = sorted(want - have)
    extra = sorted(have - want)
    parts = []
    if missing:
        parts.append(f"missing {missing[:4]}{'…' if len(missing) > 4 else ''}")
    if extra:
        parts.append(f"extra {extra[:4]}{'…' if len(extra) > 4 else ''}")
    return Inconsistency(cut, "names", f"manifest at cut {cut}: " + ", ".join(parts))


def segment_inconsistencies(
    frontiers: Frontiers,
    lo: int,
    hi: int,
    start: FrontierManifest,
    end: FrontierManifest,
) -> list[Inconsistency]:
    """Every break of rules 1 and 2 for the manifests at ``lo`` and ``hi`` (empty: consistent).

    Names are checked first at both ends; the carry check runs only when both name sets are
    right (with a wrong name set "carried" is not well defined, and the break is already
    proven).
    """
    _check_segment(frontiers, lo, hi)
    problems = [
        p
        for p in (
            manifest_names_problem(frontiers, lo, start),
            manifest_names_problem(frontiers, hi, end),
        )
        if p is not None
    ]
    if problems:
        return problems
    before = dict(start.entries)
    after = dict(end.entries)
    for name in carried_values(frontiers, lo, hi):
        if before[name] != after[name]:
            problems.append(
                Inconsistency(
                    hi,
                    "carried",
                    f"{name} is carried across [{lo}, {hi}) but its digest changes "
                    f"({before[name].hex()[:12]}… → {after[name].hex()[:12]}…)",
                )
            )
    return problems


def leaf_inconsistencies(
    frontiers: Frontiers, op: int, before: FrontierManifest, after: FrontierManifest
) -> list[Inconsistency]:
    """The committee's manifest check at leaf ``op``: ``S_op`` → ``S_{op+1}``."""
    return segment_inconsistencies(frontiers, op, op + 1, before, after)
