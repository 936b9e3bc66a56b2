"""Metrics of the roles and the compute worker, on the node's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

SECONDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class RoleMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.jobs = Counter(
            "taonode_jobs",
            "Jobs handled, by role and outcome",
            ["role", "outcome"],
            registry=registry,
        )
        self.disputes = Counter(
            "taonode_disputes",
            "Disputes ended, by role and outcome (won, lost, no_quorum)",
            ["role", "outcome"],
            registry=registry,
        )
        self.dispute_rounds = Histogram(
            "taonode_dispute_rounds",
            "Rounds a dispute took to reach its leaf",
            buckets=(1, 2, 3, 4, 5, 6, 8, 10, 16),
            registry=registry,
        )
        self.resolution_seconds = Histogram(
            "taonode_dispute_resolution_seconds",
            "Wall time from dispute opened to resolved",
            buckets=SECONDS,
            registry=registry,
        )
        self.reexecution_seconds = Histogram(
            "taonode_reexecution_seconds",
            "Challenger and voter re-execution time",
            ["role"],
            buckets=SECONDS,
            registry=registry,
        )
        self.inference_seconds = Histogram(
            "taonode_inference_seconds",
            "Prover forward pass (client-visible part)",
            buckets=SECONDS,
            registry=registry,
        )
        self.deadline_slack = Gauge(
            "taonode_deadline_slack_blocks",
            "Blocks left before the nearest deadline this node must act on (absent: none)",
            ["role"],
            registry=registry,
        )
        self.compute_queue = Gauge(
            "taonode_compute_queue_depth",
            "Tasks waiting for or running on the compute worker",
            ["pool"],
            registry=registry,
        )
        self.commitments_failing = Gauge(
            "taonode_prover_commitments_failing",
            "1 while the prover's recent commitments fail (it refuses new jobs and is not ready)",
            registry=registry,
        )
        self.actions = Counter(
            "taonode_actions",
            "Protocol actions executed, by kind and result",
            ["kind", "result"],
            registry=registry,
        )
        self.events_ignored = Counter(
            "taonode_driver_events_ignored",
            "Chain events the protocol driver did not fold into a view, by reason "
            "(unknown_job: a job it does not follow; duplicate: delivered again; invalid: the "
            "event does not fit the job's state)",
            ["reason"],
            registry=registry,
        )
        self.jobs_followed = Gauge(
            "taonode_driver_jobs",
            "Jobs the protocol driver holds a view of, open or recently closed",
            ["state"],
            registry=registry,
        )
