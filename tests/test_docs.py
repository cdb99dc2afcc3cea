"""The documentation: its example program runs, and Sphinx builds it without warnings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS_DIR = Path(__file__).resolve().parent.parent / "docs"


def test_quickstart_example_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(DOCS_DIR / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "accepted: ack=b''" in result.stdout
    assert "rejected: ack=b'Server overloaded: worker at capacity'" in result.stdout


def test_docs_build_without_warnings(tmp_path: Path) -> None:
    pytest.importorskip("sphinx")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-b",
            "html",
            str(DOCS_DIR),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_endpoint_example_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(DOCS_DIR / "examples" / "endpoint.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "item: {'i': 0}",
        "item: {'i': 1}",
        "item: {'i': 2}",
        "all at once: [{'i': 0}, {'i': 1}]",
    ]


@pytest.mark.etcd
def test_deployment_example_runs_against_etcd_and_the_file_backend(tmp_path: Path) -> None:
    from .etcd import run_etcd

    example = str(DOCS_DIR / "examples" / "deployment.py")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DYN_", "ETCD_"))}
    with run_etcd(tmp_path / "etcd") as etcd:
        for env in (
            {**base, "ETCD_ENDPOINTS": etcd.url},
            {**base, "DYN_DISCOVERY_BACKEND": "file", "DYN_FILE_KV": str(tmp_path / "kv")},
        ):
            result = subprocess.run(
                [sys.executable, example],
                capture_output=True, text=True, timeout=60, check=False, env=env,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
            assert result.stdout.strip() == "[{'echo': 'hello'}]"


def test_observability_example_runs() -> None:
    pytest.importorskip("prometheus_client")
    pytest.importorskip("httpx")
    result = subprocess.run(
        [sys.executable, str(DOCS_DIR / "examples" / "observability.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert 'GET /health: 200 {"status":"ready"' in result.stdout
    assert re.search(
        r'dynamo_component_requests_total\{.*dynamo_endpoint="generate".*\} 3\.0', result.stdout
    )
    assert "dynamo_request_plane_roundtrip_ttft_seconds_count 3.0" in result.stdout
