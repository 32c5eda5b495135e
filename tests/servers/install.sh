#!/usr/bin/env bash
# Install what the tests run against: the S3 servers Garage (built with cargo) and moto
# (in a Python venv), and the POSIX test tools pjdfstest and fsx (cargo). Idempotent:
# returns at once when everything is already installed.
#
# Installs into $S3FS_TEST_CACHE (default: ${XDG_CACHE_HOME:-$HOME/.cache}/s3fs-tests).
# Needs cargo, python3 with the venv module, and a C compiler (Garage builds libsodium
# and SQLite). On a fresh Debian machine as root, missing system packages are installed
# with apt-get.
set -euo pipefail

GARAGE_VERSION=2.5.0
CACHE=${S3FS_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/s3fs-tests}
GARAGE_ROOT="$CACHE/garage-$GARAGE_VERSION"
MOTO_VENV="$CACHE/moto-venv"

mkdir -p "$CACHE"

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    need_apt+=(python3-venv)
fi
if [ ! -x "$MOTO_VENV/bin/moto_server" ] || [ ! -x "$GARAGE_ROOT/bin/garage" ] \
    || [ ! -x "$CACHE/posix-tools/bin/pjdfstest" ] || [ ! -x "$CACHE/posix-tools/bin/fsx" ]; then
    if [ ${#need_apt[@]} -gt 0 ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
        else
            echo "install.sh: please install: ${need_apt[*]}" >&2
            exit 1
        fi
    fi
fi

if [ -x "$GARAGE_ROOT/bin/garage" ]; then
    echo "garage $GARAGE_VERSION: already installed in $GARAGE_ROOT"
else
    command -v cargo >/dev/null 2>&1 || { echo "install.sh: cargo is needed to build Garage" >&2; exit 1; }
    echo "garage $GARAGE_VERSION: building into $GARAGE_ROOT (takes a while, once)"
    cargo install garage --version "$GARAGE_VERSION" --locked --root "$GARAGE_ROOT"
fi

if [ -x "$MOTO_VENV/bin/moto_server" ]; then
    echo "moto: already installed in $MOTO_VENV"
else
    echo "moto: installing into $MOTO_VENV"
    rm -rf "$MOTO_VENV"
    python3 -m venv "$MOTO_VENV"
    "$MOTO_VENV/bin/pip" install --quiet 'moto[server]'
fi

# --- POSIX test tools (tests/posix.sh) -------------------------------------------------
# pjdfstest (POSIX conformance) and fsx (random I/O with verification), from crates.io.
POSIX_TOOLS="$CACHE/posix-tools"
if [ -x "$POSIX_TOOLS/bin/pjdfstest" ] && [ -x "$POSIX_TOOLS/bin/fsx" ]; then
    echo "pjdfstest, fsx: already installed in $POSIX_TOOLS"
else
    command -v cargo >/dev/null 2>&1 || { echo "install.sh: cargo is needed to build pjdfstest and fsx" >&2; exit 1; }
    echo "pjdfstest, fsx: building into $POSIX_TOOLS (once)"
    cargo install --locked --root "$POSIX_TOOLS" --version '^0.2' pjdfstest
    cargo install --locked --root "$POSIX_TOOLS" --version '^0.3' fsx
fi
