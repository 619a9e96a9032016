"""Part-size planning for multipart uploads."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from s3pvefs.write.parts import (MAX_OBJECT, MAX_PART, MAX_PARTS, MIN_PART, MiB, part_ranges,
                                 part_size_for)

DEFAULT_MIN = 8 * MiB


def test_small_objects_use_min_part():
    assert part_size_for(0, DEFAULT_MIN) == DEFAULT_MIN
    assert part_size_for(100 * MiB, DEFAULT_MIN) == DEFAULT_MIN
    assert part_size_for(100 * MiB, 5 * MiB) == 5 * MiB
    assert part_size_for(100 * MiB, 1 * MiB) == MIN_PART  # never below S3's 5 MiB


def test_five_tib_fits_in_10000_parts():
    part = part_size_for(MAX_OBJECT, DEFAULT_MIN)
    ranges = part_ranges(MAX_OBJECT, part)
    assert len(ranges) <= MAX_PARTS
    assert MIN_PART <= part <= MAX_PART
    assert part % MiB == 0
    assert ranges[-1][2] == MAX_OBJECT


def test_fixed_8mib_would_not_fit():
    # the reason for growing parts: 100 GiB at 8 MiB is 12,800 parts
    assert len(part_ranges(100 << 30, DEFAULT_MIN)) > MAX_PARTS
    assert len(part_ranges(100 << 30, part_size_for(100 << 30, DEFAULT_MIN))) <= MAX_PARTS


def test_sizes_grow_with_the_object():
    sizes = [MiB, 10 << 30, 78 << 30, 79 << 30, 100 << 30, 1 << 40, MAX_OBJECT]
    parts = [part_size_for(s, DEFAULT_MIN) for s in sizes]
    assert parts == sorted(parts)
    assert parts[0] == DEFAULT_MIN and parts[-1] > parts[3] > DEFAULT_MIN


def test_too_big():
    with pytest.raises(ValueError, match="5 TiB"):
        part_size_for(MAX_OBJECT + 1, DEFAULT_MIN)


def test_empty_object_is_one_empty_part():
    assert part_ranges(0, DEFAULT_MIN) == [(1, 0, 0)]


def test_exact_multiple():
    assert part_ranges(3 * MiB, MiB) == [(1, 0, MiB), (2, MiB, 2 * MiB), (3, 2 * MiB, 3 * MiB)]
    assert part_ranges(MiB + 1, MiB) == [(1, 0, MiB), (2, MiB, MiB + 1)]


@settings(max_examples=300, deadline=None)
@given(size=hs.integers(0, MAX_OBJECT), min_part=hs.sampled_from([5 * MiB, 8 * MiB, 64 * MiB]))
def test_parts_cover_exactly(size, min_part):
    part = part_size_for(size, min_part)
    assert MIN_PART <= part <= MAX_PART and part >= min(min_part, MAX_PART)
    ranges = part_ranges(size, part)
    assert 1 <= len(ranges) <= MAX_PARTS
    assert [n for n, _, _ in ranges] == list(range(1, len(ranges) + 1))
    assert ranges[0][1] == 0 and ranges[-1][2] == size
    for (_, _, end), (_, start, _) in zip(ranges, ranges[1:]):
        assert end == start  # contiguous, no gap or overlap
    for _, start, end in ranges[:-1]:
        assert end - start == part  # only the last part may be smaller
    assert 0 < ranges[-1][2] - ranges[-1][1] <= part or size == 0
    # the smallest such part: one MiB less would need too many parts (or go below min)
    if part > max(min_part, MIN_PART):
        assert -(-size // (part - MiB)) > MAX_PARTS
