#!/usr/bin/env bash
# Install the package built by scripts/build-deb.sh (dist/s3pvefs_VERSION_ARCH.deb)
# and check the installed s3pvefs for real, as root on Debian 12: the files are where
# they belong, `s3pvefs --help` runs, and a bucket on a local moto S3 server is
# mounted with /usr/bin/s3pvefs and with mount -t fuse.s3pvefs (the /sbin helper),
# written, read back, seen in the bucket, and unmounted. Exits non-zero on any failure.
# The installed program is run with a bare system environment from /, so nothing of
# this checkout (.venv, PYTHONPATH) can stand in for what the package ships; moto and
# boto3 come from the checkout's .venv (scripts/setup.sh makes it).
# At the end the package is purged again (and checked to leave nothing behind),
# unless it was installed before the test or KEEP_INSTALLED=1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export DEBIAN_FRONTEND=noninteractive

version=$(dpkg-parsechangelog -l debian/changelog -S Version)
deb=dist/s3pvefs_${version}_$(dpkg --print-architecture).deb
[ -f "$deb" ] || { echo "test-deb: $deb is missing: run scripts/build-deb.sh first" >&2; exit 1; }
[ -e /dev/fuse ] || { echo "test-deb: /dev/fuse is missing" >&2; exit 1; }
[ -x .venv/bin/moto_server ] || ./scripts/setup.sh

step() { echo "== $*"; }
fail() { echo "test-deb: FAIL: $*" >&2; exit 1; }

was_installed=0
dpkg-query -W -f='${Status}' s3pvefs 2>/dev/null | grep -q "install ok installed" && was_installed=1

WORK=$(mktemp -d /tmp/s3pvefs-debtest.XXXXXX)
MP=$WORK/mnt
MOTO=
PORT=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ENDPOINT=http://127.0.0.1:$PORT
BUCKET=debtest-$(date +%s)
KEY=testing SECRET=s3pvefs-debtest-secret-not-real

# The installed program, with nothing from this shell or checkout.
sys_run() {
  (cd / && env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
     AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET AWS_DEFAULT_REGION=us-east-1 "$@")
}

purge() {
  step "apt-get purge -y s3pvefs"
  apt-get purge -y -qq s3pvefs >/dev/null
  for p in /opt/venvs/s3pvefs /usr/bin/s3pvefs /sbin/mount.fuse.s3pvefs \
           /lib/systemd/system/s3pvefs@.service /usr/share/doc/s3pvefs /var/cache/s3pvefs; do
    if [ -e "$p" ] || [ -L "$p" ]; then
      echo "test-deb: FAIL: $p is left after the purge:" >&2
      find "$p" | head -20 >&2
      return 1
    fi
  done
  echo "purged: nothing left"
}

