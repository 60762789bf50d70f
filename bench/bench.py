#!/usr/bin/python3
"""Python side of bench/run.sh: the Celery publisher, latency percentiles, the final table.

  bench.py celery-send --anchor PATH -n N [--rate R] [--out FILE]
      Publish N `bench.noop` tasks through Celery 5.2 (the app of celery_anchor.py: topic exchange
      task_exchange, routing key `bench`, persistent messages, Celery's default publishing without
      publisher confirms), as fast as possible or at R tasks/s. With --out, write one line per task:
      "<task id> <unix time just before send_task>". Broker: $TOOLBOX_BROKER_URL.
      Prints "celery-send tasks_per_s=... achieved_per_s=... n=...".
  bench.py latency FILE
      Publish-to-result latency of the tasks listed in FILE (as written by celery-send --out or
      bench-latency --out): celery_taskmeta.date_done (naive UTC, set in the committing transaction)
      minus the send time. Database: $TOOLBOX_DATABASE_ADMIN_URL.
      Prints "latency n=... found=... p50_ms=... p95_ms=... p99_ms=... max_ms=...".
  bench.py table RESULTS META
      Print the benchmark table from the "key value" lines of RESULTS; META is a JSON object of the
      run's parameters (written by run.sh).

Benchmarks report; nothing here fails on a figure.
"""
import argparse
import importlib.util
import json
import os
import statistics
import sys
import time


# ----------------------------------------------------------------------------- Celery publisher

def load_anchor_app(anchor):
    spec = importlib.util.spec_from_file_location("celery_anchor", anchor)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    os.environ.setdefault("ANCHOR_BROKER", os.environ["TOOLBOX_BROKER_URL"])
    os.environ.setdefault("ANCHOR_BACKEND", "")
    ns = {}
    exec(compile(mod.APP, "anchorapp", "exec"), ns)
    return ns["app"]


def cmd_celery_send(a):
    app = load_anchor_app(a.anchor)
    out = open(a.out, "w") if a.out else None
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=3)
        with app.producer_or_acquire() as p:
            t0 = time.perf_counter()
            late_max = 0.0
            for i in range(a.n):
                if a.rate:
                    due = t0 + i / a.rate
                    now = time.perf_counter()
                    if due > now:
                        time.sleep(due - now)
                    else:
                        late_max = max(late_max, now - due)
                sent = time.time()
                r = app.send_task("bench.noop", args=[i], producer=p)
                if out:
                    out.write(f"{r.id} {sent:.6f}\n")
            dt = time.perf_counter() - t0
    if out:
        out.close()
    achieved = (a.n - 1) / dt if a.n > 1 and dt > 0 else 0.0
    print(f"celery-send tasks_per_s={a.n / dt:.1f} achieved_per_s={achieved:.1f} n={a.n} "
          f"target_per_s={a.rate or 0} seconds={dt:.3f} max_behind_ms={late_max * 1000:.1f}")
    return 0


# ----------------------------------------------------------------------------- latency

