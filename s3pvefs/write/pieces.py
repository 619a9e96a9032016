"""A streamed file's unsent bytes, held as the pieces they were written in.

A 1 MiB FUSE write arrives as a bytes object of its own. Appending it to one
bytearray copied it, growing that bytearray reallocated (and often copied) it
again, and cutting a part out of it copied it a third time: a third of the event
loop's time in a sequential write (py-spy, docs/PERFORMANCE.md). Here a large
write is kept as the object it came in, and a part is the list of the pieces
that make it up: no copy until the bytes go out on the wire.

Small writes are gathered into a bytearray of our own (up to `gather` bytes), so
that a writer of 512-byte blocks does not make a piece, and its overhead, per
block. A write over bytes already held replaces them: inside one piece it is
written in place (the piece is made ours first if it is not), across pieces they
are cut around it. A piece shared with a part on its way is only ever a read-only
view here, never written into. Memory held is what the budget was charged, give
or take one piece cut in two (at most a FUSE write, 1 MiB).
"""

from __future__ import annotations

from s3pvefs.store.body import Body


class Pieces:
    small = 64 << 10  # writes below this are gathered, not kept as pieces of their own
    gather = 1 << 20  # size of a gathering bytearray before a new one starts
    compact = 256  # pieces beyond which the bytes are joined into one (overwrites across pieces cut more)

    def __init__(self) -> None:
        self._pieces: list = []  # bytes, bytearray (ours: gathered or copied) or read-only memoryview
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def count(self) -> int:
        return len(self._pieces)

    # ------------------------------------------------------------------ writing
    def write(self, at: int, data) -> None:
        """Put data at offset at (at most len(self): no hole)."""
        n = len(data)
        if not n:
            return
        if at == self._size:
            self._append(data)
            return
        if at > self._size:
            raise ValueError("write beyond the end would leave a hole")
        end = at + n
        if end > self._size:  # overlaps the end: cut what it covers, then append
            self.truncate(at)
            self._append(data)
            return
        i, offset = self._find(at)
        piece = self._pieces[i]
        if offset + n <= len(piece):  # inside one piece: in place
            if type(piece) is not bytearray:
                piece = self._pieces[i] = bytearray(piece)
            piece[offset:offset + n] = data
            return
        head = self._cut_before(at)
        tail = self._cut_from(end)
        self._pieces = head + [bytes(data)] + tail
        if len(self._pieces) > self.compact:
            self._pieces = [bytearray().join(self._pieces)]

    def _append(self, data) -> None:
        n = len(data)
        last = self._pieces[-1] if self._pieces else None
        if n < self.small:
            if type(last) is bytearray and len(last) + n <= self.gather:
                last += data
            else:
                self._pieces.append(bytearray(data))
        else:
            self._pieces.append(data if type(data) is bytes else bytes(data))
        self._size += n

    def prepend(self, data) -> None:
        if data:
            self._pieces.insert(0, bytes(data))
            self._size += len(data)

    def truncate(self, size: int) -> None:
        """Keep the first size bytes."""
        if size >= self._size:
            return
        self._pieces = self._cut_before(size)
        self._size = size

    # ------------------------------------------------------------------ taking out
    def take(self, n: int) -> Body:
        """The first n bytes, removed from here; a piece they end inside is cut in two (_slice)."""
        n = min(n, self._size)
        taken, got, i = [], 0, 0
        while got < n:
            piece = self._pieces[i]
            size = len(piece)
            if got + size <= n:
                taken.append(piece)
                got += size
                i += 1
            else:
                taken.append(self._slice(piece, 0, n - got))
                self._pieces[i] = self._slice(piece, n - got, size)
                got = n
        del self._pieces[:i]
        self._size -= n
        return Body(tuple(taken), n)

    def copy(self, start: int, end: int) -> bytes:
        """Bytes [start, end) (clamped to what is held), as a new bytes object."""
        end = min(end, self._size)
        if start >= end:
            return b""
        i, offset = self._find(start)
        out, need = [], end - start
        while need:
            view = _readonly(self._pieces[i])[offset:offset + need]
            out.append(view)
            need -= len(view)
            i, offset = i + 1, 0
        return out[0].tobytes() if len(out) == 1 else b"".join(out)

    def join(self) -> bytes:
        return self.copy(0, self._size)

    # ------------------------------------------------------------------ inside
    def _find(self, at: int) -> tuple[int, int]:
        """(index, offset in it) of the piece holding byte at (< len)."""
        pos = 0
        for i, piece in enumerate(self._pieces):
            if at < pos + len(piece):
                return i, at - pos
            pos += len(piece)
        raise IndexError(at)

    def _cut_before(self, at: int) -> list:
        """The pieces holding [0, at), the last one cut as a view."""
        if at <= 0:
            return []
        i, offset = self._find(at) if at < self._size else (len(self._pieces), 0)
        kept = self._pieces[:i]
        if offset:
            kept.append(self._slice(self._pieces[i], 0, offset))
        return kept

    def _cut_from(self, at: int) -> list:
        """The pieces holding [at, len), the first one cut as a view."""
        if at >= self._size:
            return []
        i, offset = self._find(at)
        piece = self._pieces[i]
        return ([self._slice(piece, offset, len(piece))] if offset else [piece]) + self._pieces[i + 1:]

    def _slice(self, piece, start: int, end: int):
        """Bytes [start, end) of a piece, to keep: a view of it (no copy), but a copy of
        a piece larger than a FUSE write (joined by compaction), whose whole would stay
        in memory for a small view, beyond what the budget was charged."""
        if len(piece) > self.gather:
            return bytes(_readonly(piece)[start:end])
        return _readonly(piece)[start:end]


def _readonly(piece) -> memoryview:
    # Views are read-only so that nothing writes through them into a piece shared
    # with a part on its way; a bytearray viewed this way is never resized again
    # (it is no longer the gathering piece: views replace it in the list).
    view = memoryview(piece)
    return view.toreadonly() if not view.readonly else view
