/*
 * control.c - remote control over Celery's pidbox (celery-wire.md §3.5).
 *
 * Each worker consumes `<hostname>.celery.pidbox`, bound to the fanout
 * exchange `celery.pidbox`, with kombu's exact declare arguments, so
 * `app.control.ping()` and `app.control.revoke(id, terminate=True)` from
 * Python reach a C worker as they reach a Python one. One more method,
 * `interrupt` {task_id, action: "retry"|"cancel", countdown}, carries the
 * interrupt levels of older job systems: a running task is stopped and either
 * put back with a delay (RETRY) or cancelled (REVOKED 'terminated'). The
 * inspect methods celery inspect and Flower use (active, reserved, scheduled,
 * registered, stats, active_queues) answer in Celery's shapes.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "toolbox/log.h"
#include "worker_internal.h"

#define REVOKED_MAX 10000

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char PIDBOX_EXCHANGE[] = "celery.pidbox";
static const char REPLY_EXCHANGE[] = "reply.celery.pidbox";

tbx_status tbx_control_start(tbx_worker *w, tbx_error *err)
{
    tbx_broker *b = w->b;
    /* kombu Mailbox: fanout, durable=False, auto_delete=False. */
    amqp_exchange_declare(b->conn, b->channel, amqp_cstring_bytes(PIDBOX_EXCHANGE), amqp_cstring_bytes("fanout"),
                          0, 0, 0, 0, amqp_empty_table);
    tbx_status st = tbx_broker_check(b, amqp_get_rpc_reply(b->conn), "declaring the pidbox exchange", err);
    if (st)
        return st;
    amqp_exchange_declare(b->conn, b->channel, amqp_cstring_bytes(REPLY_EXCHANGE), amqp_cstring_bytes("direct"),
                          0, 0, 0, 0, amqp_empty_table);
    if ((st = tbx_broker_check(b, amqp_get_rpc_reply(b->conn), "declaring the pidbox reply exchange", err)))
        return st;
    char q[400];
    snprintf(q, sizeof q, "%s.celery.pidbox", w->hostname);
    amqp_table_entry_t args[2] = {
        {amqp_cstring_bytes("x-message-ttl"), {AMQP_FIELD_KIND_I32, {.i32 = 300000}}},
        {amqp_cstring_bytes("x-expires"), {AMQP_FIELD_KIND_I32, {.i32 = 10000}}},
    };
    amqp_table_t t = {2, args};
    amqp_queue_declare(b->conn, b->channel, amqp_cstring_bytes(q), 0, 0, 0, 1, t);
    if ((st = tbx_broker_check(b, amqp_get_rpc_reply(b->conn), "declaring the pidbox queue", err)))
        return st;
    amqp_queue_bind(b->conn, b->channel, amqp_cstring_bytes(q), amqp_cstring_bytes(PIDBOX_EXCHANGE),
                    amqp_empty_bytes, amqp_empty_table);
    if ((st = tbx_broker_check(b, amqp_get_rpc_reply(b->conn), "binding the pidbox queue", err)))
        return st;
    amqp_basic_consume_ok_t *ok = amqp_basic_consume(b->conn, b->channel, amqp_cstring_bytes(q),
                                                     amqp_empty_bytes, 0, 1, 0, amqp_empty_table);
    if ((st = tbx_broker_check(b, amqp_get_rpc_reply(b->conn), "consuming the pidbox queue", err)))
        return st;
    amqp_bytes_free(w->ctl_tag);
    w->ctl_tag = amqp_bytes_malloc_dup(ok->consumer_tag);
    return TBX_OK;
}

void tbx_control_free(tbx_worker *w)
{
    amqp_bytes_free(w->ctl_tag);
    w->ctl_tag = amqp_empty_bytes;
    for (size_t i = 0; i < w->nrevoked; i++)
        free(w->revoked[i]);
    free(w->revoked);
    w->revoked = NULL;
    w->nrevoked = 0;
}

int tbx_control_is_revoked(const tbx_worker *w, const char *id)
{
    for (size_t i = 0; i < w->nrevoked; i++)
        if (!strcmp(w->revoked[i], id))
            return 1;
    return 0;
}

static void remember_revoked(tbx_worker *w, const char *id)
{
    if (tbx_control_is_revoked(w, id))
        return;
    if (!w->revoked && !(w->revoked = calloc(REVOKED_MAX, sizeof *w->revoked)))
        return;
    char *copy = strdup(id);
    if (!copy)
        return;
    if (w->nrevoked < REVOKED_MAX) {
        w->revoked[w->nrevoked++] = copy;
    } else {
        free(w->revoked[w->revoked_next]);
        w->revoked[w->revoked_next] = copy;
        w->revoked_next = (w->revoked_next + 1) % REVOKED_MAX;
    }
}

