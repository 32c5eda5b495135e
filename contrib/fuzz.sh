#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz / libFuzzer) of the parsers that read hostile input:
# objects from the store (object_decode), the superblock JSON (params_parse), authinfo2
# (authinfo_parse), storage URLs (storage_url), --backend-options (backend_options) and
# the wrapped master key (key_unwrap). The targets are in fuzz/fuzz_targets/; each one's
# header says what it checks.
#
# Not part of CI: like contrib/benchmark.sh it is run by hand, and takes a while.
#
#   bash contrib/fuzz.sh                                  # every target, 300 s each
#   FUZZ_SECONDS=900 bash contrib/fuzz.sh object_decode   # the ones named, 900 s each
#
# Settings (all optional):
#   FUZZ_SECONDS    fuzzing time per target in seconds (default 300)
#   FUZZ_TIMEOUT    seconds one input may take before it counts as a hang (default 60)
#   FUZZ_SANITIZER  address or none (default: address if this toolchain can build it)
#   FUZZ_KEEP_GOING 1: go on after a crash (libFuzzer -fork=1 -ignore_crashes=1 ...), to
#                   collect several different crashes in one run
#
# Installs cargo-fuzz if it is missing. Runs one fuzzing process per target, one target
# after the other, with -rss_limit_mb=2048, then prints one line per target: time, runs,
# and whether it crashed and where the crashing input is. Exits 1 if any target crashed
# (or failed to run), 2 if the targets do not build.
#
# Corpora grow in fuzz/corpus/TARGET (seeded by the targets themselves from the real
# encoders; nothing is committed), crashing inputs land in fuzz/artifacts/TARGET/ and the
# full libFuzzer output in fuzz/logs/TARGET.log. To reproduce a crash, with its panic
# message and backtrace, run from the repository root:
#   export RUSTC_BOOTSTRAP=1 CFLAGS=-fno-sanitize-address-use-after-scope
#   cargo fuzz run --sanitizer SAN TARGET fuzz/artifacts/TARGET/crash-…
# (SAN as the summary prints it; the environment as this script sets it, else cargo
# rebuilds the C libraries and all that depends on them; on nightly with ASan that is plain
# `cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-…`), and to shrink the input:
#   cargo fuzz tmin --sanitizer SAN TARGET fuzz/artifacts/TARGET/crash-…
set -uo pipefail # no -e: a crashing target must not keep the others from running
cd "$(dirname "$0")/.." || exit 2

ALL_TARGETS=(object_decode params_parse authinfo_parse storage_url backend_options key_unwrap)
FUZZ_SECONDS=${FUZZ_SECONDS:-300}
FUZZ_TIMEOUT=${FUZZ_TIMEOUT:-60}
if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=("${ALL_TARGETS[@]}")
fi
for t in "${targets[@]}"; do
    if [ ! -f "fuzz/fuzz_targets/$t.rs" ]; then
        echo "fuzz.sh: no fuzz target $t (known: ${ALL_TARGETS[*]})" >&2
        exit 2
    fi
done

# cargo-fuzz builds with flags that only a nightly compiler accepts (-Zsanitizer=...,
# and cargo -Z options), but only the stable toolchain can be installed here.
# RUSTC_BOOTSTRAP=1 makes stable rustc and cargo accept them; the sanitizer coverage
# instrumentation itself (-Cpasses=sancov-module) is stable.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked || exit 2
fi

# AddressSanitizer needs the ASan runtime, which the stable x86_64 Linux toolchain ships
# (librustc-stable_rt.asan.a): -Zsanitizer=address works there with RUSTC_BOOTSTRAP and is
# the default. It instruments the Rust code (unsafe code included) and, through the cc
# crate (which adds -fsanitize=address when cargo reports the sanitizer), the C libraries
# too: zstd, SQLite. The C code gets no coverage feedback, though. If a tiny ASan program
# does not build and run, fall back to --sanitizer none: panics, failed assertions, hangs
# and the RSS limit are still caught, memory errors are not.
if [ -z "${FUZZ_SANITIZER:-}" ]; then
    probe=$(mktemp -d "${TMPDIR:-/tmp}/s3fs-asan-probe.XXXXXX")
    echo 'fn main() { let v = vec![1u8; 4]; std::process::exit(i32::from(v[3]) - 1) }' >"$probe/p.rs"
    if rustc -Zsanitizer=address --target "$(rustc -vV | sed -n 's/^host: //p')" \
        -o "$probe/p" "$probe/p.rs" >/dev/null 2>&1 && "$probe/p"; then
        FUZZ_SANITIZER=address
    else
        FUZZ_SANITIZER=none
        echo "fuzz.sh: -Zsanitizer=address does not work with this toolchain: fuzzing without a sanitizer" >&2
    fi
    rm -rf "$probe"
