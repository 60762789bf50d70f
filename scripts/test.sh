#!/usr/bin/env bash
# Run every test of the project on this machine, from nothing:
#   install missing packages, start the project's own RabbitMQ and PostgreSQL,
#   build with warnings as errors, run the unit and integration tests, the short
#   benchmark and the quick fault-injection suite, run the tests again under
#   AddressSanitizer + UndefinedBehaviorSanitizer, then run each libFuzzer target
#   briefly on its seed corpus.
# Usage: bash scripts/test.sh [--quick]   (--quick: skip the sanitizer and fuzz stages)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
QUICK=0
[[ ${1:-} == --quick ]] && QUICK=1
FUZZ_SECONDS=${TOOLBOX_FUZZ_SECONDS:-20}
JOBS=${TOOLBOX_JOBS:-2}

passed=0
failed=0
failures=()
stage() { printf '\n==== %s ====\n' "$*"; }
record() { # name status
    if [[ $2 -eq 0 ]]; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("$1"); fi
}

stage "dependencies"
bash scripts/deps.sh || { echo "test.sh: installing dependencies failed"; exit 1; }

stage "services"
bash scripts/services.sh start || { echo "test.sh: starting the services failed"; exit 1; }

run_ctest() { # build-dir label-name
    local dir=$1 name=$2 log
    log=$(mktemp)
    ctest --test-dir "$dir" --output-on-failure --timeout 600 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    # Count individual tests from ctest's summary line.
    local total fails
    total=$(sed -n 's/.*tests failed out of \([0-9]*\).*/\1/p' "$log" | tail -n 1)
    fails=$(sed -n 's/.*, \([0-9]*\) tests failed out of.*/\1/p' "$log" | tail -n 1)
    total=${total:-0}
    fails=${fails:-0}
    passed=$((passed + total - fails))
    failed=$((failed + fails))
    [[ $rc -ne 0 && $fails -eq 0 ]] && { failed=$((failed + 1)); failures+=("$name: ctest exited $rc"); }
    [[ $fails -ne 0 ]] && failures+=("$name: $fails test(s)")
    rm -f "$log"
}

build() { # dir cmake-args...
    local dir=$1
    shift
    cmake -S "$ROOT" -B "$dir" "$@" >/dev/null && cmake --build "$dir" -j"$JOBS"
}

stage "build (warnings as errors)"
if build build-ci -DTOOLBOX_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo; then
    record build 0
    stage "setup of the test environment"
    ./build-ci/bin/toolbox --env test setup
    record "toolbox setup" $?
    stage "unit and integration tests"
    run_ctest build-ci tests
    stage "benchmarks, short form (figures reported, not judged)"
    BUILD_DIR=build-ci timeout 600 bash bench/run.sh --quick
    record "bench/run.sh --quick" $?
    stage "fault injection, quick form (tests/faults/run --quick; own services on other ports)"
    timeout 1200 /usr/bin/python3 tests/faults/run --quick --bin-dir build-ci/bin \
        --producer build-ci/tests/fault-producer --work-dir build-ci/faults-quick
    rc=$?
    [[ $rc -ne 0 ]] && tail -n 40 build-ci/faults-quick/report.md 2>/dev/null
    record "tests/faults/run --quick" $rc
else
    record build 1
fi

if [[ $QUICK -eq 0 ]]; then
    stage "AddressSanitizer + UndefinedBehaviorSanitizer build and tests"
    if build build-asan -DTOOLBOX_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug; then
        record "asan build" 0
        ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
        UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
            run_ctest build-asan sanitizers
    else
        record "asan build" 1
    fi

    stage "fuzz targets (${FUZZ_SECONDS}s each)"
    if CC=clang build build-fuzz -DTOOLBOX_FUZZ=ON -DTOOLBOX_TESTS=OFF -DCMAKE_BUILD_TYPE=Debug; then
        for f in build-fuzz/bin/fuzz_*; do
            [[ -x $f ]] || continue
            name=$(basename "$f")
            corpus=$(mktemp -d)
            seeds=fuzz/corpus/${name#fuzz_}
            [[ -d $seeds ]] && cp -r "$seeds"/. "$corpus"/
            "$f" -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=1024 -print_final_stats=1 "$corpus" \
                >"$corpus.log" 2>&1
            rc=$?
            grep -E "stat::number_of_executed_units" "$corpus.log" | sed "s/^/$name: /"
            [[ $rc -ne 0 ]] && tail -n 40 "$corpus.log"
            record "$name" $rc
            rm -rf "$corpus" "$corpus.log"
        done
    else
        record "fuzz build" 1
    fi
fi

stage "summary"
for f in "${failures[@]}"; do echo "FAILED: $f"; done
echo "toolbox: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
