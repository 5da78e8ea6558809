"""The package as users get it: one version everywhere, its licence, a changelog that names
each release's migration head, and an sdist that holds what the tests and `./dev` need."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from importlib import metadata
from pathlib import Path

import pytest

import slack_agents_sa
from slack_agents_sa.schema_version import HEAD

REPO_ROOT = Path(__file__).resolve().parent.parent

#: A row of CHANGELOG.md's "Release → migration head" table: `| 0.1.0 | 0008 |`.
_HEAD_ROW = re.compile(
    r"^\|\s*\[?(?P<release>\d+\.\d+\.\d+[^|\]\s]*)\]?\s*\|\s*`?(?P<head>\d{4})`?"
)

#: What the tests, `./dev` and the lint read from the source tree besides the package.
SDIST_NEEDS = (
    "pyproject.toml",
    "alembic.ini",
    "alembic/env.py",
    *(
        f"alembic/versions/{path.name}"
        for path in (REPO_ROOT / "alembic" / "versions").glob(f"{HEAD}_*.py")
    ),
    "tests/conftest.py",
    "examples/host_app/host_app/__init__.py",
    "benchmarks/compare.py",
    "scripts/demo.py",
    "scripts/lowest_deps.py",
    "dev",
    ".ci/run",
    "LICENSE",
    "CHANGELOG.md",
    "README.md",
    "docs/configuration.md",
)


def _release_heads() -> dict[str, str]:
    """CHANGELOG.md's table, release -> the migration head it ships."""
    text = (REPO_ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    section = text.split("## Release → migration head", 1)[1].split("\n## ", 1)[0]
    rows = (_HEAD_ROW.match(line.strip()) for line in section.splitlines())
    return {row["release"]: row["head"] for row in rows if row}


def test_cli_version_package_version_and_distribution_metadata_agree() -> None:
    script = Path(sys.executable).with_name("slack-agents-sa")
    done = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    expected = f"slack-agents-sa {slack_agents_sa.__version__}"
    assert (done.returncode, done.stdout.strip()) == (0, expected), done.stderr
    assert metadata.version("slack_agents_sa") == slack_agents_sa.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", slack_agents_sa.__version__)


def test_the_licence_is_apache_2_0_and_ships_in_the_metadata() -> None:
    licence = (REPO_ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    assert "END OF TERMS AND CONDITIONS" in licence
    assert metadata.metadata("slack_agents_sa")["License-Expression"] == "Apache-2.0"
    shipped = [str(file) for file in metadata.files("slack_agents_sa") or ()]
    assert any(name.endswith("licenses/LICENSE") for name in shipped), shipped


def test_changelog_names_the_current_head_for_the_current_release() -> None:
    heads = _release_heads()
    assert heads.get(slack_agents_sa.__version__) == HEAD, heads
    known = {path.name[:4] for path in (REPO_ROOT / "alembic" / "versions").glob("[0-9]*.py")}
    assert set(heads.values()) <= known, heads


@pytest.mark.slow
def test_the_sdist_holds_what_the_tests_and_dev_need(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path), str(REPO_ROOT)],
        capture_output=True,
        timeout=600,
        check=True,
    )
    [sdist] = tmp_path.glob("slack_agents_sa-*.tar.gz")
    assert sdist.name == f"slack_agents_sa-{slack_agents_sa.__version__}.tar.gz"
    with tarfile.open(sdist) as archive:
        root = f"slack_agents_sa-{slack_agents_sa.__version__}/"
        names = {name.removeprefix(root) for name in archive.getnames()}
    missing = [name for name in SDIST_NEEDS if name not in names]
    assert not missing, missing
