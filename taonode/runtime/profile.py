"""Empirical tolerance profiles (DESIGN §3 "Empirical profiles"; issue 4).

Calibration runs inputs through execution variants (:mod:`taonode.runtime.variants`). For
every op it re-executes the op *alone* under each variant on the inputs recorded by the
``default`` run (so error never accumulates across ops) and records the statistics of
``r = |Y - Y_ref| / B`` against the FP64 reference and the theoretical bound. The threshold is
``min(1, margin × max r)`` (the empirical region lies inside the theoretical one).

Segments: for each branching factor ``k``, every segment ``[a, b)`` the dispute game can visit
(the cut schedule of :mod:`taonode.protocol.schedule`) is re-executed under each variant from
the ``default`` run's frontier ``S_a``; the *frontier deviation* of ``S_b`` (below) against the
default run's ``S_b`` is recorded, threshold ``max(margin × max, SEGMENT_FLOOR)``. The segment
``[0, N)`` is the end-to-end threshold.

Frontier deviation: max over the frontier's tensors of ``max|ΔY| / max|Y|`` (∞ for a changed
integer tensor or a shape mismatch). Scale-free and cheap, and the same function the
challenger applies to the prover's frontiers.

Profile JSON (version 1, canonical = ``json.dumps(sort_keys=True, separators=(",", ":"))``;
``profile_id = keccak256(canonical bytes)``)::

    {"format": "taonode-profile", "version": 1, "model_id": "0x…", "margin": 4.0,
     "variants": [...], "hardware": [{"device", "torch", "cuda", "blas", "platform"}],
     "calibration_inputs": ["0x<input digest>", …],
     "ops": [{"index", "name", "type", "max", "p999", "p99", "mean", "count", "threshold"}],
     "segments": {"<k>": {"<a>:<b>": {"max", "count", "threshold"}}}}
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from eth_hash.auto import keccak

from taonode.protocol.consistency import carried_values, produced_values
from taonode.protocol.schedule import num_subsegments, subsegment
from taonode.protocol.votes import Verdict
from taonode.runtime import safejson
from taonode.runtime.bounds import reference_and_bound
from taonode.runtime.check import ErrorStats, OpCheck, check_op, normalized_error
from taonode.runtime.digest import tensor_digest
from taonode.runtime.execute import (
    Trace,
    op_call_fp64,
    run_segment,
    run_segment_values,
    run_traced,
    split_outputs,
)
from taonode.runtime.graph import Model
from taonode.runtime.merkle import frontier_digest
from taonode.runtime.variants import Variant

FORMAT = "taonode-profile"
VERSION = 1
DEFAULT_MARGIN = 4.0
"""Safety factor on the observed maximum. Layer-norm ``r`` is heavy-tailed across inputs: on
MiniLM a held-out input reached 2.2× the maximum over 3 calibration inputs (margin 2 gave
false positives); 4 leaves ~1.8× headroom over that."""
SEGMENT_FLOOR = 2.0**-20
"""Segment thresholds never go below ~1e-6 relative: a segment all of whose variants happened
to agree bit for bit must still tolerate another machine's last-bit differences."""


class ProfileError(ValueError):
    """A malformed profile, or one for another model."""


@dataclass(frozen=True)
class OpProfile:
    index: int
    name: str
    type: str
    stats: ErrorStats
    threshold: float


@dataclass(frozen=True)
class SegmentProfile:
    max: float
    count: int
    threshold: float


