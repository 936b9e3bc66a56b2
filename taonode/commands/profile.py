"""``taonode profile``: show and merge empirical tolerance profiles."""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict

from taonode.commands.argtypes import out_path
from taonode.exitcodes import EXIT_OK, EXIT_USAGE
from taonode.runtime.profile import ProfileError, load_profile, merge_profiles, save_profile


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("profile", help="show and merge tolerance profiles")
    verbs = parser.add_subparsers(dest="profile_command", metavar="VERB", required=True)
    show = verbs.add_parser("show", help="summary table of a profile")
    show.add_argument("profile")
    show.set_defaults(func=run_show)
    merge = verbs.add_parser("merge", help="combine calibrations of one model")
    merge.add_argument("profiles", nargs="+")
    merge.add_argument("--out", type=out_path, required=True)
    merge.set_defaults(func=run_merge)


def run_show(args: argparse.Namespace) -> int:
    try:
        p = load_profile(args.profile)
    except ProfileError as exc:
        print(f"taonode profile show: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"profile_id  0x{p.profile_id.hex()}")
    print(f"model_id    0x{p.model_id.hex()}")
    print(f"margin      {p.margin}   variants {', '.join(p.variants)}")
    for h in p.hardware:
        print(f"hardware    {h.get('device')} torch {h.get('torch')} cuda {h.get('cuda')}")
    print(f"inputs      {len(p.calibration_inputs)}")
    by_type: dict[str, list[float]] = defaultdict(list)
    thr: dict[str, list[float]] = defaultdict(list)
    for o in p.ops:
        by_type[o.type].append(o.stats.max)
        thr[o.type].append(o.threshold)
    print(f"{'op type':45} {'ops':>4} {'max r':>10} {'threshold':>10} {'tightness':>10}")
    for t in sorted(by_type):
        worst_thr = max(thr[t])
        tight = f"{1 / worst_thr:10.1f}" if worst_thr > 0 else f"{'exact':>10}"
        print(f"{t:45} {len(by_type[t]):4d} {max(by_type[t]):10.3g} {worst_thr:10.3g} {tight}")
    for k, segs in sorted(p.segments.items()):
        worst = max(s.threshold for s in segs.values())
        print(f"segments k={k}: {len(segs)} thresholds, largest {worst:.3g}")
    print(f"end-to-end threshold {p.end_to_end_threshold():.3g}")
    return EXIT_OK


def run_merge(args: argparse.Namespace) -> int:
    try:
        profiles = [load_profile(path) for path in args.profiles]
        merged = profiles[0]
        for other in profiles[1:]:
            merged = merge_profiles(merged, other)
    except ProfileError as exc:
        print(f"taonode profile merge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    save_profile(merged, args.out)
    print(f"wrote {args.out}: profile_id 0x{merged.profile_id.hex()}")
    return EXIT_OK
