"""Part-size planning for multipart uploads and copies.

S3 allows 10,000 parts of 5 MiB..5 GiB (the last may be smaller) and objects up to
5 TiB. A fixed 8 MiB part would cap a file at 78 GiB, so the part size is chosen
from the size: the smallest multiple of 1 MiB >= min_part that fits in 10,000 parts.
"""

from __future__ import annotations

MiB, GiB, TiB = 1 << 20, 1 << 30, 1 << 40
MAX_PARTS = 10_000
MIN_PART = 5 * MiB
MAX_PART = 5 * GiB
MAX_OBJECT = 5 * TiB
MAX_SINGLE_COPY = 5 * GiB  # CopyObject limit; larger copies use UploadPartCopy


def part_size_for(size: int, min_part: int) -> int:
    if size > MAX_OBJECT:
        raise ValueError(f"{size} bytes is more than S3's 5 TiB object limit")
    need = -(-size // MAX_PARTS)  # ceil
    part = max(min_part, MIN_PART, -(-need // MiB) * MiB)
    return min(part, MAX_PART)


def part_ranges(size: int, part: int) -> list[tuple[int, int, int]]:
    """[(part_number, start, end)] covering [0, size); at least one part."""
    if size == 0:
        return [(1, 0, 0)]
    return [(i + 1, start, min(start + part, size)) for i, start in enumerate(range(0, size, part))]


# Streaming uploads do not know the final size, so part sizes grow with the part
# count instead: min_part for the first `step` parts (PARTS_PER_STEP by default),
# then doubling every `step` parts up to max_part. Memory holds whole parts (S3 needs each
# part's length up front), so max_part is bounded by the memory budget; with
# 8 MiB..64 MiB one upload holds ~492 GiB, and longer files continue in a follow-up
# upload that starts by copying the committed prefix server-side (stream.py).
PARTS_PER_STEP = 1000


def stream_part_size(index: int, min_part: int, max_part: int, uniform: bool = False,
                     step: int = PARTS_PER_STEP) -> int:
    """Size of the index-th (1-based) data part of a streamed file."""
    if uniform:
        return min_part
    part = min_part << min((index - 1) // step, 40)
    return max(min(part, max_part, MAX_PART), min_part)


def stream_capacity(min_part: int, max_part: int, parts: int = MAX_PARTS, uniform: bool = False,
                    step: int = PARTS_PER_STEP) -> int:
    """Bytes that `parts` streamed data parts hold."""
    total, i = 0, 1
    while i <= parts:  # whole steps at once: the size only changes every `step` parts
        size = stream_part_size(i, min_part, max_part, uniform, step)
        step_end = min(parts, ((i - 1) // step + 1) * step)
        total += size * (step_end - i + 1)
        i = step_end + 1
    return total


def copy_ranges(size: int, max_part: int = MAX_PART) -> list[tuple[int, int]]:
    """[start, end) ranges splitting an object of size >= MIN_PART into the fewest
    nearly equal UploadPartCopy parts of at most max_part (each >= MIN_PART)."""
    count = max(1, -(-size // max_part))
    step = -(-size // count)
    return [(start, min(start + step, size)) for start in range(0, size, step)]