@dataclass(frozen=True)
class Profile:
    model_id: bytes
    margin: float
    variants: tuple[str, ...]
    hardware: tuple[Mapping[str, str], ...]
    calibration_inputs: tuple[bytes, ...]
    ops: tuple[OpProfile, ...]
    segments: Mapping[int, Mapping[tuple[int, int], SegmentProfile]]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "model_id": "0x" + self.model_id.hex(),
            "margin": self.margin,
            "variants": list(self.variants),
            "hardware": [dict(h) for h in self.hardware],
            "calibration_inputs": ["0x" + d.hex() for d in self.calibration_inputs],
            "ops": [
                {
                    "index": o.index,
                    "name": o.name,
                    "type": o.type,
                    "max": o.stats.max,
                    "p999": o.stats.p999,
                    "p99": o.stats.p99,
                    "mean": o.stats.mean,
                    "count": o.stats.count,
                    "threshold": o.threshold,
                }
                for o in self.ops
            ],
            "segments": {
                str(k): {
                    f"{a}:{b}": {"max": s.max, "count": s.count, "threshold": s.threshold}
                    for (a, b), s in sorted(segs.items())
                }
                for k, segs in sorted(self.segments.items())
            },
        }

    def canonical(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()

    @property
    def profile_id(self) -> bytes:
        return bytes(keccak(self.canonical()))

    def segment_threshold(self, k: int, a: int, b: int) -> float:
        segs = self.segments.get(k)
        if segs is None:
            raise ProfileError(f"profile has no segment thresholds for k={k}")
        seg = segs.get((a, b))
        if seg is None:
            raise ProfileError(f"profile has no threshold for segment [{a}, {b}) at k={k}")
        return seg.threshold

    def end_to_end_threshold(self) -> float:
        n = len(self.ops)
        for segs in self.segments.values():
            if (0, n) in segs:
                return segs[(0, n)].threshold
        raise ProfileError("profile has no end-to-end threshold")


def _float(v: Any, what: str) -> float:
    if not isinstance(v, int | float) or isinstance(v, bool):
        raise ProfileError(f"profile: {what} is not a number")
    return float(v)


def profile_from_json(doc: Any) -> Profile:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ProfileError(f"not a {FORMAT} document")
    if doc.get("version") != VERSION:
        raise ProfileError(f"unsupported profile version {doc.get('version')}")
    try:
        ops = tuple(
            OpProfile(
                index=int(o["index"]),
                name=str(o["name"]),
                type=str(o["type"]),
                stats=ErrorStats(
                    _float(o["max"], "max"),
                    _float(o["p999"], "p999"),
                    _float(o["p99"], "p99"),
                    _float(o["mean"], "mean"),
                    int(o["count"]),
                ),
                threshold=_float(o["threshold"], "threshold"),
            )
            for o in doc["ops"]
        )
        segments: dict[int, dict[tuple[int, int], SegmentProfile]] = {}
        for k, segs in doc["segments"].items():
            table: dict[tuple[int, int], SegmentProfile] = {}
            for key, s in segs.items():
                a, b = (int(x) for x in key.split(":"))
                table[(a, b)] = SegmentProfile(
                    _float(s["max"], "max"), int(s["count"]), _float(s["threshold"], "threshold")
                )
            segments[int(k)] = table
        return Profile(
            model_id=bytes.fromhex(doc["model_id"].removeprefix("0x")),
            margin=_float(doc["margin"], "margin"),
            variants=tuple(str(v) for v in doc["variants"]),
            hardware=tuple({str(k): str(v) for k, v in h.items()} for h in doc["hardware"]),
            calibration_inputs=tuple(
                bytes.fromhex(d.removeprefix("0x")) for d in doc["calibration_inputs"]
            ),
            ops=ops,
            segments=segments,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, ProfileError):
            raise
        raise ProfileError(f"malformed profile: {exc!r}") from exc


def save_profile(profile: Profile, path: str | Path) -> None:
    check_profile_values(profile)  # never write a profile that load_profile would refuse
    doc = json.dumps(profile.to_json(), indent=1, sort_keys=True, allow_nan=False)
    Path(path).write_text(doc + "\n")


PROFILE_JSON_LIMITS = safejson.JsonLimits(max_bytes=64 << 20, max_depth=8, max_elements=8 << 20)


def check_profile_values(profile: Profile) -> None:
    """Refuse thresholds that switch a check off or make it refuse everything.

    ``max > NaN`` is always false, so a NaN threshold (``calibrate --margin nan`` wrote one)
    silently disabled the empirical check; an infinite one accepts any deviation; a segment
    threshold ≤ 0 rejects every honest trace. Op thresholds may be 0 (an exact op calibrated
    with zero error) but not negative.
    """
    if not (math.isfinite(profile.margin) and profile.margin > 0):
        raise ProfileError(f"profile: margin must be finite and > 0, got {profile.margin}")
    for op in profile.ops:
        if not (math.isfinite(op.threshold) and op.threshold >= 0):
            raise ProfileError(
                f"profile: op {op.index} ({op.name}) threshold must be finite and ≥ 0, "
                f"got {op.threshold}"
            )
    for k, table in profile.segments.items():
        for (a, b), seg in table.items():
            if not (math.isfinite(seg.threshold) and seg.threshold > 0):
                raise ProfileError(
                    f"profile: segment {a}:{b} (k={k}) threshold must be finite and > 0, "
                    f"got {seg.threshold}"
                )


def load_profile(path: str | Path, model: Model | None = None) -> Profile:
    """Read a profile; with ``model``, refuse one calibrated for another model id."""
    try:
        doc = safejson.load_file(path, PROFILE_JSON_LIMITS)
    except OSError as exc:
        raise ProfileError(f"{path}: unreadable profile: {exc.strerror or exc}") from None
    except safejson.JsonLimitError as exc:
        raise ProfileError(f"{path}: unreadable profile: {exc}") from None
    profile = profile_from_json(doc)
    check_profile_values(profile)
    if model is not None:
        check_profile_model(profile, model)
    return profile


def check_profile_model(profile: Profile, model: Model) -> None:
    if profile.model_id != model.model_id:
        raise ProfileError(
            f"profile is for model 0x{profile.model_id.hex()}, not 0x{model.model_id.hex()}"
        )
    if len(profile.ops) != model.num_ops:
        raise ProfileError("profile op count differs from the model's")


def hardware_fingerprint(device: torch.device) -> dict[str, str]:
    name = platform.processor() or platform.machine()
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    blas = "unknown"
    config = torch.__config__.show()
    for key in ("BLAS_INFO", "LAPACK_INFO"):
        for line in config.splitlines():
            if key in line:
                blas = line.split("=", 1)[-1].strip()
                break
        if blas != "unknown":
            break
    return {
        "device": f"{device.type}:{name}",
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "blas": blas,
        "platform": platform.platform(),
    }


def frontier_deviation(
    claimed: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]
) -> float:
    """Max over tensors of ``max|claimed - own| / max|own|`` over finite ``own`` values.

    Non-finite values follow :func:`taonode.runtime.check.normalized_error`'s rule: NaN where
    the other side has NaN, and the same inf, are equal (0); any other NaN/inf mismatch, a
    changed integer tensor, a missing tensor or a shape/dtype mismatch is ∞. Treating equal
    NaNs as a deviation let a prover farm challenger bonds with NaN jobs: the challenger
    challenged, the committee (which treats them as equal) voted WITHIN_TOLERANCE.
    """
    worst = 0.0
    for name, y in own.items():
        c = claimed.get(name)
        if c is None or c.shape != y.shape or c.dtype != y.dtype:
            return float("inf")
        if not y.is_floating_point():
            if not torch.equal(c.to(y.device), y):
                return float("inf")
            continue
        cd, yd = c.to(y.device).double(), y.double()
        same = (cd == yd) | (torch.isnan(cd) & torch.isnan(yd))
        finite = torch.isfinite(cd) & torch.isfinite(yd)
        if bool((~same & ~finite).any()):
            return float("inf")
        diff = torch.where(same, 0.0, (cd - yd).abs())
        fy = yd[torch.isfinite(yd)]
        scale = float(fy.abs().max()) if fy.numel() else 0.0
        dmax = float(diff.max()) if diff.numel() else 0.0
        if dmax > 0:
            worst = max(worst, dmax / max(scale, 2.0**-126))
    return worst


