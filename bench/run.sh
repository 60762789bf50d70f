#!/usr/bin/env bash
# bench/run.sh - the toolbox benchmarks against their "limits" and against Python Celery 5.2.
#
# Usage: bench/run.sh [--quick]        (from anywhere; BUILD_DIR=build by default, relative to the repo)
#
# Creates (idempotently) its own sandbox `bench` (RabbitMQ vhost + Postgres database, see
# scripts/services.sh sandbox), runs `toolbox --env test setup` there, and measures, each REPS times
# (3; 1 with --quick, with small N):
#   1. bench-plain-publish  rabbitmq-c alone, N persistent ~390 B Celery-shaped messages, confirms, window 256
#   2. bench-producer       the same N through tbx_producer_publish + tbx_producer_flush (msg.noop)
#   3. bench-plain-consume  rabbitmq-c consume loop, prefetch 100, ack per message, draining those N
#   4. msg-worker --concurrency 2 draining N msg.noop pre-filled by the producer, results in Postgres
#      (rate between the first poll that sees a SUCCESS row and the poll that sees N, as celery_anchor.py)
#   5. Celery 5.2 prefork x2 with its Postgres result backend (/work/shared/bench/celery_anchor.py), M tasks
#   6. idle resident memory (sum of VmRSS of the main process and its children) of msg-worker -c 2 and of
#      an idle Celery worker -P prefork -c 2, after start-up has settled
# and prints one table of medians and ranges. Benchmarks report; they never fail on a figure.
# Queues are purged and celery_taskmeta emptied only in the sandbox, between runs.
#
# Environment: BUILD_DIR (build), BENCH_N, BENCH_M, BENCH_REPS, BENCH_SETTLE (seconds before reading
# RSS), BENCH_SANDBOX (bench), CELERY_ANCHOR (/work/shared/bench/celery_anchor.py).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$REPO"
QUICK=0
case ${1:-} in
--quick) QUICK=1 ;;
'') ;;
-h | --help) sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
*) echo "usage: bench/run.sh [--quick]" >&2; exit 2 ;;
esac

BUILD_DIR=${BUILD_DIR:-build}
[[ $BUILD_DIR == /* ]] || BUILD_DIR=$REPO/$BUILD_DIR
BIN=$BUILD_DIR/bin
if ((QUICK)); then
    N=${BENCH_N:-2000} M=${BENCH_M:-300} REPS=${BENCH_REPS:-1} SETTLE=${BENCH_SETTLE:-3}
else
    N=${BENCH_N:-20000} M=${BENCH_M:-2000} REPS=${BENCH_REPS:-3} SETTLE=${BENCH_SETTLE:-5}
fi
SANDBOX=${BENCH_SANDBOX:-bench}
ANCHOR=${CELERY_ANCHOR:-/work/shared/bench/celery_anchor.py}
PY=/usr/bin/python3

for b in toolbox msg-worker bench-plain-publish bench-producer bench-plain-consume bench-admin; do
    [[ -x $BIN/$b ]] || { echo "run.sh: $BIN/$b is missing; build first (cmake --build $BUILD_DIR)" >&2; exit 1; }
done
[[ -r $ANCHOR ]] || { echo "run.sh: $ANCHOR is missing" >&2; exit 1; }

eval "$(bash scripts/services.sh sandbox "$SANDBOX")"
export TOOLBOX_CONFIG_DIR=$REPO/config
[[ $TOOLBOX_BROKER_URL == */"$SANDBOX" ]] || { echo "run.sh: not in sandbox $SANDBOX" >&2; exit 1; }

WORK=$(mktemp -d /tmp/toolbox-bench.XXXXXX)
RESULTS=$WORK/results
: >"$RESULTS"
STARTED=()   # pids this script started (only these are ever signalled)

