"""The spoke's command line refuses a bad configuration at start, naming the field and reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HEAD = "node: spoke-1\ndhcp: {interfaces: [eth0]}\n"
GOOD_SCOPE = """
scopes:
  - name: lan
    subnet: 10.0.0.0/24
    pools: ["10.0.0.100-10.0.0.199"]
    interfaces: [eth0]
"""


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        (HEAD + GOOD_SCOPE.replace("10.0.0.199", "10.0.1.5"),
         "scopes[0].pools[0]", "subnet"),
        (HEAD.replace("eth0]", "eth0], prot: 67") + GOOD_SCOPE, "dhcp.prot", "unknown"),
        ("dhcp: {interfaces: [eth0]}\n" + GOOD_SCOPE, "node", "required"),
        (HEAD + GOOD_SCOPE + "    t1: 900\n    t2: 800\n",
         "scopes[0]", "t1"),
    ],
)  # fmt: skip
def test_bad_config_is_refused_naming_the_field(
    tmp_path: Path, text: str, field: str, reason: str
) -> None:
    path = tmp_path / "spoke.yaml"
    path.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "spoke.main", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert field in done.stderr, done.stderr
    assert reason in done.stderr.lower(), done.stderr


def test_missing_file_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "spoke.main", "--config", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "nope.yaml" in done.stderr
