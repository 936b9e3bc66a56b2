"""Process exit codes, documented in the README and ``taonode --help``."""

EXIT_OK = 0
"""Clean stop, or a command that succeeded (``check``: the trace is accepted)."""
EXIT_RUNTIME = 1
"""A failure while running: a crashed component, an unreachable dependency."""
EXIT_USAGE = 2
"""Bad usage or configuration: nothing was started."""
EXIT_REJECTED = 3
"""``taonode check``: the trace was rejected."""