fi
echo "== sanitizer: $FUZZ_SANITIZER"
# C code compiled by GCC with use-after-scope checks, run with rustc's (LLVM's) ASan
# runtime, gives a false stack-use-after-scope in zstd's optimal-parsing compressor
# (levels 16 and up): it reads getAllMatchesFns, a const array local to
# ZSTD_selectBtGetAllMatches that GCC turned into a global, on the function's second
# call (GCC's own runtime reports nothing there). Leave that one check out of the C code;
# everything else ASan does stays.
if [ "$FUZZ_SANITIZER" = address ]; then
    export CFLAGS="${CFLAGS:+$CFLAGS }-fno-sanitize-address-use-after-scope"
fi

# Fuzz the dependency versions the main crate ships (zstd, zlib-rs, rust-ini, serde_json,
# ...): fuzz/ is a workspace of its own, so start its lock file from the main one; cargo
# adds the fuzz-only packages. fuzz/Cargo.lock is not committed.
if [ ! -f fuzz/Cargo.lock ] || [ Cargo.lock -nt fuzz/Cargo.lock ]; then
    cp Cargo.lock fuzz/Cargo.lock
fi

echo "== building the fuzz targets (the first build takes a long time)"
if [ $# -eq 1 ]; then
    build=(cargo fuzz build --sanitizer "$FUZZ_SANITIZER" "$1")
else
    build=(cargo fuzz build --sanitizer "$FUZZ_SANITIZER")
fi
if ! "${build[@]}"; then
    echo "fuzz.sh: the fuzz targets do not build" >&2
    exit 2
fi

mkdir -p fuzz/logs
summary=()
failed=0
for t in "${targets[@]}"; do
    log=fuzz/logs/$t.log
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    echo "== $t: fuzzing for ${FUZZ_SECONDS}s (output in $log)"
    keep_going=()
    if [ "${FUZZ_KEEP_GOING:-0}" = 1 ]; then
        keep_going=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
    fi
    marker=$(mktemp "${TMPDIR:-/tmp}/s3fs-fuzz-start.XXXXXX")
    start=$(date +%s)
    S3FS_FUZZ_SEED_DIR=$PWD/fuzz/corpus/$t \
        cargo fuzz run --sanitizer "$FUZZ_SANITIZER" "$t" -- \
        -max_total_time="$FUZZ_SECONDS" -timeout="$FUZZ_TIMEOUT" -rss_limit_mb=2048 \
        -print_final_stats=1 "${keep_going[@]}" >"$log" 2>&1
    rc=$?
    elapsed=$(($(date +%s) - start))
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if [ -z "$runs" ]; then # no final stats: take the last status line (#N ...)
        runs=$(grep -oE '^#[0-9]+' "$log" | tail -n 1 | tr -d '#')
    fi
    # Inputs that crashed, leaked, ran out of memory or hung during this run.
    mapfile -t found < <(find "fuzz/artifacts/$t" -type f -newer "$marker" \
        \( -name 'crash-*' -o -name 'leak-*' -o -name 'oom-*' -o -name 'timeout-*' \) | sort)
    rm -f "$marker"
    if [ "${#found[@]}" -gt 0 ]; then
        result="CRASHED: ${found[0]}"
        if [ "${#found[@]}" -gt 1 ]; then
            result+=" (and $((${#found[@]} - 1)) more in fuzz/artifacts/$t)"
        fi
        failed=1
    elif [ "$rc" -eq 0 ]; then
        result=ok
    else
        result="FAILED (exit $rc, no crashing input saved): see $log"
        failed=1
    fi
    line=$(printf '%-16s %6ss %12s runs  %s' "$t" "$elapsed" "${runs:-?}" "$result")
    echo "$line"
    summary+=("$line")
done

echo "== summary (sanitizer: $FUZZ_SANITIZER)"
printf '%s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
    echo "To reproduce: RUSTC_BOOTSTRAP=1 CFLAGS='${CFLAGS:-}' cargo fuzz run --sanitizer $FUZZ_SANITIZER TARGET ARTIFACT"
fi
exit "$failed"
