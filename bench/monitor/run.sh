#!/usr/bin/env bash
# bench/monitor/run.sh - the platform monitor's ingest rate beside a plain rabbitmq-c consume-and-ack loop.
#
# Usage: bench/monitor/run.sh [--quick]     (from anywhere; BUILD_DIR=build by default, relative to the repo)
#
# In its own sandbox (RabbitMQ vhost + Postgres database `b_monitor`, see scripts/services.sh sandbox), each
# round pre-fills platform.fifo with N Celery-shaped task messages (`toolbox send bench.noop --count N`: the
# routing key `bench` reaches only the catch-all queue), then drains them with
#   1. bench-plain-consume   rabbitmq-c alone: basic.consume, prefetch P, one basic.ack per message
#   2. platform-monitor      --max-messages N: parse, get-or-create in batches, commit, then ack
# (after refilling), and prints both rates, from the first delivery to the last ack, and their ratio. The
# monitor's rows are counted after each round (must be N). Benchmarks report; they never fail on a figure.
#
# Environment: BUILD_DIR (build), BENCH_N (50000; --quick 5000), BENCH_REPS (3; --quick 1),
# BENCH_BATCH (monitor.batch_size, 256), BENCH_PREFETCH (2 x batch, used by both), BENCH_SANDBOX (b_monitor).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
cd "$REPO"
QUICK=0
case ${1:-} in
--quick) QUICK=1 ;;
'') ;;
-h | --help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
*) echo "usage: bench/monitor/run.sh [--quick]" >&2; exit 2 ;;
esac

BUILD_DIR=${BUILD_DIR:-build}
[[ $BUILD_DIR == /* ]] || BUILD_DIR=$REPO/$BUILD_DIR
BIN=$BUILD_DIR/bin
if ((QUICK)); then N=${BENCH_N:-5000}; REPS=${BENCH_REPS:-1}; else N=${BENCH_N:-50000}; REPS=${BENCH_REPS:-3}; fi
BATCH=${BENCH_BATCH:-256}
PREFETCH=${BENCH_PREFETCH:-$((2 * BATCH))}
SANDBOX=${BENCH_SANDBOX:-b_monitor}
for p in toolbox platform-monitor bench-plain-consume bench-admin; do
    [[ -x $BIN/$p ]] || { echo "run.sh: $BIN/$p is missing; build first (cmake --build $BUILD_DIR)" >&2; exit 1; }
done
command -v psql >/dev/null || { echo "run.sh: psql is needed" >&2; exit 1; }

eval "$(bash scripts/services.sh sandbox "$SANDBOX")"
export TOOLBOX_LOG_LEVEL=warning
"$BIN/toolbox" --env test setup >/dev/null
LOG=$(mktemp -d /tmp/bench-monitor.XXXXXX)
trap 'rm -rf "$LOG"' EXIT

sql() { psql -X -q -At "$TOOLBOX_DATABASE_ADMIN_URL" -c "$1"; }

fill() {
    "$BIN/bench-admin" purge platform.fifo celery msg export >/dev/null
    "$BIN/toolbox" --env test send bench.noop --args '[1, "x"]' --kwargs '{"k": 1}' --count "$N" >/dev/null
    local depth
    depth=$("$BIN/bench-admin" depth platform.fifo)
    [[ $depth == "$N" ]] || { echo "run.sh: platform.fifo holds $depth messages, expected $N" >&2; exit 1; }
}

plain_rates=()
mon_rates=()
echo "bench/monitor: N=$N messages per run, $REPS run(s), prefetch $PREFETCH, monitor batches of $BATCH" \
    "(monitor.batch_ms default), sandbox $SANDBOX" >&2
for ((r = 1; r <= REPS; r++)); do
    fill
    line=$("$BIN/bench-plain-consume" -n "$N" --queue platform.fifo --prefetch "$PREFETCH")
    plain=$(sed -n 's/.*msgs_per_s=\([0-9.]*\).*/\1/p' <<<"$line")
    fill
    sql "TRUNCATE tasks_backgroundtask, tasks_parkedmessage"
    "$BIN/platform-monitor" --env test --loglevel info --max-messages "$N" --batch-size "$BATCH" \
        --prefetch "$PREFETCH" >"$LOG/monitor.log" 2>&1
    stopped=$(grep ' stopped: ' "$LOG/monitor.log" || true)
    mon=$(sed -n 's/.* acknowledged (\([0-9.]*\)\/s).*/\1/p' <<<"$stopped")
    rows=$(sql "SELECT count(*) FROM tasks_backgroundtask")
    [[ -n $mon && -n $plain ]] || { echo "run.sh: no rate in:" >&2; cat "$LOG/monitor.log" >&2; echo "$line" >&2; exit 1; }
    [[ $rows == "$N" ]] || echo "run.sh: WARNING: the monitor recorded $rows rows, expected $N" >&2
    printf 'run %d: plain consume+ack %10.0f msg/s   platform-monitor %10.0f msg/s (%s rows)   ratio %.2f\n' \
        "$r" "$plain" "$mon" "$rows" "$(awk -v a="$mon" -v b="$plain" 'BEGIN{print a/b}')" >&2
    plain_rates+=("$plain")
    mon_rates+=("$mon")
done
"$BIN/bench-admin" purge platform.fifo celery msg export >/dev/null

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
range() { printf '%s\n' "$@" | sort -g | awk 'NR==1{lo=$1} {hi=$1} END{printf "%.0f-%.0f", lo, hi}'; }
pm=$(median "${plain_rates[@]}")
mm=$(median "${mon_rates[@]}")
echo
printf '| %-66s | %12s | %15s |\n' "drain $N pre-filled messages from platform.fifo (prefetch $PREFETCH)" "msg/s median" "range"
printf '|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..68})" "$(printf -- '-%.0s' {1..14})" "$(printf -- '-%.0s' {1..17})"
printf '| %-66s | %12.0f | %15s |\n' "plain rabbitmq-c consume + ack per message (bench-plain-consume)" "$pm" \
    "$(range "${plain_rates[@]}")"
printf '| %-66s | %12.0f | %15s |\n' "platform-monitor: rows committed before the ack (batch $BATCH)" "$mm" \
    "$(range "${mon_rates[@]}")"
printf '| %-66s | %12.2f | %15s |\n' "ratio monitor / plain (target >= 0.5)" \
    "$(awk -v a="$mm" -v b="$pm" 'BEGIN{print a/b}')" ""
