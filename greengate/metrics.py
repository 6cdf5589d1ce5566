"""Prometheus metrics (multi-process aware when PROMETHEUS_MULTIPROC_DIR is set)."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
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


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
