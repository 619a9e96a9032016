"""Request counts where the metadata caches matter."""

from __future__ import annotations

import errno
import stat as st

import pytest

from s3pvefs.config import CacheConfig, MountOptions
from s3pvefs.errors import NotFound
from tests.core.conftest import FakeClock
from tests.core.helpers import ROOT, make_file, names, read_all

N = 2500


def total(store):
    return sum(store.calls.values())


def test_second_lookup_within_ttl_makes_no_request(run):
    clock = FakeClock()

    async def body(fs, store):
        store.put_outside("pve/f", b"abc", {"mode": str(st.S_IFREG | 0o600)})
        _, s = await fs.lookup(ROOT, b"f")
        assert s.size == 3 and s.mode == st.S_IFREG | 0o600
        assert 0 < store.calls["head"] <= 2 and store.calls["list"] <= 1
        store.reset_counts()
        _, s2 = await fs.lookup(ROOT, b"f")
        assert s2 == s
        assert total(store) == 0
        clock.advance(9.9)
        await fs.lookup(ROOT, b"f")
        assert total(store) == 0
        # after the TTL another tool's change shows up
        store.put_outside("pve/f", b"abcdef")
        clock.advance(0.2)
        _, s3 = await fs.lookup(ROOT, b"f")
        assert s3.size == 6 and store.calls["head"] > 0

    run(body, clock=clock, cache=CacheConfig(stat_ttl=10.0, negative_ttl=5.0, listing_ttl=10.0))


def test_getattr_uses_cache(run):
    async def body(fs, store):
        store.put_outside("pve/f", b"abc")
        inode, _ = await fs.lookup(ROOT, b"f")
        store.reset_counts()
        for _ in range(3):
            assert (await fs.getattr(inode.ino)).size == 3
        assert total(store) == 0

    run(body)


def test_negative_lookup_is_cached(run):
    clock = FakeClock()

    async def body(fs, store):
        with pytest.raises(NotFound):
            await fs.lookup(ROOT, b"missing")
        assert store.calls["head"] > 0
        store.reset_counts()
        with pytest.raises(NotFound) as e:
            await fs.lookup(ROOT, b"missing")
        assert e.value.errno == errno.ENOENT
        assert total(store) == 0
        store.put_outside("pve/missing", b"now")
        clock.advance(5.1)
        _, s = await fs.lookup(ROOT, b"missing")
        assert s.size == 3

    run(body, clock=clock, cache=CacheConfig(stat_ttl=10.0, negative_ttl=5.0, listing_ttl=10.0))


def test_own_changes_beat_negative_cache(run):
    async def body(fs, store):
        with pytest.raises(NotFound):
            await fs.lookup(ROOT, b"f")
        with pytest.raises(NotFound):
            await fs.lookup(ROOT, b"d")
        await make_file(fs, ROOT, b"f", b"12")
        await fs.mkdir(ROOT, b"d", 0o755, 0, 0)
        store.reset_counts()
        assert (await fs.lookup(ROOT, b"f"))[1].size == 2
        assert (await fs.lookup(ROOT, b"d"))[1].kind == "dir"
        assert total(store) == 0
        await fs.unlink(ROOT, b"f")
        with pytest.raises(NotFound):
            await fs.lookup(ROOT, b"f")

    run(body)


def test_listing_answers_lookups_of_2500_files(run):
    async def body(fs, store):
        for i in range(N):
            store.put_outside(f"pve/big/f{i:04d}", b"x" * (i % 97))
        store.put_outside("pve/big/sub/inner", b"")
        big, _ = await fs.lookup(ROOT, b"big")
        store.reset_counts()
        dh = await fs.opendir(big.ino)
        assert store.calls["list"] == 3  # 2,501 entries in pages of 1,000
        assert store.calls["head"] == 0
        entries = list(fs.readdir(dh, 0))
        fs.releasedir(dh)
        assert len(entries) == N + 1
        sizes = {name: s.size for _, name, _, s in entries}
        assert sizes == {**{f"f{i:04d}": i % 97 for i in range(N)}, "sub": 0}
        assert {name: s.kind for _, name, _, s in entries}["sub"] == "dir"
        store.reset_counts()
        for i in range(N):
            inode, s = await fs.lookup(big.ino, f"f{i:04d}".encode())
            assert s.size == i % 97
            assert (await fs.getattr(inode.ino)).size == i % 97
        sub, s = await fs.lookup(big.ino, b"sub")
        assert s.kind == "dir"
        with pytest.raises(NotFound):
            await fs.lookup(big.ino, b"not-there")
        # A lookup hands the kernel the attributes it checks access against: the
        # headers, read once per listed name (the file key, or the marker of "sub");
        # never the HEAD name/ + LIST name/ probe of a name the listing explained. These
        # files are small: one GET brings each one's body with its headers (empty ones:
        # a HEAD, there is no body to bring).
        empty = sum(1 for i in range(N) if i % 97 == 0)
        assert store.calls["head"] == 1 + empty and store.calls["get"] == N - empty
        assert total(store) == N + 1
        store.reset_counts()
        for i in range(N):  # again, within the TTLs: nothing
            inode, s = await fs.lookup(big.ino, f"f{i:04d}".encode())
            assert s.complete and s.size == i % 97
        assert total(store) == 0
        # a second opendir within the TTL reuses the listing
        dh = await fs.opendir(big.ino)
        fs.releasedir(dh)
        assert total(store) == 0
        # their bodies came with their headers: reading them (Proxmox's .notes) costs nothing
        for i in range(0, N, 97):
            inode, _ = await fs.lookup(big.ino, f"f{i:04d}".encode())
            assert await read_all(fs, inode.ino) == b"x" * (i % 97)
        assert total(store) == 0
        # another version at the key is never served from what was kept
        store.put_outside("pve/big/f0001", b"new")
        fs.cache.invalidate_tree("big")  # as when the TTLs expire
        inode, _ = await fs.lookup(big.ino, b"f0001")
        assert await read_all(fs, inode.ino) == b"new"

    run(body)


