#!/usr/bin/python3
"""Integration tests of the platform monitor (workers/platform-monitor) against the project's real
RabbitMQ and PostgreSQL, in a sandbox of their own (vhost and database t_monitor), and for the
Postgres-restart test a private PostgreSQL instance the test starts and restarts itself.

Environment: TOOLBOX_BIN_DIR (the build's bin/ folder), TOOLBOX_SOURCE_DIR (the repository).
Run: /usr/bin/python3 tests/monitor/test_monitor.py -v   (as root: it uses scripts/services.sh sandbox)
Set MONITOR_KEEP_LOGS=1 to keep the programs' logs (the folder is printed at the end).
"""
import json
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

import amqp
import psycopg2

SRC = os.environ.get("TOOLBOX_SOURCE_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("TOOLBOX_BIN_DIR") or os.path.join(SRC, "build", "bin")
SANDBOX = "t_monitor"
PG_BIN = "/usr/lib/postgresql/15/bin"
QUEUES = ["platform.fifo", "celery", "msg", "export"]


def sandbox_env():
    out = subprocess.run(["bash", os.path.join(SRC, "scripts", "services.sh"), "sandbox", SANDBOX],
                         check=True, capture_output=True, text=True).stdout
    env = {}
    for line in out.splitlines():
        m = re.match(r"export (\w+)='(.*)'$", line)
        if m:
            env[m.group(1)] = m.group(2)
    out = subprocess.run(["bash", os.path.join(SRC, "scripts", "services.sh"), "env"],
                         check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        m = re.match(r"export (TOOLBOX_SERVICES_DIR|TOOLBOX_PG_PORT|TOOLBOX_AMQP_PORT)='?([^']*)'?$", line)
        if m:
            env[m.group(1)] = m.group(2)
    return env


ENV = None


def wait_for(cond, timeout, what, interval=0.05):
    deadline = time.time() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Proxy:
    """A TCP forwarder whose connections can be cut, to take the broker away from one client."""

    def __init__(self, port):
        self.target = port
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.port = self.srv.getsockname()[1]
        self.socks = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                c.close()
                continue
            with self.lock:
                self.socks += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        with self.lock:
            socks, self.socks = self.socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass
        return len(socks) // 2

    def close(self):
        self.closed = True
        self.srv.close()
        self.cut()


class PrivatePostgres:
    """A PostgreSQL 15 of the test's own (as the postgres system user), so it can be restarted."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="tbx-mon-pg-")
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "data")
        self.sock = os.path.join(self.dir, "run")
        os.mkdir(self.sock)
        shutil.chown(self.dir, "postgres")
        shutil.chown(self.sock, "postgres")
        self.port = free_port()
        self._pg("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()
        self.psql("CREATE ROLE toolbox LOGIN PASSWORD 'toolbox'")
        self.psql("CREATE ROLE worker LOGIN PASSWORD 'cadasta'")
        self.psql("CREATE DATABASE cadasta OWNER toolbox")
        self.admin_url = "postgresql://toolbox:toolbox@127.0.0.1:%d/cadasta" % self.port
        self.worker_url = "postgresql://worker:cadasta@127.0.0.1:%d/cadasta" % self.port

    def _pg(self, prog, *args):
        return subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(PG_BIN, prog)] + list(args),
                              check=True, capture_output=True, text=True, cwd=self.dir)

    def start(self):
        self._pg("pg_ctl", "-D", self.data, "-w", "-l", os.path.join(self.dir, "log"), "-o",
                 "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off" % (self.port, self.sock), "start")

    def restart(self):
        self._pg("pg_ctl", "-D", self.data, "-w", "-m", "fast", "stop")
        time.sleep(1.0)
        self.start()

    def psql(self, sql):
        r = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-h", self.sock, "-p",
                            str(self.port), "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql],
                           capture_output=True, text=True, cwd=self.dir)
        if r.returncode != 0:
            raise AssertionError("psql %r: %s" % (sql, r.stderr))
        return r.stdout

    def close(self):
        try:
            self._pg("pg_ctl", "-D", self.data, "-m", "immediate", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class MonitorTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        global ENV
        if ENV is None:
            ENV = sandbox_env()
        cls.env = dict(os.environ)
        cls.env.update(ENV)
        cls.env["TOOLBOX_LOG_LEVEL"] = "info"
        cls.tmp = tempfile.mkdtemp(prefix="tbx-mon-test-")
        cls.run_toolbox("setup")

    @classmethod
    def tearDownClass(cls):
        if os.environ.get("MONITOR_KEEP_LOGS"):
            print("\nlogs kept in %s" % cls.tmp, file=sys.stderr)
        else:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    # ---- helpers ---------------------------------------------------------------------------------

    @classmethod
    def run_toolbox(cls, *args, env=None, check=True):
        r = subprocess.run([os.path.join(BIN, "toolbox"), "--env", "test"] + list(args), cwd=SRC,
                           env=env or cls.env, capture_output=True, text=True, timeout=120)
        if check and r.returncode != 0:
            raise AssertionError("toolbox %s failed (%d): %s" % (" ".join(args), r.returncode, r.stderr))
        return r

    def setUp(self):
        self.procs = []
        self.db = psycopg2.connect(ENV["TOOLBOX_DATABASE_ADMIN_URL"])
        self.db.autocommit = True
        with self.db.cursor() as c:
            c.execute("TRUNCATE tasks_backgroundtask, tasks_parkedmessage, celery_taskmeta")
        self.amqp = self.broker()
        ch = self.amqp.channel()
        for q in QUEUES:
            try:
                ch.queue_purge(q)
            except amqp.exceptions.NotFound:
                ch = self.amqp.channel()
        self.ch = ch

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for p in self.procs:
            if getattr(p, "logf", None):
                p.logf.close()
        self.amqp.close()
        self.db.close()
        # Under -DTOOLBOX_SANITIZE=ON the programs' logs carry any sanitizer report.
        for p in self.procs:
            text = self.log(p)
            for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
                self.assertNotIn(marker, text, "%s: %s" % (p.logpath, text[-3000:]))

    def broker(self):
        c = amqp.Connection(host="127.0.0.1:%s" % ENV["TOOLBOX_AMQP_PORT"], userid="guest", password="guest",
                            virtual_host=SANDBOX)
        c.connect()
        return c

    def start(self, prog, *args, env=None, name=None, wait_ready=True):
        log = os.path.join(self.tmp, "%s-%s-%d.log" % (self._testMethodName, name or prog, len(self.procs)))
        f = open(log, "w")
        p = subprocess.Popen([os.path.join(BIN, prog), "--env", "test"] + list(args), cwd=SRC,
                             env=env or self.env, stdout=f, stderr=subprocess.STDOUT)
        p.logf = f
        p.logpath = log
        self.procs.append(p)
        if wait_ready:
            wait_for(lambda: "ready" in self.log(p) or p.poll() is not None, 15, "%s to be ready" % prog)
            self.assertIsNone(p.poll(), "%s exited: %s" % (prog, self.log(p)))
        return p

    @staticmethod
    def log(p):
        with open(p.logpath) as f:
            return f.read()

    def monitor(self, *args, env=None):
        return self.start("platform-monitor", *args, env=env)

    def query(self, sql, *params, db=None):
        with (db or self.db).cursor() as c:
            c.execute(sql, params)
            return c.fetchall()

    def count(self, db=None):
        return self.query("SELECT count(*) FROM tasks_backgroundtask", db=db)[0][0]

    def row(self, task_id, db=None):
        rows = self.query("SELECT task_id, type, input, options, parent_id, root_id, creator_id, "
                          "related_content_type_id, related_object_id, id, created_date, last_updated "
                          "FROM tasks_backgroundtask WHERE task_id = %s", task_id, db=db)
        self.assertLessEqual(len(rows), 1)
        if not rows:
            return None
        keys = ["task_id", "type", "input", "options", "parent_id", "root_id", "creator_id",
                "related_content_type_id", "related_object_id", "id", "created_date", "last_updated"]
        return dict(zip(keys, rows[0]))

    def wait_row(self, task_id, timeout=10):
        return wait_for(lambda: self.row(task_id), timeout, "task %s to be recorded" % task_id)

    def publish(self, body, headers=None, content_type="application/json", routing_key="t", **props):
        if isinstance(body, str):
            body = body.encode()
        msg = amqp.Message(body, content_type=content_type, content_encoding="utf-8",
                           application_headers=headers, delivery_mode=2, **props)
        self.ch.basic_publish(msg, exchange="task_exchange", routing_key=routing_key)

    def v2_headers(self, task_id, task="t.task", **extra):
        h = {"lang": "py", "task": task, "id": task_id, "shadow": None, "eta": None, "expires": None,
             "group": None, "group_index": None, "retries": 0, "timelimit": [None, None], "root_id": task_id,
             "parent_id": None, "argsrepr": "()", "kwargsrepr": "{}", "origin": "gen1@test",
             "ignore_result": False}
        h.update(extra)
        return h

    def stream(self, n, task="t.stream", env=None):
        """Publish n tasks with `toolbox send --count` (confirmed) in the background; returns (proc, ids)."""
        out = os.path.join(self.tmp, "ids-%s.txt" % uuid.uuid4().hex)
        f = open(out, "w")
        p = subprocess.Popen([os.path.join(BIN, "toolbox"), "--env", "test", "send", task, "--args", "[1]",
                              "--count", str(n)], cwd=SRC, env=env or self.env, stdout=f,
                             stderr=subprocess.PIPE)
        p.idfile, p.idf = out, f
        return p

    def stream_ids(self, p, timeout=120):
        _, err = p.communicate(timeout=timeout)
        p.idf.close()
        self.assertEqual(p.returncode, 0, err)
        with open(p.idfile) as f:
            return [l.strip() for l in f if l.strip()]

    def pg_super(self, sql):
        sock = os.path.join(ENV["TOOLBOX_SERVICES_DIR"], "postgres", "run")
        return subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-At", "-h", sock, "-p",
                               ENV["TOOLBOX_PG_PORT"], "-d", "postgres", "-c", sql],
                              check=True, capture_output=True, text=True).stdout

    def assert_exactly(self, ids, db=None):
        rows = self.query("SELECT task_id FROM tasks_backgroundtask", db=db)
        got = [r[0] for r in rows]
        self.assertEqual(len(got), len(set(got)))
        missing = set(ids) - set(got)
        extra = set(got) - set(ids)
        self.assertFalse(missing, "%d tasks lost, e.g. %s" % (len(missing), sorted(missing)[:3]))
        self.assertFalse(extra, "%d unexpected rows" % len(extra))

    def queue_empty(self, q="platform.fifo"):
        _, messages, consumers = self.ch.queue_declare(q, passive=True)
        return messages == 0

    # ---- recording ---------------------------------------------------------------------------------

    def test_python_celery_task_recorded_once_with_fields(self):
        from celery import Celery
        from kombu import Exchange
        mon = self.monitor()
        app = Celery("cadasta", broker="amqp://guest:guest@127.0.0.1:%s/%s" % (ENV["TOOLBOX_AMQP_PORT"], SANDBOX))
        ex = Exchange("task_exchange", type="topic", durable=True)
        tid = str(uuid.uuid4())
        app.send_task("export.project", args=[1], kwargs={"a": 2}, task_id=tid, exchange=ex, routing_key="export",
                      countdown=30, expires=3600, time_limit=60, soft_time_limit=50,
                      headers={"creator_id": "u9", "related_content_type_id": 3, "related_object_id": "obj9"})
        plain = str(uuid.uuid4())
        app.send_task("export.project", args=["x"], task_id=plain, exchange=ex, routing_key="export")
        r = self.wait_row(tid)
        self.wait_row(plain)
        self.assertEqual(r["type"], "export.project")
        self.assertEqual(r["input"], {"args": [1], "kwargs": {"a": 2}})
        self.assertIsNone(r["parent_id"])
        self.assertEqual(r["root_id"], tid)
        self.assertEqual((r["creator_id"], r["related_content_type_id"], r["related_object_id"]), ("u9", 3, "obj9"))
        o = r["options"]
        self.assertEqual(o["content_type"], "application/json")
        self.assertEqual(o["content_encoding"], "utf-8")
        self.assertEqual(o["delivery_mode"], 2)
        self.assertEqual(o["correlation_id"], tid)
        self.assertEqual(o["expiration"], "3600000")
        self.assertEqual(o["retries"], 0)
        self.assertEqual(o["timelimit"], [60, 50])
        self.assertRegex(o["eta"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00$")
        self.assertIn("expires", o)
        self.assertEqual(o["application_headers"]["task"], "export.project")
        self.assertEqual(o["application_headers"]["argsrepr"], "[1]")
        self.assertEqual(len(r["id"]), 24)
        self.assertRegex(r["id"], r"^[a-km-np-z2-9]{24}$")
        p = self.row(plain)
        self.assertNotIn("timelimit", p["options"])  # [None, None] is not copied, as on the platform
        self.assertNotIn("eta", p["options"])
        self.assertEqual(p["options"]["retries"], 0)
        self.assertIsNone(p["creator_id"])
        wait_for(self.queue_empty, 10, "platform.fifo to be acknowledged")
        self.assertEqual(self.count(), 2)
        self.assertEqual(self.query("SELECT count(*) FROM tasks_parkedmessage")[0][0], 0)

    def test_toolbox_send_with_creator_and_related_object(self):
        self.monitor()
        r = self.run_toolbox("send", "export.project", "--kwargs", '{"project": "p1"}', "--creator-id", "user42",
                             "--related-content-type-id", "7", "--related-object-id", "proj1", "--is-result",
                             "--parent-id", "parent-not-recorded", "--root-id", "root-not-recorded")
        tid = r.stdout.strip()
        row = self.wait_row(tid)
        self.assertEqual(row["type"], "export.project")
        self.assertEqual(row["input"], {"args": [], "kwargs": {"project": "p1"}})
        self.assertEqual(row["creator_id"], "user42")
        self.assertEqual(row["related_content_type_id"], 7)
        self.assertEqual(row["related_object_id"], "proj1")
        # A parent that was never recorded does not keep the task out (the platform's FK did).
        self.assertEqual(row["parent_id"], "parent-not-recorded")
        self.assertEqual(row["root_id"], "root-not-recorded")
        self.assertIs(row["options"]["is_result"], True)
        self.assertEqual(self.count(), 1)

    def test_retried_task_stays_one_row(self):
        mon = self.monitor()
        self.start("msg-worker", name="msg-worker")
        r = self.run_toolbox("send", "msg.flaky", "--args", "[2]", "--wait", "--timeout", "20")
        tid = r.stdout.splitlines()[0].strip()
        self.assertEqual(json.loads(r.stdout.splitlines()[1])["status"], "SUCCESS")
        # The original and two retries (same id, retries 1 and 2) reached platform.fifo.
        wait_for(lambda: self.log(mon).count("already recorded (retries=") >= 2, 10, "the retries to be seen")
        row = self.row(tid)
        self.assertEqual(self.query("SELECT count(*) FROM tasks_backgroundtask WHERE task_id = %s", tid)[0][0], 1)
        self.assertEqual(row["options"]["retries"], 0)  # the first message's row, unchanged
        self.assertEqual(row["created_date"], row["last_updated"])
        self.assertIn("task msg.flaky[%s] already recorded (retries=1)" % tid, self.log(mon))
        self.assertIn("task msg.flaky[%s] already recorded (retries=2)" % tid, self.log(mon))
        # A duplicate delivery by another producer changes nothing either.
        self.publish(json.dumps([[9], {}, {}]), self.v2_headers(tid, task="msg.flaky", retries=7))
        wait_for(lambda: "already recorded (retries=7)" in self.log(mon), 10, "the duplicate")
        self.assertEqual(self.row(tid)["input"], {"args": [2], "kwargs": {}})
        out = self.run_toolbox("tasks", "--json").stdout
        self.assertEqual([t["state"] for t in json.loads(out) if t["task_id"] == tid], ["SUCCESS"])

    # ---- malformed messages ------------------------------------------------------------------------------

    def parked(self):
        rows = self.query("SELECT reason, task_id, routing_key, exchange, headers, body, properties, redelivered "
                          "FROM tasks_parkedmessage ORDER BY received_date")
        keys = ["reason", "task_id", "routing_key", "exchange", "headers", "body", "properties", "redelivered"]
        return [dict(zip(keys, r)) for r in rows]

    def test_malformed_message_parked_and_next_recorded(self):
        mon = self.monitor()
        raw = b"\xff\xfe not json \x00 at all"
        self.publish(raw, None, content_type="application/octet-stream", routing_key="odd")
        self.publish(raw, {"x-note": "no task headers"})
        bad_body = str(uuid.uuid4())
        self.publish(b"[[1], {\"a\": ", self.v2_headers(bad_body))
        yaml_id = str(uuid.uuid4())
        self.publish(b"- [1]\n- {}\n- {}\n", self.v2_headers(yaml_id), content_type="application/x-yaml")
        bad_eta = str(uuid.uuid4())
        self.publish(json.dumps([[1], {}, {}]), self.v2_headers(bad_eta, eta="tomorrow"))
        nul = str(uuid.uuid4())
        self.publish(json.dumps([["a\u0000b"], {}, {}]), self.v2_headers(nul))
        good = str(uuid.uuid4())
        self.publish(json.dumps([[1, 2], {"k": "v"}, {"callbacks": None, "errbacks": None, "chain": None,
                                                       "chord": None}]), self.v2_headers(good))
        self.wait_row(good)
        wait_for(self.queue_empty, 10, "every message to be acknowledged")
        parked = self.parked()
        self.assertEqual(len(parked), 6, [p["reason"] for p in parked])
        p0, p1 = parked[0], parked[1]
        self.assertIn("no headers", p0["reason"])
        self.assertEqual(bytes(p0["body"]), raw)
        self.assertEqual(p0["routing_key"], "odd")
        self.assertEqual(p0["exchange"], "task_exchange")
        self.assertEqual(p0["properties"]["content_type"], "application/octet-stream")
        self.assertIsNone(p0["task_id"])
        self.assertIn("no 'task' header", p1["reason"])
        self.assertEqual(p1["headers"], {"x-note": "no task headers"})
        by_id = {p["task_id"]: p for p in parked if p["task_id"]}
        self.assertIn("body is not JSON", by_id[bad_body]["reason"])
        self.assertRegex(by_id[bad_body]["reason"], r"^body is not JSON: .*; the task is recorded without its input$")
        self.assertEqual(bytes(by_id[bad_body]["body"]), b"[[1], {\"a\": ")
        self.assertEqual(by_id[yaml_id]["reason"], "content type 'application/x-yaml' is not accepted (only "
                         "application/json); the task is recorded without its input")
        self.assertIn("bad eta", by_id[bad_eta]["reason"])
        self.assertIn("\\u0000", by_id[nul]["reason"])  # tbx_wire_decode (and so a C worker) refuses it
        # What could be read is recorded: the task ids and names, the input when the body was readable.
        self.assertIsNone(self.row(bad_body)["input"])
        self.assertIsNone(self.row(yaml_id)["input"])
        self.assertEqual(self.row(bad_eta)["input"], {"args": [1], "kwargs": {}})
        self.assertEqual(self.row(bad_eta)["options"]["eta"], "tomorrow")
        self.assertEqual(self.row(nul)["input"], {"args": ["a\ufffdb"], "kwargs": {}})
        self.assertEqual(self.row(good)["input"], {"args": [1, 2], "kwargs": {"k": "v"}})
        self.assertEqual(self.count(), 5)
        self.assertIsNone(mon.poll())
        self.assertIn("set aside in tasks_parkedmessage", self.log(mon))
        out = json.loads(self.run_toolbox("tasks", "--parked", "--json").stdout)
        self.assertEqual(len(out), 6)
        self.assertTrue(all(p["reason"] for p in out))

    def test_worker_moves_poison_aside_for_replay(self):
        mon = self.monitor()
        wk = self.start("msg-worker", "--hostname", "aside@test", name="msg-worker")
        # An unknown task: the worker stores FAILURE NotRegistered and moves the message aside; the monitor
        # recorded the task from its own copy and parks the moved one with the worker's reason.
        unknown = self.run_toolbox("send", "msg.nope", "--args", "[1]", "--kwargs", '{"k": 2}').stdout.strip()
        # Unreadable to both: the monitor parks its own copy; the moved one adds no second row.
        bad = str(uuid.uuid4())
        self.publish(b"\x80 not json", self.v2_headers(bad, task="msg.add"), routing_key="msg")
        self.publish(json.dumps([[1], {}, {}]), {"task": "msg.add", "lang": "py"}, routing_key="msg")
        wait_for(lambda: len(self.parked()) >= 3 and self.queue_empty("msg") and self.queue_empty(), 15,
                 "three parked messages and empty queues")
        time.sleep(0.5)
        parked = self.parked()
        self.assertEqual(len(parked), 3, [p["reason"] for p in parked])
        by_id = {p["task_id"]: p for p in parked}
        a = by_id[unknown]
        self.assertEqual(a["reason"], "set aside by worker aside@test: NotRegistered: no handler for task msg.nope "
                                      "on this worker")
        self.assertEqual((a["routing_key"], a["exchange"]), ("msg", "task_exchange"))
        self.assertFalse([k for k in a["headers"] if k.startswith("x-toolbox-")], a["headers"])
        self.assertEqual((a["headers"]["id"], a["headers"]["task"]), (unknown, "msg.nope"))
        self.assertEqual(json.loads(bytes(a["body"]))[:2], [[1], {"k": 2}])
        self.assertRegex(by_id[bad]["reason"], "^body is not JSON")
        self.assertIn("no 'id' header", by_id[None]["reason"])
        doc = json.loads(self.run_toolbox("result", unknown, check=False).stdout)  # exit 1: FAILURE
        self.assertEqual((doc["status"], doc["result"]["exc_type"]), ("FAILURE", "NotRegistered"))
        self.assertEqual(self.count(), 2)  # msg.nope and the unreadable msg.add, each once
        self.assertIn("received unregistered task msg.nope[%s]; moved aside" % unknown, self.log(wk))
        # Replay publishes the original where it first went: the worker gets it again (still unknown: aside
        # again, a new parked row), nothing is recorded twice.
        pid = [p for p in json.loads(self.run_toolbox("tasks", "--parked", "--json").stdout)
               if p["task_id"] == unknown][0]["id"]
        out = self.run_toolbox("tasks", "--replay", pid).stdout
        self.assertIn("to exchange 'task_exchange' with routing key 'msg'", out)
        wait_for(lambda: len(self.parked()) == 4, 15, "the replayed message to be moved aside again")
        again = [p for p in self.parked() if p["task_id"] == unknown]
        self.assertEqual(len(again), 2)
        self.assertEqual(again[1]["headers"], again[0]["headers"])
        self.assertEqual(bytes(again[1]["body"]), bytes(again[0]["body"]))
        self.assertEqual(self.log(wk).count("received unregistered task msg.nope[%s]" % unknown), 2)
        self.assertEqual(self.count(), 2)
        wait_for(lambda: self.queue_empty("msg") and self.queue_empty(), 10, "empty queues")

    def test_row_refused_by_the_database_is_parked_alone(self):
        # A constraint the monitor does not know of makes the database refuse one row of a batch.
        with self.db.cursor() as c:
            c.execute("ALTER TABLE tasks_backgroundtask ADD CONSTRAINT test_no_evil CHECK (type <> 't.evil')")
        try:
            ids = [str(uuid.uuid4()) for _ in range(5)]
            for i, tid in enumerate(ids):
                self.publish(json.dumps([[i], {}, {}]), self.v2_headers(tid, task="t.evil" if i == 2 else "t.good"))
            mon = self.monitor()  # after publishing: the five arrive in one batch
            wait_for(self.queue_empty, 10, "every message to be acknowledged")
            wait_for(lambda: self.count() == 4, 10, "the four good tasks")
            self.assertIsNone(self.row(ids[2]))
            parked = self.parked()
            self.assertEqual(len(parked), 1)
            self.assertEqual(parked[0]["task_id"], ids[2])
            self.assertIn("the database refused the task row", parked[0]["reason"])
            self.assertIn("test_no_evil", parked[0]["reason"])
            self.assertEqual(parked[0]["headers"]["application_headers"]["task"], "t.evil")
            self.assertEqual(json.loads(bytes(parked[0]["body"])), [[2], {}, {}])
            self.assertIsNone(mon.poll())
        finally:
            with self.db.cursor() as c:
                c.execute("ALTER TABLE tasks_backgroundtask DROP CONSTRAINT IF EXISTS test_no_evil")

    def test_pickle_and_protocol_v1_messages_are_recorded(self):
        self.monitor()
        pk = str(uuid.uuid4())
        self.publish(pickle.dumps(((1, "x"), {"k": [1, 2]}, {"callbacks": None}), protocol=2),
                     self.v2_headers(pk, task="export.pickled"), content_type="application/x-python-serialize")
        v1 = str(uuid.uuid4())
        self.publish(json.dumps({"task": "export.v1", "id": v1, "args": [3], "kwargs": {"z": 1}, "retries": 0,
                                 "eta": None, "expires": "2099-01-01T00:00:00+00:00"}), None)
        r = self.wait_row(pk)
        self.assertEqual(r["input"], {"args": [1, "x"], "kwargs": {"k": [1, 2]}})
        self.assertEqual(r["type"], "export.pickled")
        r = self.wait_row(v1)
        self.assertEqual(r["input"], {"args": [3], "kwargs": {"z": 1}})
        self.assertEqual(r["type"], "export.v1")
        self.assertEqual(r["root_id"], v1)
        self.assertEqual(r["options"]["expires"], "2099-01-01T00:00:00+00:00")
        wait_for(self.queue_empty, 10, "every message to be acknowledged")
        self.assertEqual(self.parked(), [])

    # ---- faults ------------------------------------------------------------------------------------

    def test_sigkill_mid_stream_loses_and_duplicates_nothing(self):
        n = 6000
        mon = self.monitor("--batch-size", "50")
        prod = self.stream(n)
        wait_for(lambda: self.count() >= 1500, 60, "1500 tasks recorded")
        mon.send_signal(signal.SIGKILL)
        mon.wait()
        at_kill = self.count()
        mon2 = self.monitor("--batch-size", "50")
        ids = self.stream_ids(prod)
        self.assertEqual(len(ids), n)
        wait_for(lambda: self.count() >= n and self.queue_empty(), 90, "all tasks recorded", 0.2)
        time.sleep(0.3)
        self.assert_exactly(ids)
        self.assertLess(at_kill, n, "the kill was not mid-stream")
        # Every row, even in batches of 50, was created and last updated at one clock reading.
        self.assertEqual(self.query("SELECT count(*) FROM tasks_backgroundtask"
                                    " WHERE created_date <> last_updated")[0][0], 0)
        # Messages committed but not yet acknowledged at the kill come back and change nothing.
        print("\n  killed at %d rows; after restart: %d redelivered already recorded" %
              (at_kill, self.log(mon2).count("already recorded")), file=sys.stderr)
        mon2.send_signal(signal.SIGTERM)
        self.assertEqual(mon2.wait(10), 0)

    def test_database_connection_lost_mid_stream_loses_nothing(self):
        n1, n2 = 4000, 2000
        mon = self.monitor("--batch-size", "50")
        prod = self.stream(n1)

        def kill_backend():
            return int(self.pg_super(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '%s' "
                "AND application_name = 'platform-monitor'" % SANDBOX).strip())
        # The monitor's connection is terminated twice while it records.
        for target in (1000, 2500):
            wait_for(lambda: self.count() >= target, 60, "%d tasks recorded" % target)
            wait_for(kill_backend, 10, "the monitor's backend to terminate")
        ids = self.stream_ids(prod)
        wait_for(lambda: self.count() >= n1, 60, "the first %d tasks recorded" % n1)
        # An outage: the database refuses connections while more tasks arrive.
        self.pg_super("ALTER DATABASE %s ALLOW_CONNECTIONS false" % SANDBOX)
        try:
            kill_backend()
            ids += self.stream_ids(self.stream(n2))
            time.sleep(3)
            self.assertEqual(self.count(), n1)  # nothing can be recorded...
            self.assertFalse(self.queue_empty())  # ...so nothing is acknowledged
            self.assertIsNone(mon.poll())
        finally:
            self.pg_super("ALTER DATABASE %s ALLOW_CONNECTIONS true" % SANDBOX)
        wait_for(lambda: self.count() >= n1 + n2 and self.queue_empty(), 90, "all tasks recorded", 0.2)
        time.sleep(0.3)
        self.assert_exactly(ids)
        log = self.log(mon)
        self.assertIn("nothing is acknowledged meanwhile", log)
        self.assertIn("is not currently accepting connections", log)
        self.assertGreaterEqual(log.count("reconnected to the database"), 2)
        self.assertIsNone(mon.poll())

    @unittest.skipUnless(os.geteuid() == 0 and os.path.exists(os.path.join(PG_BIN, "initdb")),
                         "needs root and PostgreSQL 15 server binaries")
    def test_postgres_restarted_mid_stream_loses_nothing(self):
        pg = PrivatePostgres()
        try:
            env = dict(self.env)
            env["TOOLBOX_RESULT_BACKEND"] = pg.worker_url
            env["TOOLBOX_DATABASE_ADMIN_URL"] = pg.admin_url
            env["TOOLBOX_MONITOR_DATABASE_URL"] = pg.worker_url
            self.run_toolbox("setup", "--database-only", env=env)
            db = psycopg2.connect(pg.admin_url)
            db.autocommit = True
            n = 5000
            mon = self.monitor("--batch-size", "50", env=env)
            prod = self.stream(n)
            wait_for(lambda: self.count(db) >= 1000, 60, "1000 tasks recorded")
            db.close()
            pg.restart()
            db = psycopg2.connect(pg.admin_url)
            db.autocommit = True
            ids = self.stream_ids(prod)
            wait_for(lambda: self.count(db) >= n and self.queue_empty(), 90, "all tasks recorded", 0.2)
            time.sleep(0.3)
            self.assert_exactly(ids, db=db)
            self.assertIn("reconnected to the database", self.log(mon))
            db.close()
        finally:
            for p in self.procs:
                if p.poll() is None:
                    p.kill()
            pg.close()

    def test_broker_connection_lost_mid_stream_loses_nothing(self):
        proxy = Proxy(int(ENV["TOOLBOX_AMQP_PORT"]))
        try:
            env = dict(self.env)
            env["TOOLBOX_BROKER_URL"] = "amqp://guest:guest@127.0.0.1:%d/%s" % (proxy.port, SANDBOX)
            n = 5000
            mon = self.monitor("--batch-size", "50", env=env)
            prod = self.stream(n)
            for target in (1000, 3000):
                wait_for(lambda: self.count() >= target, 60, "%d tasks recorded" % target)
                self.assertGreaterEqual(proxy.cut(), 1)
            ids = self.stream_ids(prod)
            wait_for(lambda: self.count() >= n and self.queue_empty(), 90, "all tasks recorded", 0.2)
            time.sleep(0.3)
            self.assert_exactly(ids)
            self.assertGreaterEqual(self.log(mon).count("reconnected to the broker"), 2)
        finally:
            proxy.close()

    def test_sigterm_is_graceful(self):
        mon = self.monitor("--batch-ms", "2000", "--batch-size", "1000")
        ids = [self.run_toolbox("send", "t.x").stdout.strip() for _ in range(3)]
        time.sleep(0.3)  # delivered, waiting for their batch
        mon.send_signal(signal.SIGTERM)
        self.assertEqual(mon.wait(10), 0)
        self.assert_exactly(ids)
        self.assertTrue(self.queue_empty())
        log = self.log(mon)
        self.assertIn("warm shutdown (SIGTERM)", log)
        self.assertRegex(log, r"stopped: 3 messages received, 3 acknowledged")

    def test_process_title(self):
        mon = self.monitor("--hostname", "pm-title-test")
        def title():
            with open("/proc/%d/cmdline" % mon.pid, "rb") as f:
                return f.read().split(b"\0")[0].decode()
        wait_for(lambda: title().startswith("platform-monitor: running"), 5, "the process title")
        with open("/proc/%d/comm" % mon.pid) as f:
            self.assertTrue(f.read().startswith("platform-moni"))

    # ---- seeing it ---------------------------------------------------------------------------------

    def test_toolbox_tasks_list_and_family(self):
        self.monitor()
        self.start("msg-worker", name="msg-worker")
        ok = self.run_toolbox("send", "msg.add", "--args", "[2, 3]", "--link", "msg.echo").stdout.strip()
        bad = self.run_toolbox("send", "msg.add", "--args", "[2, 3]", "--link",
                               '{"task": "msg.fail", "args": ["boom"]}').stdout.strip()
        pending = self.run_toolbox("send", "t.nobody", "--root-id", ok).stdout.strip()

        def family(root):
            r = self.run_toolbox("tasks", "--root", root, "--json", check=False)
            return json.loads(r.stdout) if r.returncode == 0 else None

        f = wait_for(lambda: (lambda x: x if x and len(x["tasks"]) == 2 and x["overall_state"] == "FAILURE"
                              else None)(family(bad)), 20, "the failing family")
        self.assertEqual([t["name"] for t in f["tasks"]], ["msg.add", "msg.fail"])
        self.assertEqual([t["state"] for t in f["tasks"]], ["SUCCESS", "FAILURE"])
        self.assertEqual(f["tasks"][1]["parent_id"], bad)
        f = wait_for(lambda: (lambda x: x if x and sorted(t["state"] for t in x["tasks"]) ==
                              ["PENDING", "SUCCESS", "SUCCESS"] else None)(family(ok)),
                     20, "the family with a pending member")
        self.assertEqual(f["overall_state"], "STARTED")  # SUCCESS + PENDING
        self.assertEqual(sorted(t["name"] for t in f["tasks"]), ["msg.add", "msg.echo", "t.nobody"])
        # A member's id finds its family too.
        self.assertEqual(family(pending)["root_id"], ok)
        lst = json.loads(self.run_toolbox("tasks", "--json").stdout)
        created = [t["created"] for t in lst]
        self.assertEqual(created, sorted(created, reverse=True))
        self.assertEqual({t["task_id"]: t["state"] for t in lst}[pending], "PENDING")
        text = self.run_toolbox("tasks", "--root", ok).stdout
        self.assertIn("overall STARTED", text)
        r = self.run_toolbox("tasks", "--root", "no-such-task", check=False)
        self.assertEqual(r.returncode, 1)
        # A family whose members all succeeded.
        solo = self.run_toolbox("send", "msg.add", "--args", "[1, 1]", "--link", "msg.echo").stdout.strip()
        wait_for(lambda: (lambda x: x and x["overall_state"] == "SUCCESS" and len(x["tasks"]) == 2)(family(solo)),
                 20, "the succeeding family")

    def test_monitor_role_is_least_privileged(self):
        db = psycopg2.connect(ENV["TOOLBOX_MONITOR_DATABASE_URL"])
        db.autocommit = True
        try:
            with db.cursor() as c:
                c.execute("SELECT count(*) FROM tasks_backgroundtask")
                for sql in ("UPDATE tasks_backgroundtask SET type = 'x'", "DELETE FROM tasks_backgroundtask",
                            "DELETE FROM tasks_parkedmessage", "TRUNCATE tasks_parkedmessage"):
                    with self.assertRaises(psycopg2.errors.InsufficientPrivilege, msg=sql):
                        c.execute(sql)
        finally:
            db.close()


if __name__ == "__main__":
    if subprocess.run(["bash", os.path.join(SRC, "scripts", "services.sh"), "status"],
                      capture_output=True).returncode != 0:
        print("skipped: the project's services are not running (scripts/services.sh start)")
        sys.exit(77)
    unittest.main()
