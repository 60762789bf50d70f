#!/usr/bin/env bash
# bench/run.sh - every toolbox benchmark in one run, beside the limits of this machine and Python Celery 5.2.
#
# Usage: bash bench/run.sh [--quick]          (from anywhere; 8-10 min on 2 cores, --quick < 1 min)
#
# Starts the project's services (scripts/services.sh start, idempotent), builds what it needs in
# BUILD_DIR (configures it first when it has no CMakeCache.txt), makes its own sandbox (RabbitMQ vhost
# + Postgres database `bench`, scripts/services.sh sandbox), runs `toolbox --env test setup` there, and
# prints one table (stdout; progress goes to stderr). Benchmarks report; they never fail on a figure.
#
#  1. throughput, each of the REPS runs (medians and ranges; ratios paired per run):
#     bench-plain-publish (rabbitmq-c alone, confirms, window 256) and bench-plain-consume (consume and
#     ack each, prefetch 100): the broker's limits here; bench-producer (tbx_producer, confirms);
#     msg-worker at concurrency 1, 2 and 4 draining N pre-filled msg.noop tasks (durable queue,
#     persistent messages, every result committed in Postgres before its ack); the platform monitor's
#     ingest (bench/monitor/run.sh, when platform-monitor builds); Celery 5.2 prefork -c 2 with its
#     Postgres result backend (celery_anchor.py) and Celery's send_task rate.
#  2. latency, each run: publish -> result-committed percentiles (p50 p95 p99 max) at LAT_RATE (100)
#     tasks/s and at half the measured maximum, for msg-worker -c 2 (bench-latency, C publisher) and
#     for Celery prefork -c 2 (bench.py celery-send, Python publisher); from celery_taskmeta.date_done.
#  3. memory and CPU, each run: idle RSS/PSS of the worker tree (main + children) after start-up;
#     CPU time per task (user + system of the whole tree, /proc/<pid>/stat) while it works through
#     N (ours) or M (Celery) tasks published as it runs.
#  4. cost growth, once: payloads of 100 B, 10 KiB and 1 MiB; backlogs of 10k, 100k and 1M queued tasks
#     (filled first, then drained): drain rate, peak RSS of the worker tree (sampled every 0.25 s) against
#     its idle RSS, CPU per task.
#
# Environment (defaults: full / --quick):
#   BUILD_DIR (build)                  relative to the repo; RelWithDebInfo when configured here
#   BENCH_REPS (3 / 1)                 runs of parts 1-3
#   BENCH_N (20000 / 2000)             tasks per throughput run (publish, consume, each worker drain)
#   BENCH_M (2000 / 300)               Celery tasks per run (worker rate and CPU per task)
#   BENCH_N_MON (30000 / 3000)         messages per monitor run
#   BENCH_LAT_RATE (100)               the fixed rate of part 2, tasks/s
#   BENCH_LAT_SECONDS (10 / 2)         seconds at the fixed rate; BENCH_LAT_HALF_SECONDS (5 / 1) at half max
#   BENCH_PAYLOADS ("100 10240 1048576")   payload sizes in bytes (task args [i, "<payload>"])
#   BENCH_BACKLOGS ("10000 100000 1000000" / "5000 20000")
#   BENCH_SETTLE (5 / 2)               seconds after start-up before idle memory is read
#   BENCH_SANDBOX (bench)              BENCH_RESULTS_DIR: also keep raw results, meta and table there
#   BENCH_NO_SERVICES=1, BENCH_NO_BUILD=1  skip those steps (services already up, binaries built)
#   BENCH_PARTS ("throughput sessions growth")   which parts to run (sessions = parts 2 and 3)
#   BENCH_WORKER (BUILD_DIR/bin/msg-worker)      another msg-worker binary, to compare a change
#   CELERY_ANCHOR                      (../shared/bench/celery_anchor.py if present, else bench/celery_anchor.py)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$REPO"
QUICK=0
case ${1:-} in
--quick) QUICK=1 ;;
'') ;;
-h | --help) sed -n '2,41p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
*) echo "usage: bash bench/run.sh [--quick]" >&2; exit 2 ;;
esac

