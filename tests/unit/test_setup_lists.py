"""scripts/setup.sh installs every program the tests run (tests/conftest.py TOOLS): a
fresh machine runs the whole suite, nothing skipped for a missing package."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import TOOLS, need

REPO = Path(__file__).resolve().parents[2]
# tool -> the Debian package that has it (Essential: coreutils, perl-base, tar are always there)
PACKAGE = {"fusermount3": "fuse3", "zstd": "zstd", "pigz": "pigz", "lzop": "lzop", "rsync": "rsync",
           "tar": "tar", "qemu-img": "qemu-utils", "curl": "curl", "fio": "fio", "faketime": "faketime",
           "nsenter": "util-linux", "ip": "iproute2", "iptables": "iptables", "gcc": "gcc",
           "perl": "Essential", "mkfifo": "Essential", "mknod": "Essential", "dd": "Essential",
           "truncate": "Essential", "s3fs": "s3fs"}


def setup_packages() -> set[str]:
    text = (REPO / "scripts" / "setup.sh").read_text()
    block = re.search(r"APT_PACKAGES=\((.*?)\)", text, re.S).group(1)
    return set(block.split())


def test_every_tool_a_test_runs_is_installed_by_setup():
    packages = setup_packages()
    assert set(PACKAGE) == set(TOOLS), "a tool in tests/conftest.py TOOLS without its package here"
    for tool in TOOLS:
        assert PACKAGE[tool] == "Essential" or PACKAGE[tool] in packages, f"setup.sh does not install {tool}"
        need(tool)
