"""Errors: errnos, and collapsing trio's exception groups to one FsError."""

import errno

import pytest
import trio

from s3pvefs.errors import (Exists, FsError, NotFound, ReadOnly, StoreError, single_error)


def test_errnos():
    assert NotFound().errno == errno.ENOENT
    assert Exists("x").errno == errno.EEXIST
    assert ReadOnly().errno == errno.EROFS
    assert StoreError("boom", code="SlowDown", transient=True).errno == errno.EIO
    assert FsError("x", err=errno.ENOSPC).errno == errno.ENOSPC
    assert FsError().errno == errno.EIO  # the class default is untouched by instances


async def _fail(exc):
    await trio.lowlevel.checkpoint()
    raise exc


def test_single_error_unwraps_nursery_groups():
    async def main():
        with pytest.raises(StoreError, match="boom"):
            with single_error():
                async with trio.open_nursery() as n:
                    n.start_soon(_fail, StoreError("boom"))
                    n.start_soon(trio.sleep_forever)

    trio.run(main)


def test_single_error_leaves_other_groups_alone():
    async def main():
        with pytest.raises(BaseExceptionGroup) as e:
            with single_error():
                async with trio.open_nursery() as n:
                    n.start_soon(_fail, ValueError("bug"))
        assert isinstance(e.value.exceptions[0], ValueError)

    trio.run(main)


def test_single_error_passes_plain_exceptions():
    with pytest.raises(NotFound):
        with single_error():
            raise NotFound("x")


def test_mount_help_lists_every_exit_code():
    import re

    from s3pvefs import cli, errors
    codes = {int(n) for n in re.findall(r"^  (\d+)  ", cli.MOUNT_EXIT_CODES, re.M)}
    assert codes == {0} | {v for k, v in vars(errors).items() if k.startswith("EXIT_")}
    assert f"within {__import__('s3pvefs.bucketaccess').bucketaccess.REACH_WITHIN:g} s" in cli.MOUNT_EXIT_CODES
