"""Storage: the `Store`, our tables, the statements of each database and change notification."""

from convergent.store.dialect import Dialect, history_params
from convergent.store.engine import Store, normalise_url, store_of
from convergent.store.notify import Notifier, Subscription

__all__ = [
    "Dialect",
    "Notifier",
    "Store",
    "Subscription",
    "history_params",
    "normalise_url",
    "store_of",
]
