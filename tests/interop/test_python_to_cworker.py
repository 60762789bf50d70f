#!/usr/bin/python3
"""Issue 3 ("Done when"): a Python Celery 5.2 client against the C msg-worker.

`msg-worker --env test --concurrency 2` runs in sandbox t_interop_cw; the tests send with Celery's own
send_task / signatures / chain and read results with AsyncResult over the database backend (worker role),
so every message the worker reads and every row it writes go through real Celery code. Remote control
(app.control.ping / revoke) goes through kombu's pidbox; malformed messages are published raw with kombu.
"""
import datetime
import json
import os
import sys
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import interop_support as S  # noqa: E402

SANDBOX = "t_interop_cw"
T = 30  # seconds to wait for any one result
HOSTNAME = "cw@interop"

sb = None
worker = None
app = None


def setUpModule():
    global sb, worker, app
    sb = S.Sandbox.create(SANDBOX)
    import interop_app
    # A client may read with the worker role: SELECT on celery_taskmeta is all AsyncResult needs.
    app = interop_app.make_app(sb.broker_url, sb.backend_url, name="interop_client")
    worker = sb.start_msg_worker("--concurrency", "2", "--hostname", HOSTNAME)
    try:
        sb.wait_consumers("msg", worker)
    except BaseException:
        tearDownModule()
        raise


def tearDownModule():
    global worker
    if app is not None:
        app.close()
    rc = None
    log = ""
    if worker is not None:
        alive = worker.alive()
        log = worker.tail()
        rc = worker.stop()
        worker = None
    if sb is not None:
        sb.close()
    if rc is not None and (not alive or rc != 0):
        raise AssertionError("msg-worker %s (exit status %s; 0 expected after SIGTERM)\n%s"
                             % ("had died during the tests" if not alive else "did not shut down cleanly",
                                rc, log))


def send(name, *args, **options):
    return app.send_task(name, args=args, **options)


