"""The documents that describe the code cannot drift from it: the README's settings table is
``Settings`` (every variable, each default), the architecture page's map names every module,
and no document points at a file the repository does not have."""

from __future__ import annotations

import dataclasses
import re
import subprocess

import pytest

from common.settings import Settings
from testkit.processes import ROOT

FIELDS = {f.metadata["env"]: f for f in dataclasses.fields(Settings)}


def _settings_rows() -> list[tuple[list[str], str]]:
    """(variables, default cell) of each row of the README's configuration table."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Configuration") :]
    section = section[: section.index("\n## ", 1)]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `"):
            names, default = (cell.strip() for cell in line.strip("|").split("|")[:2])
            rows.append((re.findall(r"`([A-Z0-9_]+)`", names), default))
    return rows


def _shown(value) -> str:
    """A default as the table writes it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_the_readme_lists_every_setting_and_nothing_else():
    listed = [name for names, _ in _settings_rows() for name in names]
    assert sorted(listed) == sorted(FIELDS)
    assert len(listed) == len(set(listed))


@pytest.mark.parametrize(
    ("names", "cell"), _settings_rows(), ids=lambda v: v[0] if isinstance(v, list) else None
)
def test_each_default_in_the_readme_is_the_one_settings_has(names, cell):
    literals = re.findall(r"`([^`]*)`", cell)
    if len(names) > 1:  # "`A`, `B`, `C`": one default each
        literals = [part.strip().strip("`") for part in cell.split(",")]
    for name, literal in zip(names, literals or [cell], strict=False):
        default = FIELDS[name].default
        if default is None:  # the cell says what applies instead (AWS, another setting, ...)
            continue
        assert literal == _shown(default), f"{name}: README {literal!r}, Settings {default!r}"


PACKAGES = ("api", "common", "worker", "realtime", "client", "deploy", "testkit", "bench")


def _modules() -> list[str]:
    tracked = subprocess.run(
        ["git", "ls-files", *PACKAGES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [path for path in tracked if path.endswith(".py")]


def test_the_architecture_map_names_every_module():
    page = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    table = page[page.index("## Where things live") :]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert _modules()

    def named(path: str) -> bool:
        directory, _, name = path.rpartition("/")
        if name == "__init__.py" and any(f"`{directory}/" in row for row in rows):
            return True  # a package's marker: its directory is named
        for row in rows:
            if f"`{path}" in row:  # the path itself (or path:function)
                return True
            if f"`{directory}/`" in row and f"`{name}`" in row:  # its package's row names it
                return True
        return False

    missing = [path for path in _modules() if not named(path)]
    assert missing == [], f"docs/ARCHITECTURE.md does not name {missing}"


#: Paths in backquotes that look like the repository's own files.
_PATH = re.compile(
    r"`((?:api|common|worker|realtime|client|deploy|testkit|bench|tests|docs|migrations|scripts)/"
    r"[\w./-]*)(?::\w[\w.]*)?`"
)


@pytest.mark.parametrize("document", ["README.md", "docs/ARCHITECTURE.md", "docs/API.md"])
def test_documents_point_only_at_files_that_exist(document):
    text = (ROOT / document).read_text()
    missing = sorted(
        {path for path in _PATH.findall(text) if not (ROOT / path.rstrip("/")).exists()}
    )
    assert missing == [], f"{document} names {missing}"
