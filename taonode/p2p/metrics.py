"""Prometheus metrics of the p2p layer, on a registry the node owns (never the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class P2PMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.peers = Gauge(
            "taonode_p2p_peers_connected", "Connected libp2p peers", registry=registry
        )
        self.messages_in = Counter(
            "taonode_p2p_messages_in_total",
            "Valid envelopes received, by message kind",
            ["kind"],
            registry=registry,
        )
        self.messages_out = Counter(
            "taonode_p2p_messages_out_total",
            "Envelopes published, by message kind",
            ["kind"],
            registry=registry,
        )
        self.rejected = Counter(
            "taonode_p2p_rejected_total",
            "Inbound envelopes rejected, by reason",
            ["reason"],
            registry=registry,
        )
        self.dropped = Counter(
            "taonode_p2p_delivery_dropped_total",
            "Valid envelopes dropped because a subscriber's queue was full",
            registry=registry,
        )
        self.blob_bytes = Counter(
            "taonode_p2p_blob_bytes_total",
            "Blob payload bytes, by direction",
            ["direction"],
            registry=registry,
        )
        self.blob_served = Counter(
            "taonode_p2p_blob_served_total",
            "Blob requests answered, by outcome (ok, not_found, busy, too_large, too_slow, ...)",
            ["outcome"],
            registry=registry,
        )
        self.blob_serving = Gauge(
            "taonode_p2p_blob_serving",
            "Blob transfers in progress (slots held)",
            registry=registry,
        )
        self.blob_seconds = Histogram(
            "taonode_p2p_blob_fetch_seconds",
            "Blob fetch latency (request to verified payload)",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.blob_failures = Counter(
            "taonode_p2p_blob_failures_total",
            "Failed blob fetches, by reason",
            ["reason"],
            registry=registry,
        )
        self.vote_seconds = Histogram(
            "taonode_p2p_vote_collection_seconds",
            "Time from joining a committee channel to quorum",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.bans = Counter(
            "taonode_p2p_peer_bans_total",
            "Peers banned and disconnected for a penalty score over the limit",
            registry=registry,
        )
        self.dials = Counter(
            "taonode_p2p_dials_total",
            "Bootstrap dial attempts, by outcome",
            ["outcome"],
            registry=registry,
        )
