"""A streamed file's pieces (write/pieces.py) against a bytearray; parts taken out
keep their bytes whatever is written after."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from s3pvefs.store.body import Body, pieces_of
from s3pvefs.store.crtplane import _BodyReader
from s3pvefs.write.pieces import Pieces


class TinyPieces(Pieces):
    small, gather, compact = 4, 16, 6  # gathering, in-place writes and compaction reached by short data


op = st.one_of(
    st.tuples(st.just("write"), st.integers(0, 100), st.binary(min_size=0, max_size=24)),
    st.tuples(st.just("append"), st.integers(0, 0), st.binary(min_size=1, max_size=24)),
    st.tuples(st.just("truncate"), st.integers(0, 100), st.just(b"")),
    st.tuples(st.just("take"), st.integers(0, 40), st.just(b"")),
    st.tuples(st.just("prepend"), st.integers(0, 0), st.binary(min_size=0, max_size=10)),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(op, max_size=60), st.booleans())
def test_pieces_hold_what_a_bytearray_would_and_taken_parts_keep_their_bytes(operations, tiny):
    pieces, model = (TinyPieces() if tiny else Pieces()), bytearray()
    taken: list[tuple[Body, bytes]] = []
    for name, n, data in operations:
        if name == "write":
            at = min(n, len(model))
            pieces.write(at, data)
            model[at:at + len(data)] = data
        elif name == "append":
            pieces.write(len(model), data)
            model += data
        elif name == "truncate":
            pieces.truncate(n)
            del model[n:]
        elif name == "take":
            body = pieces.take(n)
            expect = bytes(model[:n])
            del model[:n]
            assert len(body) == len(expect)
            taken.append((body, expect))
        else:
            pieces.prepend(data)
            model[0:0] = data
        assert len(pieces) == len(model)
        assert pieces.join() == model
        assert bool(pieces) == bool(model)
        for body, expect in taken:  # never written through, whatever came after
            assert bytes(body) == expect
            assert b"".join(bytes(p) for p in pieces_of(body)) == expect
    for start in range(0, len(model) + 2, 3):
        assert pieces.copy(start, start + 7) == bytes(model[start:start + 7])


def test_overwrites_across_pieces_are_joined_into_one_once_they_cut_too_many():
    pieces, model = TinyPieces(), bytearray()
    for i in range(40):  # 40 writes of 5 bytes: a piece each (not below `small`)
        pieces.write(len(pieces), bytes([i]) * 5)
        model += bytes([i]) * 5
    assert pieces.count() == 40
    pieces.write(3, b"abcd")  # across two pieces: cut around, then too many: joined
    model[3:7] = b"abcd"
    assert pieces.count() == 1 and pieces.join() == model
    for at in range(0, 190, 7):  # later overwrites land inside that one piece, in place
        pieces.write(at, b"xyz")
        model[at:at + 3] = b"xyz"
    assert pieces.count() == 1 and pieces.join() == model


def test_a_large_write_is_kept_as_it_came_and_a_part_of_whole_writes_is_those_objects():
    pieces = Pieces()
    writes = [bytes([i]) * (1 << 20) for i in range(3)]
    for w in writes:
        pieces.write(len(pieces), w)
    body = pieces.take(2 << 20)
    assert body.pieces[0] is writes[0] and body.pieces[1] is writes[1]  # no copy on the way
    assert pieces.count() == 1 and len(pieces) == 1 << 20


def test_small_writes_are_gathered_into_few_pieces():
    pieces = Pieces()
    for i in range(4096):  # 2 MiB in 512-byte writes
        pieces.write(len(pieces), bytes([i % 256]) * 512)
    assert pieces.count() == 2
    assert pieces.join() == b"".join(bytes([i % 256]) * 512 for i in range(4096))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=30), max_size=8), st.lists(st.integers(1, 20), min_size=1, max_size=20),
       st.integers(0, 40))
def test_the_crt_reads_a_body_of_pieces_in_any_chunking_and_after_a_seek(chunks, sizes, seek_to):
    body = Body(tuple(chunks), sum(map(len, chunks)))
    whole = b"".join(chunks)
    reader = _BodyReader(body)
    got, i = bytearray(), 0
    while True:
        buf = bytearray(sizes[i % len(sizes)])
        n = reader.readinto(memoryview(buf))
        if not n:
            break
        got += buf[:n]
        i += 1
    assert got == whole
    reader.seek(seek_to)
    rest = bytearray(len(whole) + 5)
    n = reader.readinto(memoryview(rest))
    assert rest[:n] == whole[seek_to:]


def test_a_piece_larger_than_a_fuse_write_is_copied_when_cut_not_kept_whole_for_a_view():
    pieces = Pieces()
    pieces.write(0, bytes(3 << 20))  # e.g. what compaction joins
    body = pieces.take(1 << 20)
    assert [type(p) for p in body.pieces] == [bytes] and pieces.count() == 1
    assert len(body) == 1 << 20 and len(pieces) == 2 << 20
    small = Pieces()
    small.write(0, bytes(1 << 20))
    part = small.take(1 << 19)
    assert type(part.pieces[0]) is memoryview  # a FUSE-sized piece is shared, not copied
