"""Serve ASGI apps on loopback ports inside the current event loop (demo and tests)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Generator
from typing import Any

import uvicorn

from convergent.drill import free_port

__all__ = ["free_port", "serve_app"]


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the host program owns Ctrl-C, not each embedded server


@contextlib.asynccontextmanager
async def serve_app(
    app: Any, *, port: int | None = None, log_level: str = "critical", timeout: float = 20.0
) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn on 127.0.0.1 and yield its base URL until the block ends."""
    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level=log_level, lifespan="on", access_log=False
    )
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError(f"server on port {port} stopped while starting")
        if loop.time() > deadline:
            raise RuntimeError(f"server on port {port} did not start in {timeout}s")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
