"""The pytest plugin in a project of its own: docs/testing.md's setup and example, as
written, pass with every warning an error, and nothing of this repo's pytest config is
inherited (the project's own rootdir, config file and working directory)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

DOCS = ROOT / "docs"


def docs_pyproject() -> str:
    """The pyproject.toml that docs/testing.md tells a project to write."""
    found = re.findall(
        r"```toml\n(# pyproject\.toml\n.*?)```", (DOCS / "testing.md").read_text(), re.S
    )
    assert len(found) == 1, "docs/testing.md should show one pyproject.toml"
    return str(found[0])


def run_pytest(
    project: Path, redis_url: str, *, python: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["EVENTBUS_TEST_REDIS_URL"] = redis_url  # the session's server: no second one to start
    env.pop("PYTHONPATH", None)
    config = project / "pyproject.toml"
    args = ["-p", "no:cacheprovider", "-W", "error", "--rootdir", str(project), "-c", str(config)]
    return subprocess.run(
        [*(python or [sys.executable, "-m", "pytest"]), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


HIDE_PYTEST_ASYNCIO = """\
import importlib.abc
import sys

import pytest


class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "pytest_asyncio":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Hide())
# --assert=plain: pytest's assertion rewriter would find the module past the hook above
raise SystemExit(pytest.main(["-p", "no:asyncio", "--assert=plain", *sys.argv[1:]]))
"""


def new_project(tmp_path: Path) -> Path:
    project = tmp_path / "myservice"
    project.mkdir()
    (project / "pyproject.toml").write_text(docs_pyproject())
    return project


def test_the_docs_example_passes_in_a_new_project(tmp_path: Path, eventbus_redis_url: str) -> None:
    project = new_project(tmp_path)
    shutil.copy(DOCS / "examples" / "test_my_handlers.py", project)
    result = run_pytest(project, eventbus_redis_url)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"^1 passed in ", result.stdout.splitlines()[-1].strip("= ")), output
    assert f"rootdir: {project}" in result.stdout and "configfile: pyproject.toml" in output
    assert "warning" not in output.lower()


def test_without_pytest_asyncio_the_bus_fixture_says_to_install_it(
    tmp_path: Path, eventbus_redis_url: str
) -> None:
    project = new_project(tmp_path)
    (project / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    (project / "test_bus.py").write_text("def test_bus(eventbus_bus):\n    pass\n")
    # as if pytest-asyncio were not installed: its plugin not loaded, its module not found
    runner = tmp_path / "pytest_without_pytest_asyncio.py"
    runner.write_text(HIDE_PYTEST_ASYNCIO)
    result = run_pytest(project, eventbus_redis_url, python=[sys.executable, str(runner)])
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "the eventbus_bus fixture needs pytest-asyncio: pip install pytest-asyncio "
        "(see eventbus's docs/testing.md)"
    ) in result.stdout
