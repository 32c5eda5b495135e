#!/usr/bin/env bash
# The test command (README): install what the tests need, start the S3 test servers on
# 127.0.0.1, run every test, stop the servers. Exits non-zero on any failure.
#
# Extra arguments are passed to `cargo test` (e.g. `tests/run.sh --test tools`).
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests use (fuse3 for mounts, curl for the S3 server setup, python
# venv for moto).
need=()
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v curl >/dev/null || need+=(curl)
command -v rsync >/dev/null || need+=(rsync)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
    else
        echo "tests/run.sh: please install: ${need[*]}" >&2
        exit 1
    fi
fi

# Unprivileged users mount through fusermount3 and /dev/fuse, which Debian's udev rule
# makes mode 0666; a container may leave it 0600 (tests/trust.rs mounts as nobody).
if [ "$(id -u)" = 0 ] && [ -c /dev/fuse ]; then
    chmod 0666 /dev/fuse
fi

bash tests/servers/install.sh

envfile=$(mktemp "${TMPDIR:-/tmp}/s3fs-test-env.XXXXXX")
cleanup() { bash tests/servers/stop.sh "$envfile" || true; rm -f "$envfile"; }
trap cleanup EXIT
bash tests/servers/start.sh "$envfile"
set -a
# shellcheck disable=SC1090
. "$envfile"
set +a

cargo test "$@"
# pjdfstest and fsx on real mounts; only in the full run (no arguments selecting tests).
if [ $# -eq 0 ]; then
    bash tests/posix.sh
fi