def game_segments(n: int, k: int) -> list[tuple[int, int]]:
    """Every segment the k-ary dispute game can visit on ``[0, n)`` (the root included)."""
    out: list[tuple[int, int]] = []
    stack = [(0, n)]
    while stack:
        a, b = stack.pop()
        out.append((a, b))
        if b - a >= 2:
            for j in range(num_subsegments(a, b, k)):
                stack.append(subsegment(a, b, k, j))
    return sorted(set(out))


Progress = Callable[[str, int, int], None]


def _noop(stage: str, done: int, total: int) -> None:
    return None


def calibrate(
    model: Model,
    inputs: Sequence[Mapping[str, torch.Tensor]],
    variants: Sequence[Variant],
    ks: Sequence[int] = (2, 4),
    margin: float = DEFAULT_MARGIN,
    device: str | torch.device = "cpu",
    progress: Progress = _noop,
) -> Profile:
    """Calibrate per-op and per-segment thresholds (see the module docstring)."""
    if not inputs:
        raise ProfileError("calibration needs at least one input")
    if not variants:
        raise ProfileError("calibration needs at least one variant")
    dev = torch.device(device)
    n = model.num_ops
    per_op: list[list[torch.Tensor]] = [[] for _ in range(n)]
    segs = {k: game_segments(n, k) for k in ks}
    seg_max: dict[int, dict[tuple[int, int], float]] = {
        k: {s: 0.0 for s in v} for k, v in segs.items()
    }
    digests: list[bytes] = []
    total = len(inputs) * (n * len(variants) + sum(len(v) for v in segs.values()) * len(variants))
    done = 0
    for x in inputs:
        digests.append(
            frontier_digest([(name, tensor_digest(x[name])) for name in model.input_names])
        )
        base = run_traced(model, x, dev)
        for i in range(n):
            op_in = base.op_inputs(model, i)
            target, args, kwargs = op_call_fp64(model, i, op_in, dev)
            ref, bound = reference_and_bound(target, args, kwargs)
            refs = split_outputs(model, i, ref)
            bounds = split_outputs(model, i, bound) if len(refs) > 1 else {model.ops[i].name: bound}
            frontier = base.frontier(model, i)
            for v in variants:
                with v.active():
                    got = run_segment_values(model, i, i + 1, frontier, dev, executor=v)
                for name in model.ops[i].outputs:
                    r = normalized_error(got[name], refs[name], bounds[name])
                    per_op[i].append(r.reshape(-1).cpu())
                done += 1
                progress("ops", done, total)
        for k, seg_list in segs.items():
            for a, b in seg_list:
                start, want = base.frontier(model, a), base.frontier(model, b)
                for v in variants:
                    with v.active():
                        got_b = run_segment(model, a, b, start, dev, executor=v)
                    d = frontier_deviation(got_b, want)
                    seg_max[k][(a, b)] = max(seg_max[k][(a, b)], d)
                    done += 1
                    progress("segments", done, total)
    ops = []
    for i, op in enumerate(model.ops):
        stats = ErrorStats.of(torch.cat(per_op[i]))
        ops.append(OpProfile(i, op.name, op.target, stats, min(1.0, margin * stats.max)))
    segments = {
        k: {
            s: SegmentProfile(m, len(inputs) * len(variants), max(margin * m, SEGMENT_FLOOR))
            for s, m in table.items()
        }
        for k, table in seg_max.items()
    }
    return Profile(
        model_id=model.model_id,
        margin=margin,
        variants=tuple(v.name for v in variants),
        hardware=(hardware_fingerprint(dev),),
        calibration_inputs=tuple(digests),
        ops=tuple(ops),
        segments=segments,
    )


