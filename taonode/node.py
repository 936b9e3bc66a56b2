"""Composition root: builds the node from config and supervises its components."""

from __future__ import annotations

import sys

from taonode.exitcodes import EXIT_USAGE


def run_daemon(
    config_path: str,
    roles: tuple[str, ...] | None,
    log_format: str | None,
    log_level: str | None,
) -> int:
    print("taonode: the daemon has not landed in this build", file=sys.stderr)
    return EXIT_USAGE
