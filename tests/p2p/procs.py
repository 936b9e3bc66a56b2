"""Driving peers in separate OS processes (the driver lives next to the peer program)."""

from taonode.p2p.peerproc import PeerProc, wait_until

__all__ = ["PeerProc", "wait_until"]