def merge_profiles(a: Profile, b: Profile) -> Profile:
    """Combine two calibrations of the same model (e.g. a GPU host and a CPU host).

    Statistics merge conservatively: max of maxima and percentiles, count-weighted means;
    thresholds are recomputed from the merged maxima with the larger margin.
    """
    if a.model_id != b.model_id:
        raise ProfileError("cannot merge profiles of different models")
    if len(a.ops) != len(b.ops):
        raise ProfileError("cannot merge profiles with different op counts")
    margin = max(a.margin, b.margin)
    ops = []
    for x, y in zip(a.ops, b.ops, strict=True):
        cnt = x.stats.count + y.stats.count
        mean = (x.stats.mean * x.stats.count + y.stats.mean * y.stats.count) / max(cnt, 1)
        stats = ErrorStats(
            max(x.stats.max, y.stats.max),
            max(x.stats.p999, y.stats.p999),
            max(x.stats.p99, y.stats.p99),
            mean,
            cnt,
        )
        ops.append(replace(x, stats=stats, threshold=min(1.0, margin * stats.max)))
    segments: dict[int, dict[tuple[int, int], SegmentProfile]] = {}
    for k in sorted(set(a.segments) | set(b.segments)):
        table: dict[tuple[int, int], SegmentProfile] = {}
        for key in set(a.segments.get(k, {})) | set(b.segments.get(k, {})):
            parts = [
                p for p in (a.segments.get(k, {}).get(key), b.segments.get(k, {}).get(key)) if p
            ]
            m = max(p.max for p in parts)
            table[key] = SegmentProfile(
                m, sum(p.count for p in parts), max(margin * m, SEGMENT_FLOOR)
            )
        segments[k] = table
    return Profile(
        model_id=a.model_id,
        margin=margin,
        variants=tuple(dict.fromkeys(a.variants + b.variants)),
        hardware=a.hardware + b.hardware,
        calibration_inputs=tuple(dict.fromkeys(a.calibration_inputs + b.calibration_inputs)),
        ops=tuple(ops),
        segments=segments,
    )


