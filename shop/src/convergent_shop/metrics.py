"""The shop's own metric: an order's time from acceptance to its final state.

The toolkit's gauges (backlogs, runs by state, dead letters) come from `convergent.telemetry`.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import Histogram

__all__ = ["ORDER_TIME_TO_CONSISTENCY", "observe_final_order"]

ORDER_TIME_TO_CONSISTENCY = Histogram(
    "shop_order_time_to_consistency_seconds",
    "From an order's acceptance to its final state",
    ["state"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)


def observe_final_order(state: str, created_at: datetime, now: datetime) -> None:
    ORDER_TIME_TO_CONSISTENCY.labels(state=state).observe((now - created_at).total_seconds())
