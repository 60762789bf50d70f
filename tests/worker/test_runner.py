#!/usr/bin/python3
"""The worker runner's own features, end to end on the real services (sandbox t_worker_runner).

- a far eta is parked in a delay queue (consumer_timeout-safe) and still runs on time;
- `toolbox interrupt --retry` puts a running task back with a delay, `--cancel` ends it REVOKED;
- the broker closing the worker's connection: it reconnects and serves again;
- --max-tasks and --max-duration end the worker with exit status 0;
- the alert command fires when a task crashes its process;
- result_extended fills Celery's extended columns; --logfile writes and rotates; the process title.
"""
import json
import os
import pickle
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "interop"))
import interop_support as S  # noqa: E402

SANDBOX = "t_worker_runner"
sb = None


def setUpModule():
    global sb
    sb = S.Sandbox.create(SANDBOX)


def tearDownModule():
    if sb is not None:
        sb.close()


class Runner(unittest.TestCase):
    def setUp(self):
        sb.reset()
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            p.stop()

    def worker(self, *flags, wait=True):
        p = sb.start_msg_worker("--hostname", "runner%d@test" % len(self.procs), *flags,
                                name="msg-worker-%d" % len(self.procs))
        self.procs.append(p)
        if wait:
            sb.wait_consumers("msg", p)
        return p

    def row(self, task_id):
        rows = sb.sql("SELECT status, result, name, args, kwargs, worker, retries, queue FROM celery_taskmeta "
                      "WHERE task_id = %s", (task_id,))
        return rows[0] if rows else None

    def status(self, task_id):
        r = self.row(task_id)
        return r[0] if r else "PENDING"

    def test_far_eta_is_parked_and_runs_on_time(self):
        p = self.worker("--set", "worker.eta_hold_max=2", "--set", "worker.park_min_ttl=1")
        t0 = time.time()
        tid = sb.send("msg.add", "--args", "[40, 2]", "--countdown", "6")
        S.wait_for(lambda: "parked in toolbox.delay.msg." in p.tail(200), 20, 0.1, "the parking log line")
        code, doc = sb.result(tid, timeout=60)
        self.assertEqual((code, doc["status"], doc["result"]), (0, "SUCCESS", 42), doc)
        done = S.parse_date_done(doc["date_done"]).timestamp()
        self.assertGreaterEqual(done, t0 + 5.5, "ran before its eta")
        self.assertEqual(sb.queue_info("msg")[0], 0)

    def test_interrupt_retry_then_cancel(self):
        self.worker()
        tid = sb.send("msg.sleep", "--args", "[60]")
        S.wait_for(lambda: self.status(tid) == "STARTED", 30, 0.05, "STARTED")
        out = sb.toolbox("interrupt", tid, "--retry", "--countdown", "3", "--timeout", "10", "--limit", "1").stdout
        self.assertIn("tasks flagged", out)
        S.wait_for(lambda: self.status(tid) == "RETRY", 30, 0.05, "RETRY after the interrupt")
        exc = pickle.loads(bytes(self.row(tid)[1]))
        self.assertEqual(exc["exc_type"], "Retry")
        S.wait_for(lambda: self.status(tid) == "STARTED", 30, 0.05, "STARTED again after the delay")
        sb.toolbox("interrupt", tid, "--cancel", "--timeout", "10", "--limit", "1")
        code, doc = sb.result(tid, timeout=30)
        self.assertEqual((code, doc["status"]), (1, "REVOKED"), doc)
        self.assertEqual(doc["result"]["exc_message"], ["terminated"])
        # The worker goes on.
        code, doc = sb.result(sb.send("msg.add", "--args", "[1, 1]"), timeout=30)
        self.assertEqual(doc["result"], 2)

    def test_reconnects_after_the_broker_closes_its_connection(self):
        p = self.worker()
        host = "runner%d@test" % (len(self.procs) - 1)
        listing = subprocess.run(["bash", S.SERVICES, "rabbitmqctl", "list_connections", "pid",
                                  "client_properties"], stdout=subprocess.PIPE, universal_newlines=True,
                                 timeout=120).stdout
        pids = [line.split("\t")[0] for line in listing.splitlines() if '"%s"' % host in line]
        self.assertTrue(pids, listing[-2000:])
        for pid in pids:
            subprocess.run(["bash", S.SERVICES, "rabbitmqctl", "close_connection", pid, "test"], timeout=120,
                           stdout=subprocess.DEVNULL)
        S.wait_for(lambda: "reconnected to the broker" in p.tail(200), 60, 0.2, "the reconnect log line")
        code, doc = sb.result(sb.send("msg.add", "--args", "[2, 3]"), timeout=60)
        self.assertEqual((code, doc["result"]), (0, 5), doc)

    def test_max_tasks_and_max_duration(self):
        ids = [sb.send("msg.add", "--args", "[%d, 1]" % i) for i in range(6)]
        p = self.worker("--max-tasks", "3", "--concurrency", "1", "--prefetch", "1", wait=False)
        self.assertEqual(p.wait(60), 0, p.tail())
        done = sb.sql("SELECT count(*) FROM celery_taskmeta WHERE task_id = ANY(%s) AND status = 'SUCCESS'",
                      (ids,))[0][0]
        self.assertEqual(done, 3)
        self.assertEqual(sb.queue_info("msg")[0], 3)
        t0 = time.monotonic()
        p = self.worker("--max-duration", "2", wait=False)
        self.assertEqual(p.wait(60), 0, p.tail())
        self.assertLess(time.monotonic() - t0, 30)
        self.assertEqual(sb.sql("SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'")[0][0], 6)

    def test_started_before_its_broker_it_waits_for_it(self):
        # Services started together come up in any order: a worker whose broker is not listening yet
        # retries (startup_retry) instead of exiting, and works once it is there.
        import socket
        import urllib.parse
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        u = urllib.parse.urlsplit(sb.broker_url)
        late = u._replace(netloc="%s@127.0.0.1:%d" % (u.netloc.rsplit("@", 1)[0], port)).geturl()
        p = sb.start_msg_worker("--hostname", "late@test", "--set", "broker_url=" + late, name="late-worker")
        self.procs.append(p)
        S.wait_for(lambda: "starting: retrying in" in p.tail(20), 20, 0.1, "a start-up retry")
        self.assertTrue(p.alive(), p.tail())
        proxy = subprocess.Popen(["socat", "TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork" % port,
                                  "TCP:127.0.0.1:%d" % u.port], stdin=subprocess.DEVNULL)
        try:
            sb.wait_consumers("msg", p, timeout=40)
            code, doc = sb.result(sb.send("msg.add", "--args", "[20, 22]"), timeout=30)
            self.assertEqual(doc["result"], 42)
        finally:
            p.stop()
            proxy.terminate()
            proxy.wait(10)

    def test_a_task_that_keeps_killing_the_worker_is_set_aside(self):
        state = os.path.join(sb.tmpdir, "state")
        flags = ("--set", "worker.state_dir=%s" % state, "--set", "worker.max_redeliveries=1",
                 "--concurrency", "1", "--hostname", "strikes@test")
        tid = sb.send("msg.sleep", "--args", "[60]")
        for attempt in range(2):  # the first delivery and one redelivery run, then it is set aside
            p = sb.start_msg_worker(*flags, name="strikes-%d" % attempt)
            self.procs.append(p)
            S.wait_for(lambda: self.status(tid) == "STARTED" and self.row(tid)[1] is not None and
                       pickle.loads(bytes(self.row(tid)[1]))["pid"] != getattr(self, "_last_pid", None),
                       60, 0.05, "attempt %d to start" % attempt)
            self._last_pid = pickle.loads(bytes(self.row(tid)[1]))["pid"]
            p.signal(9)  # the main process dies with the task: the broker redelivers it
            p.wait(30)
        p = sb.start_msg_worker(*flags, name="strikes-final")
        self.procs.append(p)
        code, doc = sb.result(tid, timeout=60)
        self.assertEqual((code, doc["status"]), (1, "FAILURE"), doc)
        self.assertIn("set aside", doc["result"]["exc_message"][0])
        self.assertEqual(sb.queue_info("msg")[0], 0)
        # Moved, not dropped: the unchanged message went to the platform queue (where the monitor parks
        # it for `toolbox tasks --parked` / `--replay`) with the reason and its first routing key.
        with sb.connection() as c:
            ch = c.default_channel
            aside = []
            while True:
                m = ch.basic_get("platform.fifo", no_ack=True)
                if m is None:
                    break
                if m.delivery_info["routing_key"] == "toolbox.aside":
                    aside.append(m)
        self.assertEqual(len(aside), 1, [m.headers for m in aside])
        h = aside[0].headers
        self.assertEqual((h["id"], h["task"]), (tid, "msg.sleep"))
        self.assertIn("delivered 2 times without finishing", h["x-toolbox-aside-reason"])
        self.assertEqual((h["x-toolbox-aside-worker"], h["x-toolbox-aside-exchange"],
                          h["x-toolbox-aside-routing-key"]), ("strikes@test", "task_exchange", "msg"))
        self.assertEqual(json.loads(aside[0].body)[0], [60])
        code, doc = sb.result(sb.send("msg.add", "--args", "[1, 1]"), timeout=30)
        self.assertEqual(doc["result"], 2)

    def test_alert_on_crash_extended_results_logfile_and_title(self):
        alert = os.path.join(sb.tmpdir, "alert.txt")
        logfile = os.path.join(sb.tmpdir, "worker.log")
        p = self.worker("--set", "worker.alert_command=echo \"$TOOLBOX_ALERT $TOOLBOX_TASK_ID\" >> %s" % alert,
                        "--set", "result_extended=true", "--logfile", logfile,
                        "--set", "log.max_bytes=2000", "--set", "log.backups=2")
        crash = sb.send("msg.crash")
        code, doc = sb.result(crash, timeout=30)
        self.assertEqual(doc["result"]["exc_type"], "WorkerLostError", doc)
        S.wait_for(lambda: os.path.exists(alert) and crash in open(alert).read(), 20, 0.1, "the alert")
        tid = sb.send("msg.add", "--args", "[7, 8]", "--kwargs", "{}")
        code, doc = sb.result(tid, timeout=30)
        status, _, name, args, kwargs, worker, retries, queue = self.row(tid)
        self.assertEqual((status, name, bytes(args), bytes(kwargs), worker, retries, queue),
                         ("SUCCESS", "msg.add", b"[7, 8]", b"{}", "runner0@test", 0, "msg"))
        for i in range(30):
            sb.send("msg.fail", "--args", '["fill the log %d"]' % i)
        S.wait_for(lambda: os.path.exists(logfile + ".1"), 30, 0.1, "a rotated log file")
        self.assertLessEqual(os.path.getsize(logfile), 2000 + 2048)
        with open("/proc/%d/cmdline" % p.p.pid, "rb") as f:
            title = f.read().decode(errors="replace")
        self.assertIn("msg: running queues=msg", title)


if __name__ == "__main__":
    S.main()
