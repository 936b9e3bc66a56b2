"""Adversary strategies for the devnet and the tests (docs/adversary.md). Never imported by
the daemon's production paths except to refuse or load ``--unsafe-adversary`` on local chains."""

from taonode.adversary.strategy import Arena, Outcome, Party, Strategy

__all__ = ["Arena", "Outcome", "Party", "Strategy"]
