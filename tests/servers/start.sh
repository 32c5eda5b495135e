#!/usr/bin/env bash
# Start the S3 servers for the tests: a single-node Garage and a moto server, both on
# free ports of 127.0.0.1, each with a bucket "s3fs-test" and an access key.
#
# Usage: start.sh ENVFILE
# Writes ENVFILE, a sourceable file defining, for SERVER in GARAGE and MOTO:
#   S3FS_TEST_<SERVER>_URL       storage URL of the bucket (s3c://127.0.0.1:PORT/s3fs-test)
#   S3FS_TEST_<SERVER>_LOGIN     access key id
#   S3FS_TEST_<SERVER>_PASSWORD  secret access key
#   S3FS_TEST_<SERVER>_OPTIONS   backend options to use with the URL
# and S3FS_TEST_SERVER_PIDS (the processes started) and S3FS_TEST_SERVER_DIR (their
# configuration, data and logs). Stop everything with stop.sh ENVFILE.
set -euo pipefail

ENVFILE=${1:?usage: start.sh ENVFILE}
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${S3FS_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/s3fs-tests}
GARAGE="$CACHE/garage-2.5.0/bin/garage"
MOTO="$CACHE/moto-venv/bin/moto_server"
BUCKET=s3fs-test

if [ ! -x "$GARAGE" ] || [ ! -x "$MOTO" ]; then
    bash "$HERE/install.sh"
fi

DIR=$(mktemp -d "${TMPDIR:-/tmp}/s3fs-test-servers.XXXXXX")
PIDS=()

fail() {
    echo "start.sh: $*" >&2
    for f in "$DIR"/*.log; do
        [ -f "$f" ] && { echo "--- last lines of $f:" >&2; tail -n 20 "$f" >&2; }
    done
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$DIR"
    exit 1
}
trap 'fail "command failed at line $LINENO"' ERR

# N ports that are free right now (the kernel picks them).
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

random_hex() { # BYTES
    od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'
}

# Wait until something answers HTTP on 127.0.0.1:PORT; PID must stay alive meanwhile.
wait_http() { # NAME PID PORT
    for _ in $(seq 1 300); do
        kill -0 "$2" 2>/dev/null || fail "$1 exited during startup"
        if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$3/"; then
            return 0
        fi
        sleep 0.2
    done
    fail "$1 did not answer on port $3 within 60 s"
}

read -r G_S3 G_RPC G_ADMIN MOTO_PORT <<<"$(free_ports 4)"

# ---------------------------------------------------------------- Garage
mkdir -p "$DIR/garage/meta" "$DIR/garage/data"
GCONF="$DIR/garage/garage.toml"
cat >"$GCONF" <<TOML
metadata_dir = "$DIR/garage/meta"
data_dir = "$DIR/garage/data"
db_engine = "sqlite"
replication_factor = 1

rpc_bind_addr = "127.0.0.1:$G_RPC"
rpc_public_addr = "127.0.0.1:$G_RPC"
rpc_secret = "$(random_hex 32)"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$G_S3"

[admin]
api_bind_addr = "127.0.0.1:$G_ADMIN"
admin_token = "$(random_hex 16)"
TOML

garage() { "$GARAGE" -c "$GCONF" "$@"; }

RUST_LOG=${S3FS_TEST_GARAGE_LOG:-garage=info} setsid "$GARAGE" -c "$GCONF" server \
    </dev/null >"$DIR/garage.log" 2>&1 &
GARAGE_PID=$!
PIDS+=("$GARAGE_PID")

for i in $(seq 1 300); do
    kill -0 "$GARAGE_PID" 2>/dev/null || fail "garage exited during startup"
    garage status >/dev/null 2>&1 && break
    [ "$i" = 300 ] && fail "garage did not start within 60 s"
    sleep 0.2
done
NODE_ID=$(garage node id -q 2>/dev/null | cut -d@ -f1)
[ -n "$NODE_ID" ] || fail "cannot get the garage node id"
garage layout assign -z dc1 -c 1G "$NODE_ID" >>"$DIR/garage-setup.log" 2>&1
garage layout apply --version 1 >>"$DIR/garage-setup.log" 2>&1

G_KEY_ID="GK$(random_hex 12)"
G_SECRET=$(random_hex 32)
for i in $(seq 1 50); do
    garage bucket create "$BUCKET" >>"$DIR/garage-setup.log" 2>&1 && break
    [ "$i" = 50 ] && fail "cannot create the garage bucket"
    sleep 0.2
done
garage key import --yes -n s3fs-test "$G_KEY_ID" "$G_SECRET" >>"$DIR/garage-setup.log" 2>&1
garage bucket allow --read --write --owner "$BUCKET" --key "$G_KEY_ID" >>"$DIR/garage-setup.log" 2>&1
wait_http garage "$GARAGE_PID" "$G_S3"

# ---------------------------------------------------------------- moto
setsid "$MOTO" -H 127.0.0.1 -p "$MOTO_PORT" </dev/null >"$DIR/moto.log" 2>&1 &
MOTO_PID=$!
PIDS+=("$MOTO_PID")
wait_http moto "$MOTO_PID" "$MOTO_PORT"
# moto does not check signatures: any key works.
curl -sf -o /dev/null -X PUT "http://127.0.0.1:$MOTO_PORT/$BUCKET" || fail "cannot create the moto bucket"

trap - ERR
umask 077
cat >"$ENVFILE" <<ENV
S3FS_TEST_GARAGE_URL='s3c://127.0.0.1:$G_S3/$BUCKET'
S3FS_TEST_GARAGE_LOGIN='$G_KEY_ID'
S3FS_TEST_GARAGE_PASSWORD='$G_SECRET'
S3FS_TEST_GARAGE_OPTIONS='no-ssl,sig-region=garage'
S3FS_TEST_MOTO_URL='s3c://127.0.0.1:$MOTO_PORT/$BUCKET'
S3FS_TEST_MOTO_LOGIN='s3fs-test-key'
S3FS_TEST_MOTO_PASSWORD='s3fs-test-secret'
S3FS_TEST_MOTO_OPTIONS='no-ssl'
S3FS_TEST_SERVER_PIDS='${PIDS[*]}'
S3FS_TEST_SERVER_DIR='$DIR'
ENV
echo "S3 test servers running (garage on port $G_S3, moto on port $MOTO_PORT); logs in $DIR"
