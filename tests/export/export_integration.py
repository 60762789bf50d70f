#!/usr/bin/python3
"""Integration test of export-worker against the live RabbitMQ and PostgreSQL.

Runs in its own sandbox (RabbitMQ vhost and Postgres database `t_export_it`,
made by `scripts/services.sh sandbox`): creates a data table whose text needs
CSV quoting (commas, quotes, CR/LF, tabs, unicode, empty vs NULL), starts
export-worker with export.data_url = the owner URL and export.dir = a fresh
temporary directory, and checks through `toolbox send` and a Python Celery 5.2
client:

  * export.table with --link export.checksum: the CSV, its row count, size and
    SHA-256, and the linked checksum task's verified result;
  * columns, schema-qualified names, identifiers needing quotes, injection
    attempts, named queries (export.query);
  * failures as Python exceptions: missing table/column (ValueError),
    permission denied (PermissionError), `where` and paths outside the export
    directory (ValueError), bad arguments (TypeError), soft time limit
    (SoftTimeLimitExceeded, query cancelled, no file left);
  * export.checksum on a tampered or missing file (ValueError);
  * export.cleanup (removed / already gone / outside the directory);
  * Celery: chain(export.table.s(...), export.checksum.s()) and a three-step
    chain ending in export.cleanup.

  export_integration.py --bin BUILD/bin --source SOURCE_DIR

Exit 0 on success, 77 (skipped) when the local services are not available.
"""
import argparse
import csv
import hashlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

SANDBOX = "t_export_it"
N_ROWS = 1000
CHECKS = []


def check(cond, what):
    CHECKS.append(what)
    if not cond:
        raise AssertionError(what)


def skip(reason):
    print(f"SKIP: {reason}")
    sys.exit(77)


# ---- environment ------------------------------------------------------------------------


def sandbox_env(source):
    p = subprocess.run(["bash", os.path.join(source, "scripts/services.sh"), "sandbox", SANDBOX],
                       capture_output=True, text=True)
    if p.returncode != 0:
        skip(f"services.sh sandbox failed: {p.stderr.strip()}")
    env = {}
    for line in p.stdout.splitlines():
        parts = shlex.split(line)
        if len(parts) == 2 and parts[0] == "export" and "=" in parts[1]:
            k, v = parts[1].split("=", 1)
            env[k] = v
    for k in ("TOOLBOX_BROKER_URL", "TOOLBOX_RESULT_BACKEND", "TOOLBOX_DATABASE_ADMIN_URL"):
        if k not in env:
            skip(f"services.sh sandbox printed no {k}")
    return env


class Env:
    def __init__(self, args):
        self.bin = os.path.abspath(args.bin)
        self.source = os.path.abspath(args.source)
        sb = sandbox_env(self.source)
        self.broker = sb["TOOLBOX_BROKER_URL"]
        self.backend = sb["TOOLBOX_RESULT_BACKEND"]
        self.admin = sb["TOOLBOX_DATABASE_ADMIN_URL"]
        self.dir = tempfile.mkdtemp(prefix="export_it_")
        self.env = dict(os.environ)
        for k in list(self.env):
            if k.startswith("TOOLBOX_"):
                del self.env[k]
        self.env.update(sb)
        self.env.update(TOOLBOX_CONFIG_DIR=os.path.join(self.source, "config"),
                        TOOLBOX_EXPORT_DIR=self.dir, TOOLBOX_EXPORT_DATA_URL=self.admin)
        self.worker = None
        self.log = self.dir + ".worker.log"

    def toolbox(self, *argv, timeout=120):
        return subprocess.run([os.path.join(self.bin, "toolbox"), "--env", "test", *argv], env=self.env,
                              capture_output=True, text=True, timeout=timeout, cwd=self.source)


def db(url):
    import psycopg2
    c = psycopg2.connect(url)
    c.autocommit = True
    return c


def sql(url, q, params=None, fetch=False):
    c = db(url)
    try:
        cur = c.cursor()
        cur.execute(q, params)
        return cur.fetchall() if fetch else None
    finally:
        c.close()


