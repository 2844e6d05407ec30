"""The message envelope: CloudEvents 1.0 attributes plus routing (topic, key) and headers.

In the binary content mode the attributes travel as headers (``ce-id``, ``ce-type``...), the data
as the body (JSON bytes; ``None`` is a tombstone on entity topics).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from convergent.ids import new_id

__all__ = ["SPECVERSION", "Message", "json_dumps", "json_loads"]

SPECVERSION = "1.0"
_CE_ATTRS = ("id", "source", "type", "specversion", "subject", "time", "datacontenttype")


def json_dumps(value: Any) -> bytes:
    """Compact, key-sorted JSON: the one encoding used for stored and published payloads."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str).encode()


def json_loads(raw: bytes | str) -> Any:
    return json.loads(raw)


@dataclass(frozen=True, slots=True)
class Message:
    """One event on a topic."""

    topic: str
    key: str
    type: str
    data: Any
    source: str = "convergent"
    id: str = field(default_factory=new_id)
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    specversion: str = SPECVERSION
    datacontenttype: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)  # extra headers, e.g. traceparent

    @property
    def subject(self) -> str:
        return self.key

    @property
    def is_tombstone(self) -> bool:
        return self.data is None

    def body(self) -> bytes | None:
        return None if self.data is None else json_dumps(self.data)

    def ce_headers(self, prefix: str = "ce-") -> dict[str, str]:
        """CloudEvents attributes as binary-mode headers, plus the extra headers."""
        out = {
            f"{prefix}id": self.id,
            f"{prefix}source": self.source,
            f"{prefix}type": self.type,
            f"{prefix}specversion": self.specversion,
            f"{prefix}subject": self.key,
            f"{prefix}time": self.time.isoformat(),
        }
        if self.data is not None:
            out["content-type"] = self.datacontenttype
        out.update(self.headers)
        return out

    @classmethod
    def from_ce_headers(
        cls, topic: str, headers: dict[str, str], body: bytes | None, prefix: str = "ce-"
    ) -> Message:
        attrs = {k[len(prefix) :]: v for k, v in headers.items() if k.startswith(prefix)}
        extra = {
            k: v for k, v in headers.items() if not k.startswith(prefix) and k != "content-type"
        }
        return cls(
            topic=topic,
            key=attrs.get("subject", ""),
            type=attrs.get("type", ""),
            data=None if body is None or body == b"" else json_loads(body),
            source=attrs.get("source", "convergent"),
            id=attrs["id"],
            time=datetime.fromisoformat(attrs["time"]) if "time" in attrs else datetime.now(UTC),
            specversion=attrs.get("specversion", SPECVERSION),
            datacontenttype=headers.get("content-type", "application/json"),
            headers=extra,
        )

    def to_envelope(self) -> dict[str, Any]:
        """Everything but topic and key, as JSON-ready values (how the outbox stores it)."""
        return {**self.attributes(), "data": self.data, "headers": dict(self.headers)}

    @classmethod
    def from_envelope(cls, topic: str, key: str, envelope: dict[str, Any]) -> Message:
        return cls(
            topic=topic,
            key=key,
            type=envelope["type"],
            data=envelope.get("data"),
            source=envelope.get("source", "convergent"),
            id=envelope["id"],
            time=datetime.fromisoformat(envelope["time"]),
            specversion=envelope.get("specversion", SPECVERSION),
            datacontenttype=envelope.get("datacontenttype", "application/json"),
            headers=dict(envelope.get("headers") or {}),
        )

    def attributes(self) -> dict[str, Any]:
        """CloudEvents attributes as a dict (structured mode, minus data)."""
        return {
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "specversion": self.specversion,
            "subject": self.key,
            "time": self.time.isoformat(),
            "datacontenttype": self.datacontenttype,
        }
