"""The sparse write-back cache (write/sparse.py) against a bytearray model.

Random writes, reads, truncates and evictions over a base object; after every step
the file reads as the model does, and a "crash" (reading the cache back from disk
as recovery does: allocated blocks + journal) gives the same bytes."""

from __future__ import annotations

import json
import os

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from s3pvefs.write.sparse import SparseFile

BASE = bytes((i * 7 + i // 4096) % 251 for i in range(40_000))
op = st.one_of(
    st.tuples(st.just("write"), st.integers(0, 50_000), st.integers(1, 9_000), st.integers(0, 255)),
    st.tuples(st.just("read"), st.integers(0, 50_000), st.integers(1, 20_000), st.just(0)),
    st.tuples(st.just("truncate"), st.integers(0, 50_000), st.just(0), st.just(0)),
    st.tuples(st.just("evict"), st.just(0), st.just(0), st.just(0)),
    st.tuples(st.just("commit"), st.just(0), st.just(0), st.just(0)),
)


def rebuilt_after_crash(directory: str, s: SparseFile, base: bytes) -> bytes:
    """The file's bytes as recovery sees them: allocated blocks, else base, else zeros."""
    with open(s.journal_path) as f:
        record = json.load(f)
    r = SparseFile.reopen(directory, s.name, record)
    try:
        out = bytearray(r.size)
        for start, end in r.valid.gaps(0, min(r.base_end, r.size)):
            out[start:end] = base[start:end]
        for start, end in r.valid:
            out[start:end] = os.pread(r.fd, end - start, start)
        return bytes(out)
    finally:
        os.close(r.fd)


@settings(max_examples=120, deadline=None)
@given(st.lists(op, max_size=25), st.integers(0, 40_000))
def test_sparse_cache_reads_as_the_model_and_survives_a_crash(tmp_path_factory, ops, base_size):
    directory = str(tmp_path_factory.mktemp("sparse"))
    # the base object the cache starts from; commits replace it (as S3 would)
    store = {"base": BASE[:base_size]}
    fetched = []

    async def fetch(start, end):
        assert end <= len(store["base"]), "fetched past the base"
        fetched.append(end - start)
        return store["base"][start:end]

    async def body():
        s = SparseFile(directory, key="k", path="disk.raw", base_size=base_size, base_etag="e0",
                       size=base_size, metadata={}, fill_size=8192)
        model = bytearray(store["base"])
        for kind, a, b, c in ops:
            if kind == "write":
                data = bytes([c]) * b
                await s.write(a, data, fetch)
                if a > len(model):
                    model.extend(b"\0" * (a - len(model)))
                model[a:a + b] = data
            elif kind == "read":
                assert await s.read(a, b, fetch) == bytes(model[a:a + b])
            elif kind == "truncate":
                s.truncate(a)
                model = model[:a] + bytearray(max(0, a - len(model)))
            elif kind == "evict":
                s.evict_clean()
            else:  # a commit: S3 now holds the model, the cache is all clean
                taken = s.begin_commit()
                assert taken.total <= len(model)
                store["base"] = bytes(model)
                s.committed(len(model), "e1")
            assert s.size == len(model)
            assert s.dirty.difference(s.valid).total == 0, "dirty bytes not held locally"
            assert rebuilt_after_crash(directory, s, store["base"]) == bytes(model)
        assert await s.read(0, len(model) + 10, fetch) == bytes(model)
        s.remove()
        assert os.listdir(directory) == []

    trio.run(body)


def test_opening_a_big_base_and_writing_4k_holds_a_block_not_the_file(tmp_path):
    async def fetch(start, end):
        raise AssertionError("an aligned write needs nothing from the base")

    async def body():
        s = SparseFile(str(tmp_path), key="k", path="big", base_size=100 << 30, base_etag="e",
                       size=100 << 30, metadata={}, fill_size=1 << 20)
        await s.write(50 << 30, b"x" * 4096, fetch)
        assert s.local_bytes == 4096 and s.dirty_bytes == 4096
        assert os.stat(s.data_path).st_blocks * 512 <= 64 << 10  # no local disk for the rest
        s.truncate(200 << 30)  # an extending truncate: a hole, no disk
        assert os.stat(s.data_path).st_blocks * 512 <= 64 << 10
        s.remove()

    trio.run(body)
