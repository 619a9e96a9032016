#!/usr/bin/env bash
# Quick start: start a local S3 server (moto), mount its bucket "demo" under the
# prefix "pve" at /mnt/s3pvefs-demo, put a vzdump-like backup in and read it back,
# show the object in the bucket, then unmount, stop the server and remove the temporary
# files. KEEP=1 leaves the mount and the server running and prints how to stop them.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
PORT=${PORT:-7077}
MP=${MP:-/mnt/s3pvefs-demo}
WORK=$(mktemp -d /tmp/s3pvefs-demo.XXXXXX)
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo-secret-not-real
ENDPOINT=http://127.0.0.1:$PORT

.venv/bin/moto_server -H 127.0.0.1 -p "$PORT" >"$WORK/moto.log" 2>&1 &
MOTO=$!
cleanup() {
  rm -f "$WORK/disk.img"  # 64 MiB
  if [ "${KEEP:-0}" != 1 ]; then
    mountpoint -q "$MP" && .venv/bin/s3pvefs umount "$MP" || true
    kill "$MOTO" 2>/dev/null || true
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
for _ in $(seq 50); do curl -s -o /dev/null "$ENDPOINT" && break; sleep 0.2; done
.venv/bin/python -c "import boto3; boto3.client('s3', endpoint_url='$ENDPOINT', region_name='us-east-1').create_bucket(Bucket='demo')"

mkdir -p "$MP"
echo "== mount demo/pve on $MP"
.venv/bin/s3pvefs mount demo/pve "$MP" --endpoint-url "$ENDPOINT" --log-file "$WORK/s3pvefs.log"
grep " $MP " /proc/mounts

echo "== the Proxmox layout"
mkdir -p "$MP"/{dump,images/100,template/iso,template/cache,snippets,import}
ls -l "$MP"

NAME=vzdump-qemu-100-$(date +%Y_%m_%d-%H_%M_%S).vma
echo "== a backup the way vzdump writes it: zstd into .dat, then rename"
head -c 64M /dev/urandom >"$WORK/disk.img"
zstd -q -c "$WORK/disk.img" >"$MP/dump/$NAME.dat"
mv "$MP/dump/$NAME.dat" "$MP/dump/$NAME.zst"
ls -l "$MP/dump"

echo "== restore: read it back and compare"
zstd -q -d -c "$MP/dump/$NAME.zst" | cmp - "$WORK/disk.img" && echo "restore: identical"

echo "== the object in the bucket, as any S3 tool sees it"
.venv/bin/python - "$ENDPOINT" "pve/dump/$NAME.zst" <<'PY'
import sys, boto3
c = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
h = c.head_object(Bucket="demo", Key=sys.argv[2])
print(f"s3://demo/{sys.argv[2]}  {h['ContentLength']} bytes  metadata={h['Metadata']}")
PY
if [ "${KEEP:-0}" = 1 ]; then
  echo "== left mounted on $MP, with the S3 server (moto, pid $MOTO) running; logs in $WORK"
  echo "   stop both with:  .venv/bin/s3pvefs umount $MP && kill $MOTO && rm -rf $WORK"
else
  echo "== unmount"
fi
