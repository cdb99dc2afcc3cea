"""The Dynamo venvs of the interop tests: one place per version, and no package index.

Nothing here touches the real venvs (``~/.cache/trioplane`` or the variables' paths): the
offline runs get a fresh cache folder and a package index that cannot be reached.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .dynamo import DYNAMO_VERSION, VENV_SIZES, dynamo_venv, venv_variable

ROOT = Path(__file__).resolve().parent.parent
#: A module whose every test is marked ``dynamo`` and needs the default version.
DYNAMO_MODULE = "tests/test_dynamo_tcp.py"


@pytest.fixture
def no_dynamo_variables(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith(("TRIOPLANE_DYNAMO_", "TRIOPLANE_REQUIRE_DYNAMO")):
            monkeypatch.delenv(name)
    return monkeypatch


def test_each_version_has_a_place_of_its_own(
    no_dynamo_variables: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = no_dynamo_variables
    cache = Path.home() / ".cache" / "trioplane"
    assert dynamo_venv("1.6.1") == cache / "dynamo-1.6.1"
    assert dynamo_venv("1.2.1") == cache / "dynamo-1.2.1"

    env.setenv("TRIOPLANE_DYNAMO_CACHE", str(tmp_path / "cache"))
    assert dynamo_venv("1.6.1") == tmp_path / "cache" / "dynamo-1.6.1"
    assert dynamo_venv("1.2.1") == tmp_path / "cache" / "dynamo-1.2.1"

    # The old variable names the default version's venv only.
    env.setenv("TRIOPLANE_DYNAMO_VENV", str(tmp_path / "mine"))
    assert DYNAMO_VERSION == "1.6.1"
    assert dynamo_venv("1.6.1") == tmp_path / "mine"
    assert dynamo_venv("1.2.1") == tmp_path / "cache" / "dynamo-1.2.1"

    # A version's own variable wins over both.
    assert venv_variable("1.2.1") == "TRIOPLANE_DYNAMO_VENV_1_2_1"
    env.setenv("TRIOPLANE_DYNAMO_VENV_1_2_1", str(tmp_path / "old"))
    env.setenv("TRIOPLANE_DYNAMO_VENV_1_6_1", str(tmp_path / "new"))
    assert dynamo_venv("1.2.1") == tmp_path / "old"
    assert dynamo_venv("1.6.1") == tmp_path / "new"


def offline_env(cache: Path, *, required: bool) -> dict[str, str]:
    """This environment, with a fresh Dynamo cache and a package index nobody answers."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("TRIOPLANE_DYNAMO_", "TRIOPLANE_REQUIRE_DYNAMO", "PIP_"))
    }
    env.update(
        TRIOPLANE_DYNAMO_CACHE=str(cache / "dynamo"),
        PIP_CONFIG_FILE=os.devnull,  # no configured mirrors or find-links
        PIP_INDEX_URL="http://127.0.0.1:9/simple",  # discard port: refused at once
        PIP_CACHE_DIR=str(cache / "pip"),
        PIP_RETRIES="0",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    if required:
        env["TRIOPLANE_REQUIRE_DYNAMO"] = "1"
    return env


@pytest.mark.parametrize("required", [False, True], ids=["skipped", "required"])
def test_dynamo_tests_without_a_package_index(tmp_path: Path, required: bool) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rsf", DYNAMO_MODULE],
        cwd=ROOT,
        env=offline_env(tmp_path, required=required),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    venv = tmp_path / "dynamo" / f"dynamo-{DYNAMO_VERSION}"
    # Progress, shown past pytest's capture: what, where, how big, and only once.
    assert f"installing ai-dynamo-runtime=={DYNAMO_VERSION}" in output, output
    assert str(venv) in output
    assert f"({VENV_SIZES[DYNAMO_VERSION]})" in output
    assert "This happens once" in output
    assert output.count(f"installing ai-dynamo-runtime=={DYNAMO_VERSION}") == 1, output
    # The reason, for every test of the module; nothing half made is left behind.
    reason = f"cannot install ai-dynamo-runtime=={DYNAMO_VERSION}"
    assert reason in output
    assert "needs the package index once" in output
    assert not venv.exists()
    assert not venv.with_name(venv.name + ".partial").exists()
    last = output.splitlines()[-1]
    assert "passed" not in last, output[-3000:]
    if required:  # a failure in setup: pytest counts it as an error
        assert result.returncode == 1, output[-3000:]
        assert "(and TRIOPLANE_REQUIRE_DYNAMO=1)" in output
        assert " error" in last, output[-3000:]
        assert "skipped" not in last
    else:
        assert result.returncode == 0, output[-3000:]
        assert " skipped" in last, output[-3000:]
        assert "error" not in last
        assert "failed" not in last
        assert "SKIPPED [" in output
