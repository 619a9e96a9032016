"""Metadata caches: TTLs with an injected clock, listings, invalidation."""

from s3pvefs.config import CacheConfig
from s3pvefs.namespace.metacache import Listing, MetaCache, parent_of
from s3pvefs.namespace.stat import DIR, FILE, new_stat


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def make(**kw):
    clock = Clock()
    cfg = CacheConfig(**{"stat_ttl": 10.0, "negative_ttl": 5.0, "listing_ttl": 20.0, **kw})
    return MetaCache(cfg, clock), clock


F = new_stat(FILE, 0o644, 0, 0, 3)
D = new_stat(DIR, 0o755, 0, 0)


def test_parent_of():
    assert parent_of("a/b/c") == "a/b" and parent_of("a") == "" and parent_of("") == ""


def test_stat_ttl_expiry():
    c, clock = make()
    assert c.lookup("a") is None
    c.put_stat("a", F)
    clock.t += 9.9
    assert c.lookup("a") == F
    clock.t += 0.2
    assert c.lookup("a") is None


def test_negative_ttl_expiry():
    c, clock = make()
    c.put_negative("a")
    assert c.lookup("a") is False
    clock.t += 4.9
    assert c.lookup("a") is False
    clock.t += 0.2
    assert c.lookup("a") is None


def test_put_stat_clears_negative_and_vice_versa():
    c, _ = make()
    c.put_negative("a")
    c.put_stat("a", F)
    assert c.lookup("a") == F
    c.put_negative("a")
    assert c.lookup("a") is False and "a" not in c.stats


def test_listing_answers_lookups_of_its_names():
    c, clock = make()
    c.put_listing("d", Listing({"f": F, "sub": D}))
    assert c.lookup("d/f") == F
    assert c.lookup("d/sub") == D
    assert c.lookup("d/missing") is False  # a complete listing knows what is absent
    assert c.lookup("other/f") is None
    assert c.lookup("d/sub/x") is None  # the listing of d says nothing about d/sub's children
    clock.t += 20.1
    assert c.lookup("d/f") is None


def test_root_listing():
    c, _ = make()
    c.put_listing("", Listing({"top": D}))
    assert c.lookup("top") == D and c.lookup("nope") is False


def test_stat_beats_listing():
    c, _ = make()
    c.put_listing("d", Listing({"f": F}))
    newer = F.with_(size=99)
    c.put_stat("d/f", newer)
    assert c.lookup("d/f") == newer


def test_changes_update_the_parent_listing_in_place():
    c, _ = make()
    c.put_listing("d", Listing({"f": F}))
    c.put_listing("d/f", Listing({}))
    c.put_stat("d/g", F)
    assert c.listings["d"].entries == {"f": F, "g": F}  # a file committed here is listed
    c.invalidate("d/f")
    assert "d/f" not in c.listings and c.listings["d"].entries == {"g": F}
    assert c.lookup("d/f") is False  # the listing still answers for names not in it
    assert c.lookup("d/g") == F
    c.put_negative("d/g")
    assert c.listings["d"].entries == {}
    c.put_stat("x", F)  # no cached listing of the root: nothing to update
    assert "" not in c.listings


def test_invalidate_forgets_negative():
    c, _ = make()
    c.put_negative("d/new")
    c.invalidate("d/new")
    assert c.lookup("d/new") is None


def test_invalidate_tree():
    c, _ = make()
    c.put_listing("", Listing({"d": D, "dx": D}))
    c.put_stat("d", D)
    c.put_stat("d/a", F)
    c.put_negative("d/b")
    c.put_listing("d/sub", Listing({"f": F}))
    c.put_stat("dx", D)  # shares the prefix "d" but is not below d/
    c.invalidate_tree("d")
    assert "" not in c.listings
    assert c.lookup("d") is None and c.lookup("d/a") is None and c.lookup("d/b") is None
    assert c.lookup("d/sub/f") is None
    assert c.lookup("dx") == D


def test_size_bounds():
    c, _ = make(stat_max_entries=3)
    for i in range(10):
        c.put_stat(f"f{i}", F)
    assert len(c.stats) <= 3


def test_small_directory_is_worth_relisting_shortly_after_its_listing_expired():
    c, clock = make()  # listing_ttl 20 s: sizes remembered 120 s
    assert not c.worth_relisting("d")  # never listed: a lookup of one name is cheaper
    c.put_listing("d", Listing({"f": F}))
    assert not c.worth_relisting("d")  # still cached: nothing to do
    clock.t += 21
    assert c.worth_relisting("d")
    c.put_listing("big", Listing({f"f{i}": F for i in range(20_001)}))  # more than 20 pages
    clock.t += 21
    assert not c.worth_relisting("big")
    clock.t += 100
    assert not c.worth_relisting("d")  # long ago: back to single lookups