def apply_profile(check: OpCheck, profile: Profile) -> OpCheck:
    """Add the empirical region to a theoretical :class:`OpCheck`."""
    if check.verdict is not Verdict.WITHIN_TOLERANCE:
        return check
    threshold = profile.ops[check.index].threshold
    if check.stats.max > threshold:
        return replace(
            check,
            verdict=Verdict.EMPIRICAL_VIOLATION,
            reason=f"r max {check.stats.max:.3g} exceeds the calibrated threshold {threshold:.3g}",
        )
    return check


def check_op_with_profile(
    model: Model,
    index: int,
    inputs: Mapping[str, torch.Tensor],
    claimed: Mapping[str, torch.Tensor],
    profile: Profile,
    device: str | torch.device = "cpu",
) -> OpCheck:
    """The committee's judgement of one op: theoretical, then empirical region."""
    return apply_profile(check_op(model, index, inputs, claimed, device), profile)


def check_trace_with_profile(
    model: Model, trace: Trace, profile: Profile, device: str | torch.device = "cpu"
) -> tuple[OpCheck, ...]:
    check_profile_model(profile, model)
    return tuple(
        check_op_with_profile(
            model, i, trace.op_inputs(model, i), trace.op_outputs(model, i), profile, device
        )
        for i in range(model.num_ops)
    )


@dataclass(frozen=True)
class SegmentChoice:
    """The challenger's pick among the sub-segments of ``[a, b)``."""

    index: int
    a: int
    b: int
    excess: float
    excesses: tuple[float, ...]
    """Frontier deviation ÷ segment threshold, per sub-segment."""


def select_subsegment(
    model: Model,
    profile: Profile,
    k: int,
    a: int,
    b: int,
    frontiers: Mapping[int, Mapping[str, torch.Tensor]],
    device: str | torch.device = "cpu",
) -> SegmentChoice:
    """Re-execute every sub-segment of ``[a, b)`` from the *prover's* input frontier and pick
    the one whose output frontier deviates most relative to its calibrated threshold.

    ``frontiers`` maps each cut (``a``, the posted cuts, ``b``) to the prover's tensors.
    """
    check_profile_model(profile, model)
    s = num_subsegments(a, b, k)
    excesses = []
    for j in range(s):
        lo, hi = subsegment(a, b, k, j)
        # Carried values must pass unchanged (the leaf/cut rule of
        # taonode.protocol.consistency): a rewritten one is infinite excess. Re-execution
        # judges only the values the sub-segment produces.
        if any(
            not _bit_identical(frontiers[lo][n], frontiers[hi][n])
            for n in carried_values(model.frontiers, lo, hi)
        ):
            excesses.append(float("inf"))
            continue
        own = run_segment(model, lo, hi, frontiers[lo], device)
        produced = produced_values(model.frontiers, lo, hi)
        dev = frontier_deviation(
            {n: frontiers[hi][n] for n in produced if n in frontiers[hi]},
            {n: own[n] for n in produced},
        )
        excesses.append(dev / profile.segment_threshold(k, lo, hi))
    best = max(range(s), key=lambda j: excesses[j])
    lo, hi = subsegment(a, b, k, best)
    return SegmentChoice(best, lo, hi, excesses[best], tuple(excesses))


def _bit_identical(x: torch.Tensor, y: torch.Tensor) -> bool:
    return x.shape == y.shape and x.dtype == y.dtype and bool(torch.equal(x, y.to(x.device)))


def compare_traces(
    model: Model,
    profile: Profile,
    k: int,
    prover: Trace,
    device: str | torch.device = "cpu",
) -> SegmentChoice:
    """Challenger-side comparison of a prover's full trace: the top-level sub-segment of
    ``[0, N)`` that deviates most from the challenger's re-execution, relative to threshold."""
    n = model.num_ops
    cuts = {0, n} | {subsegment(0, n, k, j)[0] for j in range(num_subsegments(0, n, k))}
    frontiers = {c: prover.frontier(model, c) for c in cuts}
    return select_subsegment(model, profile, k, 0, n, frontiers, device)


def end_to_end_deviation(model: Model, prover: Trace, own: Trace) -> float:
    return frontier_deviation(
        prover.frontier(model, model.num_ops), own.frontier(model, model.num_ops)
    )