cleanup() {
    local p
    for p in "${STARTED[@]}"; do
        if kill -0 "$p" 2>/dev/null; then kill -TERM "$p" 2>/dev/null || true; fi
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
record() { printf '%s %s\n' "$1" "$2" >>"$RESULTS"; }
# Value of key=... in a line of output.
field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2" | head -n 1; }

admin() { "$BIN/bench-admin" "$@"; }
purge() { admin purge "$@" >/dev/null; }
purge_all() { purge msg platform.fifo; }

# Stop a process this script started: SIGTERM, then SIGKILL after 15 s.
stop_pid() {
    local p=$1 i
    kill -TERM "$p" 2>/dev/null || return 0
    for ((i = 0; i < 150; i++)); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null || true; fi
    wait "$p" 2>/dev/null || true
}

children_of() { cat /proc/"$1"/task/*/children 2>/dev/null || true; }
descendants() {
    local c
    for c in $(children_of "$1"); do
        echo "$c"
        descendants "$c"
    done
}
# "rss_kib pss_kib nprocs" of a process and all its descendants.
tree_mem() {
    local rss=0 pss=0 n=0 p r s
    for p in "$1" $(descendants "$1"); do
        r=$(awk '/^VmRSS:/ {print $2}' /proc/"$p"/status 2>/dev/null || true)
        s=$(awk '/^Pss:/ {print $2}' /proc/"$p"/smaps_rollup 2>/dev/null || true)
        [[ -n $r ]] || continue
        rss=$((rss + r)) pss=$((pss + ${s:-0})) n=$((n + 1))
    done
    echo "$rss $pss $n"
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

# ---------------------------------------------------------------------------- setup
log "sandbox $SANDBOX; build $BUILD_DIR; N=$N M=$M reps=$REPS$( ((QUICK)) && echo ' (quick)')"
"$BIN/toolbox" --env test setup >/dev/null
# The Celery app of the anchor, for the idle-memory measurement (same configuration, queue `bench`).
$PY - "$ANCHOR" >"$WORK/anchorapp.py" <<'EOF'
import importlib.util, sys
spec = importlib.util.spec_from_file_location("celery_anchor", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
sys.stdout.write(m.APP)
EOF
purge_all
admin truncate

# Warm-up (not recorded): the broker's queue processes and message store.
log "warm-up"
"$BIN/bench-plain-publish" -n $((N / 4 > 500 ? N / 4 : 500)) >/dev/null
purge_all

# ---------------------------------------------------------------------------- runs
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
}

run_worker() {
    local out pid
    purge_all
    admin truncate
    "$BIN/bench-producer" --env test -n "$N" --task msg.noop >/dev/null
    purge platform.fifo
    "$BIN/msg-worker" --env test --concurrency 2 --loglevel warning >"$WORK/worker.log" 2>&1 &
    pid=$!
    STARTED+=("$pid")
    if ! out=$(admin wait-results "$N" --timeout 300); then
        log "  msg-worker did not finish; its log:"
        tail -n 20 "$WORK/worker.log" >&2
        stop_pid "$pid"
        return 1
    fi
    stop_pid "$pid"
    log "  msg-worker c=2: $out"
    record worker "$(field tasks_per_s "$out")"
    record worker_span "$(field span_tasks_per_s "$out")"
    purge_all
    admin truncate
}

run_celery() {
    local out
    out=$($PY "$ANCHOR" --broker "$TOOLBOX_BROKER_URL" --db "$TOOLBOX_DATABASE_ADMIN_URL" \
        -n "$M" --pool prefork --concurrency 2 --timeout 600)
    log "  $out"
    record celery "$(field tasks_per_s "$out")"
    purge platform.fifo bench celery
    admin truncate
}

run_idle_rss() {
    local pid mem
    "$BIN/msg-worker" --env test --concurrency 2 --loglevel warning >"$WORK/idle-worker.log" 2>&1 &
    pid=$!
    STARTED+=("$pid")
    wait_children "$pid" 2 || { log "  msg-worker did not start its pool"; tail -n 20 "$WORK/idle-worker.log" >&2; }
    sleep "$SETTLE"
    mem=$(tree_mem "$pid")
    stop_pid "$pid"
    log "  msg-worker idle: rss_kib,pss_kib,procs = ${mem// /,}"
    record rss_ours "$(cut -d' ' -f1 <<<"$mem")"
    record pss_ours "$(cut -d' ' -f2 <<<"$mem")"

    (cd "$WORK" && ANCHOR_BROKER=$TOOLBOX_BROKER_URL ANCHOR_BACKEND="db+$TOOLBOX_DATABASE_ADMIN_URL" \
        PYTHONPATH=$WORK exec $PY -m celery -A anchorapp worker -Q bench -P prefork -c 2 \
        --without-gossip --without-mingle --without-heartbeat -l warning) >"$WORK/celery.log" 2>&1 &
    pid=$!
    STARTED+=("$pid")
    wait_children "$pid" 2 || { log "  celery did not start its pool"; tail -n 20 "$WORK/celery.log" >&2; }
    sleep "$SETTLE"
    mem=$(tree_mem "$pid")
    stop_pid "$pid"
    log "  celery idle:    rss_kib,pss_kib,procs = ${mem// /,}"
    record rss_celery "$(cut -d' ' -f1 <<<"$mem")"
    record pss_celery "$(cut -d' ' -f2 <<<"$mem")"
}

T0=$SECONDS
for ((rep = 1; rep <= REPS; rep++)); do
    log "run $rep/$REPS: publish + consume (N=$N)"
    run_publish
    log "run $rep/$REPS: msg-worker (N=$N)"
    run_worker
    log "run $rep/$REPS: Celery prefork x2 (M=$M)"
    run_celery
    log "run $rep/$REPS: idle memory"
    run_idle_rss
done
log "done in $((SECONDS - T0)) s"

# ---------------------------------------------------------------------------- table
$PY - "$RESULTS" "$N" "$M" "$REPS" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'EOF'
import sys, statistics
path, n, m, reps, cpus, load = sys.argv[1:]
runs = {}
for line in open(path):
    k, v = line.split()
    runs.setdefault(k, []).append(float(v))

def stat(vals):
    return statistics.median(vals), min(vals), max(vals)

def ratios(a, b):  # per run, paired (same repetition)
    xs, ys = runs.get(a, []), runs.get(b, [])
    return [x / y for x, y in zip(xs, ys) if y]

def fmt(v, unit):
    if unit == "x":
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    if unit == "MiB":
        return f"{v / 1024:.1f}"
    return f"{v:,.0f}"

rows = [
    ("plain publish (rabbitmq-c, confirms w=256)", runs.get("plain_pub"), "msg/s", ""),
    ("tbx_producer publish+flush (msg.noop)", runs.get("producer"), "msg/s", ""),
    ("  ratio producer / plain publish", ratios("producer", "plain_pub"), "x", ">= 0.8"),
    ("plain consume (prefetch 100, ack each)", runs.get("plain_consume"), "msg/s", ""),
    ("msg-worker -c 2, Postgres results", runs.get("worker"), "tasks/s", ""),
    ("  (same, from the date_done span)", runs.get("worker_span"), "tasks/s", ""),
    ("Celery 5.2 prefork -c 2, Postgres results", runs.get("celery"), "tasks/s", ""),
    ("  ratio msg-worker / Celery", ratios("worker", "celery"), "x", ">= 50"),
    ("  ratio msg-worker / plain consume", ratios("worker", "plain_consume"), "x", ">= 0.5"),
    ("idle RSS msg-worker (main + children)", runs.get("rss_ours"), "MiB", ""),
    ("idle RSS Celery (main + children)", runs.get("rss_celery"), "MiB", ""),
    ("  ratio RSS msg-worker / Celery", ratios("rss_ours", "rss_celery"), "x", "< 0.1"),
    ("idle PSS msg-worker (info)", runs.get("pss_ours"), "MiB", ""),
    ("idle PSS Celery (info)", runs.get("pss_celery"), "MiB", ""),
    ("  ratio PSS msg-worker / Celery (info)", ratios("pss_ours", "pss_celery"), "x", ""),
]

def meets(target, med):
    if not target:
        return ""
    op, val = target.split()
    ok = med >= float(val) if op == ">=" else med < float(val)
    return "yes" if ok else "NO"

print()
print(f"toolbox benchmarks: N={n} (publish/consume/worker), M={m} (Celery), {reps} run(s), "
      f"medians [min - max]; {cpus} CPUs, load {load}")
hdr = f"{'measurement':<44} {'unit':>7} {'median':>10} {'range':>23} {'target':>7} {'met':>4}"
print(hdr)
print("-" * len(hdr))
for name, vals, unit, target in rows:
    if not vals:
        print(f"{name:<44} {unit:>7} {'n/a':>10}")
        continue
    med, lo, hi = stat(vals)
    rng = f"[{fmt(lo, unit)} - {fmt(hi, unit)}]"
    print(f"{name:<44} {unit:>7} {fmt(med, unit):>10} {rng:>23} {target:>7} {meets(target, med):>4}")
EOF
