"""Part-size planning for multipart uploads."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from s3pvefs.config import WriteConfig
from s3pvefs.write.parts import (MAX_OBJECT, MAX_PART, MAX_PARTS, MIN_PART, PARTS_PER_STEP, MiB, copy_ranges,
                                 part_ranges, part_size_for, stream_capacity, stream_part_size)

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


# ---------------------------------------------------------------- streamed files

MiB_, GiB_, TiB_ = 1 << 20, 1 << 30, 1 << 40


def test_stream_parts_double_every_step_up_to_the_cap():
    cfg = WriteConfig()
    sizes = [stream_part_size(i, cfg.min_part_size, cfg.max_part_size) for i in (1, 1000, 1001, 2001, 3001, 9999)]
    assert sizes == [8 * MiB_, 8 * MiB_, 16 * MiB_, 32 * MiB_, 64 * MiB_, 64 * MiB_]
    assert stream_part_size(5, 8 * MiB_, 64 * MiB_, uniform=True) == 8 * MiB_
    assert stream_part_size(5000, 8 * MiB_, 64 * MiB_, uniform=True) == 8 * MiB_
    assert [stream_part_size(i, 5 * MiB_, 20 * MiB_, step=2) for i in range(1, 8)] == \
        [5 * MiB_, 5 * MiB_, 10 * MiB_, 10 * MiB_, 20 * MiB_, 20 * MiB_, 20 * MiB_]


def test_one_upload_of_default_parts_holds_492_gib():
    cfg = WriteConfig()
    assert stream_capacity(cfg.min_part_size, cfg.max_part_size) == \
        1000 * (8 + 16 + 32) * MiB_ + 7000 * 64 * MiB_
    assert stream_capacity(8 * MiB_, 64 * MiB_, uniform=True) == MAX_PARTS * 8 * MiB_


def test_copy_ranges_are_few_nearly_equal_and_within_s3_limits():
    for size in (MIN_PART, 6 * MiB_, 5 * GiB_, 5 * GiB_ + 1, 492 * GiB_, 5 * TiB_ - 1):
        ranges = copy_ranges(size)
        assert ranges[0][0] == 0 and ranges[-1][1] == size
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        assert all(MIN_PART <= end - start <= MAX_PART for start, end in ranges)
        assert len(ranges) == -(-size // MAX_PART)


def test_default_settings_stream_a_5_tib_file():
    """What stream.py does with default settings: each upload holds at most 10,000
    parts; a full one is completed and the next starts with UploadPartCopy parts of
    the committed prefix. Every data part fits the memory budget, every part is
    within S3's limits, and 5 TiB (S3's largest object) is reached."""
    cfg = WriteConfig()
    target = 5 * TiB_
    written, index, uploads, copied = 0, 1, 0, 0
    while written < target:
        copies = copy_ranges(written) if written else []
        assert all(MIN_PART <= end - start <= MAX_PART for start, end in copies)
        parts = len(copies)
        copied += written
        assert parts < MAX_PARTS
        while parts < MAX_PARTS and written < target:
            part = stream_part_size(index, cfg.min_part_size, cfg.max_part_size)
            assert MIN_PART <= part <= cfg.max_part_size < cfg.memory_budget
            written += min(part, target - written)
            index += 1
            parts += 1
        uploads += 1
    assert written == target
    assert uploads == 9  # the first holds 492 GiB, each follow-up ~600 GiB more
    assert index - 1 < 9 * MAX_PARTS
    assert PARTS_PER_STEP == 1000
    print(f"5 TiB: {uploads} uploads, {index - 1} data parts, {copied / TiB_:.1f} TiB copied server-side")