/* Apply an interrupt to task id wherever it is. Returns a short description. */
static const char *interrupt_task(tbx_worker *w, const char *id, int level, double countdown)
{
    for (int i = 0; i < w->concurrency; i++) {
        child *c = &w->children[i];
        if (c->pid > 0 && c->head && !c->kill_reason && !strcmp(c->head->msg->id, id)) {
            c->kill_reason = level == INT_RETRY ? KILL_RETRY : KILL_REVOKE;
            c->retry_countdown = countdown;
            kill(c->pid, SIGKILL);
            return level == INT_RETRY ? "running task stopped, to be retried" : "running task terminated";
        }
        for (job *j = c->head; j; j = j->next)
            if (!strcmp(j->msg->id, id)) {
                j->interrupt = level;
                j->interrupt_countdown = countdown;
                return "queued task marked";
            }
    }
    for (job *j = w->ready_head; j; j = j->next)
        if (!strcmp(j->msg->id, id)) {
            j->interrupt = level;
            j->interrupt_countdown = countdown;
            return "waiting task marked";
        }
    for (size_t k = 0; k < w->neta; k++)
        if (!strcmp(w->eta_heap[k]->msg->id, id)) {
            w->eta_heap[k]->interrupt = level;
            w->eta_heap[k]->interrupt_countdown = countdown;
            return "scheduled task marked";
        }
    return NULL;
}

static void reply(tbx_worker *w, const json_t *msg, json_t *result)
{
    json_t *to = json_object_get(msg, "reply_to");
    const char *ex = json_string_value(json_object_get(to, "exchange"));
    const char *rk = json_string_value(json_object_get(to, "routing_key"));
    const char *ticket = json_string_value(json_object_get(msg, "ticket"));
    if (!ex || !rk || !w->b || w->b->broken) {
        json_decref(result);
        return;
    }
    json_t *body = json_object();
    json_object_set_new(body, w->hostname, result);
    char *text = json_dumps(body, JSON_ENCODE_ANY);
    json_decref(body);
    if (!text)
        return;
    amqp_table_entry_t h[1] = {
        {amqp_cstring_bytes("ticket"), {AMQP_FIELD_KIND_UTF8, {.bytes = amqp_cstring_bytes(ticket ? ticket : "")}}},
    };
    amqp_basic_properties_t p = {0};
    p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_CONTENT_ENCODING_FLAG | AMQP_BASIC_HEADERS_FLAG |
               AMQP_BASIC_DELIVERY_MODE_FLAG;
    p.content_type = amqp_cstring_bytes("application/json");
    p.content_encoding = amqp_cstring_bytes("utf-8");
    p.headers.num_entries = 1;
    p.headers.entries = h;
    p.delivery_mode = 1;
    amqp_basic_publish(w->b->conn, w->b->channel, amqp_cstring_bytes(ex), amqp_cstring_bytes(rk), 0, 0, &p,
                       amqp_cstring_bytes(text));
    free(text);
}

/* Request.info() of Celery 5.2 for a job held by this worker. */
static json_t *job_info(const tbx_worker *w, const job *j, pid_t pid)
{
    json_t *o = json_pack("{s:s, s:s, s:O, s:O, s:s, s:s, s:b, s:{s:s, s:s?, s:i, s:b}}", "id", j->msg->id,
                          "name", j->msg->task, "args", j->msg->args, "kwargs", j->msg->kwargs, "type",
                          j->msg->task, "hostname", w->hostname, "acknowledged", 0, "delivery_info",
                          "exchange", tbx_config_str(w->cfg, "task_default_exchange"), "routing_key",
                          j->msg->routing_key, "priority", j->msg->priority, "redelivered", j->redelivered);
    if (o && pid > 0) {
        json_object_set_new(o, "worker_pid", json_integer(pid));
        json_object_set_new(o, "time_start", json_real(wall_now() - (tbx_mono() - j->started)));
    }
    return o;
}

