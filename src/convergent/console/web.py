"""What every page shares: the console's own path prefix and the template context."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

__all__ = ["context", "render", "root"]


def root(request: Request) -> str:
    """Where the console is mounted ("" standalone, "/console" inside `convergent serve`)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def context(request: Request, **values: Any) -> dict[str, Any]:
    return {
        "base": root(request),
        "principal": getattr(request.state, "principal", None),
        "notice": request.query_params.get("notice"),
        "notice_ok": request.query_params.get("ok") == "1",
        "here": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        **values,
    }


def render(request: Request, template: str, status_code: int = 200, **values: Any) -> Response:
    templates = request.app.state.templates
    response: Response = templates.TemplateResponse(
        request, template, context(request, **values), status_code=status_code
    )
    return response
