"""A comma list of hosts in a URL (`scheme://user@h1:5432,h2/db`), as libpq writes it.

SQLAlchemy cannot parse it (the port would be `5432,h2`); its own multi-host form repeats
`host=` in the query. `comma_hosts_as_query` rewrites the one into the other before the URL
is parsed, and `hosts_in_query` reads the list back.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

from sqlalchemy.engine import URL

#: `host` or `[v6 host]`, then an optional `:port`, in a comma list of hosts.
_HOST_PORT = re.compile(r"\A(?P<host>\[[^\]]*\]|[^:\[\]]*)(?::(?P<port>[^:]*))?\Z")
#: What precedes the host list: the scheme, then `user[:password]@` (a password ends at
#: its first '@', as SQLAlchemy reads it).
_AUTHORITY = re.compile(r"\A(?P<head>[^:/]*://(?:[^:/@]*(?::[^@]*)?@)?)(?P<hosts>[^/?]*)")


def comma_hosts_as_query(raw: str, default_port: int) -> str:
    """`scheme://u@h1:5432,h2/db` as `scheme://u@/db?host=h1:5432&host=h2:<default_port>`;
    any URL without a comma in its host part unchanged."""
    found = _AUTHORITY.match(raw)
    if found is None or "," not in found["hosts"]:
        return raw
    hosts = [("host", f"{host}:{port}") for host, port in _parsed(found["hosts"], default_port)]
    rest = raw[found.end() :]
    joiner = "&" if "?" in rest else "?"
    return f"{found['head']}{rest}{joiner}{urlencode(hosts, safe=':[]')}"


def hosts_in_query(url: URL, default_port: int) -> list[tuple[str, int]]:
    """The `host=` entries of `url`'s query as (host, port), in order; [] without any."""
    value = url.query.get("host")
    if value is None:
        return []
    entries = [value] if isinstance(value, str) else list(value)
    return _parsed(",".join(entries), default_port)


def _parsed(hosts: str, default_port: int) -> list[tuple[str, int]]:
    found = []
    for entry in hosts.split(","):
        parts = _HOST_PORT.match(entry)
        if parts is None or not parts["host"]:
            raise ValueError(f"host {entry!r} in the URL's host list is not host[:port]")
        port = parts["port"] or str(default_port)
        if not port.isdigit():
            raise ValueError(f"the port of host {parts['host']!r} is not a number")
        found.append((parts["host"], int(port)))
    return found
