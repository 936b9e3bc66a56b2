"""The coordinator's on-chain enums, as returned by ``resultOf``/``disputeOf``/``tallyOf``."""

from __future__ import annotations

import enum


class ResultStatus(enum.IntEnum):
    NONE = 0
    PENDING = 1  # committed, inside or after the window, not finalized
    DISPUTED = 2
    FINALIZED = 3  # accepted: unchallenged after the window, or the prover won the dispute
    REJECTED = 4  # the prover lost the dispute (slashed)
    VOIDED = 5  # the committee reached no decision: bonds and fee returned


class Phase(enum.IntEnum):
    NONE = 0
    PROVER_MOVE = 1
    CHALLENGER_MOVE = 2
    AWAIT_DRAW = 3
    VOTING = 4
    RESOLVED = 5


class Outcome(enum.IntEnum):
    NONE = 0
    PROVER_WON = 1
    CHALLENGER_WON = 2
    NO_QUORUM = 3


class Reason(enum.IntEnum):
    NONE = 0
    VOTE = 1
    PROVER_TIMEOUT = 2
    CHALLENGER_TIMEOUT = 3


NOT_VOTED = 255
"""``ballotOf`` for a committee member who has not voted (0: not a member)."""
