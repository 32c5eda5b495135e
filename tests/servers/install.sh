#!/usr/bin/env bash
# Install the S3 servers the tests run against: Garage (built with cargo) and moto
# (in a Python venv). Idempotent: returns at once when both are already installed.
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
if [ ! -x "$MOTO_VENV/bin/moto_server" ] || [ ! -x "$GARAGE_ROOT/bin/garage" ]; then
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