# ---- data -------------------------------------------------------------------------------------

NOTES = [
    "plain", "a, b, c", 'say "hi"', '"', '""', "line1\nline2", "crlf\r\nend", "cr\ronly", "tab\there",
    "żółć gęślą jaźń", "日本語テキスト", "emoji 🙂🚀", "back\\slash", "  padded  ", ",leading comma",
    "trailing comma,", "'single'", "x" * 5000, "", None,
]


def expected_rows():
    rows = []
    for i in range(1, N_ROWS + 1):
        note = NOTES[i % len(NOTES)]
        rows.append((i, f"item {i}", note, f"{i * 7 % 1000}.{i % 100:02d}"))
    return rows


def create_data(e):
    c = db(e.admin)
    cur = c.cursor()
    cur.execute("DROP TABLE IF EXISTS export_items, export_secret, \"we\"\"ird tab\" CASCADE")
    cur.execute("DROP VIEW IF EXISTS export_slow")
    cur.execute("CREATE TABLE export_items (id int PRIMARY KEY, name text NOT NULL, note text, "
                "price numeric(12,2))")
    cur.executemany("INSERT INTO export_items VALUES (%s, %s, %s, %s)", expected_rows())
    # The owner revokes its own right to read this one: permission denied.
    cur.execute("CREATE TABLE export_secret (x int)")
    cur.execute("REVOKE ALL ON export_secret FROM CURRENT_USER")
    cur.execute('CREATE TABLE "we""ird tab" ("col, 1" int, "Q""uote" text)')
    cur.execute('INSERT INTO "we""ird tab" VALUES (1, \'one\'), (2, \'two\')')
    cur.execute("CREATE VIEW export_slow AS SELECT 1 AS x FROM pg_sleep(30)")
    cur.execute("TRUNCATE celery_taskmeta")
    c.close()


def purge_queues(e):
    from kombu import Connection
    with Connection(e.broker) as conn:
        ch = conn.channel()
        for q in ("export", "celery", "platform.fifo"):
            try:
                ch.queue_purge(q)
            except Exception:  # noqa: BLE001 - a queue setup has not made yet
                ch = conn.channel()


# ---- helpers ---------------------------------------------------------------------------------


def send(e, task, kwargs=None, args=None, extra=(), timeout=60):
    argv = ["send", task, "--wait", "--timeout", str(timeout)]
    if kwargs is not None:
        argv += ["--kwargs", json.dumps(kwargs)]
    if args is not None:
        argv += ["--args", json.dumps(args)]
    p = e.toolbox(*argv, *extra, timeout=timeout + 30)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise AssertionError(f"toolbox send {task}: no result (rc {p.returncode}): {p.stderr.strip()}")
    return json.loads(lines[-1])


def result(e, task_id, timeout=30):
    p = e.toolbox("result", task_id, "--wait", "--timeout", str(timeout), timeout=timeout + 30)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise AssertionError(f"toolbox result {task_id}: {p.stderr.strip()}")
    return json.loads(lines[-1])


def ok(r, what):
    check(r["status"] == "SUCCESS", f"{what}: SUCCESS (got {r['status']}: {r.get('result')})")
    return r["result"]


def fails(r, exc, text, what):
    check(r["status"] == "FAILURE", f"{what}: FAILURE (got {r['status']}: {r.get('result')})")
    res = r["result"]
    check(res["exc_type"] == exc and res["exc_module"] in ("builtins", "billiard.exceptions"),
          f"{what}: {exc} (got {res})")
    msg = " ".join(str(m) for m in res["exc_message"])
    check(text in msg, f"{what}: message mentions {text!r} (got {msg!r})")
    return msg


def file_facts(path):
    data = open(path, "rb").read()
    return data, hashlib.sha256(data).hexdigest()


