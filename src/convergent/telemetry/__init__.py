"""Telemetry: Prometheus metrics read from the database (and, later, OpenTelemetry traces)."""

from convergent.telemetry.gauges import StoreGauges

__all__ = ["StoreGauges"]
