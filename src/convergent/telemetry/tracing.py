"""Installing the OpenTelemetry SDK (the ``otel`` extra) from the standard ``OTEL_*`` variables.

Nothing is installed unless an exporter is asked for (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_TRACES_EXPORTER``), so a process without them
pays nothing for its spans. ``OTEL_SDK_DISABLED=true`` and ``OTEL_TRACES_EXPORTER=none`` turn
it off; ``OTEL_SERVICE_NAME`` names the process (default ``convergent-<command>``).
"""

from __future__ import annotations

from opentelemetry import trace

from convergent import settings, tracing
from convergent.errors import MissingExtra

__all__ = ["configure_tracing", "tracing_requested"]

_ASKED_BY = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_TRACES_EXPORTER",
)


def tracing_requested() -> bool:
    env = settings.otel_environment()
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(env.get(name) for name in _ASKED_BY)


def configure_tracing(service: str) -> bool:
    """Install an SDK tracer provider exporting to what ``OTEL_*`` names; False if none asked."""
    if not tracing_requested():
        return False
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SpanExporter,
        )
    except ImportError as exc:
        raise MissingExtra("otel", "OpenTelemetry traces (OTEL_* is set)") from exc
    env = settings.otel_environment()
    defaults = {} if env.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service}
    provider = TracerProvider(resource=Resource.create(defaults))
    exporters = env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")
    for name in (e.strip().lower() for e in exporters):
        exporter: SpanExporter
        if name == "console":
            exporter = ConsoleSpanExporter()
        elif name == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
            except ImportError as exc:
                raise MissingExtra("otel", "the OTLP exporter") from exc
            exporter = OTLPSpanExporter()  # endpoint, headers, timeout: OTEL_EXPORTER_OTLP_*
        else:
            continue
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    tracing.refresh()
    return True
