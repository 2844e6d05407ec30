"""Storage: the `Store`, our tables, claims and change notification."""

from convergent.store.engine import Store, normalise_url
from convergent.store.notify import Notifier, Subscription

__all__ = ["Notifier", "Store", "Subscription", "normalise_url"]
