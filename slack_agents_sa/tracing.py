"""OpenTelemetry spans for provider calls, with the `[otel]` extra; nothing without it.

Each public async method of the provider becomes a span `slack_agents_sa.<method>` with
`db.system` and, when the method takes them, the agent name and the conversation id. No
other argument, value or exception message is ever recorded: keys, namespaces and user
ids are data, OAuth rows carry secrets, and error messages can quote a value (a bad date
is echoed back, a database's own constraint messages name the row's values).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import sys
from collections.abc import Callable, Coroutine, Iterator
from importlib import metadata
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any

from slack_agents.storage.base import BaseStorageProvider

from slack_agents_sa.backends import backend_for
from slack_agents_sa.models import NAME_LENGTH
from slack_agents_sa.validation import to_id

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

type _Method = Callable[..., Coroutine[Any, Any, Any]]

#: The tracer every span starts from, taken at the first call made once OpenTelemetry is
#: loaded. A ProxyTracer when no TracerProvider is set yet: it follows one the host sets
#: later. Tests put their own here.
_tracer: Tracer | None = None

AGENT_NAME = "slack_agents.agent_name"
CONVERSATION_ID = "slack_agents.conversation_id"
#: Set (true) on the span of a call whose caller was cancelled; its status stays UNSET.
CANCELLED = "slack_agents_sa.cancelled"
#: Marks a method already wrapped, so instrumenting a subclass leaves inherited ones alone.
_SPAN_NAME = "_slack_agents_sa_span_name"


def _agent_name(value: Any) -> str | None:
    return value if isinstance(value, str) and len(value) <= NAME_LENGTH else None


def _conversation_id(value: Any) -> int | None:
    # What the call itself accepts, as the int it stores; anything else is not recorded.
    try:
        return to_id("conversation_id", value)
    except (TypeError, ValueError):
        return None


#: The only arguments that become attributes: argument name -> (attribute, converter).
_RECORDED: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "agent_name": (AGENT_NAME, _agent_name),
    "conversation_id": (CONVERSATION_ID, _conversation_id),
}


def instrument(provider_class: type) -> None:
    """Wrap the public async methods of `provider_class` in spans (when OpenTelemetry is there).

    Without `opentelemetry-api` this returns at once and the class keeps its own methods.
    Methods are those on the class now, our overrides of the host's and any others; the
    host's own defaults are left unwrapped (so tests/test_contract_coverage.py still sees
    one that is not overridden).
    """
    try:  # finding `opentelemetry.trace` imports only its namespace package
        if find_spec("opentelemetry.trace") is None:
            return
    except ImportError:
        return
    for name, method in _public_async_methods(provider_class):
        setattr(provider_class, name, _traced(name, method))


def _active_tracer() -> Tracer | None:
    """The tracer to start spans from; None while nothing in this process has loaded
    OpenTelemetry's API. Then no TracerProvider can be set, and every span would be a
    no-op: not worth loading the API for (it stays out of an untraced agent's memory)."""
    global _tracer
    if _tracer is None:
        if "opentelemetry.trace" not in sys.modules:
            return None
        from opentelemetry import trace

        _tracer = trace.get_tracer("slack_agents_sa", _version())
    return _tracer


def _version() -> str | None:
    try:
        return metadata.version("slack_agents_sa")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        return None


def _public_async_methods(provider_class: type) -> Iterator[tuple[str, _Method]]:
    for name in dir(provider_class):
        if name.startswith("_"):
            continue
        member = inspect.getattr_static(provider_class, name)
        if not inspect.iscoroutinefunction(member) or hasattr(member, _SPAN_NAME):
            continue
        if any(vars(base).get(name) is member for base in BaseStorageProvider.__mro__):
            continue
        yield name, member


def _traced(name: str, method: _Method) -> _Method:
    span_name = f"slack_agents_sa.{name}"
    parameters = list(inspect.signature(method).parameters.values())[1:]  # after self
    recorded = [
        (
            parameter.name,
            index if parameter.kind is parameter.POSITIONAL_OR_KEYWORD else None,
            *_RECORDED[parameter.name],
        )
        for index, parameter in enumerate(parameters)
        if parameter.name in _RECORDED
    ]

    def attributes(provider: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        found = {"db.system": backend_for(provider.settings.url).name}
        for argument, position, attribute, convert in recorded:
            given = args[position] if position is not None and position < len(args) else None
            value = convert(kwargs.get(argument, given))
            if value is not None:
                found[attribute] = value
        return found

    @functools.wraps(method)
    async def traced(self: Any, *args: Any, **kwargs: Any) -> Any:
        tracer = _active_tracer()
        if tracer is None:
            return await method(self, *args, **kwargs)
        from opentelemetry.trace import StatusCode, use_span  # loaded: a dictionary lookup

        span = tracer.start_span(span_name)
        if not span.get_span_context().is_valid:
            # The API without an SDK (or before one is set): a no-op span, nothing to end;
            # the caller's current span stays current for whatever runs inside.
            return await method(self, *args, **kwargs)
        if span.is_recording():
            span.set_attributes(attributes(self, args, kwargs))
        # Exceptions are ours to describe: the SDK's default would record the message.
        with use_span(
            span, end_on_exit=True, record_exception=False, set_status_on_exception=False
        ):
            try:
                return await method(self, *args, **kwargs)
            except asyncio.CancelledError:
                # The caller gave up, the storage did not fail (a shielded statement still
                # runs to its end after this span ends): not an error.
                span.set_attribute(CANCELLED, True)
                raise
            except BaseException as error:
                error_type = _type_name(type(error))
                span.set_attribute("error.type", error_type)
                span.set_status(StatusCode.ERROR, error_type)
                raise

    setattr(traced, _SPAN_NAME, span_name)
    return traced


def _type_name(error_type: type[BaseException]) -> str:
    """The exception's class as semantic conventions want it: fully qualified."""
    if error_type.__module__ == "builtins":
        return error_type.__qualname__
    return f"{error_type.__module__}.{error_type.__qualname__}"
