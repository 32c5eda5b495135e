#!/usr/bin/env bash
# External POSIX suites on real s3fs mounts (called by tests/run.sh after `cargo test`):
#
# 1. pjdfstest (as root, on a mount with --allow-other so the kernel checks permissions):
#    the set of failing cases must equal tests/posix/known-failures.txt exactly.
# 2. fsx: S3FS_FSX_SEEDS seeds (default 5) x S3FS_FSX_OPS operations (default 20000) in
#    parallel on a filesystem with 64 KiB blocks and a 16-block cache, uploading dirty
#    blocks at once; then the files must read back the same after unmounting and
#    mounting again from an empty cache directory.
#
# The tools come from tests/servers/install.sh. Exits non-zero on any failure; unmounts
# everything it mounted on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

CACHE=${S3FS_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/s3fs-tests}
TOOLS="$CACHE/posix-tools/bin"
FSX_SEEDS=${S3FS_FSX_SEEDS:-5}
FSX_OPS=${S3FS_FSX_OPS:-20000}

for t in pjdfstest fsx; do
    [ -x "$TOOLS/$t" ] || { echo "posix.sh: $TOOLS/$t missing: run bash tests/servers/install.sh" >&2; exit 1; }
done

cargo build --bins --quiet
BIN="${CARGO_TARGET_DIR:-$repo/target}/debug"

work=$(mktemp -d "${TMPDIR:-/tmp}/s3fs-posix.XXXXXX")
# pjdfstest's unprivileged users must be able to reach the mountpoint.
chmod 755 "$work"
mounted=()
cleanup() {
    local m
    for m in "${mounted[@]}"; do
        if mountpoint -q "$m"; then
            "$BIN/umount-s3fs" "$m" >/dev/null 2>&1 || fusermount3 -uz "$m" || true
        fi
    done
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "posix.sh: FAILED: $*" >&2
    exit 1
}

# mount_fs NAME CACHEDIR [mount.s3fs options...]: mount local://$work/NAME.store on
# $work/NAME.mnt.
mount_fs() {
    local name=$1 cache=$2
    shift 2
    mkdir -p "$work/$name.mnt"
    "$BIN/mount-s3fs" --cachedir "$cache" --log "$work/$name.log" "$@" \
        "local://$work/$name.store" "$work/$name.mnt" || fail "mounting $name"
    mounted+=("$work/$name.mnt")
}

umount_fs() {
    "$BIN/umount-s3fs" "$work/$1.mnt" || fail "unmounting $1"
}

# --- pjdfstest ------------------------------------------------------------------------
if [ "$(id -u)" != 0 ]; then
    echo "posix.sh: pjdfstest skipped (it needs root)"
else
    echo "posix.sh: pjdfstest"
    "$BIN/mkfs-s3fs" --plain --cachedir "$work/pjd.cache" "local://$work/pjd.store" >/dev/null
    mount_fs pjd "$work/pjd.cache" --allow-other
    # A directory on another filesystem, for the EXDEV cases.
    mkdir -p "$work/secondary"
    out="$work/pjdfstest.out"
    (cd "$work/pjd.mnt" && NO_COLOR=1 "$TOOLS/pjdfstest" -c "$repo/tests/posix/pjdfstest.toml" \
        -p "$work/pjd.mnt" -s "$work/secondary") >"$out" 2>&1 || true
    sed -i 's/\x1b\[[0-9;]*m//g' "$out"
    summary=$(grep '^Summary:' "$out") || { tail -n 30 "$out" >&2; fail "pjdfstest did not finish"; }
    echo "  $summary"
    { grep -E '^[A-Za-z0-9_:]+ +FAILED$' "$out" || true; } | awk '{print $1}' | sort -u >"$work/failed"
    sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^$/d' tests/posix/known-failures.txt | sort -u >"$work/known"
    new=$(comm -23 "$work/failed" "$work/known")
    fixed=$(comm -13 "$work/failed" "$work/known")
    if [ -n "$new" ]; then
        echo "posix.sh: pjdfstest cases failing that are not in tests/posix/known-failures.txt:" >&2
        while read -r t; do
            grep -A3 -E "^$t +FAILED$" "$out" | grep -vE '^Backtrace|^ +[0-9]+: |^ +at ' >&2 || true
        done <<<"$new"
    fi
    if [ -n "$fixed" ]; then
        echo "posix.sh: pjdfstest cases in tests/posix/known-failures.txt that now pass (remove them):" >&2
        sed 's/^/  /' <<<"$fixed" >&2
    fi
    [ -z "$new$fixed" ] || fail "pjdfstest results differ from tests/posix/known-failures.txt"
    umount_fs pjd
fi

# --- fsx ------------------------------------------------------------------------------
echo "posix.sh: fsx, $FSX_SEEDS seeds x $FSX_OPS operations"
"$BIN/mkfs-s3fs" --plain --data-block-size 64 --cachedir "$work/fsx.cache" "local://$work/fsx.store" >/dev/null
mount_fs fsx "$work/fsx.cache" --cachesize 4096 --max-cache-entries 16 --dirty-block-upload-delay 0
pids=()
for seed in $(seq 1 "$FSX_SEEDS"); do
    mkdir -p "$work/fsx-$seed"
    "$TOOLS/fsx" -f tests/posix/fsx.toml -N "$FSX_OPS" -S "$seed" -P "$work/fsx-$seed" \
        "$work/fsx.mnt/fsx.$seed" >"$work/fsx-$seed.out" 2>&1 &
    pids+=($!)
done
bad=()
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || bad+=($((i + 1)))
done
for seed in "${bad[@]}"; do
    echo "posix.sh: fsx seed $seed failed (reproduce: fsx -f tests/posix/fsx.toml -N $FSX_OPS -S $seed FILE):" >&2
    # The reason comes first and the operation log last: keep both ends.
    out="$work/fsx-$seed.out"
    if [ "$(wc -l <"$out")" -le 160 ]; then
        cat "$out" >&2
    else
        head -n 60 "$out" >&2
        echo "[...]" >&2
        tail -n 100 "$out" >&2
    fi
done
if [ ${#bad[@]} -gt 0 ]; then
    echo "posix.sh: end of the mount log:" >&2
    tail -n 20 "$work/fsx.log" >&2
    fail "fsx"
fi
(cd "$work/fsx.mnt" && sha256sum fsx.*) >"$work/fsx.sums"
umount_fs fsx
# Everything must come back from the store alone.
mount_fs fsx "$work/fsx.cache2"
(cd "$work/fsx.mnt" && sha256sum --quiet -c "$work/fsx.sums") || fail "fsx files differ after mounting again"
umount_fs fsx
echo "posix.sh: all passed"
