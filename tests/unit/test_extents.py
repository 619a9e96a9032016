"""Extents against a set of integers; the commit plan's rules."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from s3pvefs.write.extents import Extents
from s3pvefs.write.writeback import COPY, SEND, plan_commit

MiB = 1 << 20
ops = st.lists(st.tuples(st.booleans(), st.integers(0, 60), st.integers(0, 20)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(ops, st.integers(0, 60), st.integers(0, 30))
def test_extents_behave_as_a_set_of_offsets(operations, qs, ql):
    e, model = Extents(), set()
    for add, start, length in operations:
        if add:
            e.add(start, start + length)
            model |= set(range(start, start + length))
        else:
            e.remove(start, start + length)
            model -= set(range(start, start + length))
        ranges = list(e)
        assert all(s < t for s, t in ranges)
        assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:])), "not merged or overlapping"
        assert {i for s, t in ranges for i in range(s, t)} == model
        assert e.total == len(model)  # kept as ranges come and go, not summed
        assert e.copy().total == len(model)
    q = set(range(qs, qs + ql))
    assert {i for s, t in e.gaps(qs, qs + ql) for i in range(s, t)} == q - model
    assert {i for s, t in e.overlapping(qs, qs + ql) for i in range(s, t)} == q & model
    assert e.covers(qs, qs + ql) == (q <= model)
    assert e.touches(qs, qs + ql) == bool(q & model)
    other = Extents([(qs, qs + ql)])
    assert {i for s, t in e.difference(other) for i in range(s, t)} == model - q


def test_plan_copies_unchanged_windows_and_sends_dirty_ones():
    size, window = 64 * MiB, 8 * MiB
    plan = plan_commit(size, size, Extents([(20 * MiB, 21 * MiB)]), window, copy_part=256 * MiB)
    assert plan == [(COPY, 0, 16 * MiB), (SEND, 16 * MiB, 24 * MiB), (COPY, 24 * MiB, 64 * MiB)]


def test_plan_sends_a_write_across_a_window_edge_as_two_parts():
    plan = plan_commit(32 * MiB, 32 * MiB, Extents([(8 * MiB - 1, 8 * MiB + 1)]), 8 * MiB)
    assert [k for k, _, _ in plan] == [SEND, SEND, COPY]


def test_plan_sends_what_lies_past_the_base():
    # truncated to 10 MiB and extended to 30: [10, 30) is zeros, not the base's
    plan = plan_commit(30 * MiB, 10 * MiB, Extents(), 8 * MiB)
    assert plan == [(COPY, 0, 8 * MiB), (SEND, 8 * MiB, 16 * MiB), (SEND, 16 * MiB, 24 * MiB),
                    (SEND, 24 * MiB, 30 * MiB)]


def test_plan_merges_copies_up_to_the_copy_part_and_never_passes_10000_parts():
    plan = plan_commit(100 * MiB, 100 * MiB, Extents(), 8 * MiB, copy_part=32 * MiB)
    assert plan == [(COPY, 0, 32 * MiB), (COPY, 32 * MiB, 64 * MiB), (COPY, 64 * MiB, 96 * MiB),
                    (COPY, 96 * MiB, 100 * MiB)]
    assert plan_commit(0, 0, Extents(), 8 * MiB) == [(SEND, 0, 0)]
