"""Every tier: a skipped test is a failed one.

A test whose tool, package or device is missing must fail and say what to install
(scripts/setup.sh installs all of them), never skip: a skip on CI hides a missing
install step (fio and faketime once did). Deselection by marker (`-m slow`) is not a skip.
"""

from __future__ import annotations

import shutil

import pytest

# Every program a test runs, as scripts/setup.sh installs it (tests/unit/test_setup_lists.py
# checks the two lists agree).
TOOLS = ("fusermount3", "zstd", "pigz", "lzop", "rsync", "tar", "qemu-img", "curl", "fio", "faketime",
         "nsenter", "ip", "iptables", "gcc", "perl", "mkfifo", "mknod", "dd", "truncate", "s3fs")


def need(tool: str) -> str:
    """The path of tool; a failure naming it when it is missing."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is missing: run scripts/setup.sh (it installs every tool the tests use)")
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, which this suite does not allow: {reason}"
