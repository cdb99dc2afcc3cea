"""The ``trioplane`` command."""

from __future__ import annotations

import subprocess
import sys

import pytest

import trioplane
from trioplane.cli import main


def test_demo_runs_end_to_end() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trioplane", "demo", "--requests", "500", "--concurrency", "8"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "-> b'' (empty = accepted)" in result.stdout
    assert "b'Server overloaded: worker at capacity'" in result.stdout
    assert "worker received 502 requests on 1 connection(s)" in result.stdout


def test_bad_arguments_exit_non_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trioplane", "demo", "--concurrency", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--concurrency" in result.stderr


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == trioplane.__version__
