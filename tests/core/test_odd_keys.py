"""Objects other tools put in the bucket that cannot all be shown as files: the rules
of SEMANTICS.md ("Names"), and a listing that never breaks on them."""

from __future__ import annotations

import pytest

from s3pvefs.errors import NameTooLong, NotFound
from tests.core.helpers import ROOT, names


def test_odd_keys_follow_the_documented_rules(run):
    async def body(fs, store):
        odd = {
            "pve/d/ok.txt": b"fine",
            "pve/d//double-slash": b"a//b: no name can show it",
            "pve/d/" + "x" * 256: b"a component over 255 bytes",
            "pve/d/nul\0name": b"NUL",
            "pve/d/.": b"dot",
            "pve/d/..": b"dotdot",
            "pve/d/both": b"a file ...",
            "pve/d/both/inner": b"... and a directory of the same name",
            "pve/d/marker-with-data/": b"a 'directory marker' that holds bytes",
            "pve/d/marker-with-data/child": b"child",
            "pve/d/legacy_$folder$": b"",
        }
        for key, data in odd.items():
            store.put_outside(key, data)
        d, _ = await fs.lookup(ROOT, b"d")
        listed = await names(fs, d.ino)
        assert sorted(listed) == ["both", "legacy", "marker-with-data", "ok.txt"]
        assert listed["both"].kind == "dir"  # a directory shadows a file of the same name
        assert listed["marker-with-data"].kind == "dir" and listed["legacy"].kind == "dir"
        both, s = await fs.lookup(d.ino, b"both")
        assert s.kind == "dir" and sorted(await names(fs, both.ino)) == ["inner"]
        m, _ = await fs.lookup(d.ino, b"marker-with-data")
        assert sorted(await names(fs, m.ino)) == ["child"]
        with pytest.raises(NotFound):
            await fs.lookup(d.ino, b"double-slash")  # its key is d//double-slash
        with pytest.raises(NameTooLong):
            await fs.lookup(d.ino, b"x" * 256)
        ok, _ = await fs.lookup(d.ino, b"ok.txt")
        fh = await fs.open(ok.ino, 0)
        assert await fs.read(fh, 0, 100) == b"fine"
        await fs.release(fh)
        for key, data in odd.items():  # nothing was changed or deleted by looking
            assert store.objects[key].data == data

    run(body)
