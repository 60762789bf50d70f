#!/usr/bin/python3
"""Issue 2: the C producer (`toolbox send`) and result reader (`toolbox result`) against a real
Python Celery 5.2 worker.

A Python worker (`celery -A interop_app worker -Q export -P solo`) runs export.add / echo / fail / info
in sandbox t_interop_py. Every task is sent with `toolbox send` and read back with `toolbox result ID
--wait`, so the Python worker must understand the C message and the C reader must decode the protocol-5
pickles that SQLAlchemy writes.
"""
import json
import os
import sys
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import interop_support as S  # noqa: E402

SANDBOX = "t_interop_py"

# Celery 5.2 header order (celery-wire.md §1.3), then the platform extras the C producer appends.
CELERY_HEADERS = ["lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries",
                  "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin", "ignore_result"]
EXTRA_HEADERS = ["creator_id", "related_content_type_id", "related_object_id"]

sb = None
worker = None


def setUpModule():
    global sb, worker
    sb = S.Sandbox.create(SANDBOX)
    worker = sb.start("python-worker", [
        S.PYTHON, "-m", "celery", "-A", "interop_app", "worker", "-Q", "export", "-P", "solo",
        "-n", "py@interop", "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info"],
        extra_env={"PYTHONPATH": S.HERE, "INTEROP_BROKER_URL": sb.broker_url,
                   # the Python worker writes with SQLAlchemy, which needs the owner role
                   "INTEROP_BACKEND_URL": sb.admin_url})
    try:
        sb.wait_consumers("export", worker, timeout=90)
    except BaseException:
        tearDownModule()
        raise


def tearDownModule():
    global worker
    if worker is not None:
        worker.stop()
        worker = None
    if sb is not None:
        sb.close()


