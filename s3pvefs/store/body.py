"""A request body made of several buffers: a streamed file's part, in the pieces it
was written in (write/pieces.py). Checksums and the CRT read the pieces in turn;
a sender that needs one buffer joins them with bytes(body)."""

from __future__ import annotations


class Body:
    """The bytes of one part: its pieces, in order. bytes(body) joins them."""

    __slots__ = ("pieces", "size")

    def __init__(self, pieces: tuple, size: int):
        self.pieces = pieces
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        return self.pieces[0] if len(self.pieces) == 1 and type(self.pieces[0]) is bytes else b"".join(self.pieces)


def pieces_of(body) -> tuple:
    """The buffers a request body is made of: a Body's pieces, or the body itself."""
    return body.pieces if isinstance(body, Body) else (body,)
