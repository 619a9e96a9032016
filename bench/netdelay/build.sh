#!/usr/bin/env bash
# Build netdelay (bench/netdelay/netdelay.c) into a cache outside the work tree, so no
# binary is ever committed; rebuilt when the source is newer. Prints the binary's path.
set -euo pipefail
src="$(cd "$(dirname "$0")" && pwd)/netdelay.c"
dir="${XDG_CACHE_HOME:-/var/cache}/s3pvefs-bench/netdelay"
bin="$dir/netdelay"
if [ ! -x "$bin" ] || [ "$src" -nt "$bin" ]; then
  command -v gcc >/dev/null || { echo "netdelay: gcc is missing (apt-get install gcc)" >&2; exit 1; }
  [ -f /usr/include/libnetfilter_queue/libnetfilter_queue.h ] ||
    { echo "netdelay: libnetfilter-queue headers are missing (apt-get install libnetfilter-queue-dev)" >&2; exit 1; }
  mkdir -p "$dir"
  # Build to a temporary name and rename: two runs building at once never see half a binary.
  gcc -O2 -Wall -Wextra -o "$bin.$$" "$src" -lnetfilter_queue -lnfnetlink
  mv -f "$bin.$$" "$bin"
fi
echo "$bin"