BUILD_DIR=${BUILD_DIR:-build}
[[ $BUILD_DIR == /* ]] || BUILD_DIR=$REPO/$BUILD_DIR
BIN=$BUILD_DIR/bin
if ((QUICK)); then
    REPS=${BENCH_REPS:-1} N=${BENCH_N:-2000} M=${BENCH_M:-300} N_MON=${BENCH_N_MON:-3000}
    LAT_SECONDS=${BENCH_LAT_SECONDS:-2} LAT_HALF_SECONDS=${BENCH_LAT_HALF_SECONDS:-1}
    BACKLOGS=${BENCH_BACKLOGS:-5000 20000} SETTLE=${BENCH_SETTLE:-2}
else
    REPS=${BENCH_REPS:-3} N=${BENCH_N:-20000} M=${BENCH_M:-2000} N_MON=${BENCH_N_MON:-30000}
    LAT_SECONDS=${BENCH_LAT_SECONDS:-10} LAT_HALF_SECONDS=${BENCH_LAT_HALF_SECONDS:-5}
    BACKLOGS=${BENCH_BACKLOGS:-10000 100000 1000000} SETTLE=${BENCH_SETTLE:-5}
fi
LAT_RATE=${BENCH_LAT_RATE:-100}
PAYLOADS=${BENCH_PAYLOADS:-100 10240 1048576}
SAMPLE=0.25
FILL_CHUNK=100000
SANDBOX=${BENCH_SANDBOX:-bench}
if [[ -n ${CELERY_ANCHOR:-} ]]; then
    ANCHOR=$CELERY_ANCHOR
elif [[ -r $REPO/../shared/bench/celery_anchor.py ]]; then
    ANCHOR=$(cd "$REPO/../shared/bench" && pwd -P)/celery_anchor.py
else
    ANCHOR=$REPO/bench/celery_anchor.py # a verbatim copy, for clones without ../shared
fi
PARTS=" ${BENCH_PARTS:-throughput sessions growth} "
PY=/usr/bin/python3
BENCHPY=$REPO/bench/bench.py
T0=$SECONDS
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "run.sh: $*"; exit 1; }

# ---------------------------------------------------------------------------- services and build
if [[ ${BENCH_NO_SERVICES:-0} != 1 ]]; then
    log "services: scripts/services.sh start"
    bash scripts/services.sh start >&2 || die "starting the services failed"
fi
TARGETS=(toolbox_cli msg-worker bench-plain-publish bench-plain-consume bench-producer bench-latency
    bench-admin bench-procmon)
MONITOR_SKIPPED=
if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
    if [[ ! -f $BUILD_DIR/CMakeCache.txt ]]; then
        log "configuring $BUILD_DIR"
        cmake -S "$REPO" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >&2 || die "cmake failed"
    fi
    log "building ${TARGETS[*]} platform-monitor in $BUILD_DIR"
    cmake --build "$BUILD_DIR" -j2 --target "${TARGETS[@]}" >"$BUILD_DIR/bench-build.log" 2>&1 ||
        { tail -n 30 "$BUILD_DIR/bench-build.log" >&2; die "build failed (log: $BUILD_DIR/bench-build.log)"; }
    cmake --build "$BUILD_DIR" -j2 --target platform-monitor >>"$BUILD_DIR/bench-build.log" 2>&1 ||
        MONITOR_SKIPPED="platform-monitor did not build"
fi
for b in toolbox msg-worker bench-plain-publish bench-producer bench-plain-consume bench-latency bench-admin \
    bench-procmon; do
    [[ -x $BIN/$b ]] || die "$BIN/$b is missing; build first (cmake --build $BUILD_DIR)"
done
[[ -n $MONITOR_SKIPPED || -x $BIN/platform-monitor ]] || MONITOR_SKIPPED="no platform-monitor binary"
[[ -n $MONITOR_SKIPPED || -f bench/monitor/run.sh ]] || MONITOR_SKIPPED="no bench/monitor/run.sh"
[[ -r $ANCHOR ]] || die "$ANCHOR is missing"
WORKER=${BENCH_WORKER:-$BIN/msg-worker}
[[ -x $WORKER ]] || die "$WORKER is missing"
BUILD_TYPE=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null || true)
BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} # the project's default when none is given
SANITIZE=$(sed -n 's/^TOOLBOX_SANITIZE:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null || true)
[[ $SANITIZE == ON ]] && BUILD_TYPE="$BUILD_TYPE+sanitizers"
case $BUILD_TYPE in Release | RelWithDebInfo) ;; *) log "WARNING: build type '$BUILD_TYPE': figures will be low" ;; esac

# ---------------------------------------------------------------------------- sandbox
eval "$(bash scripts/services.sh sandbox "$SANDBOX")"
export TOOLBOX_CONFIG_DIR=$REPO/config TOOLBOX_LOG_LEVEL=warning
[[ $TOOLBOX_BROKER_URL == */"$SANDBOX" ]] || die "not in sandbox $SANDBOX"

