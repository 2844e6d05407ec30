"""`create_console(store)`: the operator console as an ASGI app, standalone or mounted.

Every page and action needs an admin API key: a login form sets it in an HttpOnly, SameSite=Strict
cookie scoped to the console's path, or a client sends it as ``Authorization: Bearer`` /
``X-Api-Key``. Without one, a page redirects to the login form and anything else answers 401.
Actions ask for confirmation on a page of their own, then POST; the POST is refused unless it
carries that confirmation and comes from the console's own origin.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from convergent import settings
from convergent.auth import Principal, presented_key, verify_key
from convergent.console import actions, filters
from convergent.console.pages import router as pages_router
from convergent.console.queries.paging import InvalidCursor
from convergent.console.web import render, root
from convergent.errors import ConvergentError
from convergent.http.problem import Problem, install_problem_handlers
from convergent.store import Store

__all__ = ["COOKIE", "create_console", "operator"]

COOKIE = "convergent_console"
_HERE = Path(__file__).parent


class LoginRequired(Exception):
    def __init__(self, not_admin: bool = False) -> None:
        super().__init__("login required")
        self.not_admin = not_admin


async def operator(request: Request) -> Principal:
    """The admin behind a request (cookie or header); LoginRequired otherwise."""
    store: Store = request.app.state.store
    principal = await verify_key(store, request.cookies.get(COOKIE) or presented_key(request))
    if principal is None or not principal.admin:
        raise LoginRequired(not_admin=principal is not None)
    request.state.principal = principal
    return principal


Operator = Annotated[Principal, Depends(operator)]


def _safe_next(request: Request, target: str | None) -> str:
    """Only a path inside the console: never an open redirect."""
    base = root(request)
    if target and target.startswith(base + "/") and not target.startswith("//"):
        return target
    return base + "/"


def _with_notice(url: str, notice: str, ok: bool) -> str:
    parts = urllib.parse.urlsplit(url)
    query = [
        (k, v)
        for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if k not in ("notice", "ok")
    ]
    query += [("notice", notice[:300]), ("ok", "1" if ok else "0")]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def create_console(
    store: Store, *, broker_url: str | None = None, refresh_seconds: float | None = None
) -> FastAPI:
    """The console on ``store``; mount it (``app.mount("/console", create_console(store))``) or
    serve it alone (`convergent console`). ``broker_url`` is only for the health check;
    ``refresh_seconds`` is how often the Overview updates itself (default
    ``CONVERGENT_CONSOLE_REFRESH_SECONDS``, 5)."""
    app = FastAPI(title="convergent console", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store
    app.state.broker_url = broker_url
    app.state.refresh_seconds = refresh_seconds or settings.load().console_refresh_seconds
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    filters.install(templates.env)
    app.state.templates = templates
    install_problem_handlers(app)
    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")

    @app.exception_handler(InvalidCursor)
    async def on_bad_cursor(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, InvalidCursor)
        return Problem(400, exc.code, exc.message).to_response(request.url.path)

    @app.exception_handler(LoginRequired)
    async def on_login_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LoginRequired)
        wants_page = (
            request.method == "GET"
            and "text/html" in request.headers.get("accept", "")
            and "hx-request" not in request.headers
        )
        if wants_page:
            here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            login = f"{root(request)}/login?" + urllib.parse.urlencode({"next": here})
            return RedirectResponse(login, status_code=303)
        if exc.not_admin:
            return Problem(
                403, "forbidden", "the console needs an admin key", title="Forbidden"
            ).to_response(request.url.path)
        return Problem(
            401,
            "unauthorized",
            "log in with an admin API key (convergent keys create NAME --admin)",
            headers={"WWW-Authenticate": 'Bearer realm="convergent console"'},
        ).to_response(request.url.path)

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login_form(request: Request, next: str | None = None) -> Response:
        return templates.TemplateResponse(
            request, "login.html", {"base": root(request), "next": next or "", "error": None}
        )

    @app.post("/login", include_in_schema=False)
    async def login(
        request: Request,
        key: Annotated[str, Form()],
        next: Annotated[str, Form()] = "",
    ) -> Response:
        principal = await verify_key(store, key.strip())
        if principal is None or not principal.admin:
            error = (
                "that key is not an admin key"
                if principal is not None
                else "unknown or revoked key"
            )
            return templates.TemplateResponse(
                request,
                "login.html",
                {"base": root(request), "next": next, "error": error},
                status_code=401,
            )
        response = RedirectResponse(_safe_next(request, next), status_code=303)
        response.set_cookie(
            COOKIE,
            key.strip(),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path=root(request) + "/",
            max_age=12 * 3600,
        )
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        response = RedirectResponse(f"{root(request)}/login", status_code=303)
        response.delete_cookie(COOKIE, path=root(request) + "/")
        return response

    @app.get("/actions/{name}", response_class=HTMLResponse, include_in_schema=False)
    async def confirm_action(
        request: Request, name: str, principal: Operator, target: str = "", back: str = ""
    ) -> Response:
        action = actions.ACTIONS.get(name)
        if action is None:
            raise Problem(404, "not-found", f"no action {name!r}")
        params = {k: v for k, v in request.query_params.items() if k in action.params and v}
        shown = target or ", ".join(f"{k}={v}" for k, v in params.items()) or "every dead letter"
        return render(
            request,
            "confirm.html",
            action=action,
            target=target,
            params=params,
            question=action.confirm.format(target=shown),
            back=_safe_next(request, back),
        )

    @app.post("/actions/{name}", include_in_schema=False)
    async def do_action(request: Request, name: str, principal: Operator) -> Response:
        _same_origin(request)
        form = await request.form()
        fields = {k: str(v) for k, v in form.items()}
        if fields.get("confirm") != "yes":
            raise Problem(
                400, "confirmation-required", "confirm the action on its confirmation page"
            )
        try:
            outcome = await actions.perform(
                store, principal, name, fields.get("target", ""), fields
            )
        except ConvergentError as exc:
            outcome_ok, message = False, exc.message
        else:
            outcome_ok, message = outcome.ok, outcome.message
        if "text/html" not in request.headers.get("accept", ""):
            if not outcome_ok:
                raise Problem(409, "action-failed", message)
            return Response(status_code=204)
        back = _safe_next(request, fields.get("back"))
        return RedirectResponse(_with_notice(back, message, outcome_ok), status_code=303)

    app.include_router(pages_router, dependencies=[Depends(operator)])
    return app


def _same_origin(request: Request) -> None:
    """Refuse a cross-site form post (the SameSite cookie already should; this is the belt)."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        host = urllib.parse.urlsplit(origin).netloc
        if host != request.headers.get("host"):
            raise Problem(
                403,
                "cross-origin",
                "actions are only taken from the console itself",
                title="Forbidden",
            )
