"""Prometheus metrics (multi-process aware when PROMETHEUS_MULTIPROC_DIR is set)."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)

HTTP_REQUESTS = Counter("greengate_http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "greengate_http_request_seconds",
    "HTTP request latency",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
ORDER_TRANSITIONS = Counter("greengate_order_transitions_total", "Exchange order status changes", ["to"])
OUTBOX_RESULTS = Counter("greengate_outbox_results_total", "Outbox delivery outcomes", ["kind", "outcome"])
OUTBOX_PRUNED = Counter(
    "greengate_outbox_pruned_total", "Delivered outbox rows deleted with their attempt logs"
)
REQUESTS_REFUSED = Counter(
    "greengate_requests_refused_total",
    "Requests refused before they reached an endpoint (body limit, request limit, throttle)",
    ["surface", "reason"],
)
THROTTLES_ENGAGED = Counter(
    "greengate_throttles_engaged_total",
    "Request limits reached and failed-authentication throttles or lockouts engaged",
    ["scope"],
)
OUTBOX_BACKLOG = Gauge("greengate_outbox_backlog", "Pending outbox rows", multiprocess_mode="max")


def registry() -> CollectorRegistry:
    """Every process's metrics when several server processes share them through files, else this
    process's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return merged
    return REGISTRY


def render() -> tuple[bytes, str]:
    return generate_latest(registry()), CONTENT_TYPE_LATEST


def serve_separately(address: str) -> None:
    """Serve the metrics on their own "host:port" (a thread of the calling process)."""
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=registry())
