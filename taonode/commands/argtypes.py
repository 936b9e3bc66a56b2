"""argparse ``type=`` checkers: a bad option is refused by the parser (exit 2, one line)
before any work starts, instead of failing later with a traceback."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path


def int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be ≥ {low}, got {value}")
        return value

    return parse


def k_factor(text: str) -> int:
    """A game branching factor: the contracts take 2 ≤ k ≤ 255."""
    value = int_at_least(2)(text)
    if value > 255:
        raise argparse.ArgumentTypeError(f"must be ≤ 255, got {value}")
    return value


def finite_float(low: float, *, inclusive: bool = True) -> Callable[[str], float]:
    """Refuses NaN and ±inf: ``--margin nan`` wrote a profile whose checks never fire."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if value < low or (not inclusive and value == low):
            raise argparse.ArgumentTypeError(f"must be {'≥' if inclusive else '>'} {low}")
        return value

    return parse


def device(text: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` — and the device must exist on this machine."""
    if text == "cpu":
        return text
    if text != "cuda" and not (text.startswith("cuda:") and text[5:].isdigit()):
        raise argparse.ArgumentTypeError(f'{text!r}: must be "cpu", "cuda" or "cuda:N"')
    import torch

    if not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: CUDA is not available on this machine")
    index = int(text[5:]) if ":" in text else 0
    if index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(
            f"{text}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return text


def out_path(text: str) -> str:
    """A file or directory to create: its parent folder must exist (no silent ``mkdir -p``)."""
    path = Path(text)
    parent = path.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: folder {parent} does not exist")
    if path.is_dir() and not path.suffix == "":
        raise argparse.ArgumentTypeError(f"{text} is a folder")
    return text
