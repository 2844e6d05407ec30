"""A tiny real payment provider on loopback: it honours Idempotency-Key like a real one."""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Provider:
    """Counts requests and the charges/refunds that took effect, per idempotency key."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.applied: dict[str, str] = {}  # key -> "charge" | "refund"
        self.fail_next: list[int] = []  # statuses to answer before doing anything
        self.lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                self.rfile.read(length)
                key = self.headers.get("idempotency-key", "")
                with provider.lock:
                    provider.requests[key] += 1
                    if provider.fail_next:
                        self._answer(provider.fail_next.pop(0), {"error": "injected"})
                        return
                    provider.applied.setdefault(key, self.path.strip("/"))
                self._answer(200, {"id": key, "kind": provider.applied[key]})

            def do_GET(self) -> None:
                key = self.path.rsplit("/", 1)[-1]
                with provider.lock:
                    found = provider.applied.get(key)
                self._answer(200 if found else 404, {"id": key, "kind": found})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Provider:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def applied_kinds(self, run_id: str) -> list[str]:
        with self.lock:
            return sorted(kind for key, kind in self.applied.items() if key.startswith(run_id))
