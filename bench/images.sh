#!/usr/bin/env bash
# VM-disk I/O through s3pvefs and s3fs-fuse on the same bucket, one after the other:
#   1. fio 4k random writes, O_DIRECT, crc32c verify, into an existing image
#   2. 1 MiB rewritten in the middle of an existing image (fresh mount: nothing cached)
#   3. guest flushes: fio 4k random writes with an fsync every 32, into the same image;
#      s3pvefs with the default sync_interval, with sync_interval=0 (commit at every
#      fsync), and s3fs
# Prints fio's write IOPS, wall times, and s3pvefs's bytes sent/received and commits
# (its status).
# Usage: bench/images.sh ENDPOINT BUCKET [IMAGE_SIZE_MIB] [REWRITE_SIZE_MIB] (0: no rewrite step;
# the test Ceph OSD of scripts/ceph-rgw.sh holds 20G, and every commit is a new object)
# Credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
set -euo pipefail
cd "$(dirname "$0")/.."
endpoint=$1 bucket=$2 img=${3:-256} big=${4:-4096}
work=$(mktemp -d /var/tmp/s3pvefs-images.XXXXXX)
trap 'fusermount3 -uz $work/s3pvefs 2>/dev/null; fusermount3 -uz $work/s3fs 2>/dev/null; rm -rf $work; true' EXIT
mkdir -p "$work"/{s3pvefs,s3fs,s3fs-cache,cache}
printf '%s:%s\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" > "$work/s3fs.pw"; chmod 600 "$work/s3fs.pw"
mount_s3pvefs() { .venv/bin/s3pvefs mount "$bucket/bench-images-s3pvefs" "$work/s3pvefs" --endpoint-url "$endpoint" \
                    --log-file "$work/s3pvefs.log" -o "cache_dir=$work/cache${1:+,$1}"; }
mount_s3fs() { s3fs "$bucket:/bench-images-s3fs" "$work/s3fs" -o url="$endpoint" -o use_path_request_style \
                 -o passwd_file="$work/s3fs.pw" -o use_cache="$work/s3fs-cache"; sleep 1; }
umount_all() { .venv/bin/s3pvefs umount "$work/s3pvefs" 2>/dev/null || true; fusermount3 -u "$work/s3fs" 2>/dev/null || true; }
sent() { .venv/bin/s3pvefs status "$work/s3pvefs" --json | python3 -c 'import json,sys; b=json.load(sys.stdin)["bytes"]; print(b["sent"], b["received"])'; }
commits() { .venv/bin/s3pvefs status "$work/s3pvefs" --json | python3 -c 'import json,sys; r=json.load(sys.stdin)["requests"]; print(r.get("complete_multipart_upload", 0) + r.get("put_object", 0))'; }
flush_job() {  # $1 label, $2 directory: 512 random 4k writes, fsync every 32, close; prints IOPS and wall
  local t0 t1
  t0=$(date +%s.%N)
  (cd "$work" && fio --name=flushes --filename="$2/fio.raw" --size="${img}M" --rw=randwrite --bs=4k --direct=1 \
      --ioengine=psync --fsync=32 --number_ios=512 --randseed=7 --output-format=json > "$work/flush.json")
  t1=$(date +%s.%N)
  python3 - "$work/flush.json" "$1" "$(echo "$t1 - $t0" | bc)" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
j = json.loads(text[text.index("{"):])["jobs"][0]
print(f"{sys.argv[2]:32} fio 4k randwrite direct=1 fsync=32 (16 fsyncs): {j['write']['iops']:.0f} write IOPS, "
      f"{j['write']['total_ios']} writes, error {j['error']}, wall incl. close {float(sys.argv[3]):.1f} s", end="")
PY
}
s3fs_prefix_ok=$(python3 - "$endpoint" "$bucket" <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1])
s3.put_object(Bucket=sys.argv[2], Key="bench-images-s3fs/", Body=b"")
print("ok")
PY
)
mount_s3pvefs; mount_s3fs
for sys in s3pvefs s3fs; do
  d=$work/$sys
  dd if=/dev/zero of="$d/fio.raw" bs=1M count="$img" status=none
  [ "$big" = 0 ] || dd if=/dev/zero of="$d/big.raw" bs=1M count="$big" status=none
done
umount_all; mount_s3pvefs; mount_s3fs
for sys in s3pvefs s3fs; do
  d=$work/$sys
  t0=$(date +%s.%N)
  (cd "$work" && fio --name=randwrite --filename="$d/fio.raw" --size="${img}M" --rw=randwrite --bs=4k --direct=1 \
      --ioengine=psync --verify=crc32c --verify_fatal=1 --number_ios=4096 --randseed=42 --output-format=json \
      > "$work/fio-$sys.json")
  t1=$(date +%s.%N)
  python3 - "$work/fio-$sys.json" "$sys" "$(echo "$t1 - $t0" | bc)" <<'PY'
import json, sys
j = json.loads(open(sys.argv[1]).read().split("\n", 1)[-1] if not open(sys.argv[1]).read().startswith("{") else open(sys.argv[1]).read())["jobs"][0]
print(f"{sys.argv[2]:8} fio 4k randwrite direct=1 verify=crc32c: {j['write']['iops']:.0f} write IOPS, "
      f"{j['write']['total_ios']} writes, verified {j['read']['io_bytes'] >> 20} MiB, error {j['error']}, "
      f"wall incl. close {float(sys.argv[3]):.1f} s")
PY
done
[ -n "$s3fs_prefix_ok" ]
before=$(sent)
for sys in s3pvefs s3fs; do
  [ "$big" = 0 ] && break
  t0=$(date +%s.%N)
  outcome=ok
  python3 -c "
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR); os.pwrite(fd, os.urandom(1 << 20), int(sys.argv[2]) // 2 + 12345); os.close(fd)" \
    "$work/$sys/big.raw" "$((big << 20))" 2>"$work/rewrite-$sys.err" || outcome="FAILED: $(tail -1 "$work/rewrite-$sys.err")"
  t1=$(date +%s.%N)
  echo "$sys rewrite 1 MiB in the middle of a $big MiB image, close included: $(echo "$t1 - $t0" | bc) s ($outcome)"
done
after=$(sent)
[ "$big" = 0 ] || python3 -c "
b, a = [int(x) for x in '$before'.split()], [int(x) for x in '$after'.split()]
print(f's3pvefs rewrite: sent {(a[0]-b[0]) / 2**20:.1f} MiB, received {(a[1]-b[1]) / 2**20:.1f} MiB')"
for interval in default 0; do
  umount_all; mount_s3pvefs "$([ $interval = 0 ] && echo sync_interval=0)"; mount_s3fs
  c0=$(commits); flush_job "s3pvefs sync_interval=$interval" "$work/s3pvefs"; echo ", commits $(( $(commits) - c0 ))"
done
flush_job s3fs "$work/s3fs"; echo
umount_all
