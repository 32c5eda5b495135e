#!/bin/bash
# Nightly backup into an s3fs filesystem, S3QL's s3ql_backup.sh flow with the s3fs tools:
# fsck, mount, snapshot the newest backup (s3fscp: no data copied), rsync the source into
# the snapshot (only changes are stored), lock it (s3fslock), expire old backups
# (contrib/expire_backups --use-s3fsrm), unmount (everything in the store on exit 0).
#
# Usage: s3fs_backup.sh STORAGE_URL SOURCE_DIR [AGE...]
#   AGE...        expire_backups age ranges in backup cycles [default: 1 7 14 31 90 180 360]
# Environment:
#   S3FS_OPTIONS  options for fsck.s3fs and mount.s3fs, e.g. "--authfile F --cachedir D"
#   BACKUP_DIR    directory inside the filesystem holding the backups [default: backups]
#   MOUNTPOINT    where to mount [default: a new temporary directory]
# Exit status: 0 when the backup is complete and in the store, otherwise the failing
# tool's exit status.
set -euo pipefail

if [ $# -lt 2 ]; then
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
url=$1
src=$2
shift 2
ages=("$@")
[ ${#ages[@]} -gt 0 ] || ages=(1 7 14 31 90 180 360)
here=$(cd "$(dirname "$0")" && pwd)
read -r -a opts <<< "${S3FS_OPTIONS:-}"
mnt=${MOUNTPOINT:-$(mktemp -d)}

# A repaired filesystem (128) is fine to use; anything else is not.
rc=0
fsck.s3fs --batch "${opts[@]}" "$url" || rc=$?
if [ "$rc" != 0 ] && [ "$rc" != 128 ]; then
    echo "s3fs_backup.sh: fsck.s3fs failed with exit status $rc" >&2
    exit "$rc"
fi
mount.s3fs "${opts[@]}" "$url" "$mnt"
# umount.s3fs returns once everything is in the store; its failure is ours.
trap 'cd /; umount.s3fs "$mnt" || exit $?' EXIT

mkdir -p "$mnt/${BACKUP_DIR:-backups}"
cd "$mnt/${BACKUP_DIR:-backups}"
new=$(date -u +%Y-%m-%d_%H:%M:%S)
last=$(find . -maxdepth 1 -name '????-??-??_??:??:??' -type d -printf '%f\n' | sort | tail -n 1)
if [ -n "$last" ]; then
    s3fscp "$last" "$new"
else
    mkdir "$new"
fi
# No -A: s3fs stores no POSIX ACLs. "./": the name has colons, which rsync would
# otherwise read as HOST:PATH.
rsync -aHXx --delete-during --delete-excluded --partial "$src/" "./$new/"
s3fslock "$new"
"$here/expire_backups" --use-s3fsrm "${ages[@]}"
