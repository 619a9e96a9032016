"""Scattered 4 KiB writes into a sparse image on a mount, as a guest's random writes land
through the write-back cache: the time per write, by fifths of the run, shows whether a
write costs more as the image fills (it must not), then the time of the close (the commit).

    python3 -m bench.scattered_writes /mnt/s3/images/100/scatter.raw [WRITES] [IMAGE_MIB]

The file is created (truncated to IMAGE_MIB, 1024 by default), written, closed and removed.
"""

from __future__ import annotations

import os
import random
import sys
import time

BLOCK = 4096


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    path = sys.argv[1]
    writes = int(sys.argv[2]) if len(sys.argv) > 2 else 20_000
    size = (int(sys.argv[3]) if len(sys.argv) > 3 else 1024) << 20
    rnd, block = random.Random(1), os.urandom(BLOCK)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        fifth, per, t = max(1, writes // 5), [], time.perf_counter()
        for k in range(writes):
            os.pwrite(fd, block, rnd.randrange(size // BLOCK) * BLOCK)
            if (k + 1) % fifth == 0:
                now = time.perf_counter()
                per.append((now - t) / fifth * 1e6)
                t = now
        t = time.perf_counter()
    finally:
        os.close(fd)
    closed = time.perf_counter() - t
    os.unlink(path)
    print(f"{writes} scattered 4 KiB writes into {size >> 20} MiB: us per write by fifths "
          + " ".join(f"{us:.0f}" for us in per) + f"; close {closed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
