#!/usr/bin/env bash
# Install the s3fs tools from a release build under PREFIX (default /usr/local), with the
# names they are known by (Cargo cannot build binaries whose names contain a dot, so
# `mkfs-s3fs` is installed as `mkfs.s3fs`), and their man pages.
#
# Usage: cargo build --release && contrib/install.sh [PREFIX]
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${1:-${PREFIX:-/usr/local}}
BIN=target/release

declare -A names=(
    [mkfs-s3fs]=mkfs.s3fs
    [mount-s3fs]=mount.s3fs
    [umount-s3fs]=umount.s3fs
    [fsck-s3fs]=fsck.s3fs
    [s3fsadm]=s3fsadm
    [s3fs_verify]=s3fs_verify
    [s3fsstat]=s3fsstat
    [s3fsctrl]=s3fsctrl
    [s3fscp]=s3fscp
    [s3fslock]=s3fslock
    [s3fsrm]=s3fsrm
)
install -d "$PREFIX/bin" "$PREFIX/share/man/man8"
for built in "${!names[@]}"; do
    [ -x "$BIN/$built" ] || { echo "install.sh: $BIN/$built is missing; run cargo build --release first" >&2; exit 1; }
    install -m 0755 "$BIN/$built" "$PREFIX/bin/${names[$built]}"
done
install -m 0644 man/*.8 "$PREFIX/share/man/man8/"
# mount(8) runs /sbin/mount.TYPE for `mount -t s3fs` and fstab lines of type s3fs.
if [ "$(id -u)" = 0 ] && [ -d /sbin ] && [ "$PREFIX/bin" != /sbin ]; then
    ln -sf "$PREFIX/bin/mount.s3fs" /sbin/mount.s3fs
fi
echo "Installed ${names[*]} into $PREFIX/bin"
