#!/usr/bin/env bash
# A throwaway single-node Ceph RADOS Gateway for benchmarks (Debian 12, ceph 16.2):
# one monitor, one bluestore OSD on a sparse file, size-1 pools, cephx, no manager,
# and radosgw on 127.0.0.1:$RGW_PORT with user "test" and bucket "test".
# Plain daemons, all state under $BASE; they are stopped by the PIDs they record.
#
#   scripts/ceph-rgw.sh up       start (exits 0 at once if an S3 server already answers on the port)
#   scripts/ceph-rgw.sh status   is it answering; where its log is
#   scripts/ceph-rgw.sh down     stop the daemons started under $BASE and delete $BASE (KEEP=1 keeps it)
#
# radosgw logs one line per request ("beast: ... "METHOD /bucket/key HTTP/1.1" status bytes ...")
# in $BASE/log/client.rgw.a.log (debug rgw = 1): bench/run counts requests from it.
#
# Environment: BASE=/tmp/s3pvefs-ceph RGW_PORT=7480 MON_V2_PORT=3300 MON_V1_PORT=6789
#   BLUESTORE_BYTES=20G ACCESS_KEY=testaccesskey SECRET_KEY=testsecretkey BUCKET=test
#   INSTALL=1 (apt-get install the packages if missing)
set -euo pipefail

BASE=${BASE:-/tmp/s3pvefs-ceph}
RGW_PORT=${RGW_PORT:-7480}
MON_V2_PORT=${MON_V2_PORT:-3300}
MON_V1_PORT=${MON_V1_PORT:-6789}
BLUESTORE_BYTES=${BLUESTORE_BYTES:-20G}
ACCESS_KEY=${ACCESS_KEY:-testaccesskey}
SECRET_KEY=${SECRET_KEY:-testsecretkey}
BUCKET=${BUCKET:-test}
INSTALL=${INSTALL:-1}
CONF=$BASE/ceph.conf
URL=http://127.0.0.1:$RGW_PORT
DAEMONS="client.rgw.a osd.0 mon.a"   # stop order

say() { echo "ceph-rgw: $*"; }
die() { echo "ceph-rgw: $*" >&2; exit 1; }
answers() { curl -s -m 2 -o /dev/null "$URL/"; }
c() { ceph -c "$CONF" --connect-timeout 10 "$@"; }
wait_for() { # tries command...: retry every 0.5 s
  local n=$1; shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  return 1
}

