"""Opening a connection within option `connect_timeout`, on every driver, with its reason.

A driver's own timeout may cover only part of a connect (asyncmy bounds the TCP open, not
the server's greeting), and an expired asyncio timeout says nothing (`str()` is empty).
SQLAlchemy's async adapters call the driver's `connect` coroutine through the connect
argument `async_creator_fn`, with the arguments the dialect made from the URL; wrapping
that coroutine bounds the whole connect (TCP, TLS, authentication, every host of a
multi-host URL) and keeps everything else the dialect does.
"""

from __future__ import annotations

import asyncio
import math
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from sqlalchemy.engine import URL

#: Seconds a new connection may take when neither the option nor the URL says.
DEFAULT_CONNECT_TIMEOUT_S = 10.0
#: The URL's name for it (libpq's, which MySQL's drivers share).
URL_KEY = "connect_timeout"

Connect = Callable[..., Awaitable[Any]]


def connect_timeout_in_url(url: URL) -> float | None:
    """The URL's `connect_timeout` in seconds (0: no limit, as in libpq); None if absent.

    ValueError naming the value when it is not a number of seconds.
    """
    raw = url.query.get(URL_KEY)
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ValueError(f"{URL_KEY} is given more than once")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds):
        raise ValueError(f"{URL_KEY}={raw!r} is not a number of seconds")
    return max(seconds, 0.0)


def bounded(
    connect: Connect, seconds: float, where: str | None = None
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """`connect`, failing with a `TimeoutError` that names the time and the server(s) once
    `seconds` have passed (0: no limit), and with TLS errors that say what to check. Both
    are OSErrors: to the provider, a database it cannot reach now."""

    async def connect_within(*args: Any, **kwargs: Any) -> Any:
        target = where or servers(kwargs)
        try:
            async with asyncio.timeout(seconds or None):
                return await connect(*args, **kwargs)
        except TimeoutError:
            raise TimeoutError(
                f"timed out after {seconds:g} s connecting to {target} (option `{URL_KEY}`)"
            ) from None
        except Exception as error:
            # A driver may wrap the TLS error in its own (asyncmy: 2003 "Can't connect").
            tls = _tls_error_in(error)
            if isinstance(tls, ssl.SSLCertVerificationError):
                raise ConnectionError(
                    f"the TLS certificate of {target} did not verify against the "
                    f"trusted CA certificates (sslrootcert, ssl_ca): certificate verify "
                    f"failed: {tls.verify_message}"
                ) from error
            if tls is not None and "PEM lib" in str(tls):  # OpenSSL: a cert or key won't load
                raise ConnectionError(
                    "cannot load the TLS client certificate or its key (sslcert and sslkey, "
                    "ssl_cert and ssl_key): a wrong key password (sslpassword), or not PEM files"
                ) from error
            raise

    return connect_within


def _tls_error_in(error: BaseException) -> ssl.SSLError | None:
    """The TLS error `error` is, or was raised from (a few links down its chain), if any."""
    seen: BaseException | None = error
    for _ in range(4):
        if seen is None or isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def servers(connect_kwargs: dict[str, Any]) -> str:
    """`host:port` (or several, comma-separated) from a driver's connect arguments."""
    hosts = connect_kwargs.get("host") or "localhost"
    ports = connect_kwargs.get("port")
    if isinstance(hosts, str):
        hosts = [hosts]
    if not isinstance(ports, list | tuple):
        ports = [ports] * len(hosts)
    return ", ".join(
        host if port is None else f"{host}:{port}" for host, port in zip(hosts, ports, strict=False)
    )