class ProducerToPython(unittest.TestCase):
    maxDiff = None

    def run_task(self, task, *opts, timeout=30):
        """send, then `toolbox result --wait`: (task id, exit status, JSON)."""
        tid = sb.send(task, *opts)
        rc, doc = sb.result(tid, timeout=timeout)
        self.assertEqual(doc.get("task_id"), tid, doc)
        if doc.get("status") not in ("SUCCESS", "FAILURE", "REVOKED"):
            self.fail("task %s not finished: %r\n%s" % (tid, doc, worker.tail()))
        return tid, rc, doc

    def assertSuccess(self, doc, rc, result):
        self.assertEqual(doc["status"], "SUCCESS", "%r\n%s" % (doc, worker.tail()))
        self.assertEqual(rc, 0)
        self.assertEqual(doc["result"], result)
        self.assertIsNone(doc["traceback"])
        self.assertTrue(doc["date_done"])

    def test_add(self):
        tid, rc, doc = self.run_task("export.add", "--args", "[2, 3]")
        self.assertSuccess(doc, rc, 5)
        # The row was written by Python's SQLAlchemy PickleType: protocol 5, which the C reader decoded.
        (blob,), = sb.sql("SELECT result FROM celery_taskmeta WHERE task_id = %s", (tid,))
        self.assertEqual(bytes(blob)[:2], b"\x80\x05")

    def test_echo_round_trip(self):
        value = {
            "text": "h\u00e9llo w\u00f6rld \u2603 \U0001F600 \u4e2d\u6587 \"quoted\" back\\slash\nnewline",
            "none": None,
            "bools": [True, False],
            "floats": [0.1, -2.5, 1e300, 1.5e-300, 3.141592653589793, -0.0],
            "big": 2 ** 63 - 1,
            "neg": -2 ** 63,
            "ints": [0, 255, 256, 65535, 65536, 2 ** 31 - 1, 2 ** 31, -1, -2 ** 31 - 1],
            "nested": [[], {}, [1, [2, [3, {"k": None, "\u00fc": ["x"]}]]]],
            "empty": "",
            "many": list(range(1200)),  # more than one pickle APPENDS batch (1000)
        }
        for ensure_ascii in (True, False):  # \u escapes and raw UTF-8 on the command line
            with self.subTest(ensure_ascii=ensure_ascii):
                _, rc, doc = self.run_task("export.echo", "--args", json.dumps([value], ensure_ascii=ensure_ascii))
                self.assertSuccess(doc, rc, value)

    def test_fail(self):
        _, rc, doc = self.run_task("export.fail", "--args", '["bad value 7"]')
        self.assertEqual(doc["status"], "FAILURE", doc)
        self.assertNotEqual(rc, 0)
        self.assertEqual(doc["result"], {"exc_type": "ValueError", "exc_message": ["bad value 7"],
                                         "exc_module": "builtins"})
        self.assertIn("ValueError: bad value 7", doc["traceback"] or "")
        self.assertTrue(doc["date_done"])

    def test_link_and_link_error_run_in_python(self):
        # embed.callbacks / embed.errbacks written by the C producer, applied by the Python worker.
        cb_id, eb_id = str(uuid.uuid4()), str(uuid.uuid4())
        _, rc, doc = self.run_task("export.add", "--args", "[2, 3]", "--link",
                                   json.dumps({"task": "export.echo", "options": {"task_id": cb_id}}))
        self.assertSuccess(doc, rc, 5)
        rc, doc = sb.result(cb_id)
        self.assertSuccess(doc, rc, 5)  # the parent's return value as first argument
        tid, rc, doc = self.run_task("export.fail", "--args", '["for the errback"]', "--link-error",
                                     json.dumps({"task": "export.echo", "options": {"task_id": eb_id}}))
        self.assertEqual(doc["status"], "FAILURE", doc)
        rc, doc = sb.result(eb_id)
        self.assertSuccess(doc, rc, tid)  # a one-argument errback gets the failed task's id

    def test_not_registered(self):
        _, rc, doc = self.run_task("export.nope", "--args", "[1]")
        self.assertEqual(doc["status"], "FAILURE", doc)
        self.assertEqual(doc["result"], {"exc_type": "NotRegistered", "exc_message": ["export.nope"],
                                         "exc_module": "celery.exceptions"})

    def test_python_retry(self):
        _, rc, doc = self.run_task("export.flaky", "--args", "[2]")
        self.assertSuccess(doc, rc, 2)

    def test_python_values_read_by_c(self):
        # What Python's SQLAlchemy PickleType (protocol 5, memo, FRAME) writes, as the C reader maps it.
        cases = {
            "containers": {"tuple": [1, [2, 3]], "set": [7], "frozenset": ["f"], "bytes": "ab",
                           "bytearray": "cd", "empty_tuple": []},
            "keys": {"1": "int", "2.5": "float", "False": "bool", "None": "none", "s": "str"},
            "shared": [[1, "s"], [1, "s"], {"again": [1, "s"]}],
        }
        for case, expected in cases.items():
            with self.subTest(case=case):
                _, rc, doc = self.run_task("export.types", "--args", json.dumps([case]))
                self.assertSuccess(doc, rc, expected)
        # No JSON form: the state is still readable, the result is null with the reason.
        for case in ("datetime", "bigint"):
            with self.subTest(case=case):
                _, rc, doc = self.run_task("export.types", "--args", json.dumps([case]))
                self.assertEqual(doc["status"], "SUCCESS", doc)
                self.assertIsNone(doc["result"], doc)
                self.assertTrue(doc.get("result_error"), doc)

    def test_countdown(self):
        t0 = S.utcnow()
        _, rc, doc = self.run_task("export.add", "--args", "[20, 22]", "--countdown", "2")
        self.assertSuccess(doc, rc, 42)
        waited = (S.parse_date_done(doc["date_done"]) - t0).total_seconds()
        self.assertGreaterEqual(waited, 1.9, "done %.3f s after sending, countdown was 2 s" % waited)

    def test_expired(self):
        # `toolbox send --expires` takes seconds from now (> 0): expire after 1 s, run no earlier than
        # 3 s. The Python worker holds the message for its eta, then finds it expired.
        _, rc, doc = self.run_task("export.add", "--args", "[1, 1]", "--expires", "1", "--countdown", "3")
        self.assertEqual(doc["status"], "REVOKED", "%r\n%s" % (doc, worker.tail()))
        self.assertNotEqual(rc, 0)
        self.assertEqual(doc["result"], {"exc_type": "TaskRevokedError", "exc_message": ["expired"],
                                         "exc_module": "celery.exceptions"})

    def test_kwargs_priority_time_limits(self):
        _, rc, doc = self.run_task("export.add", "--kwargs", '{"a": 4, "b": 5}', "--priority", "5",
                                   "--time-limit", "30", "--soft-time-limit", "20")
        self.assertSuccess(doc, rc, 9)
        tid, rc, doc = self.run_task("export.info", "--args", '[1, "two"]', "--kwargs", '{"k": [3]}',
                                     "--priority", "5", "--time-limit", "30", "--soft-time-limit", "20")
        self.assertEqual(doc["status"], "SUCCESS", doc)
        info = doc["result"]
        self.assertEqual(info["args"], [1, "two"])
        self.assertEqual(info["kwargs"], {"k": [3]})
        self.assertEqual(info["timelimit"], [30, 20])  # [hard, soft]
        self.assertEqual(info["priority"], 5)
        self.assertEqual(info["routing_key"], "export")
        self.assertEqual(info["exchange"], "task_exchange")
        self.assertEqual(info["retries"], 0)

    def test_platform_extras_as_headers(self):
        tid, rc, doc = self.run_task("export.info", "--args", "[1]", "--kwargs", '{"k": "v"}',
                                     "--creator-id", "u1", "--related-content-type-id", "7",
                                     "--related-object-id", "p1")
        self.assertSuccess(doc, rc, doc["result"])
        info = doc["result"]
        self.assertEqual(info["id"], tid)
        self.assertEqual(info["root_id"], tid)
        self.assertIsNone(info["parent_id"])
        self.assertEqual((info["creator_id"], info["related_content_type_id"], info["related_object_id"]),
                         ("u1", 7, "p1"))
        self.assertIn(info["timelimit"], (None, [None, None]))

        # The copy in platform.fifo, read with kombu/py-amqp.
        msg = self.fetch_platform_copy(tid)
        headers = msg.headers
        self.assertEqual(list(headers), CELERY_HEADERS + EXTRA_HEADERS)
        expected = {
            "lang": "py", "task": "export.info", "id": tid, "shadow": None, "eta": None, "expires": None,
            "group": None, "group_index": None, "retries": 0, "timelimit": [None, None], "root_id": tid,
            "parent_id": None, "argsrepr": "[1]", "kwargsrepr": "{'k': 'v'}", "ignore_result": False,
            "creator_id": "u1", "related_content_type_id": 7, "related_object_id": "p1",
        }
        got = {k: v for k, v in headers.items() if k != "origin"}
        self.assertEqual(got, expected)
        self.assertRegex(headers["origin"], r"^gen\d+@.+")
        props = msg.properties
        self.assertEqual(props.get("content_type"), "application/json")
        self.assertEqual(props.get("content_encoding"), "utf-8")
        self.assertEqual(props.get("delivery_mode"), 2)
        self.assertEqual(props.get("correlation_id"), tid)
        self.assertEqual(props.get("priority"), 0)
        self.assertNotIn("expiration", props)
        self.assertEqual(msg.delivery_info.get("routing_key"), "export")
        self.assertEqual(msg.delivery_info.get("exchange"), "task_exchange")
        body = json.loads(msg.body)
        self.assertEqual(body, [[1], {"k": "v"}, {"callbacks": None, "errbacks": None, "chain": None,
                                                   "chord": None}])

    def fetch_platform_copy(self, tid):
        """basic_get from platform.fifo until the copy of task tid turns up (others are acked away)."""
        with sb.connection() as conn:
            ch = conn.default_channel

            def find():
                while True:
                    m = ch.basic_get("platform.fifo", no_ack=False)
                    if m is None:
                        return None
                    ch.basic_ack(m.delivery_tag)
                    if (m.headers or {}).get("id") == tid:
                        return m
            return S.wait_for(find, 10, 0.1, "the copy of %s in platform.fifo" % tid)

    def test_started_row_written_by_python(self):
        # task_track_started: the Python worker stores STARTED {'pid': int, 'hostname': str} while it runs.
        tid = sb.send("export.sleep", "--args", "[3]")

        def started():
            doc = json.loads(sb.toolbox("result", tid).stdout)
            return doc if doc["status"] != "PENDING" else None
        doc = S.wait_for(started, 30, 0.05, "a row for %s" % tid)
        self.assertEqual(doc["status"], "STARTED", doc)
        self.assertEqual(sorted(doc["result"]), ["hostname", "pid"])
        self.assertEqual(doc["result"]["hostname"], "py@interop")
        self.assertIsInstance(doc["result"]["pid"], int)
        self.assertIsNone(doc["date_done"])
        rc, doc = sb.result(tid, timeout=30)
        self.assertSuccess(doc, rc, 3)

    def test_result_of_unknown_task_is_pending(self):
        r = sb.toolbox("result", "00000000-0000-4000-8000-000000000000")
        doc = json.loads(r.stdout)
        self.assertEqual(doc["status"], "PENDING")
        self.assertIsNone(doc["result"])


if __name__ == "__main__":
    S.main()
