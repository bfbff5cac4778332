#!/usr/bin/env bash
# Builds every fuzz target in fuzz/ (cargo-fuzz and libFuzzer, on the stable
# toolchain with RUSTC_BOOTSTRAP=1) and runs each for SECONDS (default 60) from
# its checked-in seeds (fuzz/seeds/TARGET), growing a working corpus in
# target/fuzz/corpus/TARGET. Prints one line per target: executions, coverage
# (edges), corpus size, crashes; exits 1 if any target crashed, hung (10 s on
# one input) or ran out of memory (2 GiB, or 512 MiB in one allocation), or
# LeakSanitizer found memory lost at exit. libFuzzer's per-input leak checks
# are off (-detect_leaks=0: the server targets keep one server running for the
# whole run); instead every input's connections end with it, and the harness
# fails an input whose server side outlives its client.
# Crashing inputs land in target/fuzz/artifacts/TARGET; logs in target/fuzz/logs.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   AddressSanitizer build, one target at a time
#                                           (FUZZ_PARALLEL=N: N at a time)
#   scripts/fuzz.sh --smoke                 CI: 15 s each, four at a time, built in the dev
#                                           profile without a sanitizer (3 min to build
#                                           rather than 6; debug assertions on): every
#                                           target builds and survives its seeds
#   scripts/fuzz.sh --record                rewrite the connection target's recorded
#                                           seeds from the requests target's seeds
set -euo pipefail
cd "$(dirname "$0")/.."

# libFuzzer is C++, built by libfuzzer-sys; cargo-fuzz comes from crates.io.
scripts/install-tools.sh --for fuzz.sh cargo=manual:"the Rust toolchain, from rustup" c++=g++
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
work=target/fuzz
mkdir -p "$work/logs"

if [ "${1:-}" = "--record" ]; then
    out=fuzz/seeds/connection
    rm -f "$out"/[0-9a-f]*[0-9a-f]
    ECHO_FUZZ_RECORD="$(realpath "$out")" cargo fuzz run --sanitizer none requests fuzz/seeds/requests -- -runs=0
    echo "recorded $(ls "$out" | wc -l) connection seeds"
    exit 0
fi

seconds=60
parallel=${FUZZ_PARALLEL:-1}
build=()
if [ "${1:-}" = "--smoke" ]; then
    seconds=15
    parallel=4
    build=(--dev --sanitizer none)
    shift
elif [[ "${1:-}" =~ ^[0-9]+$ ]]; then
    seconds=$1
    shift
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)

cargo fuzz build "${build[@]}"

run_one() {
    local target=$1
    rm -rf "$work/artifacts/$target"
    mkdir -p "$work/corpus/$target" "$work/artifacts/$target"
    cargo fuzz run "${build[@]}" "$target" "$work/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
        -detect_leaks=0 \
        -print_final_stats=1 -artifact_prefix="$work/artifacts/$target/" \
        >"$work/logs/$target.log" 2>&1
}

failed=0
pids=()
names=()
for target in "${targets[@]}"; do
    run_one "$target" &
    pids+=($!)
    names+=("$target")
    if [ ${#pids[@]} -ge "$parallel" ]; then
        wait "${pids[0]}" || failed=1
        pids=("${pids[@]:1}")
    fi
done
for pid in "${pids[@]}"; do
    wait "$pid" || failed=1
done

printf '%-14s %12s %8s %8s %8s\n' target executions edges corpus crashes
for target in "${names[@]}"; do
    log="$work/logs/$target.log"
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    done_line=$(grep -E '^#[0-9]+[[:space:]]+(DONE|INITED)' "$log" | tail -1 || true)
    edges=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")
    corpus=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$done_line")
    crashes=$(find "$work/artifacts/$target" -type f | wc -l)
    if grep -qE '^(==[0-9]+==ERROR|SUMMARY: libFuzzer|thread .* panicked)' "$log"; then
        crashes=$((crashes > 0 ? crashes : 1))
    fi
    printf '%-14s %12s %8s %8s %8s\n' "$target" "${runs:-?}" "${edges:-?}" "${corpus:-?}" "$crashes"
    if [ -z "$runs" ]; then
        failed=1
        echo "  $target did not run: $(grep -v '^ *[0-9]*: \|^Stack\|^Error\|^─\|^$' "$log" | tail -1)"
    fi
    if [ "$crashes" -gt 0 ]; then
        failed=1
        grep -m1 -E 'panicked|ERROR|SUMMARY' "$log" | sed "s/^/  $target: /"
    fi
done
exit "$failed"