/* celery inspect: active, reserved, scheduled, registered, stats, active_queues. */
static json_t *inspect(tbx_worker *w, const char *method)
{
    if (!strcmp(method, "registered")) {
        json_t *a = json_array();
        for (size_t i = 0; i < w->nhandlers; i++)
            json_array_append_new(a, json_string(w->handlers[i].name));
        return a;
    }
    if (!strcmp(method, "active") || !strcmp(method, "reserved")) {
        int active = method[0] == 'a';
        json_t *a = json_array();
        for (int i = 0; i < w->concurrency; i++)
            for (job *j = w->children[i].head; j; j = j->next)
                if (active == (j == w->children[i].head))
                    json_array_append_new(a, job_info(w, j, active ? w->children[i].pid : 0));
        if (!active)
            for (job *j = w->ready_head; j; j = j->next)
                json_array_append_new(a, job_info(w, j, 0));
        return a;
    }
    if (!strcmp(method, "scheduled")) {
        json_t *a = json_array();
        for (size_t i = 0; i < w->neta; i++) {
            job *j = w->eta_heap[i];
            json_array_append_new(a, json_pack("{s:s?, s:i, s:o}", "eta", j->msg->eta, "priority",
                                               j->msg->priority, "request", job_info(w, j, 0)));
        }
        return a;
    }
    if (!strcmp(method, "stats")) {
        json_t *total = json_object(), *procs = json_array();
        for (size_t i = 0; i < w->nhandlers; i++)
            if (w->handlers[i].done)
                json_object_set_new(total, w->handlers[i].name, json_integer((json_int_t)w->handlers[i].done));
        for (int i = 0; i < w->concurrency; i++)
            if (w->children[i].pid > 0)
                json_array_append_new(procs, json_integer(w->children[i].pid));
        return json_pack("{s:o, s:i, s:s, s:i, s:{s:i, s:o, s:s}, s:i, s:{s:s}}", "total", total, "pid",
                         (int)getpid(), "clock", "0", "uptime", (int)(tbx_mono() - w->started_mono), "pool",
                         "max-concurrency", w->concurrency, "processes", procs, "implementation",
                         "toolbox:prefork", "prefetch_count", w->prefetch, "broker", "transport", "amqp");
    }
    if (!strcmp(method, "active_queues")) {
        json_t *a = json_array();
        const char *ex = tbx_config_str(w->cfg, "task_default_exchange");
        const char *type = tbx_config_str(w->cfg, "task_default_exchange_type");
        for (size_t i = 0; i < w->nqueues; i++)
            json_array_append_new(a, json_pack("{s:s, s:{s:s, s:s, s:b, s:b}, s:s, s:b, s:b, s:b, s:b}", "name",
                                               w->queues[i], "exchange", "name", ex, "type", type, "durable", 1,
                                               "auto_delete", 0, "routing_key", w->queues[i], "durable", 1,
                                               "exclusive", 0, "auto_delete", 0, "no_ack", 0));
        return a;
    }
    return NULL;
}

static int for_me(const tbx_worker *w, const json_t *msg)
{
    const json_t *dest = json_object_get(msg, "destination");
    if (!json_is_array(dest) || json_array_size(dest) == 0)
        return 1;
    size_t i;
    const json_t *d;
    json_array_foreach(dest, i, d) if (json_is_string(d) && !strcmp(json_string_value(d), w->hostname)) return 1;
    return 0;
}

void tbx_control_on_message(tbx_worker *w, const amqp_envelope_t *env)
{
    json_t *msg = json_loadb(env->message.body.bytes, env->message.body.len, 0, NULL);
    const char *method = json_string_value(json_object_get(msg, "method"));
    if (!msg || !method) {
        tbx_log(TBX_LOG_WARNING, "ignored a malformed remote-control message");
        json_decref(msg);
        return;
    }
    if (!for_me(w, msg)) {
        json_decref(msg);
        return;
    }
    json_t *args = json_object_get(msg, "arguments");
    if (!strcmp(method, "ping")) {
        reply(w, msg, json_pack("{s:s}", "ok", "pong"));
    } else if (!strcmp(method, "revoke") || !strcmp(method, "interrupt")) {
        int is_revoke = !strcmp(method, "revoke");
        json_t *ids = json_object_get(args, "task_id");
        json_t *list = json_is_array(ids) ? json_incref(ids) : json_pack("[O]", ids ? ids : json_null());
        const char *how = json_string_value(json_object_get(args, "action"));
        int act = is_revoke ? INT_CANCEL : (how && !strcmp(how, "retry")) ? INT_RETRY : INT_CANCEL;
        int terminate = !is_revoke || json_is_true(json_object_get(args, "terminate"));
        double countdown = json_number_value(json_object_get(args, "countdown"));
        json_t *done = json_array();
        size_t i;
        json_t *v;
        json_array_foreach(list, i, v) {
            const char *id = json_string_value(v);
            if (!id)
                continue;
            if (act == INT_CANCEL)
                remember_revoked(w, id);
            const char *what = terminate ? interrupt_task(w, id, act, countdown) : NULL;
            tbx_log(TBX_LOG_INFO, "%s %s: %s", method, id, what ? what : "remembered");
            json_array_append_new(done, json_string(id));
        }
        reply(w, msg, json_pack("{s:s}", "ok", json_array_size(done) ? "tasks flagged" : "no task id"));
        json_decref(done);
        json_decref(list);
    } else {
        json_t *r = inspect(w, method);
        reply(w, msg, r ? r : json_pack("{s:s}", "error", "unknown method"));
    }
    json_decref(msg);
}
