"""Serving the Prometheus metrics of a process (`convergent worker --metrics-port`, ...)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server

__all__ = ["CONTENT_TYPE_LATEST", "render_metrics", "serve_metrics"]


def serve_metrics(port: int, host: str = "0.0.0.0") -> None:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread."""
    start_http_server(port, addr=host)


def render_metrics() -> bytes:
    """The text exposition of every metric of this process (for an app's own ``/metrics``)."""
    return generate_latest()
