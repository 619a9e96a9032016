"""The CRT plane's answer to one request (store/crtplane._Exchange): CRT threads write
the body into the caller's buffer; once the caller let go (its request cancelled and
not ended by the CRT within the grace), nothing more is written there: the buffer is
the next attempt's, or the next read-ahead chunk's."""

from __future__ import annotations

import trio

from s3pvefs.store.crtplane import _Exchange


def test_a_body_that_comes_after_the_caller_let_go_is_not_written():
    async def main():
        buffer = bytearray(8)
        ex = _Exchange(trio.lowlevel.current_trio_token(), buffer, limit=8)
        ex.on_body(b"abcd", 0)
        assert bytes(buffer[:4]) == b"abcd" and ex.received == 4
        ex.let_go()  # the caller gave up: a retry fills the buffer from here
        buffer[:] = b"12345678"
        ex.on_body(b"efgh", 4)  # a late callback of the cancelled request
        assert bytes(buffer) == b"12345678"

    trio.run(main)
