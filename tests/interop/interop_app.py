"""The Python Celery 5.2 side of the interoperability tests.

make_app() builds a Celery app with the project's topology (cadasta-workertoolbox's): one durable topic
exchange `task_exchange`, queues celery / platform.fifo (`#`) / msg / export, a router that sends each
task to the routing key before the first `.` of its name, and task_track_started on.

Imported as a module by `celery -A interop_app worker` (the Python *worker* of test_producer_to_python),
it reads its broker and backend from the environment (INTEROP_BROKER_URL, INTEROP_BACKEND_URL, a
postgresql:// URL; "db+" is added here) and registers the Python tasks export.add, export.echo,
export.fail, export.sleep, export.flaky, export.types and export.info. The test modules use make_app() directly as a *client*.
"""
import os
import time

from celery import Celery
from kombu import Exchange, Queue

TASK_EXCHANGE = Exchange("task_exchange", "topic")


def route(name, *args, **kwargs):
    return {"routing_key": name.split(".")[0], "exchange": TASK_EXCHANGE}


def make_app(broker_url, backend_url, name="interop"):
    """A Celery app in the project's topology. backend_url is a postgresql:// URL."""
    app = Celery(name, broker=broker_url, backend="db+" + backend_url)
    app.conf.update(
        task_default_exchange="task_exchange",
        task_default_exchange_type="topic",
        task_queues=[
            Queue("celery", TASK_EXCHANGE, routing_key="celery"),
            Queue("platform.fifo", TASK_EXCHANGE, routing_key="#"),
            Queue("msg", TASK_EXCHANGE, routing_key="msg"),
            Queue("export", TASK_EXCHANGE, routing_key="export"),
        ],
        task_routes=route,
        task_track_started=True,
        broker_connection_retry=True,
        broker_connection_max_retries=10,
        worker_hijack_root_logger=False,
        worker_prefetch_multiplier=4,
        result_expires=None,
    )
    return app


def register_python_tasks(app):
    """The export.* tasks the Python worker runs for the C producer."""

    @app.task(name="export.add")
    def add(a, b):
        return a + b

    @app.task(name="export.echo")
    def echo(x):
        return x

    @app.task(name="export.fail")
    def fail(text):
        raise ValueError(text)

    @app.task(name="export.sleep")
    def sleep(seconds):
        time.sleep(seconds)
        return seconds

    @app.task(name="export.flaky", bind=True, max_retries=5)
    def flaky(self, times):
        """Retries itself `times` times (Python republishes the message), then returns the count."""
        if self.request.retries < times:
            raise self.retry(countdown=0.1, exc=RuntimeError("try again"))
        return self.request.retries

    @app.task(name="export.types")
    def types(case):
        """Python values whose pickles the C reader must map to JSON (toolbox/pickle.h)."""
        shared = [1, "s"]
        return {
            "containers": {"tuple": (1, (2, 3)), "set": {7}, "frozenset": frozenset(["f"]),
                           "bytes": b"ab", "bytearray": bytearray(b"cd"), "empty_tuple": ()},
            "keys": {1: "int", 2.5: "float", False: "bool", None: "none", "s": "str"},
            "shared": [shared, shared, {"again": shared}],
            "datetime": __import__("datetime").datetime(2020, 1, 2, 3, 4, 5),
            "bigint": 2 ** 70,
        }[case]

    @app.task(name="export.info", bind=True)
    def info(self, *args, **kwargs):
        """What the Python worker understood of the message, as plain data."""
        r = self.request
        di = r.delivery_info or {}
        out = {
            "id": r.id,
            "task": r.task,
            "args": list(args),
            "kwargs": kwargs,
            "root_id": r.root_id,
            "parent_id": r.parent_id,
            "retries": r.retries,
            "timelimit": list(r.timelimit) if r.timelimit else None,
            "eta": r.eta,
            "expires": r.expires,
            "priority": di.get("priority"),
            "routing_key": di.get("routing_key"),
            "exchange": di.get("exchange"),
        }
        # Custom headers are merged into the request context (Request._request_dict = headers).
        for k in ("creator_id", "related_content_type_id", "related_object_id", "is_result"):
            out[k] = getattr(r, k, None)
        return out

    return add, echo, fail, sleep, flaky, types, info


if os.environ.get("INTEROP_BROKER_URL"):
    app = make_app(os.environ["INTEROP_BROKER_URL"], os.environ["INTEROP_BACKEND_URL"])
    register_python_tasks(app)