cleanup() {
  rc=$?
  set +e
  if mountpoint -q "$MP" 2>/dev/null; then
    sys_run s3pvefs umount "$MP" 2>/dev/null || fusermount3 -u -z "$MP"
  fi
  [ -n "$MOTO" ] && kill "$MOTO" 2>/dev/null && wait "$MOTO" 2>/dev/null
  if [ $rc -ne 0 ]; then
    for log in "$WORK"/*.log; do [ -f "$log" ] && { echo "--- $log"; tail -30 "$log"; }; done
  fi
  if [ "$was_installed" = 0 ] && [ "${KEEP_INSTALLED:-0}" != 1 ]; then
    purge || rc=1
  fi
  rm -rf "$WORK"
  [ $rc -eq 0 ] && echo "test-deb: all checks passed" || echo "test-deb: FAILED" >&2
  exit $rc
}
trap cleanup EXIT

step "apt-get install ./$deb"
apt-get update -qq
apt-get install -y -qq --reinstall "./$deb" >"$WORK/apt.log" 2>&1 || { cat "$WORK/apt.log"; fail "apt-get install"; }
dpkg-query -W -f='${Package} ${Version} ${Status}\n' s3pvefs

step "installed files"
[ -x /usr/bin/s3pvefs ] || fail "/usr/bin/s3pvefs is missing"
grep -q '^exec /opt/venvs/s3pvefs/bin/python -I -m s3pvefs "\$@"$' /usr/bin/s3pvefs \
  || fail "/usr/bin/s3pvefs does not run the venv's python isolated: $(cat /usr/bin/s3pvefs)"
head -1 /opt/venvs/s3pvefs/bin/s3pvefs | grep -qx '#!/opt/venvs/s3pvefs/bin/python' \
  || fail "bad interpreter line in /opt/venvs/s3pvefs/bin/s3pvefs: $(head -1 /opt/venvs/s3pvefs/bin/s3pvefs)"
venv_python=$(readlink -f /opt/venvs/s3pvefs/bin/python)
case $venv_python in /usr/bin/python3*) ;; *) fail "the venv runs $venv_python, not Debian's python3";; esac
echo "/usr/bin/s3pvefs runs /opt/venvs/s3pvefs/bin/python -I on $venv_python"
unit=/lib/systemd/system/s3pvefs@.service
[ -f $unit ] || fail "$unit is missing"
for exe in $(sed -n 's/^Exec[A-Za-z]*=[-@:+!]*\(\/[^ ]*\).*/\1/p' $unit); do
  [ -x "$exe" ] || fail "$unit runs $exe, which is missing"
done
echo "$unit: $(grep -c '^Exec' $unit) Exec lines, programs present"
if dpkg -L s3pvefs | grep -qx /sbin/mount.fuse.s3pvefs; then
  [ -x /sbin/mount.fuse.s3pvefs ] || fail "/sbin/mount.fuse.s3pvefs is not executable"
  helper=1
else
  echo "(no /sbin/mount.fuse.s3pvefs in this package: mount -t fuse.s3pvefs not checked)"
  helper=0
fi

step "s3pvefs --help"
sys_run s3pvefs --help >"$WORK/help.out" || { cat "$WORK/help.out"; fail "s3pvefs --help"; }
grep -q mount "$WORK/help.out" || fail "s3pvefs --help does not mention mount"
head -5 "$WORK/help.out"
sys_run /opt/venvs/s3pvefs/bin/python -c 'import pyfuse3, trio, aiobotocore, cachetools, s3pvefs; print("pyfuse3", pyfuse3.__version__, "trio", trio.__version__, "aiobotocore", aiobotocore.__version__, "from", s3pvefs.__file__)'

step "moto S3 server on $ENDPOINT, bucket $BUCKET"
.venv/bin/moto_server -H 127.0.0.1 -p "$PORT" >"$WORK/moto.log" 2>&1 &
MOTO=$!
for _ in $(seq 100); do curl -s -o /dev/null "$ENDPOINT" && break; sleep 0.2; done
s3py() {
  AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET .venv/bin/python - "$ENDPOINT" "$BUCKET" "$@"
}
s3py <<'PY'
import sys, boto3
boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1").create_bucket(Bucket=sys.argv[2])
PY

step "s3pvefs check $BUCKET/pve (passes), and against a wrong endpoint (fails at TCP)"
sys_run s3pvefs check "$BUCKET/pve" --endpoint-url "$ENDPOINT" >"$WORK/check.out" \
  || { cat "$WORK/check.out"; fail "s3pvefs check exited $? against a working endpoint"; }
cat "$WORK/check.out"
CLOSED=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
rc=0
sys_run s3pvefs check "$BUCKET/pve" --endpoint-url "http://127.0.0.1:$CLOSED" -o max_attempts=1 \
  >"$WORK/check-bad.out" || rc=$?
cat "$WORK/check-bad.out"
[ "$rc" = 1 ] || fail "s3pvefs check against a closed port exited $rc, expected 1"
grep -q "^FAIL  TCP connect" "$WORK/check-bad.out" || fail "no FAIL line for TCP connect"

step "s3pvefs check with a wrong secret (a moto server that checks signatures)"
APORT=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
INITIAL_NO_AUTH_ACTION_COUNT=5 .venv/bin/moto_server -H 127.0.0.1 -p "$APORT" >"$WORK/moto-auth.log" 2>&1 &
MOTO_AUTH=$!
# (this probe counts as one of the unauthenticated requests)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$APORT" && break; sleep 0.2; done
AUTH_KEY=$(.venv/bin/python - "http://127.0.0.1:$APORT" <<'PY'
import json, sys, boto3
kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1",
          aws_access_key_id="AKIAIOSFODNN7EXAMPLE", aws_secret_access_key="x" * 40)
iam = boto3.client("iam", **kw)
iam.create_user(UserName="pve")
iam.put_user_policy(UserName="pve", PolicyName="s3", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
print(iam.create_access_key(UserName="pve")["AccessKey"]["AccessKeyId"])
boto3.client("s3", **kw).create_bucket(Bucket="authbucket")
PY
) || fail "could not set up the moto server with signature checks"
rc=0
(cd / && env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 AWS_ACCESS_KEY_ID="$AUTH_KEY" \
   AWS_SECRET_ACCESS_KEY=not-the-right-secret-0000000000000000000 \
   s3pvefs check authbucket/pve --endpoint-url "http://127.0.0.1:$APORT") >"$WORK/check-secret.out" || rc=$?
kill "$MOTO_AUTH" 2>/dev/null; wait "$MOTO_AUTH" 2>/dev/null || true
cat "$WORK/check-secret.out"
[ "$rc" = 1 ] || fail "s3pvefs check with a wrong secret exited $rc, expected 1"
grep -q "^FAIL  authentication .*wrong secret key" "$WORK/check-secret.out" || fail "no 'wrong secret key' line"
! grep -q "not-the-right-secret" "$WORK/check-secret.out" || fail "the secret was printed"

step "s3pvefs mount $BUCKET/pve $MP, typed in a directory holding an s3pvefs package, with PYTHONPATH at another"
mkdir -p "$MP" "$WORK/evil/s3pvefs" "$WORK/evil2/s3pvefs"
for d in evil evil2; do
  printf 'import os\nopen("%s/ran-%s", "a").write(str(os.getpid()))\n' "$WORK" "$d" >"$WORK/$d/s3pvefs/__init__.py"
  printf 'import os\nopen("%s/ran-%s", "a").write(str(os.getpid()))\n' "$WORK" "$d" >"$WORK/$d/sitecustomize.py"
done
(cd "$WORK/evil" && env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 PYTHONPATH="$WORK/evil2" \
   AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET AWS_DEFAULT_REGION=us-east-1 \
   s3pvefs mount "$BUCKET/pve" "$MP" --endpoint-url "$ENDPOINT" --log-file "$WORK/s3pvefs.log") \
  || fail "s3pvefs mount exited $?"
grep " $MP " /proc/mounts || fail "$MP is not in /proc/mounts"
for d in evil evil2; do
  [ ! -e "$WORK/ran-$d" ] || fail "s3pvefs ran code from $WORK/$d (pids $(cat "$WORK/ran-$d"))"
done

step "write and read back"
echo "hello from the Debian package" >"$MP/hello.txt"
[ "$(cat "$MP/hello.txt")" = "hello from the Debian package" ] || fail "hello.txt reads back wrong"
mkdir -p "$MP/dump"
head -c 20M /dev/urandom >"$WORK/data.bin"
cp "$WORK/data.bin" "$MP/dump/vzdump-qemu-100-2026_01_01-00_00_00.vma.dat"
mv "$MP/dump/vzdump-qemu-100-2026_01_01-00_00_00.vma.dat" "$MP/dump/vzdump-qemu-100-2026_01_01-00_00_00.vma"
cmp "$WORK/data.bin" "$MP/dump/vzdump-qemu-100-2026_01_01-00_00_00.vma" || fail "20 MiB file reads back different"
ls -l "$MP" "$MP/dump"
s3py <<'PY' || fail "the objects are not in the bucket as written"
import sys, boto3
c = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
assert c.get_object(Bucket=sys.argv[2], Key="pve/hello.txt")["Body"].read() == b"hello from the Debian package\n"
h = c.head_object(Bucket=sys.argv[2], Key="pve/dump/vzdump-qemu-100-2026_01_01-00_00_00.vma")
assert h["ContentLength"] == 20 << 20, h["ContentLength"]
print("bucket:", sorted(o["Key"] for o in c.list_objects_v2(Bucket=sys.argv[2])["Contents"]))
PY

step "s3pvefs umount $MP"
sys_run s3pvefs umount "$MP" || fail "s3pvefs umount exited $?"
! mountpoint -q "$MP" || fail "$MP is still mounted"

if [ "$helper" = 1 ]; then
  step "mount -t fuse.s3pvefs $BUCKET/pve $MP -o endpoint_url=$ENDPOINT (the /sbin helper)"
  sys_run mount -t fuse.s3pvefs "$BUCKET/pve" "$MP" -o "_netdev,endpoint_url=$ENDPOINT" \
    || fail "mount -t fuse.s3pvefs exited $?"
  grep " $MP " /proc/mounts || fail "$MP is not in /proc/mounts"
  [ "$(cat "$MP/hello.txt")" = "hello from the Debian package" ] || fail "hello.txt reads back wrong after a remount"
  cmp "$WORK/data.bin" "$MP/dump/vzdump-qemu-100-2026_01_01-00_00_00.vma" || fail "20 MiB file differs after a remount"
  echo "read back after a remount: identical"
  sys_run s3pvefs umount "$MP" || fail "s3pvefs umount exited $?"
  ! mountpoint -q "$MP" || fail "$MP is still mounted"
fi
