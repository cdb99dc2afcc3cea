"""The distributions: what the sdist and the wheel carry, and pytest in an unpacked sdist.

The project is copied as a fresh clone would have it (no caches, builds or egg-info) and
built with ``python -m build``: the sdist, then the wheel from the sdist, as PyPI users and
distribution packagers get them. In the unpacked sdist, ``python -m pytest`` (which puts
the sdist's own ``trioplane/`` first on the path, with the installed test stack) collects
every test without an error, and runs a fast part of them for real.
"""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
#: What a fresh clone does not have (the .gitignore's entries and the VCS itself).
NOT_IN_A_CLONE = {".git", ".venv", "venv", "build", "dist", "__pycache__", ".hypothesis"}
NOT_IN_A_CLONE_PATTERNS = ("*.egg-info", "*.py[cod]", ".*_cache")
#: Test support that the sdist once lacked (23 collection errors in an unpacked sdist).
TEST_SUPPORT = [
    "tests/__init__.py",
    "tests/conftest.py",
    "tests/pki.py",
    "tests/etcd.py",
    "tests/handlers.py",
    "tests/dynamo/__init__.py",
    "tests/dynamo/worker_script.py",
    "tests/dynamo/client_script.py",
    "tests/nats/__init__.py",
    "tests/nats/responder.py",
    "docs/conf.py",
    "docs/index.rst",
    "docs/examples/quickstart.py",
]
TEXTS = ["LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "trioplane/py.typed"]
#: Run for real in the unpacked sdist: fast, and they use conftest.py's helpers.
RUN_IN_SDIST = ["tests/test_wire_codecs.py", "tests/test_wire_twopart.py", "tests/test_instance.py"]


@dataclass
class Dists:
    source: Path  # the copy they were built from
    sdist: Path
    wheel: Path

    def sdist_names(self) -> set[str]:
        """The sdist's files, relative to its top folder."""
        with tarfile.open(self.sdist) as archive:
            return {
                member.name.split("/", 1)[1]
                for member in archive.getmembers()
                if member.isfile() and "/" in member.name
            }


def clone_ignore(root: Path) -> Callable[[str, list[str]], set[str]]:
    def ignore(folder: str, names: list[str]) -> set[str]:
        skipped = {name for name in names if name in NOT_IN_A_CLONE}
        skipped |= shutil.ignore_patterns(*NOT_IN_A_CLONE_PATTERNS)(folder, names)
        if Path(folder) == root / "docs":
            skipped.add("_build")
        return skipped

    return ignore


def files_under(root: Path, folder: str) -> set[str]:
    return {
        path.relative_to(root).as_posix() for path in (root / folder).rglob("*") if path.is_file()
    }


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    pytest.importorskip("build", reason="python -m build needs the test extra's 'build'")
    base = tmp_path_factory.mktemp("packaging")
    source = base / "trioplane"
    shutil.copytree(ROOT, source, ignore=clone_ignore(ROOT), symlinks=True)
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(base / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0 and "No matching distribution found for setuptools" in output:
        pytest.skip("the build backend (setuptools) cannot be installed: no package index")
    assert result.returncode == 0, output[-5000:]
    (sdist,) = (base / "dist").glob("trioplane-*.tar.gz")
    (wheel,) = (base / "dist").glob("trioplane-*.whl")
    return Dists(source, sdist, wheel)


def test_sdist_carries_the_tests_their_support_docs_and_texts(dists: Dists) -> None:
    names = dists.sdist_names()
    missing = [name for name in TEST_SUPPORT + TEXTS if name not in names]
    assert not missing, missing
    for folder in ("trioplane", "tests", "docs", "benchmarks"):
        missing = sorted(files_under(dists.source, folder) - names)
        assert not missing, f"{folder}/ files not in the sdist: {missing}"
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    with tarfile.open(dists.sdist) as archive:
        license_member = next(m for m in archive.getmembers() if m.name.endswith("/LICENSE"))
        handle = archive.extractfile(license_member)
        assert handle is not None
        assert b"Apache License\n                           Version 2.0" in handle.read()


def test_wheel_carries_the_package_typed_and_licensed(dists: Dists) -> None:
    with zipfile.ZipFile(dists.wheel) as wheel:
        names = set(wheel.namelist())
        (metadata_name,) = (n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(wheel.read(metadata_name))
    package = {name for name in files_under(dists.source, "trioplane") if name.endswith(".py")}
    assert package <= names, sorted(package - names)
    assert "trioplane/py.typed" in names
    assert any(re.fullmatch(r"trioplane-[^/]+\.dist-info/licenses/LICENSE", n) for n in names)
    assert not [n for n in names if n.split("/")[0] in {"tests", "docs", "benchmarks"}]

    assert metadata["License-Expression"] == "Apache-2.0"
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL", []))
    assert {"Homepage", "Documentation", "Changelog", "Issues"} <= set(urls)
    classifiers = set(metadata.get_all("Classifier", []))
    assert {"Framework :: Trio", "Typing :: Typed"} <= classifiers
    assert any(c.startswith("Development Status :: ") for c in classifiers)
    # One classifier per supported minor version, none below requires-python.
    pyproject = (dists.source / "pyproject.toml").read_text()
    (requires,) = re.findall(r'^requires-python = "([^"]+)"$', pyproject, re.MULTILINE)
    assert metadata["Requires-Python"] == requires
    oldest = tuple(int(part) for part in requires.removeprefix(">=").split("."))
    versions = sorted(
        tuple(int(part) for part in c.rsplit(" ", 1)[1].split("."))
        for c in classifiers
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    assert versions[0] == oldest
    assert versions == [(3, minor) for minor in range(oldest[1], versions[-1][1] + 1)]
    assert f"{sys.version_info[0]}.{sys.version_info[1]}" in {f"{a}.{b}" for a, b in versions}


def test_pytest_in_the_unpacked_sdist(dists: Dists, tmp_path: Path) -> None:
    with tarfile.open(dists.sdist) as archive:
        if hasattr(tarfile, "data_filter"):  # 3.12, and the 3.10/3.11 security releases
            archive.extractall(tmp_path, filter="data")
        else:  # pragma: no cover - our own sdist
            archive.extractall(tmp_path)
    (unpacked,) = tmp_path.iterdir()
    env = {k: v for k, v in os.environ.items() if k not in {"PYTEST_ADDOPTS", "PYTHONPATH"}}

    def pytest_run(*args: str) -> tuple[int, str]:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
            cwd=unpacked,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        return result.returncode, result.stdout + result.stderr

    code, output = pytest_run("--collect-only")
    last = output.strip().splitlines()[-1]
    assert code == 0, output[-5000:]
    assert re.fullmatch(r"\d+ tests collected in [\d.]+s", last), output[-5000:]
    assert int(last.split()[0]) > 1000, last

    code, output = pytest_run(*RUN_IN_SDIST)
    last = output.strip().splitlines()[-1]
    assert code == 0, output[-5000:]
    assert re.fullmatch(r"\d+ passed in .*", last), output[-5000:]