up() {
  if answers; then
    say "an S3 server already answers on $URL; nothing to do"
    return 0
  fi
  local missing=""
  for b in ceph-mon ceph-osd radosgw ceph uuidgen curl; do command -v "$b" >/dev/null || missing=1; done
  if [ -n "$missing" ]; then
    [ "$INSTALL" = 1 ] || die "ceph packages missing (apt-get install ceph-mon ceph-osd radosgw ceph-common uuid-runtime curl)"
    say "installing ceph-mon ceph-osd radosgw ceph-common uuid-runtime curl"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends ceph-mon ceph-osd radosgw ceph-common uuid-runtime curl >/dev/null
  fi
  for d in $DAEMONS; do
    if [ -f "$BASE/run/$d.pid" ] && kill -0 "$(cat "$BASE/run/$d.pid")" 2>/dev/null; then
      die "$d is running under $BASE but nothing answers on $URL: run '$0 down' first"
    fi
  done

  trap 'die "failed at line $LINENO ($BASH_COMMAND); logs in $BASE/log"' ERR
  rm -rf "$BASE"
  mkdir -p "$BASE"/{run,log,mon.a,osd.0,rgw.a}
  local fsid mon
  fsid=$(uuidgen)
  mon="[v2:127.0.0.1:$MON_V2_PORT,v1:127.0.0.1:$MON_V1_PORT]"
  cat >"$CONF" <<EOF
[global]
fsid = $fsid
mon host = $mon
public addr = 127.0.0.1
public network = 127.0.0.0/8
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $BASE/keyring
admin socket = $BASE/run/\$cluster-\$name.asok
pid file = $BASE/run/\$name.pid
log file = $BASE/log/\$name.log
log to stderr = false
err to stderr = false
client mount timeout = 30
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1

[mon]
mon data = $BASE/mon.\$id

[osd]
osd data = $BASE/osd.\$id
osd objectstore = bluestore
bluestore block create = true
bluestore block size = $(numfmt --from=iec "$BLUESTORE_BYTES")
bluestore fsck on mkfs = false
osd memory target = 939524096
osd op num shards = 2
osd op num threads per shard = 1

[client.rgw.a]
# tcp_nodelay: without it every response with a body (GET, LIST) waits ~40 ms for the
# client's delayed ACK (Nagle), which swamps any small-request benchmark
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT tcp_nodelay=1
rgw dns name = localhost
rgw thread pool size = 64
rgw enable usage log = false
# one "beast: ..." access line per request in the log (bench/run counts them)
debug rgw = 1
# deleted objects' data is reclaimed after a minute instead of two hours
rgw gc obj min wait = 60
rgw gc processor period = 60
# For the tests of encryption (never for real data): SSE-C over plain http, and SSE-KMS
# with RGW's built-in "testing" key store holding these two throwaway keys
rgw crypt require ssl = false
rgw crypt s3 kms backend = testing
rgw crypt s3 kms encryption keys = testkey-1=dATLxaWjb4qxVQbK22DuvK6D+sQsY8iCHfddr61tkI4= testkey-2=eB2VKv228STwWMJF2DN/OyS8TPWpmj6n9zk5sMxnOII=
EOF
  export CEPH_CONF=$CONF

  say "monitor"
  ceph-authtool --create-keyring "$BASE/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool "$BASE/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' >/dev/null
  monmaptool --create --fsid "$fsid" --addv a "$mon" "$BASE/monmap" >/dev/null
  ceph-mon -c "$CONF" --mkfs -i a --monmap "$BASE/monmap" --keyring "$BASE/keyring"
  ceph-mon -c "$CONF" -i a
  wait_for 60 c mon stat || die "monitor did not answer; see $BASE/log/mon.a.log"
  c config set mon auth_allow_insecure_global_id_reclaim false >/dev/null 2>&1 || true

  say "OSD (bluestore on a $BLUESTORE_BYTES sparse file)"
  local uuid secret
  uuid=$(uuidgen)
  ceph-authtool --create-keyring "$BASE/osd.0/keyring" --gen-key -n osd.0 >/dev/null
  secret=$(ceph-authtool -p -n osd.0 "$BASE/osd.0/keyring")
  echo "{\"cephx_secret\": \"$secret\"}" >"$BASE/osd.0/new.json"
  [ "$(c osd new "$uuid" -i "$BASE/osd.0/new.json")" = 0 ] || die "unexpected OSD id"
  ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$uuid" --keyring "$BASE/osd.0/keyring" >"$BASE/log/osd-mkfs.out" 2>&1
  ceph-osd -c "$CONF" -i 0 --keyring "$BASE/osd.0/keyring"
  osd_up() { c osd dump | grep -q '^osd.0 up'; }
  wait_for 120 osd_up || die "OSD did not come up; see $BASE/log/osd.0.log"

  # Created up front: otherwise RGW creates each on first use and stalls seconds each time.
  say "RGW pools"
  local p pids=()
  for p in .rgw.root default.rgw.control default.rgw.meta default.rgw.log \
           default.rgw.buckets.index default.rgw.buckets.data default.rgw.buckets.non-ec; do
    { c osd pool create "$p" 8 8 replicated && c osd pool application enable "$p" rgw; } >/dev/null 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done

  say "radosgw on $URL"
  c auth get-or-create client.rgw.a mon 'allow rw' osd 'allow rwx' -o "$BASE/rgw.a/keyring"
  radosgw -c "$CONF" -n client.rgw.a --keyring "$BASE/rgw.a/keyring"
  wait_for 240 answers || die "radosgw did not answer; see $BASE/log/client.rgw.a.log"

  say "user test, bucket $BUCKET"
  radosgw-admin -c "$CONF" user create --uid=test --display-name=test \
    --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >"$BASE/user.json"
  curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" --user "$ACCESS_KEY:$SECRET_KEY" \
    -H "x-amz-content-sha256: $(printf '' | sha256sum | cut -d' ' -f1)" \
    -X PUT "$URL/$BUCKET" -o /dev/null || die "could not create bucket $BUCKET"

  # A second storage class (COLD, its own pool) for the tests of storage classes: added
  # to the zone radosgw made at its first start, read by radosgw at its next
  say "storage class COLD (radosgw restarted)"
  radosgw-admin -c "$CONF" zonegroup placement add --rgw-zonegroup default --placement-id default-placement \
    --storage-class COLD >/dev/null
  radosgw-admin -c "$CONF" zone placement add --rgw-zone default --placement-id default-placement \
    --storage-class COLD --data-pool default.rgw.cold.data >/dev/null
  { c osd pool create default.rgw.cold.data 8 8 replicated && c osd pool application enable default.rgw.cold.data rgw; } >/dev/null 2>&1
  local rgw_pid
  rgw_pid=$(cat "$BASE/run/client.rgw.a.pid")
  kill "$rgw_pid"
  for _ in $(seq 120); do kill -0 "$rgw_pid" 2>/dev/null || break; sleep 0.5; done  # it holds the pid file
  radosgw -c "$CONF" -n client.rgw.a --keyring "$BASE/rgw.a/keyring"
  wait_for 240 answers || die "radosgw did not answer after its restart; see $BASE/log/client.rgw.a.log"
  trap - ERR
  say "up: $URL bucket=$BUCKET (export CEPH_CONF=$CONF for ceph/radosgw-admin; log $BASE/log/client.rgw.a.log)"
}

down() {
  local d f pid
  for d in $DAEMONS; do
    f=$BASE/run/$d.pid
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -0 "$pid" 2>/dev/null && { say "$d (pid $pid) ignored SIGTERM: SIGKILL"; kill -KILL "$pid"; }
      say "stopped $d (pid $pid)"
    fi
    rm -f "$f"
  done
  if [ "${KEEP:-0}" != 1 ] && [ -d "$BASE" ]; then rm -rf "$BASE"; say "removed $BASE"; fi
}

status() {
  local d f
  for d in $DAEMONS; do
    f=$BASE/run/$d.pid
    if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then say "$d running (pid $(cat "$f"))"; fi
  done
  if answers; then
    say "S3 answers on $URL"
    [ -f "$BASE/log/client.rgw.a.log" ] && say "request log: $BASE/log/client.rgw.a.log"
    return 0
  fi
  say "nothing answers on $URL"
  return 1
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
