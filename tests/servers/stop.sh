#!/usr/bin/env bash
# Stop the servers start.sh started and remove their files.
# Usage: stop.sh ENVFILE
set -uo pipefail

ENVFILE=${1:?usage: stop.sh ENVFILE}
[ -f "$ENVFILE" ] || { echo "stop.sh: $ENVFILE does not exist" >&2; exit 1; }
S3FS_TEST_SERVER_PIDS= S3FS_TEST_SERVER_DIR=
# shellcheck disable=SC1090
. "$ENVFILE"

for pid in $S3FS_TEST_SERVER_PIDS; do
    kill "$pid" 2>/dev/null || true
done
for pid in $S3FS_TEST_SERVER_PIDS; do
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
done

case "$S3FS_TEST_SERVER_DIR" in
    */s3fs-test-servers.*) rm -rf "$S3FS_TEST_SERVER_DIR" ;;
    "") ;;
    *) echo "stop.sh: not removing unexpected directory $S3FS_TEST_SERVER_DIR" >&2 ;;
esac
exit 0
