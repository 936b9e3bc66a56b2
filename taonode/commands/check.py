"""``taonode check``: judge a trace op by op against the theoretical (and empirical) regions.

Exit 0: accepted; 3: rejected (first offending op printed); 2: bad usage or unreadable model /
missing trace. A trace whose files fail their digests is rejected (its data does not verify).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from taonode.commands.argtypes import device
from taonode.exitcodes import EXIT_OK, EXIT_REJECTED, EXIT_USAGE
from taonode.protocol.votes import Verdict
from taonode.runtime.check import OpCheck, check_trace
from taonode.runtime.graph import ModelError, load
from taonode.runtime.tracedir import TraceFormatError, load_trace


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("check", help="check a trace op by op (exit 0 accepted, 3 rejected)")
    parser.add_argument("--model", required=True, help="the .pt2 file")
    parser.add_argument("--trace", required=True, help="trace directory")
    parser.add_argument("--profile", help="empirical profile JSON (adds the empirical region)")
    parser.add_argument(
        "--device", type=device, default="cpu", help="where to compute FP64 references"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable report")
    parser.set_defaults(func=run)


def op_report(c: OpCheck) -> dict[str, Any]:
    return {
        "index": c.index,
        "name": c.name,
        "type": c.target,
        "verdict": c.verdict.name,
        "r_max": c.stats.max,
        "r_p999": c.stats.p999,
        "r_p99": c.stats.p99,
        "r_mean": c.stats.mean,
        "elements": c.stats.count,
        "reason": c.reason,
    }


def run(args: argparse.Namespace) -> int:
    try:
        model = load(args.model)
    except ModelError as exc:
        print(f"taonode check: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not (Path(args.trace) / "manifest.json").is_file():
        print(f"taonode check: {args.trace} is not a trace directory", file=sys.stderr)
        return EXIT_USAGE
    profile = None
    if args.profile:
        from taonode.runtime.profile import ProfileError, load_profile

        try:
            profile = load_profile(args.profile, model)
        except ProfileError as exc:
            print(f"taonode check: {exc}", file=sys.stderr)
            return EXIT_USAGE
    try:
        loaded = load_trace(args.trace, model)
    except TraceFormatError as exc:
        report: dict[str, Any] = {"accepted": False, "verdict": Verdict.DATA_UNAVAILABLE.name}
        report["reason"] = str(exc)
        print(json.dumps(report) if args.json else f"REJECTED: {exc}")
        return EXIT_REJECTED
    if profile is not None:
        from taonode.runtime.profile import check_trace_with_profile

        checks = check_trace_with_profile(model, loaded.trace, profile, args.device)
    else:
        checks = check_trace(model, loaded.trace, args.device)
    bad = [c for c in checks if c.verdict is not Verdict.WITHIN_TOLERANCE]
    verdict = bad[0].verdict if bad else Verdict.WITHIN_TOLERANCE
    if args.json:
        out = {
            "accepted": not bad,
            "verdict": verdict.name,
            "model_id": "0x" + model.model_id.hex(),
            "trace_root": "0x" + loaded.trace_root.hex(),
            "first_violation": op_report(bad[0]) if bad else None,
            "violations": len(bad),
            "ops": [op_report(c) for c in checks],
        }
        print(json.dumps(out, indent=1))
    elif bad:
        c = bad[0]
        print(
            f"REJECTED ({c.verdict.name}): op {c.index} {c.name} ({c.target}): {c.reason}; "
            f"r max {c.stats.max:.3g} p99.9 {c.stats.p999:.3g} p99 {c.stats.p99:.3g} "
            f"mean {c.stats.mean:.3g}; {len(bad)} offending op(s)"
        )
    else:
        worst = max(checks, key=lambda c: c.stats.max)
        print(
            f"ACCEPTED: {model.num_ops} ops within tolerance; largest r {worst.stats.max:.3g} "
            f"at op {worst.index} ({worst.target})"
        )
    return EXIT_REJECTED if bad else EXIT_OK
