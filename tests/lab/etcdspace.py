"""Owns the check that a deployment runs etcd with auto-compaction and an explicit quota.

Every binding commit is a new etcd revision and etcd keeps every revision until it is compacted,
so a deployment without auto-compaction grows until etcd raises its NOSPACE alarm. The quota
must be explicit (not etcd's default) and at most half the member's volume when the volume's
size is known: a defragmentation writes a copy of the database beside it. `check_space_flags`
reads only the flags; `etcd_lacks` names the flags the etcd this machine runs (Debian's
etcd-server 3.4) does not know (an integration test: it runs `etcd --help`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping

QUOTA_MAX = 8 * 2**30  # etcd's suggested maximum backend size
SPACE_FLAGS = ("auto-compaction-mode", "auto-compaction-retention", "quota-backend-bytes")
_UNITS = {"": 1, "k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}
_UNITS |= {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_HOURS = {"h": 1.0, "m": 1 / 60, "s": 1 / 3600, "ms": 1 / 3_600_000}


def quantity_bytes(text: str) -> int:
    """A Kubernetes storage quantity ("8Gi", "500M", "1073741824") in bytes."""
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?", text.strip())
    assert m is not None, f"{text!r}: not a storage quantity this check reads"
    return int(m.group(1)) * _UNITS[m.group(2) or ""]


def flags_from_env(env: Mapping[str, object]) -> dict[str, str]:
    """etcd's flags as its ETCD_* environment variables give them (ETCD_QUOTA_BACKEND_BYTES ->
    quota-backend-bytes)."""
    return {
        k[len("ETCD_") :].lower().replace("_", "-"): str(v)
        for k, v in env.items()
        if k.startswith("ETCD_")
    }


def etcd_lacks(flags: Iterable[str] = SPACE_FLAGS) -> list[str]:
    """The `flags` (names without dashes) that `etcd --help` of the installed etcd omits."""
    etcd = shutil.which("etcd")
    assert etcd is not None, "no etcd on PATH (make deps installs etcd-server)"
    done = subprocess.run([etcd, "--help"], capture_output=True, text=True, timeout=30)
    help_text = done.stdout + done.stderr
    return [name for name in flags if f"--{name} " not in help_text]


def retention_hours(retention: str) -> float:
    """etcd's periodic retention in hours: a number of hours, or a Go duration ("1h30m", "5m")."""
    if re.fullmatch(r"\d+(?:\.\d+)?", retention):
        return float(retention)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", retention)
    assert "".join(n + u for n, u in parts) == retention, f"{retention!r}: not a duration"
    return sum(float(n) * _HOURS[u] for n, u in parts)


def check_space_flags(
    flags: Mapping[str, str], *, where: str, volume_bytes: int | None = None
) -> None:
    """AssertionError naming `where` and the flag unless `flags` (name -> value, no dashes)
    turn auto-compaction on and set an explicit quota that fits the volume."""
    mode = flags.get("auto-compaction-mode", "periodic")
    retention = flags.get("auto-compaction-retention", "0")
    assert mode in ("periodic", "revision"), f"{where}: --auto-compaction-mode={mode}"
    if mode == "revision":
        on = retention.isdigit() and int(retention) > 0
    else:
        on = retention_hours(retention) > 0
    assert on, f"{where}: --auto-compaction-retention={retention}: compaction is off"
    quota_text = flags.get("quota-backend-bytes")
    assert quota_text is not None, f"{where}: no explicit --quota-backend-bytes"
    assert quota_text.isdigit(), f"{where}: --quota-backend-bytes={quota_text}: bytes, a number"
    quota = int(quota_text)
    assert 0 < quota <= QUOTA_MAX, f"{where}: --quota-backend-bytes={quota} (0 < q <= 8 GiB)"
    if volume_bytes is not None:
        assert 2 * quota <= volume_bytes, (
            f"{where}: quota {quota} is over half the volume ({volume_bytes}): no room to defrag"
        )
