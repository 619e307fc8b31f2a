"""Memory figures of the running process from ``/proc/self/status`` (Linux), shared by the
benchmarks that measure a row's peak memory in a fresh subprocess."""

from __future__ import annotations


def status_kb(field: str) -> int:
    """The value of ``field`` (e.g. ``VmRSS``, ``VmHWM``) in KiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")