def test_outside_objects_get_mount_defaults(run):
    async def body(fs, store):
        store.put_outside("pve/plain", b"12345")
        store.put_outside("pve/imp/child", b"")
        _, s = await fs.lookup(ROOT, b"plain")
        assert s.mode == st.S_IFREG | 0o600 and (s.uid, s.gid) == (1000, 1001)
        lm_ns = round(store.objects["pve/plain"].last_modified * 1e6) * 1000
        assert s.mtime_ns == lm_ns and s.size == 5
        _, d = await fs.lookup(ROOT, b"imp")
        assert d.mode == st.S_IFDIR | 0o700 and (d.uid, d.gid) == (1000, 1001)
        root = await fs.getattr(ROOT)
        assert root.mode == st.S_IFDIR | 0o700 and root.uid == 1000
        listed = await names(fs, ROOT)
        assert listed["plain"].mode == st.S_IFREG | 0o600 and listed["plain"].uid == 1000
        assert listed["imp"].mode == st.S_IFDIR | 0o700

    run(body, mount=MountOptions(uid=1000, gid=1001, file_mode=0o600, dir_mode=0o700))


def test_metadata_wins_over_defaults(run):
    async def body(fs, store):
        store.put_outside("pve/f", b"", {"mode": str(st.S_IFREG | 0o640), "uid": "5", "gid": "6",
                                          "mtime": "1700000000.5"})
        _, s = await fs.lookup(ROOT, b"f")
        assert s.mode == st.S_IFREG | 0o640 and (s.uid, s.gid) == (5, 6)
        assert s.mtime_ns == 1_700_000_000_500_000_000

    run(body, mount=MountOptions(uid=1000, gid=1001, file_mode=0o600))


def test_listing_cache_invalidated_by_own_changes(run):
    async def body(fs, store):
        d, _ = await fs.mkdir(ROOT, b"d", 0o755, 0, 0)
        await make_file(fs, d.ino, b"a", b"1")
        assert set(await names(fs, d.ino)) == {"a"}
        await make_file(fs, d.ino, b"b", b"22")
        assert {n: s.size for n, s in (await names(fs, d.ino)).items()} == {"a": 1, "b": 2}
        await fs.unlink(d.ino, b"a")
        assert set(await names(fs, d.ino)) == {"b"}
        await fs.rename(d.ino, b"b", d.ino, b"c")
        assert set(await names(fs, d.ino)) == {"c"}
        ino = (await fs.lookup(d.ino, b"c"))[0].ino
        await fs.setattr(ino, size=10)
        assert (await names(fs, d.ino))["c"].size == 10

    run(body)


def test_lookup_of_file_written_here_needs_no_request(run):
    async def body(fs, store):
        await make_file(fs, ROOT, b"f", b"abc")
        store.reset_counts()
        inode, s = await fs.lookup(ROOT, b"f")
        await fs.getattr(inode.ino)
        assert s.size == 3 and total(store) == 0

    run(body)


