"""The virtual-network page's example runs as written: as pytest, in an empty project."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"
EXAMPLE = DOCS / "examples" / "virtual_network" / "test_summarize.py"


def test_the_page_includes_the_example() -> None:
    page = (DOCS / "virtual-network.rst").read_text()
    assert "examples/virtual_network/test_summarize.py" in page


def test_the_example_passes_under_pytest_each_test_well_under_a_second(tmp_path: Path) -> None:
    (tmp_path / EXAMPLE.name).write_text(EXAMPLE.read_text())
    (tmp_path / "pytest.ini").write_text("[pytest]\ntrio_mode = true\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--durations=0",
         "--durations-min=0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = result.stdout.splitlines()[-1]
    assert re.search(r"\b5 passed\b", outcome), outcome
    assert not re.search(r"skipped|failed|error|warning", outcome), outcome
    durations = [float(t) for t in re.findall(r"^([\d.]+)s call", result.stdout, re.M)]
    assert len(durations) == 5, result.stdout
    assert max(durations) < 0.9, result.stdout
