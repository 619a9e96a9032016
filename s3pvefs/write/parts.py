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
