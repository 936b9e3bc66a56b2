"""Shared test configuration."""

from __future__ import annotations

import os

# Tests run on 2 cores next to each other; keep torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "1")
