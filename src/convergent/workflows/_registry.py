"""`@workflow` and `@step`: plain async functions, registered by a stable name."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from convergent.codec import SignatureCodec, UnresolvedAnnotation
from convergent.errors import UnknownWorkflow
from convergent.retry import RetryPolicy
from convergent.workflows._context import StepContext, WorkflowContext, current_run

__all__ = ["Step", "Workflow", "get_workflow", "registered", "served", "step", "workflow"]

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_STEP_RETRY = RetryPolicy(max_attempts=5, initial_delay=0.5, max_delay=30.0)

DEFAULT_VERSION = "1"

# by name, the version new runs start with (the newest registered)
_workflows: dict[str, Workflow[Any, Any]] = {}
# every version this process can run: runs keep the version they started with
_versions: dict[tuple[str, str], Workflow[Any, Any]] = {}
_served: frozenset[tuple[str, str]] = frozenset()  # its keys, read on every start and claim


class Workflow(Generic[P, T]):
    """A registered workflow function; start it with `convergent.workflows.start`."""

    def __init__(
        self,
        fn: Callable[Concatenate[WorkflowContext, P], Awaitable[T]],
        name: str,
        queue: str,
        version: str = DEFAULT_VERSION,
    ) -> None:
        self.fn = fn
        self.name = name
        self.queue = queue
        self.version = version
        self._codec = _declared_codec(fn)

    @property
    def codec(self) -> SignatureCodec:
        """Arguments and result to and from JSON, by the function's annotations."""
        if self._codec is None:
            self._codec = SignatureCodec.of(self.fn)
        return self._codec

    def __repr__(self) -> str:
        return f"Workflow({self.name!r}, version={self.version!r})"


class Step(Generic[P, T]):
    """A checkpointed step; call it from a workflow like the function it wraps."""

    def __init__(
        self,
        fn: Callable[Concatenate[StepContext, P], Awaitable[T]],
        name: str,
        retry: RetryPolicy,
        reconcile: Callable[Concatenate[StepContext, P], Awaitable[T | None]] | None,
    ) -> None:
        self.fn = fn
        self.name = name
        self.retry = retry
        self.reconcile = reconcile
        self._codec = _declared_codec(fn)

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        value: T = await current_run().run_step(self, args, kwargs)
        return value

    def reconciler(
        self, fn: Callable[Concatenate[StepContext, P], Awaitable[T | None]]
    ) -> Callable[Concatenate[StepContext, P], Awaitable[T | None]]:
        """Declare how to ask the other system whether an attempt with this key took effect.

        It returns the step's result if it did, None if it did not.
        """
        self.reconcile = fn
        return fn

    @property
    def codec(self) -> SignatureCodec:
        """Arguments and result to and from JSON, by the function's annotations."""
        if self._codec is None:
            self._codec = SignatureCodec.of(self.fn)
        return self._codec

    def __repr__(self) -> str:
        return f"Step({self.name!r})"


def _declared_codec(fn: Callable[..., Any]) -> SignatureCodec | None:
    """The codec, checked now; None when a type is declared later in its module (it is then
    built at first use, still before the function runs)."""
    try:
        return SignatureCodec.of(fn)
    except UnresolvedAnnotation:
        return None


@overload
def workflow(
    fn: Callable[Concatenate[WorkflowContext, P], Awaitable[T]],
) -> Workflow[P, T]: ...


@overload
def workflow(
    *, name: str | None = None, queue: str = "default", version: str = DEFAULT_VERSION
) -> Callable[[Callable[Concatenate[WorkflowContext, P], Awaitable[T]]], Workflow[P, T]]: ...


def workflow(
    fn: Callable[Concatenate[WorkflowContext, P], Awaitable[T]] | None = None,
    *,
    name: str | None = None,
    queue: str = "default",
    version: str = DEFAULT_VERSION,
) -> Any:
    """Register an async function taking a `WorkflowContext` first as a workflow.

    A run keeps the ``version`` it started with, and only a worker that has that version
    registered takes it: register the old version beside the new one (same ``name``) until
    its runs are done. New runs start on the newest version registered ("2" after "1",
    "10" after "9"; a version that is not a number sorts by its text).
    """

    def register(f: Callable[Concatenate[WorkflowContext, P], Awaitable[T]]) -> Workflow[P, T]:
        wf: Workflow[P, T] = Workflow(f, name or f"{f.__module__}.{f.__qualname__}", queue, version)
        global _served
        _versions[(wf.name, wf.version)] = wf
        _served = frozenset(_versions)
        current = _workflows.get(wf.name)
        if current is None or _version_key(wf.version) >= _version_key(current.version):
            _workflows[wf.name] = wf
        return wf

    return register(fn) if fn is not None else register


@overload
def step(fn: Callable[Concatenate[StepContext, P], Awaitable[T]]) -> Step[P, T]: ...


@overload
def step(
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    reconcile: Callable[..., Awaitable[Any]] | None = None,
) -> Callable[[Callable[Concatenate[StepContext, P], Awaitable[T]]], Step[P, T]]: ...


def step(
    fn: Callable[Concatenate[StepContext, P], Awaitable[T]] | None = None,
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    reconcile: Callable[..., Awaitable[Any]] | None = None,
) -> Any:
    """Make an async function taking a `StepContext` first a checkpointed step."""

    def wrap(f: Callable[Concatenate[StepContext, P], Awaitable[T]]) -> Step[P, T]:
        return Step(f, name or f.__qualname__, retry or DEFAULT_STEP_RETRY, reconcile)

    return wrap(fn) if fn is not None else wrap


def _version_key(version: str) -> tuple[tuple[int, int, str], ...]:
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in re.split(r"[.\-_]", version)
    )


def get_workflow(name: str, version: str | None = None) -> Workflow[Any, Any]:
    """The workflow ``name`` new runs start with, or the given ``version`` of it."""
    found = _workflows.get(name) if version is None else _versions.get((name, version))
    if found is None:
        what = f"workflow named {name!r}" if version is None else f"version {version!r} of {name!r}"
        raise UnknownWorkflow(
            f"no {what} is registered in this process: import the module that "
            "defines it (convergent worker --import module)"
        )
    return found


def served() -> frozenset[tuple[str, str]]:
    """Every (workflow name, version) this process can run."""
    return _served


def registered() -> dict[str, Workflow[Any, Any]]:
    """Every workflow registered in this process, by name."""
    return dict(_workflows)
