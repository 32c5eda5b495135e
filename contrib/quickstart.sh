#!/usr/bin/env bash
# Build and install s3fs, create a filesystem on the local default store (once), and
# mount it. Safe to run again: an existing filesystem is mounted, not recreated.
#
#   STORE   storage URL       (default local:///var/lib/s3fs/default)
#   MNT     mountpoint        (default /mnt/s3fs)
set -euo pipefail
cd "$(dirname "$0")/.."
STORE=${STORE:-local:///var/lib/s3fs/default}
MNT=${MNT:-/mnt/s3fs}

command -v fusermount3 >/dev/null || {
    [ "$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3
}
cargo build --release
contrib/install.sh

# The passphrase of this demo filesystem lives in authinfo2 (mode 0600), so mounting
# needs no typing; mkfs prints the master key once: keep it.
AUTH="$HOME/.s3fs/authinfo2"
mkdir -p "$HOME/.s3fs" && chmod 700 "$HOME/.s3fs"
if ! grep -qs "storage-url: $STORE" "$AUTH"; then
    pass=$(head -c 24 /dev/urandom | base64)
    umask 077
    printf '[quickstart]\nstorage-url: %s\nfs-passphrase: %s\n' "$STORE" "$pass" >> "$AUTH"
fi
pass=$(awk -v url="$STORE" '$0 == "storage-url: " url {f=1} f && /^fs-passphrase:/ {print $2; exit}' "$AUTH")
mkdir -p "$MNT"
if ! mountpoint -q "$MNT"; then
    printf '%s\n' "$pass" | mkfs.s3fs "$STORE" 2>/dev/null || true
    mount.s3fs "$STORE" "$MNT"
fi
cat <<MSG

s3fs is mounted on $MNT (store: $STORE).
  Use it like any directory:   cp -a ~/Documents $MNT/
  See where things are:        df -h $MNT
  Unmount (waits until every block and the metadata are in the store):
                               umount.s3fs $MNT
  Mount again:                 mount.s3fs $STORE $MNT
MSG