class PythonToCWorker(unittest.TestCase):
    maxDiff = None

    def setUp(self):
        self.assertTrue(worker.alive(), "msg-worker is not running\n" + worker.tail())

    def get(self, result, timeout=T):
        try:
            return result.get(timeout=timeout, interval=0.05)
        except Exception as e:
            if type(e).__name__ == "TimeoutError":
                self.fail("no result for %s within %s s (state %s)\n%s" % (result.id, timeout, result.state,
                                                                           worker.tail()))
            raise

    def get_exception(self, result, timeout=T):
        """The exception .get() raises for a failed task (fails the test if it succeeds)."""
        try:
            value = self.get(result, timeout)
        except AssertionError:
            raise
        except Exception as e:
            return e
        self.fail("%s succeeded with %r, expected a failure" % (result.id, value))

    def assert_add_works(self):
        self.assertEqual(self.get(send("msg.add", 40, 2)), 42)
        self.assertTrue(worker.alive(), worker.tail())

    # ---- basic results --------------------------------------------------------------------------
    def test_add(self):
        r = send("msg.add", 2, 3)
        self.assertEqual(self.get(r), 5)
        self.assertEqual(r.state, "SUCCESS")
        self.assertIsNotNone(r.date_done)
        # via a signature, with kwargs
        self.assertEqual(self.get(app.signature("msg.add", kwargs={"a": 1.5, "b": 2}).apply_async()), 3.5)

    def test_echo_round_trip(self):
        value = {"s": "h\u00e9llo \u2603 \U0001F600", "n": None, "f": [0.1, -2.5, 1e300], "b": [True, False],
                 "i": [2 ** 63 - 1, -2 ** 63, 0, 300, 70000], "nested": [[], {}, [1, [2, {"k": []}]]]}
        self.assertEqual(self.get(send("msg.echo", value)), value)

    def test_fail_raises_value_error(self):
        r = send("msg.fail", "boom")
        e = self.get_exception(r)
        self.assertIs(type(e), ValueError, repr(e))
        self.assertEqual(str(e), "boom")
        self.assertEqual(r.state, "FAILURE")
        self.assertIsNotNone(r.date_done)

    def test_started_visible(self):
        r = send("msg.sleep", 3)
        S.wait_for(lambda: r.state == "STARTED", 20, 0.05, "STARTED of msg.sleep(3) (state %s)" % r.state)
        info = r.info
        self.assertIsInstance(info, dict)
        self.assertIsInstance(info.get("pid"), int)
        self.assertIsInstance(info.get("hostname"), str)
        self.assertIsNone(r.date_done)
        self.assertEqual(self.get(r), 3)

    # ---- workflow -------------------------------------------------------------------------------
    def test_chain(self):
        from celery import chain
        c = chain(app.signature("msg.add", args=(2, 3)), app.signature("msg.add", args=(10,)))
        r = c.apply_async()
        self.assertEqual(self.get(r), 15)
        self.assertEqual(self.get(r.parent), 5)

    def test_link_callback(self):
        cb = app.signature("msg.echo")
        cb_result = cb.freeze()
        r = send("msg.add", 2, 3, link=cb)
        self.assertEqual(self.get(r), 5)
        self.assertEqual(self.get(cb_result), 5)  # the parent's return value as first argument

    def test_link_error_errback(self):
        eb = app.signature("msg.echo")
        eb_result = eb.freeze()
        r = send("msg.fail", "for the errback", link_error=eb)
        self.assertIsInstance(self.get_exception(r), ValueError)
        # An errback that is not a local Python task is called with the failed task's id.
        self.assertEqual(self.get(eb_result), r.id)

    def test_group(self):
        from celery import group
        g = group(app.signature("msg.add", args=(1, 1)), app.signature("msg.add", args=(2, 2)),
                  app.signature("msg.echo", args=("x",))).apply_async()
        self.assertEqual(g.get(timeout=T, interval=0.05), [2, 4, "x"])

    def test_ignore_result(self):
        # No row for the task itself (neither STARTED nor SUCCESS); its callback shows that it ran.
        cb = app.signature("msg.echo")
        cb_result = cb.freeze()
        r = send("msg.add", 20, 1, ignore_result=True, link=cb)
        self.assertEqual(self.get(cb_result), 21)
        self.assertEqual(sb.sql("SELECT status FROM celery_taskmeta WHERE task_id = %s", (r.id,)), [])

    def test_flaky_retries_then_succeeds(self):
        r = send("msg.flaky", 2)
        self.assertEqual(self.get(r), 2)
        self.assertEqual(r.state, "SUCCESS")

    # ---- options --------------------------------------------------------------------------------
    def test_countdown(self):
        t0 = S.utcnow()
        r = send("msg.add", 1, 1, countdown=2)
        self.assertEqual(self.get(r), 2)
        done = r.date_done
        if isinstance(done, str):
            done = datetime.datetime.fromisoformat(done)
        if done.tzinfo is not None:
            done = done.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        waited = (done - t0).total_seconds()
        self.assertGreaterEqual(waited, 1.9, "done %.3f s after sending, countdown was 2 s" % waited)

    def test_expired_with_countdown(self):
        r = send("msg.add", 1, 2, expires=1, countdown=3)
        e = self.get_exception(r)
        self.assertEqual(type(e).__name__, "TaskRevokedError", repr(e))
        self.assertEqual(r.state, "REVOKED")

    def test_expired_in_the_past(self):
        # Celery sets the AMQP expiration to 0 here: RabbitMQ delivers the message only because the
        # worker is idle and has prefetch room, and the worker must then discard it as expired.
        past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
        r = send("msg.add", 1, 2, expires=past)
        e = self.get_exception(r)
        self.assertEqual(type(e).__name__, "TaskRevokedError", repr(e))
        self.assertEqual(r.state, "REVOKED")

    def test_eta_in_the_past_runs_at_once(self):
        r = send("msg.add", 1, 2, eta=datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc))
        self.assertEqual(self.get(r), 3)

    def test_extra_headers_and_shadow_are_accepted(self):
        r = send("msg.add", 1, 2, headers={"x-custom": "y", "n": 2 ** 40, "l": [1, None]}, shadow="a.shadow",
                 priority=3, retries=0)
        self.assertEqual(self.get(r), 3)

    def test_values_json_cannot_carry(self):
        # Python's json writes ints beyond int64 as digits and NaN/Infinity as bare tokens
        # (celery-wire.md §1.4). The worker must either run the task with the exact value or fail it
        # visibly (InvalidTaskError) -- never crash, never leave the client waiting.
        import math
        for value in (2 ** 70, -2 ** 64, float("nan"), [float("inf"), float("-inf")]):
            with self.subTest(value=value):
                r = send("msg.echo", value)
                try:
                    got = self.get(r)
                except AssertionError:
                    raise
                except Exception as e:
                    self.assertEqual(type(e).__name__, "InvalidTaskError", repr(e))
                    self.assertEqual(r.state, "FAILURE")
                else:
                    same = (math.isnan(got) if isinstance(value, float) and math.isnan(value) else got == value)
                    self.assertTrue(same, "echo(%r) returned %r" % (value, got))
        self.assert_add_works()

    def test_hard_time_limit(self):
        t0 = time.monotonic()
        r = send("msg.sleep", 10, time_limit=1)
        e = self.get_exception(r)
        self.assertEqual(type(e).__name__, "TimeLimitExceeded", repr(e))
        self.assertEqual(r.state, "FAILURE")
        self.assertLess(time.monotonic() - t0, 9, "the 10 s task was not stopped at its 1 s limit")
        self.assert_add_works()

    def test_soft_time_limit(self):
        r = send("msg.sleep", 10, soft_time_limit=1, time_limit=5)
        e = self.get_exception(r)
        self.assertEqual(type(e).__name__, "SoftTimeLimitExceeded", repr(e))
        self.assert_add_works()

    def test_crash_gives_worker_lost(self):
        r = send("msg.crash")
        e = self.get_exception(r)
        self.assertEqual(type(e).__name__, "WorkerLostError", repr(e))
        self.assertEqual(r.state, "FAILURE")
        self.assert_add_works()

    def test_not_registered(self):
        r = send("msg.nope", 1)
        e = self.get_exception(r)
        self.assertEqual(type(e).__name__, "NotRegistered", repr(e))
        self.assertIn("msg.nope", str(e))
        self.assertEqual(r.state, "FAILURE")
        self.assert_add_works()

    # ---- remote control (celery.pidbox) -----------------------------------------------------------
    def test_control_ping(self):
        self.assertEqual(app.control.ping(destination=[HOSTNAME], timeout=10, limit=1),
                         [{HOSTNAME: {"ok": "pong"}}])

    def test_control_inspect(self):
        insp = app.control.inspect(destination=[HOSTNAME], timeout=10)
        self.assertIn("msg.add", insp.registered()[HOSTNAME])
        r = send("msg.sleep", 2)
        S.wait_for(lambda: r.state == "STARTED", 20, 0.05, "STARTED of msg.sleep(2)")
        active = insp.active()[HOSTNAME]
        self.assertIn(r.id, [a["id"] for a in active], active)
        later = send("msg.add", 1, 1, countdown=3)
        S.wait_for(lambda: later.id in [s["request"]["id"] for s in insp.scheduled()[HOSTNAME]], 10, 0.1,
                   "the countdown task listed as scheduled")
        stats = insp.stats()[HOSTNAME]
        self.assertEqual(stats["pool"]["max-concurrency"], 2)
        self.assertEqual([q["name"] for q in insp.active_queues()[HOSTNAME]], ["msg"])
        self.assertEqual(r.get(timeout=30), 2)
        self.assertEqual(later.get(timeout=30), 2)

    def test_control_revoke_waiting_task(self):
        r = send("msg.add", 1, 2, countdown=5)  # held by the worker when the revoke arrives
        replies = app.control.revoke(r.id, destination=[HOSTNAME], reply=True, timeout=10, limit=1)
        self.assertEqual(len(replies), 1, replies)
        e = self.get_exception(r)
        self.assertEqual(type(e).__name__, "TaskRevokedError", repr(e))
        self.assertEqual(r.state, "REVOKED")

    def test_control_revoke_terminate_running_task(self):
        t0 = time.monotonic()
        r = send("msg.sleep", 20)
        S.wait_for(lambda: r.state == "STARTED", 20, 0.05, "STARTED of msg.sleep(20)")
        replies = app.control.revoke(r.id, destination=[HOSTNAME], terminate=True, reply=True, timeout=10,
                                     limit=1)
        self.assertEqual(len(replies), 1, replies)
        e = self.get_exception(r)
        self.assertEqual(type(e).__name__, "TaskRevokedError", repr(e))
        self.assertEqual(r.state, "REVOKED")
        self.assertLess(time.monotonic() - t0, 18, "the running task was not terminated")
        self.assert_add_works()

    # ---- hostile input ---------------------------------------------------------------------------
    def test_malformed_messages_do_not_kill_the_worker(self):
        def headers(**over):
            tid = str(uuid.uuid4())
            h = {"lang": "py", "task": "msg.add", "id": tid, "shadow": None, "eta": None, "expires": None,
                 "group": None, "group_index": None, "retries": 0, "timelimit": [None, None],
                 "root_id": tid, "parent_id": None, "argsrepr": "(1, 2)", "kwargsrepr": "{}",
                 "origin": "gen0@interop", "ignore_result": False}
            h.update(over)
            return {k: v for k, v in h.items() if v != "<absent>"}

        good_embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
        JSON = "application/json"
        bad = [
            ("2-element body", headers(), json.dumps([[1, 2], {}]), JSON),
            ("non-JSON body", headers(), "this is {not json", JSON),
            ("empty body", headers(), "", JSON),
            ("missing id header", headers(id="<absent>"), json.dumps([[1, 2], {}, good_embed]), JSON),
            ("missing task header", headers(task="<absent>"), json.dumps([[1, 2], {}, good_embed]), JSON),
            ("JSON object body", headers(), json.dumps({"x": 1}), JSON),
            ("kwargs not an object", headers(), json.dumps([[1], [], {}]), JSON),
            ("args not an array", headers(), json.dumps([{"a": 1}, {}, {}]), JSON),
            ("eta not a date", headers(eta="tomorrow"), json.dumps([[1, 2], {}, good_embed]), JSON),
            ("task header not a string", headers(task=5), json.dumps([[1, 2], {}, good_embed]), JSON),
            ("timelimit not an array", headers(timelimit="x"), json.dumps([[1, 2], {}, good_embed]), JSON),
            ("embed not an object", headers(), json.dumps([[1, 2], {}, [1]]), JSON),
            ("callbacks not signatures", headers(), json.dumps([[1, 2], {}, dict(good_embed, callbacks=[5])]),
             JSON),
            ("pickle content type", headers(), b"\x80\x04K\x01.", "application/x-python-serialize"),
        ]
        import kombu
        with sb.connection() as conn:
            producer = kombu.Producer(conn.default_channel)
            for what, h, body, ctype in bad:
                producer.publish(body, exchange="task_exchange", routing_key="msg", headers=h,
                                 content_type=ctype, content_encoding="utf-8" if ctype == JSON else "binary",
                                 delivery_mode=2, retry=False)
        # The worker survives all of them, keeps consuming, and the queue drains (nothing requeued forever).
        self.assert_add_works()
        S.wait_for(lambda: sb.queue_info("msg")[0] == 0, 20, 0.1, "queue msg to drain")
        self.assertEqual(sb.queue_info("msg")[1], 1, "msg-worker no longer consumes msg")
        # Nothing of them is left half-done in the result table (a row, if any, is in a ready state).
        ids = [h["id"] for _, h, _, _ in bad if "id" in h]
        rows = sb.sql("SELECT task_id, status FROM celery_taskmeta WHERE task_id = ANY(%s)", (ids,))
        self.assertFalse([r for r in rows if r[1] not in ("SUCCESS", "FAILURE", "REVOKED")], rows)
        self.assert_add_works()


if __name__ == "__main__":
    S.main()
