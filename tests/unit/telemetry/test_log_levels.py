"""A line per outbound HTTP request is kept out of the INFO log, and comes back with DEBUG."""

from __future__ import annotations

import io
import logging

from convergent.telemetry.logging import configure_logging


def test_httpx_request_lines_show_at_debug_only() -> None:
    root = logging.getLogger()
    before = (root.level, list(root.handlers), logging.getLogger("httpx").level)
    try:
        out = io.StringIO()
        configure_logging("kv", "INFO", out)
        logging.getLogger("httpx").info("HTTP Request: POST http://x/ 200")
        logging.getLogger("convergent.test").info("our own line")
        assert "HTTP Request" not in out.getvalue()
        assert "our own line" in out.getvalue()
        configure_logging("kv", "DEBUG", out)
        logging.getLogger("httpx").info("HTTP Request: POST http://y/ 200")
        assert "http://y/" in out.getvalue()
    finally:
        for handler in [h for h in root.handlers if h not in before[1]]:
            root.removeHandler(handler)
        root.setLevel(before[0])
        logging.getLogger("httpx").setLevel(before[2])
