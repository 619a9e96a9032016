"""The inode table: numbers, names, lookup counts and lifetimes."""

from s3pvefs.namespace.inodes import ROOT_INO, InodeTable
from s3pvefs.namespace.stat import DIR, FILE, SYMLINK


def test_root():
    t = InodeTable()
    root = t.get(ROOT_INO)
    assert root.kind == DIR and t.path(root) == "" and len(t) == 1
    t.forget(ROOT_INO, 100)
    assert t.get(ROOT_INO) is root


def test_attach_is_idempotent_and_paths():
    t = InodeTable()
    d = t.attach(ROOT_INO, "dump", DIR)
    f = t.attach(d.ino, "a.vma", FILE)
    assert t.attach(d.ino, "a.vma", FILE) is f
    assert f.ino not in (ROOT_INO, d.ino)
    assert t.path(d) == "dump" and t.path(f) == "dump/a.vma"
    assert t.child(d.ino, "a.vma") is f and t.child(d.ino, "b") is None
    assert t.children(d.ino) == [f]


def test_type_change_gives_new_inode():
    t = InodeTable()
    f = t.attach(ROOT_INO, "x", FILE)
    f.lookups = 1
    d = t.attach(ROOT_INO, "x", DIR)
    assert d is not f and d.ino != f.ino and d.kind == DIR
    assert not f.attached
    assert t.child(ROOT_INO, "x") is d
    assert t.get(f.ino) is f  # the kernel still holds it until forget
    t.forget(f.ino, 1)
    assert t.get(f.ino) is None


def test_detach_keeps_inode_while_referenced():
    t = InodeTable()
    f = t.attach(ROOT_INO, "f", FILE)
    f.lookups = 2
    f.open_handles = 1
    t.detach(f)
    assert not f.attached and t.child(ROOT_INO, "f") is None
    assert t.get(f.ino) is f
    t.forget(f.ino, 2)
    assert t.get(f.ino) is f  # still open
    t.release_handle(f)
    assert t.get(f.ino) is None


def test_unreferenced_inode_dropped_on_detach():
    t = InodeTable()
    f = t.attach(ROOT_INO, "f", FILE)
    t.detach(f)
    assert t.get(f.ino) is None


def test_forget_drops_and_cascades_to_parent():
    t = InodeTable()
    d = t.attach(ROOT_INO, "d", DIR)
    f = t.attach(d.ino, "f", FILE)
    f.lookups = 1
    t.forget(d.ino, 5)  # d has no lookups but a child: stays
    assert t.get(d.ino) is d
    t.forget(f.ino, 1)
    assert t.get(f.ino) is None and t.get(d.ino) is None
    assert t.child(ROOT_INO, "d") is None
    t.forget(12345, 1)  # unknown inode: ignored


def test_forget_partial_count():
    t = InodeTable()
    f = t.attach(ROOT_INO, "f", FILE)
    f.lookups = 3
    t.forget(f.ino, 2)
    assert t.get(f.ino) is f and f.lookups == 1
    t.forget(f.ino, 10)
    assert t.get(f.ino) is None


def test_local_state_keeps_inode():
    t = InodeTable()
    f = t.attach(ROOT_INO, "f", FILE)
    f.pinned = True
    t.drop_if_unused(f)
    assert t.get(f.ino) is f and f.attached
    f.pinned = False
    t.drop_if_unused(f)
    assert t.get(f.ino) is None


def test_move_same_and_cross_dir():
    t = InodeTable()
    a = t.attach(ROOT_INO, "a", DIR)
    b = t.attach(ROOT_INO, "b", DIR)
    a.lookups = b.lookups = 1
    f = t.attach(a.ino, "f", FILE)
    f.lookups = 1
    t.move(f, a.ino, "g")
    assert t.path(f) == "a/g" and t.child(a.ino, "f") is None and t.child(a.ino, "g") is f
    t.move(f, b.ino, "h")
    assert t.path(f) == "b/h" and t.children(a.ino) == [] and t.child(b.ino, "h") is f


def test_move_replaces_target():
    t = InodeTable()
    src = t.attach(ROOT_INO, "src", FILE)
    dst = t.attach(ROOT_INO, "dst", FILE)
    src.lookups = dst.lookups = 1
    t.move(src, ROOT_INO, "dst")
    assert t.child(ROOT_INO, "dst") is src and t.child(ROOT_INO, "src") is None
    assert not dst.attached and t.get(dst.ino) is dst
    assert src.attached and t.path(src) == "dst"


def test_moving_a_directory_moves_its_subtree():
    t = InodeTable()
    d = t.attach(ROOT_INO, "d", DIR)
    d.lookups = 1
    sub = t.attach(d.ino, "sub", DIR)
    f = t.attach(sub.ino, "f", SYMLINK)
    f.lookups = 1
    t.move(d, ROOT_INO, "e")
    assert t.path(f) == "e/sub/f"


def test_is_ancestor():
    t = InodeTable()
    a = t.attach(ROOT_INO, "a", DIR)
    b = t.attach(a.ino, "b", DIR)
    c = t.attach(ROOT_INO, "c", DIR)
    root = t.get(ROOT_INO)
    assert t.is_ancestor(a, b) and t.is_ancestor(a, a) and t.is_ancestor(root, b)
    assert not t.is_ancestor(b, a) and not t.is_ancestor(c, b)


def test_inode_numbers_never_reused():
    t = InodeTable()
    seen = set()
    for _ in range(5):
        f = t.attach(ROOT_INO, "f", FILE)
        assert f.ino not in seen
        seen.add(f.ino)
        t.detach(f)