def test_change_after_listing_keeps_foreign_metadata(run):
    """Listing attributes are incomplete; a change must not write the defaults over
    the object's real uid/gid/times."""
    meta = {"mode": str(st.S_IFREG | 0o640), "uid": "5", "gid": "6", "mtime": "1700000000"}

    async def body(fs, store):
        store.put_outside("pve/d/f", b"abc", meta)
        store.put_outside("pve/d/g", b"abc", meta)
        d, _ = await fs.lookup(ROOT, b"d")
        await names(fs, d.ino)
        f, s = await fs.lookup(d.ino, b"f")
        assert s.complete and (s.mode, s.uid) == (st.S_IFREG | 0o640, 5)  # a lookup reads the headers
        await fs.setattr(f.ino, mode=0o600)
        m = store.objects["pve/d/f"].metadata
        assert m["mode"] == str(st.S_IFREG | 0o600)
        assert (m["uid"], m["gid"], m["mtime"]) == ("5", "6", "1700000000")
        g, _ = await fs.lookup(d.ino, b"g")
        fh = await fs.open(g.ino, 1)  # O_WRONLY
        await fs.write(fh, 3, b"def")
        await fs.release(fh)
        m = store.objects["pve/d/g"].metadata
        assert (m["mode"], m["uid"], m["gid"]) == (str(st.S_IFREG | 0o640), "5", "6")
        assert store.objects["pve/d/g"].data == b"abcdef"

    run(body, cache=CacheConfig(listing_heads_below=0))  # a listing too big to read every header


def test_symlink_survives_listing_after_its_stat_expired(run):
    clock = FakeClock()

    async def body(fs, store):
        ln, _ = await fs.symlink(ROOT, b"ln", b"target", 0, 0)
        assert (await names(fs, ROOT))["ln"].kind == "symlink"
        clock.advance(2)  # the HEAD-based stat expired, the listing (kind unknown) did not
        s = await fs.getattr(ln.ino)
        assert s.kind == "symlink"
        assert await fs.readlink(ln.ino) == b"target"

    run(body, clock=clock, cache=CacheConfig(stat_ttl=1.0, negative_ttl=1.0, listing_ttl=10.0))


def test_filling_a_new_directory_past_the_listing_ttl(run):
    """cp -r into a new directory: every new name is answered from the directory's
    listing (seeded empty by mkdir, kept up to date by each commit); when the listing
    expires, one LIST renews it instead of a HEAD+HEAD+LIST per name."""
    clock = FakeClock()

    async def body(fs, store):
        d, _ = await fs.mkdir(ROOT, b"d", 0o755, 0, 0)
        store.reset_counts()
        for i in range(300):
            if i % 100 == 99:
                clock.advance(11)  # the listing (10 s) expires now and then
            with pytest.raises(NotFound):
                await fs.lookup(d.ino, f"f{i:03d}".encode())  # what the kernel asks before create
            await make_file(fs, d.ino, f"f{i:03d}".encode(), b"x")
        assert store.calls["put"] == 300
        assert store.calls["head"] == 0
        assert store.calls["list"] == 3  # one per expiry
        assert sorted(await names(fs, d.ino)) == [f"f{i:03d}" for i in range(300)]

    run(body, clock=clock, cache=CacheConfig(stat_ttl=10.0, negative_ttl=5.0, listing_ttl=10.0))


def test_a_relisted_name_that_exists_still_gets_its_headers(run):
    """Relisting answers for absent names only: an existing file (a hookscript) is
    looked up with its headers, so its mode is the real one, not the listing default."""
    clock = FakeClock()

    async def body(fs, store):
        d, _ = await fs.mkdir(ROOT, b"snippets", 0o755, 0, 0)
        store.put_outside("pve/snippets/hook.pl", b"#!/usr/bin/perl\n", {"mode": str(st.S_IFREG | 0o755)})
        clock.advance(11)  # the listing seeded by mkdir expired: the next lookup relists
        store.reset_counts()
        with pytest.raises(NotFound):
            await fs.lookup(d.ino, b"absent")
        assert (store.calls["list"], store.calls["head"]) == (1, 0)
        _, s = await fs.lookup(d.ino, b"hook.pl")
        assert s.mode == st.S_IFREG | 0o755 and s.complete

    run(body, clock=clock, cache=CacheConfig(stat_ttl=10.0, negative_ttl=5.0, listing_ttl=10.0))


def test_small_directories_are_listed_with_their_headers(run):
    async def body(fs, store):
        for i in range(3):
            store.put_outside(f"pve/snippets/s{i}.sh", b"#!/bin/sh\n", {"mode": str(st.S_IFREG | 0o755)})
        for i in range(65):
            store.put_outside(f"pve/dump/f{i:02d}", b"x")
        snippets, _ = await fs.lookup(ROOT, b"snippets")
        dump, _ = await fs.lookup(ROOT, b"dump")
        store.reset_counts()
        assert {n: s.mode for n, s in (await names(fs, snippets.ino)).items()} == \
            {f"s{i}.sh": st.S_IFREG | 0o755 for i in range(3)}
        assert store.calls["head"] + store.calls["get"] == 3  # small files: a GET each
        store.reset_counts()
        assert len(await names(fs, dump.ino)) == 65  # above listing_heads_below (64): LIST only
        assert store.calls["head"] + store.calls["get"] == 0

    run(body)