def percentile(sorted_vals, q):
    """Nearest-rank percentile (q in 0..100) of an ascending list."""
    if not sorted_vals:
        return float("nan")
    k = max(1, -(-len(sorted_vals) * q // 100))  # ceil(n*q/100), at least 1
    return sorted_vals[int(k) - 1]


def cmd_latency(a):
    import psycopg2
    sent = {}
    with open(a.file) as f:
        for line in f:
            tid, ts = line.split()
            sent[tid] = float(ts)
    url = os.environ["TOOLBOX_DATABASE_ADMIN_URL"]
    if url.startswith("db+"):
        url = url[3:]
    db = psycopg2.connect(url)
    cur = db.cursor()
    cur.execute("SELECT task_id, extract(epoch FROM date_done) FROM celery_taskmeta "
                "WHERE status = 'SUCCESS' AND task_id = ANY(%s)", (list(sent),))
    lat = sorted((float(done) - sent[tid]) * 1000.0 for tid, done in cur.fetchall())
    db.close()
    if not lat:
        print(f"latency n={len(sent)} found=0")
        return 1
    print(f"latency n={len(sent)} found={len(lat)} p50_ms={percentile(lat, 50):.2f} "
          f"p95_ms={percentile(lat, 95):.2f} p99_ms={percentile(lat, 99):.2f} max_ms={lat[-1]:.2f} "
          f"min_ms={lat[0]:.2f} mean_ms={statistics.fmean(lat):.2f}")
    return 0


# ----------------------------------------------------------------------------- table

def cmd_table(a):
    runs = {}
    with open(a.results) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                try:
                    runs.setdefault(parts[0], []).append(float(parts[1]))
                except ValueError:
                    pass
    with open(a.meta) as f:
        meta = json.load(f)

    def med(key):
        v = runs.get(key)
        return statistics.median(v) if v else None

    def paired(a_key, b_key):
        xs, ys = runs.get(a_key, []), runs.get(b_key, [])
        return [x / y for x, y in zip(xs, ys) if y]

    def num(v, unit=""):
        if v is None:
            return "n/a"
        if unit == "x":
            return f"{v:.2f}" if 0.1 <= v < 10 else f"{v:.1f}" if v >= 10 else f"{v:.2g}"
        if unit == "ms":
            return f"{v:.2f}" if v < 10 else f"{v:.1f}"
        if unit == "MiB":
            return f"{v / 1024:.1f}"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"

    def rng(vals, unit=""):
        if not vals or len(vals) < 2:
            return ""
        return f"[{num(min(vals), unit)} - {num(max(vals), unit)}]"

    notes = []
    full = meta.get("parts", "throughput sessions growth").split() == ["throughput", "sessions", "growth"]

    def judge(what, value, op, target, unit):
        if value is None:
            if full:
                notes.append(f"- {what}: not measured (see the log above).")
            return "n/a"
        ok = value >= target if op == ">=" else value < target if op == "<" else value <= target
        if ok:
            return "yes"
        if op == ">=":
            gap = f"{(1 - value / target) * 100:.0f}% short ({num(value, unit)}{unit if unit == 'x' else ''} " \
                  f"vs {op} {num(target, unit)}{unit if unit == 'x' else ''})"
        else:
            over = f"{value / target:.1f} times the limit" if value >= 2 * target else \
                f"{(value / target - 1) * 100:.0f}% over"
            gap = f"{over} ({num(value, unit)} {unit} vs {op} {num(target, unit)} {unit})"
        notes.append(f"- MISSED {what}: {gap}.")
        return "NO"

    out = []
    w = 52
    cpus, load0, load1 = meta.get("cpus"), meta.get("load_start", "?"), meta.get("load_end", "?")
    out.append(f"toolbox benchmarks  {meta.get('date', '')}  host {meta.get('host', '?')}  "
               f"{cpus} CPUs ({meta.get('cpu_model', '?')})")
    ls = meta.get("load_1min_samples") or []
    during = f" (1-min load during the run: mean {statistics.fmean(ls):.2f}, max {max(ls):.2f})" if ls else ""
    out.append(f"load average at start {load0}, at end {load1}{during}")
    if meta.get("others_cpu_pct") is not None:
        out.append(f"other work used {meta['others_cpu_pct']}% of the machine's CPU time during the run at normal "
                   f"priority (the broker and the database counted as the benchmark's) and "
                   f"{meta.get('niced_cpu_pct', '?')}% niced (yielding to it)")
    out.append(f"build {meta.get('build_type', '?')}; "
               f"{meta.get('reps')} run(s){' (quick)' if meta.get('quick') else ''}; "
               f"wall time {meta.get('seconds', '?')} s")
    out.append(f"N={meta.get('n')} tasks per throughput run, M={meta.get('m')} Celery tasks, monitor "
               f"N={meta.get('n_mon')}; figures are medians [min - max] over the runs; ratios are taken "
               f"per run (paired) and their median shown")
    if meta.get("worker"):
        out.append(f"msg-worker binary: {meta['worker']} (BENCH_WORKER)")
    if meta.get("parts", "throughput sessions growth").split() != ["throughput", "sessions", "growth"]:
        out.append(f"parts run: {meta.get('parts')} (BENCH_PARTS)")
    out.append("")

    # 1. throughput
    hdr = f"{'1. throughput':<{w}} {'unit':>7} {'median':>9} {'range':>19} {'/limit':>7} {'/Celery':>8} {'target':>16} {'met':>4}"
    out.append(hdr)
    out.append("-" * len(hdr))

    def row(name, key, unit, limit_key=None, celery_key=None, target=None):
        vals = runs.get(key, [])
        m = statistics.median(vals) if vals else None
        rl = paired(key, limit_key) if limit_key else []
        rc = paired(key, celery_key) if celery_key else []
        ml = statistics.median(rl) if rl else None
        mc = statistics.median(rc) if rc else None
        met = ""
        tstr = ""
        if target:
            parts, mets = [], []
            for kind, op, t in target:
                v = ml if kind == "limit" else mc
                label = "limit" if kind == "limit" else "Celery"
                parts.append(f"C{op}{t:g}" if kind == "celery" else f"lim{op}{t:g}")
                mets.append(judge(f"{name.strip()} / {label}", v, op, t, "x"))
            tstr = ",".join(parts)
            met = "yes" if all(x == "yes" for x in mets) else ("n/a" if all(x == "n/a" for x in mets) else "NO")
        out.append(f"{name:<{w}} {unit:>7} {num(m):>9} {rng(vals):>19} {num(ml, 'x') if limit_key else '':>7} "
                   f"{num(mc, 'x') if celery_key else '':>8} {tstr:>16} {met:>4}")

    row("plain publish (rabbitmq-c, confirms, window 256)", "plain_pub", "msg/s")
    row("Celery 5.2 send_task (persistent, no confirms)", "celery_pub", "msg/s")
    row("toolbox producer (confirms, window 256)", "producer", "msg/s", "plain_pub", "celery_pub",
        [("limit", ">=", 0.8)])
    row("plain consume + ack each (rabbitmq-c, prefetch 100)", "plain_consume", "msg/s")
    row("msg-worker -c 1 (Postgres results, ack after commit)", "worker_c1", "tasks/s", "plain_consume", "celery")
    row("msg-worker -c 2 (Postgres results, ack after commit)", "worker_c2", "tasks/s", "plain_consume", "celery",
        [("limit", ">=", 0.5), ("celery", ">=", 50)])
    row("msg-worker -c 4 (Postgres results, ack after commit)", "worker_c4", "tasks/s", "plain_consume", "celery")
    row(f"plain consume + ack each (prefetch {meta.get('mon_prefetch', '?')}, platform.fifo)", "mon_plain", "msg/s")
    row("platform-monitor ingest (rows committed, then ack)", "monitor", "msg/s", "mon_plain", "celery",
        [("limit", ">=", 0.5)])
    row("  the monitor over the prefetch-100 loop (info)", "monitor", "msg/s", "plain_consume", None)
    row("Celery 5.2 prefork -c 2, Postgres results", "celery", "tasks/s")
    if meta.get("monitor_skipped"):
        notes.append(f"- platform-monitor: skipped ({meta['monitor_skipped']}).")
    out.append("  /limit: producer over the plain publisher; msg-worker over the plain consume-and-ack loop; the "
               "monitor over the same")
    out.append("  loop run by bench/monitor/run.sh at the monitor's prefetch. /Celery: over Celery's worker rate "
               "(producer: over send_task).")
    out.append("  msg-worker: rows committed after the first commit / time from the first commit to the last "
               "(date_done); Celery:")
    out.append("  celery_anchor.py (results counted every 50 ms, first to last seen); monitor: first delivery "
               "to last ack.")
    out.append("")

    # 2. latency
    hdr = f"{'2. latency, publish -> result committed':<{w}} {'rate/s':>7} {'got/s':>7} {'n':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'p99 range':>15}"
    out.append(hdr)
    out.append("-" * len(hdr))
    for who, label in (("ours", "msg-worker -c 2"), ("celery", "Celery prefork -c 2")):
        for kind, desc in (("low", "fixed rate"), ("half", "half its max")):
            k = f"lat_{who}_{kind}"
            if not runs.get(k + "_p50"):
                out.append(f"{label + ', ' + desc:<{w}} {'n/a':>7}")
                continue
            out.append(f"{label + ', ' + desc:<{w}} {num(med(k + '_rate')):>7} {num(med(k + '_got')):>7} "
                       f"{num(med(k + '_n')):>6} {num(med(k + '_p50'), 'ms'):>8} {num(med(k + '_p95'), 'ms'):>8} "
                       f"{num(med(k + '_p99'), 'ms'):>8} {num(med(k + '_max'), 'ms'):>8} "
                       f"{rng(runs.get(k + '_p99'), 'ms'):>15}")
    p99 = med("lat_ours_low_p99")
    out.append(f"  target: msg-worker p99 at {meta.get('lat_rate', 100)} tasks/s < 10 ms: "
               f"{judge('msg-worker p99 latency at the fixed rate', p99, '<', 10.0, 'ms')}")
    out.append("  date_done is the committing transaction's start (Postgres now()) for msg-worker and the "
               "time SQLAlchemy")
    out.append("  flushes the row for Celery: both a little before the commit returns")
    out.append("")

    # 3. memory and CPU
    hdr = f"{'3. memory and CPU (concurrency 2)':<{w}} {'unit':>7} {'median':>9} {'range':>19} {'ours/Celery':>12}"
    out.append(hdr)
    out.append("-" * len(hdr))

    def mrow(name, key, unit, other=None, scale=1.0):
        vals = [v * scale for v in runs.get(key, [])]
        m = statistics.median(vals) if vals else None
        r = paired(key, other) if other else []
        out.append(f"{name:<{w}} {unit:>7} {num(m, unit):>9} {rng(vals, unit):>19} "
                   f"{num(statistics.median(r), 'x') if r else '':>12}")

    mrow("idle RSS msg-worker (main + children)", "rss_ours", "MiB", "rss_celery")
    mrow("idle RSS Celery (main + children)", "rss_celery", "MiB")
    mrow("idle PSS msg-worker (shared pages split)", "pss_ours", "MiB", "pss_celery")
    mrow("idle PSS Celery", "pss_celery", "MiB")
    mrow("CPU per task msg-worker (user+sys, all processes)", "cpu_ours", "us", "cpu_celery")
    mrow("CPU per task Celery (user+sys, all processes)", "cpu_celery", "us")
    for c in (1, 2, 4):
        if runs.get(f"cpu_c{c}"):
            mrow(f"  CPU per task in the -c {c} drain (info)", f"cpu_c{c}", "us")
    out.append("")

    # 4. cost growth
    hdr = f"{'4. cost growth (msg-worker -c 2, one run)':<{w}} {'tasks/s':>9} {'MB/s':>8} {'max RSS MiB':>12} {'x idle':>7} {'CPU us/task':>12} {'fill msg/s':>11}"
    out.append(hdr)
    out.append("-" * len(hdr))
    idle = med("rss_ours")
    for p in meta.get("payloads", []):
        k = f"pay_{p}"
        if not runs.get(k):
            continue
        label = f"payload {fmt_bytes(p)} ({int(med(k + '_n') or 0)} tasks)"
        rate, rss = med(k), med(k + "_rss")
        out.append(f"{label:<{w}} {num(rate):>9} {num(rate * p / 1e6 if rate else None):>8} "
                   f"{num(rss, 'MiB'):>12} {num(rss / idle if rss and idle else None, 'x'):>7} "
                   f"{num(med(k + '_cpu')):>12} {num(med(k + '_fill')):>11}")
    last = None
    for b in meta.get("backlogs", []):
        k = f"backlog_{b}"
        if not runs.get(k):
            continue
        rate, rss = med(k), med(k + "_rss")
        out.append(f"{'backlog of ' + f'{b:,}' + ' queued tasks':<{w}} {num(rate):>9} {'':>8} "
                   f"{num(rss, 'MiB'):>12} {num(rss / idle if rss and idle else None, 'x'):>7} "
                   f"{num(med(k + '_cpu')):>12} {num(med(k + '_fill')):>11}")
        last = (b, rss)
    if last:
        b, rss = last
        out.append(f"  target: max RSS while draining the {b:,} backlog <= 2x idle RSS: "
                   f"{judge(f'worker memory with a {b:,} backlog / idle', rss / idle if idle and rss else None, '<=', 2.0, 'x')}")
    out.append("  tasks/s: from the rows' date_done span; MB/s counts the payload only; RSS sampled every "
               f"{meta.get('sample', 0.25)} s")
    out.append("")
    if notes:
        out.append("Targets missed / not measured (why: see BENCHMARKS.md):")
        out.extend(notes)
    elif full:
        out.append("All targets met.")
    else:
        out.append("Targets of the parts that ran: met (the others are not judged).")
    print("\n".join(out))
    return 0


def fmt_bytes(n):
    if n >= 1 << 20:
        return f"{n / (1 << 20):g} MiB"
    if n >= 1024:
        return f"{n / 1024:g} KiB"
    return f"{n} B"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("celery-send")
    s.add_argument("--anchor", required=True)
    s.add_argument("-n", type=int, required=True)
    s.add_argument("--rate", type=float, default=0)
    s.add_argument("--out")
    s = sub.add_parser("latency")
    s.add_argument("file")
    s = sub.add_parser("table")
    s.add_argument("results")
    s.add_argument("meta")
    a = ap.parse_args()
    return {"celery-send": cmd_celery_send, "latency": cmd_latency, "table": cmd_table}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
