#!/usr/bin/python3
# Usage: /usr/bin/python3 fuzz/gen_celery_seeds.py fuzz/corpus/wire_decode   (needs python3-celery)
"""Capture real Celery 5.2 task messages (as its producer builds them) as fuzz seeds:
u16 BE length of the AMQP property block, the block, then the body."""
import datetime, struct, sys, uuid
import amqp
from celery import Celery, chain, group, signature
from kombu import serialization

out = sys.argv[1]
app = Celery("seeds", broker="memory://")
app.conf.task_protocol = 2

def capture(name, task, args=(), kwargs=None, serializer="json", **opts):
    tid = str(uuid.UUID(int=abs(hash(name)) % (1 << 122) | (4 << 76)))
    m = app.amqp.as_task_v2(tid, task, args=args, kwargs=kwargs or {}, **opts)
    ctype, enc, body = serialization.dumps(m.body, serializer=serializer)
    props = dict(m.properties)
    msg = amqp.Message(body if isinstance(body, bytes) else body.encode(), content_type=ctype,
                       content_encoding=enc, application_headers=m.headers, delivery_mode=2, priority=0,
                       correlation_id=props.get("correlation_id"), reply_to=props.get("reply_to") or None)
    block = msg._serialize_properties()
    with open("%s/celery52_%s" % (out, name), "wb") as f:
        f.write(struct.pack(">H", len(block)) + block + msg.body)

capture("add", "msg.add", (2, 3))
capture("kwargs_unicode", "msg.echo", (), {"text": "h\u00e9llo \u2603", "n": [1, 2.5, None, True]})
capture("countdown_expires", "msg.add", (1, 1), eta=datetime.datetime(2026, 11, 22, 12, 0, 0, tzinfo=datetime.timezone.utc),
        expires=datetime.datetime(2026, 11, 22, 13, 0, 0, tzinfo=datetime.timezone.utc))
capture("limits_retries", "msg.sleep", (1,), time_limit=60, soft_time_limit=50, retries=2)
capture("chain", "msg.add", (2, 3), chain=[dict(signature("msg.add", args=(10,))), dict(signature("msg.echo"))])
capture("callbacks", "msg.fail", ("x",), callbacks=[dict(signature("msg.echo", args=("ok",)))],
        errbacks=[dict(signature("msg.echo", args=("err",)))])
capture("group", "msg.add", (1, 2), group_id=str(uuid.uuid4()), group_index=3)
capture("family", "export.project", (7,), root_id=str(uuid.uuid4()), parent_id=str(uuid.uuid4()),
        shadow="export.project:7")
capture("pickle", "msg.add", (2, 3), serializer="pickle")
capture("yaml", "msg.add", (2, 3), serializer="yaml")
print("ok")