def verify_export(e, res, header, rows, what):
    path = res["path"]
    check(os.path.dirname(path) == os.path.realpath(e.dir), f"{what}: file in the export directory")
    data, sha = file_facts(path)
    check(res["sha256"] == sha, f"{what}: sha256 matches the file")
    check(res["bytes"] == len(data), f"{what}: bytes matches the file")
    check(res["rows"] == len(rows), f"{what}: rows = {len(rows)} (got {res['rows']})")
    parsed = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    check(parsed[0] == header, f"{what}: header {header} (got {parsed[0]})")
    check(parsed[1:] == rows, f"{what}: CSV content equals the table")
    return data


# ---- the test ------------------------------------------------------------------------------


def run(e):
    p = e.toolbox("setup")
    check(p.returncode == 0, f"toolbox setup: {p.stderr.strip()}")
    purge_queues(e)
    create_data(e)
    logf = open(e.log, "w")
    e.worker = subprocess.Popen([os.path.join(e.bin, "export-worker"), "--env", "test", "--concurrency", "2",
                                 "--loglevel", "info"], env=e.env, cwd=e.source, stdout=logf,
                                stderr=subprocess.STDOUT)
    exp = expected_rows()
    full = [[str(i), n, "" if t is None else t, p] for i, n, t, p in exp]

    # 1. export.table linked to export.checksum (the CLI's plain --link TASK form).
    r = send(e, "export.table", kwargs={"table": "export_items"}, extra=["--link", "export.checksum"])
    res = ok(r, "export.table with --link")
    data = verify_export(e, res, ["id", "name", "note", "price"], full, "export.table")
    check(b',"",' in data and b"\n" in data, "empty string quoted, NULL unquoted")
    deadline = time.time() + 30
    child = []
    while time.time() < deadline and not child:
        child = sql(e.admin, "SELECT task_id FROM celery_taskmeta WHERE task_id <> %s AND status IN "
                    "('SUCCESS','FAILURE')", (r["task_id"],), fetch=True)
        time.sleep(0.1)
    check(len(child) == 1, "the linked export.checksum ran")
    cres = ok(result(e, child[0][0]), "linked export.checksum")
    check(cres["verified"] is True and cres["path"] == res["path"] and cres["sha256"] == res["sha256"]
          and cres["rows"] == N_ROWS, f"linked export.checksum verified the file ({cres})")

    # 2. columns, a chosen path, and a link given as a signature with a fixed task id.
    cid = str(uuid.uuid4())
    link = json.dumps({"task": "export.checksum", "options": {"task_id": cid}})
    r = send(e, "export.table", kwargs={"table": "public.export_items", "columns": ["note", "id"],
                                        "path": "subset.csv"}, extra=["--link", link])
    res = ok(r, "export.table columns+path")
    check(res["path"] == os.path.join(os.path.realpath(e.dir), "subset.csv"), "path honoured")
    verify_export(e, res, ["note", "id"], [[row[2], row[0]] for row in full], "export.table columns")
    cres = ok(result(e, cid), "linked export.checksum (fixed id)")
    check(cres["verified"] is True and cres["rows"] == N_ROWS, "checksum of the column subset verified")

    # 3. identifiers that need quoting; injection attempts are just names.
    res = ok(send(e, "export.table", kwargs={"table": 'we"ird tab', "columns": ["Q\"uote", "col, 1"]}),
             "quoted identifiers")
    verify_export(e, res, ['Q"uote', "col, 1"], [["one", "1"], ["two", "2"]], "quoted identifiers")
    fails(send(e, "export.table", kwargs={"table": "export_items; DROP TABLE export_items"}),
          "ValueError", "does not exist", "injection in table")
    fails(send(e, "export.table", kwargs={"table": "export_items", "columns": ["id) FROM pg_authid --"]}),
          "ValueError", "does not exist", "injection in columns")
    check(sql(e.admin, "SELECT count(*) FROM export_items", fetch=True)[0][0] == N_ROWS, "table intact")

    # 4. failures with clear messages.
    fails(send(e, "export.table", args=["no_such_table"]), "ValueError", 'relation "no_such_table" does not exist',
          "missing table")
    fails(send(e, "export.table", kwargs={"table": "export_items", "columns": ["id", "nope"]}), "ValueError",
          'column "nope" does not exist', "missing column")
    fails(send(e, "export.table", kwargs={"table": "export_secret"}), "PermissionError", "permission denied",
          "permission denied")
    fails(send(e, "export.table", kwargs={"table": "export_items", "where": "id < 10"}), "ValueError",
          "'where' is not supported", "where refused")
    for bad in ("../escape.csv", "/etc/escape.csv", "/tmp/escape.csv", "nodir/x.csv", "."):
        fails(send(e, "export.table", args=["export_items", bad]), "ValueError", "", f"path {bad!r} refused")
    check(not os.path.exists("/etc/escape.csv") and not os.path.exists("/tmp/escape.csv"), "nothing escaped")
    fails(send(e, "export.table", kwargs={"table": 5}), "TypeError", "table", "table not a string")
    fails(send(e, "export.table", kwargs={"table": "export_items", "columns": []}), "TypeError", "columns",
          "empty columns")
    fails(send(e, "export.table", kwargs={"table": "export_items", "limit": 3}), "TypeError",
          "unexpected keyword argument 'limit'", "unknown kwarg")
    fails(send(e, "export.query", args=["drop_everything"]), "ValueError", "unknown query", "unknown query")

    # 5. the soft time limit cancels the query and leaves no file.
    t0 = time.time()
    fails(send(e, "export.table", kwargs={"table": "export_slow", "path": "slow.csv"},
               extra=["--soft-time-limit", "1"]), "SoftTimeLimitExceeded", "", "soft time limit")
    check(time.time() - t0 < 15, "soft time limit acted promptly")
    check(not os.path.exists(os.path.join(e.dir, "slow.csv")), "no file after the soft limit")
    time.sleep(0.5)
    busy = sql(e.admin, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'export-worker' "
               "AND state = 'active' AND query LIKE '%export_slow%'", fetch=True)[0][0]
    check(busy == 0, "the slow query was cancelled")

    # 6. export.query.
    res = ok(send(e, "export.query", kwargs={"name": "task_states", "path": "states.csv"}), "export.query")
    states = sql(e.admin, "SELECT status, count(*)::text FROM celery_taskmeta GROUP BY status ORDER BY status",
                 fetch=True)
    data, sha = file_facts(res["path"])
    parsed = list(csv.reader(io.StringIO(data.decode(), newline="")))
    check(parsed[0] == ["status", "tasks"] and res["sha256"] == sha and res["rows"] == len(parsed) - 1,
          "export.query file and result agree")
    check({row[0] for row in parsed[1:]} <= {s for s, _ in states} | {"STARTED"} and
          "FAILURE" in {row[0] for row in parsed[1:]}, "task_states lists the states")
    ok(send(e, "export.query", args=["recent_failures"]), "export.query recent_failures")
    tabs = ok(send(e, "export.query", args=["tables"]), "export.query tables")
    check(b"export_items" in open(tabs["path"], "rb").read(), "tables query lists export_items")

    # 7. export.checksum on its own: tampered, missing, outside.
    tampered = dict(res)
    with open(res["path"], "ab") as f:
        f.write(b"extra,1\n")
    fails(send(e, "export.checksum", args=[tampered]), "ValueError", "checksum mismatch", "tampered file")
    fails(send(e, "export.checksum", args=[dict(res, path="gone.csv")]), "ValueError", "does not exist",
          "missing file")
    fails(send(e, "export.checksum", args=[dict(res, path="/etc/passwd")]), "ValueError", "outside",
          "checksum outside")
    fails(send(e, "export.checksum", args=["not a result"]), "TypeError", "result", "checksum bad argument")

    # 8. export.cleanup.
    gone = ok(send(e, "export.cleanup", args=[res["path"]]), "cleanup")
    check(gone == {"path": res["path"], "removed": True} and not os.path.exists(res["path"]), "file removed")
    again = ok(send(e, "export.cleanup", kwargs={"path": "states.csv"}), "cleanup again")
    check(again["removed"] is False, "cleanup of a missing file is not an error")
    fails(send(e, "export.cleanup", args=["/etc/passwd"]), "ValueError", "outside", "cleanup outside")
    check(os.path.exists("/etc/passwd"), "/etc/passwd untouched")

    # 9. Python Celery 5.2 client: chains.
    celery_chains(e)

    leftovers = [f for f in os.listdir(e.dir) if ".tmp." in f]
    check(not leftovers, f"no temporary files left ({leftovers})")


