"""The devnet's adversary section: for every scenario, every party whose money moved."""

from __future__ import annotations

from collections.abc import Sequence

from taonode.adversary.strategy import Outcome

ETHER = 10**18


def adversary_table(
    scenarios: Sequence[tuple[str, Outcome | None, bool]], labels: dict[str, str]
) -> list[str]:
    """Rows ``scenario | party | side | Δ ETH | what happened`` (protocol flows, gas excluded)."""
    rows: list[tuple[str, str, str, str, str]] = [
        ("scenario", "party", "side", "Δ ETH", "what happened")
    ]
    for name, outcome, passed in scenarios:
        if outcome is None:
            rows.append((name, "-", "-", "-", "no outcome"))
            continue
        first = True
        for address, wei in sorted(
            outcome.nets.items(), key=lambda kv: labels.get(kv[0].lower(), kv[0])
        ):
            side = "attacker" if address.lower() in outcome.attackers else "honest"
            rows.append(
                (
                    f"{name} [{'ok' if passed else 'FAIL'}]" if first else "",
                    labels.get(address.lower(), address[:10]),
                    side,
                    f"{wei / ETHER:+.3f}",
                    _what(address, wei, outcome),
                )
            )
            first = False
        if first:
            detail = f"{outcome.refused} job(s) refused" if outcome.refused else "no money moved"
            rows.append((f"{name} [{'ok' if passed else 'FAIL'}]", "-", "-", "+0.000", detail))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["adversary: protocol balance change per party and scenario (gas excluded)"]
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def _what(address: str, wei: int, outcome: Outcome) -> str:
    low = address.lower()
    if wei < 0:
        if low in outcome.provers:
            return "slashed (prover bond lost)"
        return "lost a bond or stake"
    if wei > 0:
        return "rewarded"
    return "even"