WORK=$(mktemp -d /tmp/toolbox-bench.XXXXXX)
RESULTS=$WORK/results
: >"$RESULTS"
STARTED=() # pids this script started (only these, and their own children, are ever signalled)

cleanup() {
    local p
    for p in "${STARTED[@]}"; do
        if kill -0 "$p" 2>/dev/null; then kill -TERM "$p" 2>/dev/null || true; fi
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

record() { printf '%s %s\n' "$1" "$2" >>"$RESULTS"; }
# Value of key=... in a line of output.
field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2" | head -n 1; }
calc() { awk "BEGIN { printf \"%.6g\", $* }"; }

# How busy the machine was with other work: CPU seconds of the whole machine at normal priority (/proc/stat)
# minus those of this script's process tree, the broker's and the database's (their use by others counts as
# ours here); and the CPU seconds of niced processes (which yield to the benchmark).
RABBIT_PID=$(bash scripts/services.sh status 2>/dev/null | sed -n 's/^rabbitmq .* pid \([0-9]*\).*/\1/p')
PG_PID=$(bash scripts/services.sh status 2>/dev/null | sed -n 's/^postgres .* pid \([0-9]*\).*/\1/p')
cpu_snapshot() { # "machine_busy_s_at_normal_priority machine_niced_s ours_s"
    local ours=0 p
    for p in $$ $RABBIT_PID $PG_PID; do
        ours=$(calc "$ours + 0$(field cpu_s "$("$BIN/bench-procmon" "$p" --once 2>/dev/null || true)")")
    done
    echo "$(awk '/^cpu / { print ($2 + $4 + $7 + $8 + $9) / 100, $3 / 100 }' /proc/stat) $ours"
}
CPU0=$(cpu_snapshot) CPU0_T=$SECONDS
# The 1-minute load average every 10 s, for the table's header (other users of the machine show up here).
(while sleep 10; do cut -d' ' -f1 /proc/loadavg; done >"$WORK/load") &
STARTED+=("$!")
# Median of the values recorded so far under a key.
median_of() { awk -v k="$1" '$1 == k {print $2}' "$RESULTS" | sort -g |
    awk '{a[NR]=$1} END {if (NR) print (NR % 2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

admin() { "$BIN/bench-admin" "$@"; }
purge() { admin purge "$@" >/dev/null; }
purge_all() { purge msg platform.fifo bench celery; }
truncate_results() { admin truncate; }
# wait-results N: poll less often for big N (count(*) over a large table costs the database CPU).
wait_results() {
    local n=$1 poll=$(($1 / 1000))
    ((poll < 50)) && poll=50
    ((poll > 1000)) && poll=1000
    admin wait-results "$n" --timeout $((120 + n / 500)) --poll-ms "$poll"
}

# Stop a process this script started: SIGTERM, then SIGKILL after 20 s; then any of its children left.
stop_pid() {
    local p=$1 i kids
    kids=$(descendants "$p")
    kill -TERM "$p" 2>/dev/null || return 0
    for ((i = 0; i < 200; i++)); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null || true; fi
    wait "$p" 2>/dev/null || true
    for i in $kids; do kill -KILL "$i" 2>/dev/null || true; done
}

children_of() { cat /proc/"$1"/task/*/children 2>/dev/null || true; }
descendants() {
    local c
    for c in $(children_of "$1"); do
        echo "$c"
        descendants "$c"
    done
}
# Wait until pid has at least k descendants (up to 60 s).
wait_children() {
    local p=$1 k=$2 i
    for ((i = 0; i < 600; i++)); do
        (($(descendants "$p" | wc -l) >= k)) && return 0
        kill -0 "$p" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

start_msg_worker() { # concurrency [flags...]; sets WPID
    local c=$1
    shift
    "$WORKER" --env test --concurrency "$c" --loglevel warning "$@" >>"$WORK/worker.log" 2>&1 &
    WPID=$!
    STARTED+=("$WPID")
    wait_children "$WPID" "$c" || { tail -n 20 "$WORK/worker.log" >&2; die "msg-worker did not start its pool"; }
}

start_celery_worker() { # sets WPID
    (cd "$WORK" && ANCHOR_BROKER=$TOOLBOX_BROKER_URL ANCHOR_BACKEND="db+$TOOLBOX_DATABASE_ADMIN_URL" \
        PYTHONPATH=$WORK exec $PY -m celery -A anchorapp worker -Q bench -P prefork -c 2 \
        --without-gossip --without-mingle --without-heartbeat -l warning) >>"$WORK/celery.log" 2>&1 &
    WPID=$!
    STARTED+=("$WPID")
    wait_children "$WPID" 2 || { tail -n 20 "$WORK/celery.log" >&2; die "celery did not start its pool"; }
}

# fill N [payload]: N msg.noop tasks into `msg` through the toolbox producer, in chunks (platform.fifo,
# which gets a copy of each, is purged after each chunk). Prints the fill rate.
fill() {
    local n=$1 payload=${2:-} left=$1 k out secs=0
    local extra=()
    [[ -n $payload ]] && extra=(--payload "$payload")
    while ((left > 0)); do
        k=$((left < FILL_CHUNK ? left : FILL_CHUNK))
        out=$("$BIN/bench-producer" --env test -n "$k" --task msg.noop "${extra[@]}")
        secs=$(calc "$secs + $(field seconds "$out")")
        purge platform.fifo
        left=$((left - k))
        ((n > FILL_CHUNK)) && log "    filled $((n - left))/$n"
    done
    calc "$n / $secs"
}

# drain KEY N CONCURRENCY [worker flags...]: msg-worker drains N pre-filled tasks. Records KEY (rate
# from the rows' date_done: rows committed after the first commit over the time from the first commit
# to the last), KEY_poll (the same from polling, as celery_anchor.py; coarse for short drains), KEY_cpu
# (us of CPU per task, whole tree, start-up included) and KEY_rss (peak RSS of the tree, KiB).
drain() {
    local key=$1 n=$2 c=$3 out mon cpu mpid
    shift 3
    start_msg_worker "$c" "$@"
    "$BIN/bench-procmon" "$WPID" --interval "$SAMPLE" >"$WORK/procmon.out" &
    mpid=$!
    STARTED+=("$mpid")
    if ! out=$(wait_results "$n"); then
        log "  msg-worker did not finish; its log:"
        tail -n 20 "$WORK/worker.log" >&2
        kill -TERM "$mpid" 2>/dev/null || true
        stop_pid "$WPID"
        return 1
    fi
    cpu=$(field cpu_s "$("$BIN/bench-procmon" "$WPID" --once)")
    kill -TERM "$mpid"
    wait "$mpid" || true
    mon=$(cat "$WORK/procmon.out")
    stop_pid "$WPID"
    log "  msg-worker -c $c $*: $out; $mon cpu_s=$cpu"
    record "$key" "$(field span_tasks_per_s "$out")"
    record "${key}_poll" "$(field tasks_per_s "$out")"
    record "${key}_cpu" "$(calc "$cpu * 1e6 / $n")"
    record "${key}_rss" "$(field max_rss_kib "$mon")"
}

# latency WHO KIND RATE SECONDS: fixed-rate publishing against the running worker WHO (ours|celery).
latency() {
    local who=$1 kind=$2 rate=$3 secs=$4 out rep k n
    k=lat_${who}_${kind}
    truncate_results
    if [[ $who == ours ]]; then
        out=$("$BIN/bench-latency" --env test --rate "$rate" --seconds "$secs" --out "$WORK/lat.ids")
    else
        n=$(awk -v r="$rate" -v s="$secs" 'BEGIN { printf "%d", r * s + 0.5 }')
        out=$($PY "$BENCHPY" celery-send --anchor "$ANCHOR" -n "$n" --rate "$rate" --out "$WORK/lat.ids")
    fi
    n=$(wc -l <"$WORK/lat.ids")
    wait_results "$n" >/dev/null || { log "  $who: only part of the $n latency tasks finished"; }
    rep=$($PY "$BENCHPY" latency "$WORK/lat.ids")
    log "  $who @ $rate/s: $out"
    log "  $who @ $rate/s: $rep"
    record "${k}_rate" "$rate"
    record "${k}_got" "$(field achieved_per_s "$out")"
    record "${k}_n" "$n"
    for p in p50 p95 p99 max; do record "${k}_$p" "$(field ${p}_ms "$rep")"; done
    purge_all
}

# ---------------------------------------------------------------------------- setup
log "sandbox $SANDBOX; build $BUILD_DIR ($BUILD_TYPE); N=$N M=$M N_MON=$N_MON reps=$REPS$( ((QUICK)) && echo ' (quick)'); anchor $ANCHOR"
[[ $WORKER == "$BIN/msg-worker" ]] || log "msg-worker: $WORKER"
"$BIN/toolbox" --env test setup >/dev/null
# The Celery app of the anchor (queue `bench`, same broker and database), for our own Celery worker.
$PY - "$ANCHOR" >"$WORK/anchorapp.py" <<'EOF'
import importlib.util, sys
spec = importlib.util.spec_from_file_location("celery_anchor", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
sys.stdout.write(m.APP)
EOF
purge_all
truncate_results

# Warm-up (not recorded): the broker's queue processes and message store, Postgres' caches.
log "warm-up"
"$BIN/bench-plain-publish" -n $((N / 4 > 500 ? N / 4 : 500)) >/dev/null
purge_all

# ---------------------------------------------------------------------------- 1. throughput
run_publish() {
    local out
    purge_all
    out=$("$BIN/bench-plain-publish" -n "$N" --window 256)
    log "  $out"
    record plain_pub "$(field msgs_per_s "$out")"
    purge_all
    out=$("$BIN/bench-producer" --env test -n "$N" --window 256 --task msg.noop)
    log "  $out"
    record producer "$(field msgs_per_s "$out")"
    # msg now holds the producer's N messages: the consume loop drains them.
    purge platform.fifo
    out=$("$BIN/bench-plain-consume" -n "$N" --prefetch 100 --queue msg)
    log "  $out"
    record plain_consume "$(field msgs_per_s "$out")"
    purge_all
    out=$($PY "$BENCHPY" celery-send --anchor "$ANCHOR" -n "$M")
    log "  $out"
    record celery_pub "$(field tasks_per_s "$out")"
    purge_all
}

run_workers() {
    local c
    for c in 1 2 4; do
        purge_all
        truncate_results
        fill "$N" >/dev/null
        drain "worker_c$c" "$N" "$c" || true
        purge_all
        truncate_results
    done
}

run_monitor() {
    local out line
    [[ -z $MONITOR_SKIPPED ]] || return 0
    if ! out=$(BUILD_DIR=$BUILD_DIR BENCH_N=$N_MON BENCH_REPS=1 bash bench/monitor/run.sh 2>&1); then
        log "  bench/monitor/run.sh failed:"
        tail -n 20 <<<"$out" >&2
        return 0
    fi
    line=$(grep -m1 '^run 1:' <<<"$out" || true)
    log "  monitor: $line"
    MON_PREFETCH=$(sed -n 's/.*prefetch \([0-9]*\).*/\1/p' <<<"$out" | head -n 1)
    record mon_plain "$(sed -n 's/.*plain consume+ack *\([0-9.]*\) msg\/s.*/\1/p' <<<"$line")"
    record monitor "$(sed -n 's/.*platform-monitor *\([0-9.]*\) msg\/s.*/\1/p' <<<"$line")"
}

run_celery_anchor() {
    local out
    if ! out=$($PY "$ANCHOR" --broker "$TOOLBOX_BROKER_URL" --db "$TOOLBOX_DATABASE_ADMIN_URL" \
        -n "$M" --pool prefork --concurrency 2 --timeout 600); then
        log "  celery_anchor.py failed"
        return 0
    fi
    log "  $out"
    record celery "$(field tasks_per_s "$out")"
    purge_all
    truncate_results
}

# ---------------------------------------------------------------------------- 2+3. one worker session each
session_ours() {
    local m0 m1 out half
    purge_all
    truncate_results
    start_msg_worker 2
    sleep "$SETTLE"
    m0=$("$BIN/bench-procmon" "$WPID" --once)
    log "  msg-worker idle: $m0"
    record rss_ours "$(field rss_kib "$m0")"
    record pss_ours "$(field pss_kib "$m0")"
    # CPU per task: N tasks published while it runs; the tree's CPU time before and after.
    out=$("$BIN/bench-producer" --env test -n "$N" --task msg.noop)
    wait_results "$N" >/dev/null || log "  msg-worker: not all $N tasks finished"
    m1=$("$BIN/bench-procmon" "$WPID" --once)
    log "  msg-worker after $N tasks: $m1"
    record cpu_ours "$(calc "($(field cpu_s "$m1") - $(field cpu_s "$m0")) * 1e6 / $N")"
    purge_all
    latency ours low "$LAT_RATE" "$LAT_SECONDS"
    half=$(awk -v r="$(median_of worker_c2)" 'BEGIN { printf "%d", r / 2 }')
    ((half > 0)) && latency ours half "$half" "$LAT_HALF_SECONDS"
    stop_pid "$WPID"
    truncate_results
}

session_celery() {
    local m0 m1 out half
    purge_all
    truncate_results
    start_celery_worker
    sleep "$SETTLE"
    m0=$("$BIN/bench-procmon" "$WPID" --once)
    log "  celery idle: $m0"
    record rss_celery "$(field rss_kib "$m0")"
    record pss_celery "$(field pss_kib "$m0")"
    out=$($PY "$BENCHPY" celery-send --anchor "$ANCHOR" -n "$M")
    wait_results "$M" >/dev/null || log "  celery: not all $M tasks finished"
    m1=$("$BIN/bench-procmon" "$WPID" --once)
    log "  celery after $M tasks: $m1"
    record cpu_celery "$(calc "($(field cpu_s "$m1") - $(field cpu_s "$m0")) * 1e6 / $M")"
    purge_all
    latency celery low "$LAT_RATE" "$LAT_SECONDS"
    half=$(awk -v r="$(median_of celery)" 'BEGIN { printf "%d", r / 2 }')
    ((half > 0)) && latency celery half "$half" "$LAT_HALF_SECONDS"
    stop_pid "$WPID"
    truncate_results
}

MON_PREFETCH=
[[ $PARTS == *" throughput "* || $PARTS == *" sessions "* ]] || REPS=0
for ((rep = 1; rep <= REPS; rep++)); do
    if [[ $PARTS != *" throughput "* ]]; then
        log "run $rep/$REPS: msg-worker -c 2 and Celery: idle memory, CPU per task, latency"
        session_ours
        session_celery
        continue
    fi
    log "run $rep/$REPS: plain publish, producer, plain consume, Celery send_task (N=$N, M=$M)"
    run_publish
    log "run $rep/$REPS: msg-worker -c 1, 2, 4 draining N=$N"
    run_workers
    if [[ -z $MONITOR_SKIPPED ]]; then
        log "run $rep/$REPS: platform monitor (bench/monitor/run.sh, N=$N_MON)"
        run_monitor
    fi
    log "run $rep/$REPS: Celery prefork -c 2 (celery_anchor.py, M=$M)"
    run_celery_anchor
    [[ $PARTS == *" sessions "* ]] || continue
    log "run $rep/$REPS: msg-worker -c 2: idle memory, CPU per task, latency"
    session_ours
    log "run $rep/$REPS: Celery prefork -c 2: idle memory, CPU per task, latency"
    session_celery
done
[[ $PARTS == *" growth "* ]] || { PAYLOADS=''; BACKLOGS=''; }

# ---------------------------------------------------------------------------- 4. cost growth
for p in $PAYLOADS; do
    # Fewer tasks as they grow: N for 100 B, N/2 for 10 KiB, N/100 (at least 20) for 1 MiB.
    if ((p >= 1048576)); then n=$((N / 100 > 20 ? N / 100 : 20)); elif ((p >= 10240)); then n=$((N / 2)); else n=$N; fi
    log "growth: payload $p B, $n tasks"
    purge_all
    truncate_results
    r=$(fill "$n" "$p")
    if drain "pay_$p" "$n" 2; then
        record "pay_${p}_fill" "$r"
        record "pay_${p}_n" "$n"
    fi
    purge_all
    truncate_results
done
for b in $BACKLOGS; do
    log "growth: backlog of $b tasks (filling)"
    purge_all
    truncate_results
    r=$(fill "$b")
    log "growth: backlog of $b tasks (filled at $r msg/s; draining)"
    drain "backlog_$b" "$b" 2 && record "backlog_${b}_fill" "$r"
    purge_all
    truncate_results
done
log "done in $((SECONDS - T0)) s"

# ---------------------------------------------------------------------------- table
CPU1=$(cpu_snapshot)
OTHERS=$(awk -v a="$CPU0" -v b="$CPU1" -v t=$((SECONDS - CPU0_T)) -v n="$(nproc)" 'BEGIN {
    split(a, x, " "); split(b, y, " "); o = (y[1] - x[1]) - (y[3] - x[3]); if (o < 0) o = 0
    d = (t > 0 ? 100 / (t * n) : 0); printf "%.0f %.0f", o * d, (y[2] - x[2]) * d }')
META=$WORK/meta.json
$PY - "$META" <<EOF
import json, sys
json.dump({
    "date": "$(date -u '+%Y-%m-%d %H:%M UTC')", "host": "$(hostname)", "cpus": $(nproc),
    "cpu_model": "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)",
    "load_start": "$LOAD_START", "load_end": "$(cut -d' ' -f1-3 /proc/loadavg)",
    "load_1min_samples": [$(paste -sd, "$WORK/load")], "others_cpu_pct": ${OTHERS% *}, "niced_cpu_pct": ${OTHERS#* },
    "build_type": "$BUILD_TYPE", "reps": $REPS, "worker": "${BENCH_WORKER:-}", "parts": "$(echo $PARTS)", "quick": $QUICK, "seconds": $((SECONDS - T0)),
    "n": $N, "m": $M, "n_mon": $N_MON, "mon_prefetch": "${MON_PREFETCH:-?}", "lat_rate": $LAT_RATE,
    "payloads": [${PAYLOADS// /, }], "backlogs": [${BACKLOGS// /, }], "sample": $SAMPLE,
    "monitor_skipped": "$MONITOR_SKIPPED",
}, open(sys.argv[1], "w"))
EOF
echo
$PY "$BENCHPY" table "$RESULTS" "$META" | tee "$WORK/table.txt"
if [[ -n ${BENCH_RESULTS_DIR:-} ]]; then
    mkdir -p "$BENCH_RESULTS_DIR"
    cp "$RESULTS" "$META" "$WORK/table.txt" "$BENCH_RESULTS_DIR"/
fi