def celery_chains(e):
    from celery import Celery, chain
    from kombu import Exchange, Queue
    ex = Exchange("task_exchange", "topic")
    app = Celery("export_it", broker=e.broker, backend="db+" + e.backend)
    app.conf.update(
        task_default_exchange="task_exchange", task_default_exchange_type="topic",
        task_default_queue="celery",
        task_queues=[Queue("celery", ex, routing_key="celery"), Queue("platform.fifo", ex, routing_key="#"),
                     Queue("export", ex, routing_key="export")],
        task_routes=lambda name, *a, **k: {"routing_key": name.split(".")[0], "exchange": ex},
        task_track_started=True)
    table = app.signature("export.table", kwargs={"table": "export_items", "columns": ["id", "note"]})
    res = chain(table, app.signature("export.checksum")).apply_async()
    out = res.get(timeout=60)
    first = res.parent.get(timeout=10)
    check(out["verified"] is True and out["path"] == first["path"] and out["sha256"] == first["sha256"],
          f"celery chain(export.table, export.checksum) verified ({out})")
    data, sha = file_facts(first["path"])
    check(sha == first["sha256"] and first["rows"] == N_ROWS, "celery chain: file matches")

    # table -> checksum -> cleanup: the last step removes what the first wrote.
    res = chain(app.signature("export.table", args=["export_items", "chained.csv"]),
                app.signature("export.checksum"), app.signature("export.cleanup")).apply_async()
    out = res.get(timeout=60)
    check(out["removed"] is True and not os.path.exists(os.path.join(e.dir, "chained.csv")),
          f"celery chain(table, checksum, cleanup) ({out})")

    # A failure reaches the Python client as the real builtin exception.
    try:
        app.signature("export.table", kwargs={"table": "no_such_table"}).apply_async().get(timeout=60)
        check(False, "celery: missing table raises")
    except ValueError as exc:
        check("does not exist" in str(exc), f"celery: ValueError for a missing table ({exc})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True, help="folder with toolbox and export-worker")
    ap.add_argument("--source", required=True, help="source tree (scripts/, config/)")
    args = ap.parse_args()
    for prog in ("toolbox", "export-worker"):
        if not os.access(os.path.join(args.bin, prog), os.X_OK):
            print(f"FAIL: {args.bin}/{prog} not built")
            return 1
    try:
        import celery  # noqa: F401
        import psycopg2  # noqa: F401
    except ImportError as exc:
        skip(f"python3 modules missing: {exc}")
    e = Env(args)
    rc = 1
    try:
        run(e)
        rc = 0
        print(f"OK: {len(CHECKS)} checks passed")
    except AssertionError as exc:
        print(f"FAIL: {exc}")
    finally:
        if e.worker:
            e.worker.send_signal(signal.SIGTERM)
            try:
                e.worker.wait(30)
            except subprocess.TimeoutExpired:
                e.worker.kill()
                e.worker.wait()
            if e.worker.returncode not in (0, -signal.SIGTERM):
                print(f"FAIL: export-worker exited with {e.worker.returncode}")
                rc = 1
        if rc:
            try:
                print("---- worker log ----")
                print(open(e.log).read()[-5000:])
            except OSError:
                pass
        shutil.rmtree(e.dir, ignore_errors=True)
        try:
            os.unlink(e.log)
        except OSError:
            pass
    return rc


if __name__ == "__main__":
    sys.exit(main())
