#!/usr/bin/env bash
# Run the whole system on a local default, from nothing: install what is missing,
# start the project's own RabbitMQ and PostgreSQL, build, declare the topology,
# start msg-worker, export-worker and the platform monitor, send a few tasks
# (from the C producer and, if available, from Python Celery), show the results,
# then stop what it started.
#   bash scripts/demo.sh [--keep]    (--keep: leave the workers running)
set -euo pipefail
cd "$(dirname "$0")/.."
KEEP=0
[[ ${1:-} == --keep ]] && KEEP=1
export TOOLBOX_ENV=dev
BIN=build/bin

bash scripts/deps.sh
bash scripts/services.sh start
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j2 >/dev/null
echo "== toolbox setup"
$BIN/toolbox setup

pids=()
cleanup() {
    [[ $KEEP -eq 1 ]] && { echo "workers left running: ${pids[*]}"; return; }
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
mkdir -p .services/logs
$BIN/msg-worker --concurrency 2 >.services/logs/msg-worker.log 2>&1 &
pids+=($!)
if [[ -x $BIN/export-worker ]]; then
    $BIN/export-worker >.services/logs/export-worker.log 2>&1 &
    pids+=($!)
fi
if [[ -x $BIN/platform-monitor ]]; then
    $BIN/platform-monitor >.services/logs/platform-monitor.log 2>&1 &
    pids+=($!)
fi
sleep 1

show() { echo; echo "== toolbox send $*"; $BIN/toolbox send "$@" --wait --timeout 30 || true; }
show msg.add --args '[2, 3]'
show msg.echo --args '[{"hello": "wörld", "n": [1, 2.5, null]}]'
show msg.fail --args '["something went wrong"]'
show msg.sleep --args '[1]' --soft-time-limit 5
show msg.add --args '[1, 2]' --link '{"task": "msg.add", "args": [100]}'
show msg.add --args '[1, 2]' --countdown 2
if [[ -x $BIN/export-worker ]]; then
    show export.query --args '["task_states"]'
fi
if /usr/bin/python3 -c 'import celery' 2>/dev/null; then
    echo; echo "== from Python Celery 5.2: app.send_task('msg.add', (20, 22)).get()"
    /usr/bin/python3 - <<'PY'
import os
from celery import Celery
from kombu import Exchange

app = Celery("demo", broker="amqp://guest:guest@127.0.0.1:35672//",
             backend="db+postgresql://worker:cadasta@127.0.0.1:35432/cadasta")
ex = Exchange("task_exchange", "topic")
app.conf.task_routes = lambda name, *a, **k: {"routing_key": name.split(".")[0], "exchange": ex}
print(app.send_task("msg.add", (20, 22)).get(timeout=30))
PY
fi
echo; echo "== toolbox inspect"
$BIN/toolbox inspect
if [[ -x $BIN/platform-monitor ]]; then
    echo; echo "== toolbox tasks (what the platform monitor recorded)"
    sleep 1
    $BIN/toolbox tasks 2>/dev/null | head -n 15 || true
fi
echo; echo "logs: .services/logs/"
