/*
 * worker_run.c - the worker's main loop.
 *
 * One thread owns the broker connection, the database connection and the
 * pool. Each turn of the loop: read broker frames (deliveries), move due ETA
 * jobs to the ready queue, dispatch ready jobs to children, read outcomes,
 * enforce time limits, reap dead children, commit the result batch and then
 * send the acks it was holding, and finally poll() until something happens.
 * Nothing is acknowledged before its task's final row is committed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pg.h"
#include "producer_internal.h"
#include "toolbox/log.h"
#include "toolbox/pickle.h"
#include "toolbox/result.h"
#include "topology.h"
#include "wire.h"
#include "worker_internal.h"

#define FLUSH_AFTER 0.010     /* seconds a row may wait for more rows while busy */
#define SHORT_TASK 0.005      /* a running head younger than this may have tasks queued behind it */
#define PARK_MAX_SHIFT 12      /* delay queues hold park_min_ttl * 2^k seconds, k <= 12 */

static double wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static tbx_worker *sig_worker;

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char c = (unsigned char)sig;
    if (sig_worker && sig_worker->sigpipe[1] >= 0) {
        ssize_t r = write(sig_worker->sigpipe[1], &c, 1);
        (void)r;
    }
    errno = saved;
}

void tbx_job_free(job *j)
{
    if (!j)
        return;
    tbx_task_msg_free(j->msg);
    free(j->body);
    free(j);
}

/* ---- broker actions ---------------------------------------------------------- */

void tbx_act_now(tbx_worker *w, uint64_t tag, unsigned gen, int kind)
{
    if (!w->b || gen != w->gen || w->b->broken || !w->b->channel)
        return; /* the delivery died with its connection; the broker redelivers it */
    int rc;
    if (kind == ACT_ACK)
        rc = amqp_basic_ack(w->b->conn, w->b->channel, tag, 0);
    else
        rc = amqp_basic_reject(w->b->conn, w->b->channel, tag, kind == ACT_REQUEUE);
    if (rc != AMQP_STATUS_OK) {
        tbx_error err = {0};
        tbx_broker_status(w->b, rc, "acknowledging", &err);
        tbx_log(TBX_LOG_ERROR, "%s", err.msg);
    }
}

/* Queue an action behind the uncommitted rows, or do it now if there are none. */
void tbx_act_after_commit(tbx_worker *w, const job *j, int kind)
{
    if (tbx_batch_len(w->batch) == 0 && w->nacts == 0) {
        tbx_act_now(w, j->tag, j->gen, kind);
        return;
    }
    if (w->nacts == w->capacts) {
        size_t cap = w->capacts ? w->capacts * 2 : 256;
        action *a = realloc(w->acts, cap * sizeof *a);
        if (!a) {
            tbx_log(TBX_LOG_ERROR, "out of memory queueing an ack; the broker will redeliver");
            return;
        }
        w->acts = a;
        w->capacts = cap;
    }
    w->acts[w->nacts++] = (action){j->tag, j->gen, kind};
}

void tbx_put_row(tbx_worker *w, const tbx_task_msg *m, const char *id, const char *status,
                 const unsigned char *pk, size_t len, const char *tb)
{
    if (tbx_batch_len(w->batch) == 0)
        w->batch_since = tbx_mono();
    tbx_row_ext ext = {0}, *e = NULL;
    char *args = NULL, *kwargs = NULL;
    if (w->result_extended && m) {
        /* Celery's result_extended columns: args/kwargs are JSON bytes, not pickles. */
        args = json_dumps(m->args, JSON_ENCODE_ANY);
        kwargs = json_dumps(m->kwargs, JSON_ENCODE_ANY);
        ext = (tbx_row_ext){m->task, args, kwargs, w->hostname, m->retries, m->routing_key};
        e = &ext;
    }
    if (tbx_batch_put(w->batch, id, status, pk, len, tb, e))
        tbx_log(TBX_LOG_ERROR, "out of memory storing the %s row of %s", status, id);
    free(args);
    free(kwargs);
}

/* A FAILURE/REVOKED row with an exception dict. */
void tbx_put_exc_row(tbx_worker *w, const tbx_task_msg *m, const char *id, const char *status,
                     const char *type, const char *module, const char *message, const char *tb)
{
    json_t *args = json_array();
    if (message)
        json_array_append_new(args, json_string(message));
    unsigned char *pk = NULL;
    size_t len = 0;
    if (tbx_pickle_dump_exception(type, module, args, &pk, &len, NULL) == TBX_OK)
        tbx_put_row(w, m, id, status, pk, len, tb);
    free(pk);
    json_decref(args);
}

/* The lowest delivery tag still held in memory (waiting, scheduled or running). */
static uint64_t lowest_held_tag(const tbx_worker *w)
{
    uint64_t low = UINT64_MAX;
    for (const job *j = w->ready_head; j; j = j->next)
        if (j->gen == w->gen && j->tag < low)
            low = j->tag;
    for (size_t i = 0; i < w->neta; i++)
        if (w->eta_heap[i]->gen == w->gen && w->eta_heap[i]->tag < low)
            low = w->eta_heap[i]->tag;
    for (int i = 0; w->children && i < w->concurrency; i++)
        for (const job *j = w->children[i].head; j; j = j->next)
            if (j->gen == w->gen && j->tag < low)
                low = j->tag;
    return low;
}

/* Send the actions the last commit released. Rejections go one by one; the acks
 * become one multiple-ack when no delivery still held sits below the highest. */
static void send_actions(tbx_worker *w)
{
    uint64_t top = 0;
    size_t nacks = 0;
    for (size_t i = 0; i < w->nacts; i++) {
        const action *a = &w->acts[i];
        if (a->kind != ACT_ACK || a->gen != w->gen) {
            tbx_act_now(w, a->tag, a->gen, a->kind);
        } else {
            nacks++;
            if (a->tag > top)
                top = a->tag;
        }
    }
    if (nacks > 1 && top < lowest_held_tag(w) && w->b && !w->b->broken && w->b->channel) {
        int rc = amqp_basic_ack(w->b->conn, w->b->channel, top, 1);
        if (rc != AMQP_STATUS_OK) {
            tbx_error err = {0};
            tbx_broker_status(w->b, rc, "acknowledging", &err);
            tbx_log(TBX_LOG_ERROR, "%s", err.msg);
        }
    } else {
        for (size_t i = 0; i < w->nacts; i++)
            if (w->acts[i].kind == ACT_ACK && w->acts[i].gen == w->gen)
                tbx_act_now(w, w->acts[i].tag, w->acts[i].gen, ACT_ACK);
    }
    w->nacts = 0;
}

static void commit(tbx_worker *w, double now)
{
    if (tbx_batch_len(w->batch) > 0) {
        if (!w->db || now < w->db_retry_at)
            return;
        tbx_error err = {0};
        tbx_status st = tbx_batch_commit(w->batch, w->db, w->result_extended, w->db_timeout,
                                         tbx_worker_keep_alive, w, &err);
        if (st) {
            tbx_log(TBX_LOG_ERROR, "%s (retrying in %.1f s; nothing is acknowledged meanwhile)",
                    err.msg, w->db_delay);
            w->db_retry_at = now + w->db_delay;
            w->db_delay = fmin(w->db_delay * 2, 30);
            if (st == TBX_ETIMEOUT || PQstatus(w->db) == CONNECTION_BAD) {
                PQreset(w->db);
                if (PQstatus(w->db) == CONNECTION_OK) {
                    tbx_log(TBX_LOG_INFO, "database connection restored");
                    w->db_retry_at = now;
                }
            }
            return;
        }
        w->db_delay = 0.5;
    }
    send_actions(w);
}

/* ---- broker connection --------------------------------------------------------- */

static void drop_unstarted(tbx_worker *w)
{
    /* Jobs not handed to a child belong to the dead connection: the broker redelivers them. */
    for (job *j = w->ready_head, *n; j; j = n) {
        n = j->next;
        tbx_job_free(j);
    }
    w->ready_head = w->ready_tail = NULL;
    for (size_t i = 0; i < w->neta; i++)
        tbx_job_free(w->eta_heap[i]);
    w->neta = 0;
}

static void apply_qos(tbx_worker *w)
{
    int want = w->prefetch + (int)w->neta;
    if (want > 65535)
        want = 65535;
    if (!w->b || w->b->broken || want == w->qos_applied)
        return;
    /* global=1: RabbitMQ's per-channel limit, which can be raised while consuming. */
    amqp_basic_qos(w->b->conn, w->b->channel, 0, (uint16_t)want, 1);
    tbx_error err = {0};
    if (tbx_broker_check(w->b, amqp_get_rpc_reply(w->b->conn), "setting the prefetch", &err))
        tbx_log(TBX_LOG_ERROR, "%s", err.msg);
    else
        w->qos_applied = want;
}

static tbx_status connect_broker(tbx_worker *w, tbx_error *err)
{
    tbx_status st = tbx_broker_open_cfg(&w->b, w->cfg, w->hostname, err);
    if (st)
        return st;
    w->gen++;
    w->qos_applied = 0;
    if ((st = tbx_topology_declare(w->b, w->cfg, err)))
        goto fail;
    for (size_t i = 0; i < w->nqueues; i++) {
        /* A queue outside the configured topology is declared with the same flags and bound by name. */
        amqp_queue_declare(w->b->conn, w->b->channel, amqp_cstring_bytes(w->queues[i]), 0, 1, 0, 0,
                           amqp_empty_table);
        if ((st = tbx_broker_check(w->b, amqp_get_rpc_reply(w->b->conn), "declaring a queue", err)))
            goto fail;
    }
    apply_qos(w);
    for (size_t i = 0; i < w->nqueues; i++) {
        amqp_basic_consume_ok_t *ok = amqp_basic_consume(w->b->conn, w->b->channel,
                                                         amqp_cstring_bytes(w->queues[i]),
                                                         amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
        if ((st = tbx_broker_check(w->b, amqp_get_rpc_reply(w->b->conn), "starting to consume", err)))
            goto fail;
        if (i < sizeof w->ctags / sizeof *w->ctags) {
            amqp_bytes_free(w->ctags[i]);
            w->ctags[i] = amqp_bytes_malloc_dup(ok->consumer_tag);
        }
    }
    w->consuming = 1;
    w->reconnect_delay = 1;
    tbx_error cerr = {0};
    if (tbx_control_start(w, &cerr))
        tbx_log(TBX_LOG_WARNING, "remote control unavailable: %s", cerr.msg);
    if (!w->b->channel && tbx_broker_reopen_channel(w->b, err))
        goto fail;
    return TBX_OK;
fail:
    tbx_broker_close(w->b);
    w->b = NULL;
    return st;
}

static void broker_lost(tbx_worker *w, const char *why)
{
    double wait = tbx_backoff(&w->reconnect_delay);
    tbx_log(TBX_LOG_ERROR, "broker connection lost: %s; reconnecting in %.1f s", why, wait);
    tbx_broker_close(w->b);
    w->b = NULL;
    w->consuming = 0;
    drop_unstarted(w);
    w->nacts = 0; /* their tags died with the channel */
    w->reconnect_at = tbx_mono() + wait;
}

/* ---- receiving --------------------------------------------------------------------- */

static int find_handler(const tbx_worker *w, const char *name)
{
    for (size_t i = 0; i < w->nhandlers; i++)
        if (!strcmp(w->handlers[i].name, name))
            return (int)i;
    return -1;
}

static void ready_push(tbx_worker *w, job *j)
{
    j->next = NULL;
    if (w->ready_tail)
        w->ready_tail->next = j;
    else
        w->ready_head = j;
    w->ready_tail = j;
}

static void ready_push_front(tbx_worker *w, job *j)
{
    j->next = w->ready_head;
    w->ready_head = j;
    if (!w->ready_tail)
        w->ready_tail = j;
}

static void heap_push(tbx_worker *w, job *j)
{
    if (w->neta == w->capeta) {
        size_t cap = w->capeta ? w->capeta * 2 : 64;
        job **h = realloc(w->eta_heap, cap * sizeof *h);
        if (!h) {
            ready_push(w, j); /* run it early rather than lose it */
            return;
        }
        w->eta_heap = h;
        w->capeta = cap;
    }
    size_t i = w->neta++;
    while (i > 0 && w->eta_heap[(i - 1) / 2]->eta > j->eta) {
        w->eta_heap[i] = w->eta_heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    w->eta_heap[i] = j;
}

static job *heap_pop(tbx_worker *w)
{
    job *top = w->eta_heap[0], *last = w->eta_heap[--w->neta];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= w->neta)
            break;
        if (c + 1 < w->neta && w->eta_heap[c + 1]->eta < w->eta_heap[c]->eta)
            c++;
        if (w->eta_heap[c]->eta >= last->eta)
            break;
        w->eta_heap[i] = w->eta_heap[c];
        i = c;
    }
    if (w->neta)
        w->eta_heap[i] = last;
    return top;
}

static int expired(const job *j, double now_wall)
{
    return j->expires > 0 && now_wall >= j->expires;
}

static void revoke_expired(tbx_worker *w, job *j)
{
    tbx_log(TBX_LOG_INFO, "task %s[%s] expired, revoked", j->msg->task, j->msg->id);
    tbx_put_exc_row(w, j->msg, j->msg->id, "REVOKED", "TaskRevokedError", "celery.exceptions", "expired", NULL);
    tbx_act_after_commit(w, j, ACT_ACK);
    tbx_job_free(j);
}

static int already_succeeded(tbx_worker *w, const char *id)
{
    if (!w->db)
        return 0;
    const char *params[1] = {id};
    tbx_error err = {0};
    PGresult *r = tbx_pg_exec_bounded(w->db, "SELECT status FROM celery_taskmeta WHERE task_id = $1", 1, params,
                                      w->db_timeout, tbx_worker_keep_alive, w, &err);
    if (!r) { /* run it again rather than wait: at least once */
        tbx_log(TBX_LOG_ERROR, "checking whether task %s already succeeded: %s", id, err.msg);
        PQreset(w->db);
        return 0;
    }
    int done = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
               !strcmp(PQgetvalue(r, 0, 0), "SUCCESS");
    PQclear(r);
    return done;
}

static const char *delivery_queue(const tbx_worker *w, amqp_bytes_t ctag)
{
    for (size_t i = 0; i < w->nqueues && i < sizeof w->ctags / sizeof *w->ctags; i++)
        if (w->ctags[i].len == ctag.len && ctag.len && !memcmp(w->ctags[i].bytes, ctag.bytes, ctag.len))
            return w->queues[i];
    return NULL;
}

/*
 * A far eta cannot be held unacknowledged (the broker closes a channel that
 * holds a delivery past consumer_timeout). Park the message instead: publish
 * it unchanged to a delay queue whose TTL is the largest 600 s * 2^k that fits,
 * dead-lettering back to the queue it came from, then ack the original. When it
 * returns, it is held or parked again.
 */
static int park(tbx_worker *w, amqp_envelope_t *env, const job *j, double remaining, tbx_error *err)
{
    const char *q = delivery_queue(w, env->consumer_tag);
    if (!q)
        return tbx_seterr(err, TBX_ENOTFOUND, "delivery from an unknown consumer");
    /* Come back with at least half the hold window to spare. */
    double hold = tbx_config_double(w->cfg, "worker.eta_hold_max");
    long long ttl = tbx_config_int(w->cfg, "worker.park_min_ttl");
    for (int k = 0; k < PARK_MAX_SHIFT && (double)(ttl * 2) <= remaining - hold / 2; k++)
        ttl *= 2;
    char dq[300];
    snprintf(dq, sizeof dq, "toolbox.delay.%s.%lld", q, ttl);
    amqp_table_entry_t args[3] = {
        {amqp_cstring_bytes("x-message-ttl"), {AMQP_FIELD_KIND_I64, {.i64 = ttl * 1000}}},
        {amqp_cstring_bytes("x-dead-letter-exchange"), {AMQP_FIELD_KIND_UTF8, {.bytes = {0, TBX_UNCONST("")}}}},
        {amqp_cstring_bytes("x-dead-letter-routing-key"), {AMQP_FIELD_KIND_UTF8, {.bytes = amqp_cstring_bytes(q)}}},
    };
    amqp_table_t t = {3, args};
    amqp_queue_declare(w->b->conn, w->b->channel, amqp_cstring_bytes(dq), 0, 1, 0, 0, t);
    if (tbx_broker_check(w->b, amqp_get_rpc_reply(w->b->conn), "declaring a delay queue", err))
        return -1;
    if (tbx_followup_producer(w, err))
        return -1;
    if (tbx_producer_publish_raw(w->prod, "", dq, &env->message.properties, env->message.body.bytes,
                                 env->message.body.len, j->msg->id, err))
        return -1;
    tbx_log(TBX_LOG_INFO, "task %s[%s] eta in %.0f s: parked in %s", j->msg->task, j->msg->id, remaining, dq);
    tbx_act_now(w, j->tag, j->gen, ACT_ACK);
    return 0;
}

static void on_delivery(tbx_worker *w, amqp_envelope_t *env)
{
    w->received++;
    char *id = NULL;
    tbx_task_msg *msg = NULL;
    tbx_error err = {0};
    job tmp = {.tag = env->delivery_tag, .gen = w->gen};
    tbx_status st = tbx_wire_decode(&env->message.properties, env->message.body.bytes,
                                    env->message.body.len, w->max_body, &msg, &id, &err);
    if (st) {
        /* Never crash on input: reject without requeue, and record why where we can. */
        tbx_log(TBX_LOG_ERROR, "undecodable message %.155s (routing key %.*s), moved aside: %s", id ? id : "(no id)",
                (int)env->routing_key.len, (const char *)env->routing_key.bytes, err.msg);
        if (id)
            tbx_put_exc_row(w, NULL, id, "FAILURE", "InvalidTaskError", "celery.exceptions", err.msg, NULL);
        tbx_act_after_commit(w, &tmp, tbx_set_aside(w, env, id, err.msg) ? ACT_REJECT : ACT_ACK);
        free(id);
        return;
    }
    free(id);
    msg->routing_key = tbx_bytes_dup(env->routing_key);
    int h = find_handler(w, msg->task);
    if (h < 0) {
        tbx_log(TBX_LOG_ERROR, "received unregistered task %s[%s]; moved aside", msg->task, msg->id);
        tbx_put_exc_row(w, msg, msg->id, "FAILURE", "NotRegistered", "celery.exceptions", msg->task, NULL);
        char why[300];
        snprintf(why, sizeof why, "NotRegistered: no handler for task %.200s on this worker", msg->task);
        tbx_act_after_commit(w, &tmp, tbx_set_aside(w, env, msg->id, why) ? ACT_REJECT : ACT_ACK);
        tbx_task_msg_free(msg);
        return;
    }
    job *j = calloc(1, sizeof *j);
    if (!j || !(j->body = malloc(env->message.body.len ? env->message.body.len : 1))) {
        free(j);
        tbx_task_msg_free(msg);
        tbx_act_now(w, tmp.tag, tmp.gen, ACT_REQUEUE);
        return;
    }
    memcpy(j->body, env->message.body.bytes, env->message.body.len);
    j->body_len = env->message.body.len;
    j->tag = env->delivery_tag;
    j->gen = w->gen;
    j->redelivered = env->redelivered;
    j->msg = msg;
    j->handler = h;
    const tbx_task_opts *o = &w->handlers[h].opts;
    j->hard = msg->time_limit > 0 ? msg->time_limit : o->time_limit;
    j->soft = msg->soft_time_limit > 0 ? msg->soft_time_limit : o->soft_time_limit;
    if (msg->eta)
        tbx_iso_parse(msg->eta, &j->eta, NULL);
    if (msg->expires)
        tbx_iso_parse(msg->expires, &j->expires, NULL);
    if (tbx_control_is_revoked(w, msg->id)) {
        tbx_log(TBX_LOG_INFO, "task %s[%s] was revoked; discarded", msg->task, msg->id);
        tbx_put_exc_row(w, msg, msg->id, "REVOKED", "TaskRevokedError", "celery.exceptions", "revoked", NULL);
        tbx_act_after_commit(w, j, ACT_ACK);
        tbx_job_free(j);
        return;
    }
    if (j->redelivered && already_succeeded(w, msg->id)) {
        tbx_log(TBX_LOG_INFO, "task %s[%s] redelivered but already succeeded; not run again", msg->task,
                msg->id);
        tbx_act_after_commit(w, j, ACT_ACK);
        tbx_job_free(j);
        return;
    }
    long long max_redeliveries = tbx_config_int(w->cfg, "worker.max_redeliveries");
    if (j->redelivered && max_redeliveries > 0) {
        int strikes = tbx_strike(w, msg->id);
        if (strikes > max_redeliveries) {
            char why[160];
            snprintf(why, sizeof why, "delivered %d times without finishing; set aside (worker.max_redeliveries %lld)",
                     strikes, max_redeliveries);
            tbx_log(TBX_LOG_ERROR, "task %s[%s] %s", msg->task, msg->id, why);
            tbx_put_exc_row(w, msg, msg->id, "FAILURE", "WorkerLostError", "billiard.exceptions", why, NULL);
            tbx_act_after_commit(w, j, tbx_set_aside(w, env, msg->id, why) ? ACT_REJECT : ACT_ACK);
            tbx_job_free(j);
            return;
        }
    }
    double now = wall();
    if (expired(j, now)) {
        revoke_expired(w, j);
        return;
    }
    if (j->eta > now) {
        if (j->eta - now > tbx_config_double(w->cfg, "worker.eta_hold_max")) {
            if (park(w, env, j, j->eta - now, &err) == 0) {
                tbx_job_free(j);
                return;
            }
            tbx_log(TBX_LOG_ERROR, "task %s[%s]: cannot park its far eta (%s); holding it", msg->task, msg->id,
                    err.msg);
        }
        heap_push(w, j);
        return;
    }
    ready_push(w, j);
}

static void read_broker(tbx_worker *w)
{
    for (int n = 0; n < 512 && w->b; n++) {
        amqp_frame_t f;
        struct timeval zero = {0, 0};
        int rc = amqp_simple_wait_frame_noblock(w->b->conn, &f, &zero);
        if (rc == AMQP_STATUS_TIMEOUT)
            break;
        if (rc != AMQP_STATUS_OK) {
            broker_lost(w, amqp_error_string2(rc));
            return;
        }
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        switch (f.payload.method.id) {
        case AMQP_BASIC_DELIVER_METHOD: {
            amqp_basic_deliver_t *d = f.payload.method.decoded;
            amqp_envelope_t env = {0};
            env.channel = f.channel;
            env.delivery_tag = d->delivery_tag;
            env.redelivered = d->redelivered;
            env.routing_key = amqp_bytes_malloc_dup(d->routing_key);
            env.exchange = amqp_bytes_malloc_dup(d->exchange);
            env.consumer_tag = amqp_bytes_malloc_dup(d->consumer_tag);
            amqp_rpc_reply_t r = amqp_read_message(w->b->conn, f.channel, &env.message, 0);
            if (r.reply_type != AMQP_RESPONSE_NORMAL) {
                amqp_destroy_envelope(&env);
                broker_lost(w, "reading a delivery failed");
                return;
            }
            if (w->ctl_tag.len && env.consumer_tag.len == w->ctl_tag.len &&
                !memcmp(env.consumer_tag.bytes, w->ctl_tag.bytes, w->ctl_tag.len))
                tbx_control_on_message(w, &env);
            else
                on_delivery(w, &env);
            amqp_destroy_envelope(&env);
            break;
        }
        case AMQP_BASIC_CANCEL_METHOD:
            broker_lost(w, "the broker cancelled our consumer (queue deleted?)");
            return;
        case AMQP_CHANNEL_CLOSE_METHOD:
        case AMQP_CONNECTION_CLOSE_METHOD: {
            amqp_rpc_reply_t r = {.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION, .reply = f.payload.method};
            tbx_error err = {0};
            tbx_broker_check(w->b, r, "consuming", &err);
            broker_lost(w, err.msg);
            return;
        }
        case AMQP_CONNECTION_BLOCKED_METHOD:
            tbx_log(TBX_LOG_WARNING, "broker reports a resource alarm: publishing is blocked");
            break;
        case AMQP_CONNECTION_UNBLOCKED_METHOD:
            tbx_log(TBX_LOG_INFO, "broker resource alarm cleared");
            break;
        default:
            break;
        }
    }
    if (w->b)
        amqp_maybe_release_buffers(w->b->conn);
}

/* ---- the pool ------------------------------------------------------------------------ */

static tbx_pool_env pool_env(tbx_worker *w)
{
    tbx_pool_env e = {w->handlers, w->nhandlers, w->has_hooks ? &w->hooks : NULL, w->hostname};
    return e;
}

static int spawn(tbx_worker *w, child *c)
{
    tbx_pool_env e = pool_env(w);
    memset(c, 0, sizeof *c);
    c->pid = tbx_pool_spawn(&e, &c->fd);
    if (c->pid < 0) {
        tbx_log(TBX_LOG_ERROR, "cannot start a pool process: %s", strerror(errno));
        c->fd = -1;
        return -1;
    }
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    return 0;
}

static void job_started(tbx_worker *w, child *c, job *j, double now)
{
    j->started = now;
    j->soft_sent = 0;
    if (w->track_started && !w->stopping && !j->msg->ignore_result && !w->handlers[j->handler].opts.ignore_result) {
        json_t *info = json_pack("{s:i, s:s}", "pid", (int)c->pid, "hostname", w->hostname);
        unsigned char *pk = NULL;
        size_t len = 0;
        if (info && tbx_pickle_dump(info, &pk, &len, NULL) == TBX_OK)
            tbx_put_row(w, j->msg, j->msg->id, "STARTED", pk, len, NULL);
        free(pk);
        json_decref(info);
    }
}

static void flush_child_out(child *c)
{
    while (c->out.len) {
        ssize_t n = write(c->fd, c->out.data, c->out.len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return; /* EAGAIN: poll for POLLOUT; other errors show up as EOF on read */
        }
        memmove(c->out.data, c->out.data + n, c->out.len - (size_t)n);
        c->out.len -= (size_t)n;
    }
}

/* Put a task back with a delay because it was interrupted; RETRY row, then ack. */
static void interrupt_retry(tbx_worker *w, job *j, double countdown)
{
    tbx_error err = {0};
    if (tbx_followup_retry(w, j, countdown, &err)) {
        tbx_log(TBX_LOG_ERROR, "task %s[%s]: cannot re-publish after an interrupt (%s); returned to the queue",
                j->msg->task, j->msg->id, err.msg);
        tbx_act_now(w, j->tag, j->gen, ACT_REQUEUE);
        return;
    }
    tbx_log(TBX_LOG_INFO, "task %s[%s] interrupted: retry in %.1fs", j->msg->task, j->msg->id, countdown);
    tbx_put_exc_row(w, j->msg, j->msg->id, "RETRY", "Retry", "celery.exceptions", "interrupted", NULL);
    tbx_act_after_commit(w, j, ACT_ACK);
}

/* A waiting job that was revoked or interrupted: settle it instead of running it. */
static int settle_control(tbx_worker *w, job *j)
{
    if (j->interrupt == INT_RETRY) {
        interrupt_retry(w, j, j->interrupt_countdown);
    } else if (j->interrupt == INT_CANCEL || tbx_control_is_revoked(w, j->msg->id)) {
        tbx_log(TBX_LOG_INFO, "task %s[%s] revoked before it ran", j->msg->task, j->msg->id);
        tbx_put_exc_row(w, j->msg, j->msg->id, "REVOKED", "TaskRevokedError", "celery.exceptions", "revoked", NULL);
        tbx_act_after_commit(w, j, ACT_ACK);
    } else {
        return 0;
    }
    tbx_job_free(j);
    return 1;
}

static child *pick_child(tbx_worker *w, double now)
{
    child *best = NULL;
    for (int i = 0; i < w->concurrency; i++) {
        child *c = &w->children[i];
        if (c->pid <= 0 || c->kill_reason)
            continue;
        if (c->depth == 0)
            return c;
        /* Queue behind a running task only when it looks short and the pipe is not full. */
        if (c->depth >= TBX_MAX_PIPELINE || now - c->head->started > SHORT_TASK)
            continue;
        if (!best || c->depth < best->depth)
            best = c;
    }
    return best;
}

/* Is a delivery of this task id already in a pool process (after a reconnect the broker
 * redelivers what the old connection held, while it may still be running here)? */
static int in_pool(const tbx_worker *w, const char *id)
{
    for (int i = 0; i < w->concurrency; i++)
        for (const job *j = w->children[i].head; j; j = j->next)
            if (!strcmp(j->msg->id, id))
                return 1;
    return 0;
}

/* A run of id succeeded: waiting redeliveries of it need not run again. */
static void drop_waiting_copies(tbx_worker *w, const char *id)
{
    job *prev = NULL;
    for (job *j = w->ready_head, *next; j; j = next) {
        next = j->next;
        if (strcmp(j->msg->id, id) != 0) {
            prev = j;
            continue;
        }
        if (prev)
            prev->next = next;
        else
            w->ready_head = next;
        if (w->ready_tail == j)
            w->ready_tail = prev;
        tbx_log(TBX_LOG_INFO, "task %s[%s]: a redelivered copy is not run, the task just succeeded", j->msg->task, id);
        tbx_act_after_commit(w, j, ACT_ACK);
        tbx_job_free(j);
    }
}

static void dispatch(tbx_worker *w, double now)
{
    if (w->stopping)
        return;
    double now_wall = wall();
    job *prev = NULL;
    for (job *j = w->ready_head; j;) {
        job *next = j->next;
        tbx_handler *h = &w->handlers[j->handler];
        if ((h->opts.max_concurrency > 0 && h->running >= h->opts.max_concurrency) || in_pool(w, j->msg->id)) {
            prev = j;
            j = next;
            continue;
        }
        child *c = pick_child(w, now);
        if (!c)
            return;
        /* unlink j */
        if (prev)
            prev->next = next;
        else
            w->ready_head = next;
        if (w->ready_tail == j)
            w->ready_tail = prev;
        j->next = NULL;
        if (expired(j, now_wall)) {
            revoke_expired(w, j);
            j = next;
            continue;
        }
        if (settle_control(w, j)) {
            j = next;
            continue;
        }
        if (tbx_pool_encode_run(&c->out, (uint32_t)j->handler, j->msg->retries, j->soft, j->msg->id,
                                j->body, j->body_len)) {
            ready_push_front(w, j);
            return;
        }
        if (c->tail)
            c->tail->next = j;
        else
            c->head = j;
        c->tail = j;
        c->depth++;
        h->running++;
        if (c->depth == 1)
            job_started(w, c, j, now);
        flush_child_out(c);
        j = next;
    }
}

static job *child_pop(child *c)
{
    job *j = c->head;
    if (j) {
        c->head = j->next;
        if (!c->head)
            c->tail = NULL;
        c->depth--;
        j->next = NULL;
    }
    return j;
}

static void task_done(tbx_worker *w, tbx_handler *h)
{
    h->done++;
    w->processed++;
    if (w->max_tasks > 0 && (long long)w->processed >= w->max_tasks && !w->stopping) {
        tbx_log(TBX_LOG_INFO, "reached --max-tasks %lld: stopping", w->max_tasks);
        w->stopping = 1;
    }
}

static void on_outcome(tbx_worker *w, child *c, const tbx_outcome_msg *o, double now)
{
    job *j = child_pop(c);
    if (!j)
        return;
    tbx_handler *h = &w->handlers[j->handler];
    h->running--;
    if (c->head)
        job_started(w, c, c->head, now);
    const char *id = j->msg->id;
    int ignore = j->msg->ignore_result || h->opts.ignore_result;
    tbx_error err = {0};
    switch (o->outcome) {
    case TBX_OUT_NOT_RUN:
        tbx_act_now(w, j->tag, j->gen, ACT_REQUEUE);
        tbx_job_free(j);
        return;
    case TBX_OUT_SUCCESS: {
        char *rj = strndup(o->json, o->json_len);
        if (tbx_followup_success(w, j, rj, &err))
            tbx_log(TBX_LOG_ERROR, "task %s[%s]: sending its follow-ups failed: %s", j->msg->task, id, err.msg);
        free(rj);
        tbx_log(TBX_LOG_DEBUG, "task %s[%s] succeeded in %.6fs", j->msg->task, id, o->runtime);
        if (!ignore)
            tbx_put_row(w, j->msg, id, "SUCCESS", o->pickle, o->pickle_len, NULL);
        tbx_act_after_commit(w, j, ACT_ACK);
        drop_waiting_copies(w, id);
        break;
    }
    case TBX_OUT_RETRY:
    case TBX_OUT_FAILURE: {
        json_t *info = json_loadb(o->json, o->json_len, 0, NULL);
        const char *tb = json_string_value(json_object_get(info, "traceback"));
        const char *etype = json_string_value(json_object_get(info, "exc_type"));
        const char *emsg = json_string_value(json_array_get(json_object_get(info, "exc_message"), 0));
        int retry = o->outcome == TBX_OUT_RETRY;
        if (retry) {
            int max = h->opts.max_retries == -2 ? (int)tbx_config_int(w->cfg, "task_max_retries")
                                                 : h->opts.max_retries;
            if (max >= 0 && j->msg->retries >= max) {
                tbx_log(TBX_LOG_WARNING, "task %s[%s] used up its %d retries", j->msg->task, id, max);
                retry = 0;
            } else {
                double cd = o->countdown;
                if (cd < 0) {
                    double base = h->opts.retry_delay >= 0 ? h->opts.retry_delay
                                                            : tbx_config_double(w->cfg, "task_default_retry_delay");
                    double f = h->opts.retry_backoff > 1 ? pow(h->opts.retry_backoff, j->msg->retries) : 1;
                    cd = base * f;
                    if (h->opts.retry_backoff_max > 0 && cd > h->opts.retry_backoff_max)
                        cd = h->opts.retry_backoff_max;
                }
                if (tbx_followup_retry(w, j, cd, &err)) {
                    tbx_log(TBX_LOG_ERROR, "task %s[%s]: cannot publish its retry (%s); returned to the queue",
                            j->msg->task, id, err.msg);
                    tbx_act_after_commit(w, j, ACT_REQUEUE);
                    json_decref(info);
                    break;
                }
                tbx_log(TBX_LOG_INFO, "task %s[%s] retry in %.1fs: %s: %s", j->msg->task, id, cd,
                        etype ? etype : "?", emsg ? emsg : "");
                tbx_put_row(w, j->msg, id, "RETRY", o->pickle, o->pickle_len, tb);
                tbx_act_after_commit(w, j, ACT_ACK);
                json_decref(info);
                break;
            }
        }
        tbx_log(TBX_LOG_ERROR, "task %s[%s] raised %s: %s", j->msg->task, id, etype ? etype : "?",
                emsg ? emsg : "");
        if (tbx_followup_failure(w, j, &err))
            tbx_log(TBX_LOG_ERROR, "task %s[%s]: sending its errbacks failed: %s", j->msg->task, id, err.msg);
        tbx_put_row(w, j->msg, id, "FAILURE", o->pickle, o->pickle_len, tb);
        tbx_act_after_commit(w, j, ACT_ACK);
        json_decref(info);
        break;
    }
    }
    tbx_job_free(j);
    task_done(w, h);
}

static const char *signame(int sig)
{
    switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGABRT: return "SIGABRT";
    case SIGKILL: return "SIGKILL";
    case SIGTERM: return "SIGTERM";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGILL: return "SIGILL";
    default: return "signal";
    }
}

static void fire_alert(tbx_worker *w, const job *j, const char *what)
{
    const char *cmd = tbx_config_str(w->cfg, "worker.alert_command");
    if (!cmd || !*cmd)
        return;
    pid_t pid = fork();
    if (pid == 0) {
        setenv("TOOLBOX_ALERT", what, 1);
        setenv("TOOLBOX_TASK_ID", j ? j->msg->id : "", 1);
        setenv("TOOLBOX_TASK_NAME", j ? j->msg->task : "", 1);
        setenv("TOOLBOX_WORKER", w->hostname, 1);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
}

/* The child c is gone (EOF or reaped): settle its jobs and start another. */
static void child_gone(tbx_worker *w, child *c, int status, double now)
{
    job *head = child_pop(c);
    if (head) {
        tbx_handler *h = &w->handlers[head->handler];
        h->running--;
        const char *id = head->msg->id;
        if (c->kill_reason == KILL_TIMEOUT) {
            char secs[32];
            snprintf(secs, sizeof secs, "%g", head->hard);
            tbx_log(TBX_LOG_ERROR, "task %s[%s] hard time limit (%gs) exceeded; its process was killed",
                    head->msg->task, id, head->hard);
            char tb[200];
            snprintf(tb, sizeof tb, "TimeLimitExceeded: hard time limit (%gs) exceeded for %s[%s]\n",
                     head->hard, head->msg->task, id);
            /* Celery stores TimeLimitExceeded(<seconds>) from billiard. */
            json_t *args = json_pack("[f]", head->hard);
            unsigned char *pk = NULL;
            size_t len = 0;
            if (tbx_pickle_dump_exception("TimeLimitExceeded", "billiard.exceptions", args, &pk, &len, NULL) ==
                TBX_OK)
                tbx_put_row(w, head->msg, id, "FAILURE", pk, len, tb);
            free(pk);
            json_decref(args);
            tbx_followup_failure(w, head, NULL);
            tbx_act_after_commit(w, head, ACT_ACK);
        } else if (c->kill_reason == KILL_REVOKE) {
            tbx_log(TBX_LOG_INFO, "task %s[%s] terminated by request", head->msg->task, id);
            tbx_put_exc_row(w, head->msg, id, "REVOKED", "TaskRevokedError", "celery.exceptions", "terminated", NULL);
            tbx_act_after_commit(w, head, ACT_ACK);
        } else if (c->kill_reason == KILL_RETRY) {
            interrupt_retry(w, head, c->retry_countdown);
        } else if (c->kill_reason == KILL_SHUTDOWN) {
            tbx_act_now(w, head->tag, head->gen, ACT_REQUEUE);
        } else {
            char why[160];
            if (WIFSIGNALED(status))
                snprintf(why, sizeof why, "Worker exited prematurely: signal %d (%s).", WTERMSIG(status),
                         signame(WTERMSIG(status)));
            else
                snprintf(why, sizeof why, "Worker exited prematurely: exitcode %d.",
                         WIFEXITED(status) ? WEXITSTATUS(status) : -1);
            tbx_log(TBX_LOG_ERROR, "task %s[%s] crashed its process: %s", head->msg->task, id, why);
            char tb[256];
            snprintf(tb, sizeof tb, "WorkerLostError: %s Job: %s[%s]\n", why, head->msg->task, id);
            tbx_put_exc_row(w, head->msg, id, "FAILURE", "WorkerLostError", "billiard.exceptions", why, tb);
            tbx_followup_failure(w, head, NULL);
            tbx_act_after_commit(w, head, ACT_ACK);
            fire_alert(w, head, why);
        }
        tbx_job_free(head);
        task_done(w, h);
    }
    /* Queued behind the lost task, never started: back to the front of the line. */
    job *rest = NULL, **tail = &rest;
    for (job *j; (j = child_pop(c));) {
        w->handlers[j->handler].running--;
        *tail = j;
        tail = &j->next;
    }
    for (job *j = rest, *n; j; j = n) {
        n = j->next;
        j->next = NULL;
        if (w->stopping)
            tbx_act_now(w, j->tag, j->gen, ACT_REQUEUE), tbx_job_free(j);
        else
            ready_push(w, j);
    }
    if (c->fd >= 0)
        close(c->fd);
    tbx_buf_free(&c->in);
    tbx_buf_free(&c->out);
    c->pid = 0;
    c->fd = -1;
    if (!w->stopping)
        spawn(w, c);
    (void)now;
}

/* Read outcome frames from c. Returns -1 when the child is gone (EOF). */
static int read_child(tbx_worker *w, child *c, double now)
{
    for (;;) {
        if (tbx_buf_reserve(&c->in, 65536))
            return 0;
        ssize_t n = read(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len);
        if (n == 0)
            return -1;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            return -1;
        }
        c->in.len += (size_t)n;
        if ((size_t)n < 65536)
            break;
    }
    size_t off = 0;
    while (c->in.len - off >= 4) {
        uint32_t len;
        memcpy(&len, c->in.data + off, 4);
        if (c->in.len - off - 4 < len)
            break;
        tbx_outcome_msg o;
        if (tbx_pool_decode_outcome(c->in.data + off + 4, len, &o) == 0)
            on_outcome(w, c, &o, now);
        else
            tbx_log(TBX_LOG_ERROR, "malformed outcome from pool process %d", (int)c->pid);
        off += 4 + len;
    }
    memmove(c->in.data, c->in.data + off, c->in.len - off);
    c->in.len -= off;
    return 0;
}

static void reap(tbx_worker *w, double now)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int i = 0; i < w->concurrency; i++) {
            child *c = &w->children[i];
            if (c->pid == pid) {
                /* Read what it wrote before dying, then settle. */
                read_child(w, c, now);
                child_gone(w, c, status, now);
            }
        }
    }
}

static void enforce_limits(tbx_worker *w, double now)
{
    for (int i = 0; i < w->concurrency; i++) {
        child *c = &w->children[i];
        job *j = c->head;
        if (c->pid <= 0 || !j || c->kill_reason)
            continue;
        if (j->soft > 0 && !j->soft_sent && now - j->started >= j->soft) {
            tbx_log(TBX_LOG_WARNING, "task %s[%s] soft time limit (%gs) exceeded", j->msg->task, j->msg->id,
                    j->soft);
            kill(c->pid, SIGUSR1);
            j->soft_sent = 1;
        }
        if (j->hard > 0 && now - j->started >= j->hard) {
            c->kill_reason = KILL_TIMEOUT;
            kill(c->pid, SIGKILL);
        }
    }
}

static void due_etas(tbx_worker *w)
{
    double now = wall();
    int moved = 0;
    while (w->neta && w->eta_heap[0]->eta <= now) {
        ready_push(w, heap_pop(w));
        moved = 1;
    }
    if (moved)
        apply_qos(w);
}

static int running_count(const tbx_worker *w)
{
    int n = 0;
    for (int i = 0; i < w->concurrency; i++)
        n += w->children[i].depth;
    return n;
}

static void update_title(tbx_worker *w, const char *state)
{
    char qs[256] = "";
    size_t off = 0;
    for (size_t i = 0; i < w->nqueues && off < sizeof qs - 2; i++)
        off += (size_t)snprintf(qs + off, sizeof qs - off, "%s%s", i ? "," : "", w->queues[i]);
    tbx_proctitle_set(&w->title, "%s: %s queues=%s done=%llu running=%d waiting=%zu", w->service, state, qs,
                      w->processed, running_count(w), w->neta);
}

/* First signal: warm shutdown. Second: cold. */
static void begin_stop(tbx_worker *w, int cold)
{
    if (cold) {
        tbx_log(TBX_LOG_WARNING, "cold shutdown: leaving at once; unacknowledged tasks return to the queue");
        w->stopping = 2;
        return;
    }
    if (w->stopping)
        return;
    tbx_log(TBX_LOG_INFO, "warm shutdown: finishing running tasks, returning the rest to the queue");
    w->stopping = 1;
}

static void stop_step(tbx_worker *w)
{
    /* Stop consuming once; hand back what has not started. */
    if (w->consuming && w->b && !w->b->broken) {
        /* Deliveries that race the cancel are queued by rabbitmq-c and handed back below. */
        for (size_t i = 0; i < w->nqueues && i < sizeof w->ctags / sizeof *w->ctags; i++) {
            amqp_basic_cancel(w->b->conn, w->b->channel, w->ctags[i]);
            tbx_error err = {0};
            if (tbx_broker_check(w->b, amqp_get_rpc_reply(w->b->conn), "cancelling the consumer", &err))
                tbx_log(TBX_LOG_ERROR, "%s", err.msg);
        }
        w->consuming = 0;
    }
    for (job *j = w->ready_head, *n; j; j = n) {
        n = j->next;
        tbx_act_now(w, j->tag, j->gen, ACT_REQUEUE);
        tbx_job_free(j);
    }
    w->ready_head = w->ready_tail = NULL;
    while (w->neta) {
        job *j = heap_pop(w);
        tbx_act_now(w, j->tag, j->gen, ACT_REQUEUE);
        tbx_job_free(j);
    }
    for (int i = 0; i < w->concurrency; i++)
        if (w->children[i].pid > 0 && w->children[i].depth > 1)
            kill(w->children[i].pid, SIGUSR2); /* queued, not started: answer NOT_RUN */
}

static int setup_signals(tbx_worker *w)
{
    if (pipe2(w->sigpipe, O_NONBLOCK | O_CLOEXEC))
        return -1;
    sig_worker = w;
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

static void handle_signals(tbx_worker *w)
{
    unsigned char sigs[64];
    ssize_t n;
    while ((n = read(w->sigpipe[0], sigs, sizeof sigs)) > 0)
        for (ssize_t i = 0; i < n; i++) {
            if (sigs[i] == SIGTERM || sigs[i] == SIGINT)
                begin_stop(w, w->stopping == 1);
            else if (sigs[i] == SIGQUIT)
                begin_stop(w, 1);
        }
}

/* One start-up attempt (tbx_retry_startup): the database, then the broker. */
static tbx_status startup_attempt(void *ud, tbx_error *err)
{
    tbx_worker *w = ud;
    if (!w->db) {
        tbx_status st = tbx_pg_connect(tbx_config_str(w->cfg, "result_backend"), w->hostname, &w->db, err);
        if (st)
            return st;
        PQclear(PQexec(w->db, "SET TIME ZONE 'UTC'"));
    }
    return connect_broker(w, err);
}

int tbx_worker_run(tbx_worker *w)
{
    tbx_error err = {0};
    srand((unsigned)(getpid() ^ (unsigned)time(NULL)));
    if (setup_signals(w)) {
        tbx_log(TBX_LOG_ERROR, "cannot set up signal handling: %s", strerror(errno));
        return 1;
    }
    w->batch = tbx_batch_new();
    w->children = calloc((size_t)w->concurrency, sizeof *w->children);
    if (!w->batch || !w->children) {
        tbx_log(TBX_LOG_ERROR, "out of memory");
        return 1;
    }
    /* Fork the pool first: children stay small and inherit no connection. */
    for (int i = 0; i < w->concurrency; i++)
        if (spawn(w, &w->children[i]))
            return 1;
    w->db_delay = 0.5;
    w->db_timeout = tbx_config_double(w->cfg, "database_timeout");
    int up = tbx_retry_startup(tbx_config_double(w->cfg, "startup_retry"), w->sigpipe[0], startup_attempt, w, &err);
    if (up) {
        if (up < 0)
            tbx_log(TBX_LOG_ERROR, "%s", err.msg);
        else
            tbx_log(TBX_LOG_INFO, "stopped by a signal while connecting at start-up");
        PQfinish(w->db);
        w->db = NULL;
        return up < 0 ? 1 : 0;
    }
    char qs[256] = "";
    size_t off = 0;
    for (size_t i = 0; i < w->nqueues && off < sizeof qs - 2; i++)
        off += (size_t)snprintf(qs + off, sizeof qs - off, "%s%s", i ? "," : "", w->queues[i]);
    tbx_log(TBX_LOG_INFO, "%s ready: queues %s, concurrency %d, prefetch %d, %zu tasks registered", w->hostname,
            qs, w->concurrency, w->prefetch, w->nhandlers);
    w->started_mono = tbx_mono();
    double last_title = 0;
    struct pollfd *pfds = calloc((size_t)w->concurrency + 2, sizeof *pfds);
    if (!pfds)
        return 1;
    for (;;) {
        double now = tbx_mono();
        handle_signals(w);
        if (w->stopping == 2)
            break;
        if (!w->stopping && w->max_duration > 0 && now - w->started_mono >= w->max_duration) {
            tbx_log(TBX_LOG_INFO, "reached --max-duration %gs: stopping", w->max_duration);
            w->stopping = 1;
        }
        if (w->stopping == 1)
            stop_step(w);
        if (!w->b && !w->stopping && now >= w->reconnect_at) {
            if (connect_broker(w, &err)) {
                double wait = tbx_backoff(&w->reconnect_delay);
                tbx_log(TBX_LOG_ERROR, "%s (retrying in %.1f s)", err.msg, wait);
                w->reconnect_at = now + wait;
            } else {
                tbx_log(TBX_LOG_INFO, "reconnected to the broker");
            }
        }
        if (w->b)
            read_broker(w);
        due_etas(w);
        now = tbx_mono();
        dispatch(w, now);
        for (int i = 0; i < w->concurrency; i++) {
            child *c = &w->children[i];
            if (c->pid > 0 && c->out.len)
                flush_child_out(c);
        }
        enforce_limits(w, now);
        reap(w, now);
        /* Commit when the batch is full, when its oldest row has waited FLUSH_AFTER, or
         * when nothing else is in flight that could still join it. */
        int in_flight = w->ready_head != NULL || running_count(w) > 0;
        size_t rows = tbx_batch_len(w->batch);
        if (rows >= w->result_batch || (rows && (!in_flight || now - w->batch_since >= FLUSH_AFTER)) ||
            (!rows && w->nacts))
            commit(w, now);
        if (w->stopping == 1 && running_count(w) == 0 && tbx_batch_len(w->batch) == 0 && w->nacts == 0)
            break;
        if (now - last_title >= 1) {
            update_title(w, w->stopping ? "stopping" : "running");
            last_title = now;
            if (w->prod)
                tbx_producer_flush(w->prod, 0.001, NULL); /* keep its heartbeats serviced */
        }
        /* Wait for the broker, a child, a signal, or the next deadline. */
        int nf = 0, bfd = -1;
        pfds[nf++] = (struct pollfd){.fd = w->sigpipe[0], .events = POLLIN};
        if (w->b && !w->b->broken) {
            if (amqp_data_in_buffer(w->b->conn) || amqp_frames_enqueued(w->b->conn))
                continue;
            bfd = nf;
            pfds[nf++] = (struct pollfd){.fd = amqp_get_sockfd(w->b->conn), .events = POLLIN};
        }
        for (int i = 0; i < w->concurrency; i++) {
            child *c = &w->children[i];
            if (c->pid > 0 && c->fd >= 0)
                pfds[nf++] = (struct pollfd){.fd = c->fd, .events = (short)(POLLIN | (c->out.len ? POLLOUT : 0))};
        }
        double timeout = 0.25;
        if (tbx_batch_len(w->batch) || w->nacts) {
            double due = fmax(w->batch_since + FLUSH_AFTER, w->db_retry_at);
            timeout = fmin(timeout, fmax(0, due - now));
        }
        if (w->neta)
            timeout = fmin(timeout, fmax(0, w->eta_heap[0]->eta - wall()));
        for (int i = 0; i < w->concurrency; i++) {
            job *j = w->children[i].head;
            if (j && j->soft > 0 && !j->soft_sent)
                timeout = fmin(timeout, fmax(0, j->started + j->soft - now));
            if (j && j->hard > 0)
                timeout = fmin(timeout, fmax(0, j->started + j->hard - now));
        }
        if (!w->b && !w->stopping)
            timeout = fmin(timeout, fmax(0, w->reconnect_at - now));
        int pr = poll(pfds, (nfds_t)nf, (int)ceil(timeout * 1000));
        if (pr < 0 && errno != EINTR)
            break;
        now = tbx_mono();
        (void)bfd;
        for (int k = 1; pr > 0 && k < nf; k++) {
            if (k == bfd || !(pfds[k].revents & (POLLIN | POLLHUP | POLLERR | POLLOUT)))
                continue;
            for (int i = 0; i < w->concurrency; i++) {
                child *c = &w->children[i];
                if (c->fd != pfds[k].fd || c->pid <= 0)
                    continue;
                if (pfds[k].revents & POLLOUT)
                    flush_child_out(c);
                if ((pfds[k].revents & (POLLIN | POLLHUP | POLLERR)) && read_child(w, c, now) < 0) {
                    /* EOF: the child is dead or dying; reap() settles it once waitpid sees it. */
                    int status = 0;
                    if (waitpid(c->pid, &status, 0) == c->pid)
                        child_gone(w, c, status, now);
                }
            }
        }
    }
    free(pfds);
    /* Leave: children exit on EOF (or die with us on a cold shutdown). */
    for (int i = 0; i < w->concurrency; i++) {
        child *c = &w->children[i];
        if (c->pid > 0) {
            if (w->stopping == 2)
                kill(c->pid, SIGKILL);
            close(c->fd);
            waitpid(c->pid, NULL, 0);
            tbx_buf_free(&c->in);
            tbx_buf_free(&c->out);
        }
    }
    free(w->children);
    drop_unstarted(w);
    free(w->eta_heap);
    free(w->acts);
    for (size_t i = 0; i < sizeof w->ctags / sizeof *w->ctags; i++)
        amqp_bytes_free(w->ctags[i]);
    tbx_control_free(w);
    tbx_batch_free(w->batch);
    tbx_producer_close(w->prod);
    if (w->b) {
        if (w->stopping == 2)
            w->b->broken = 1;
        tbx_broker_close(w->b);
    }
    PQfinish(w->db);
    tbx_log(TBX_LOG_INFO, "%s stopped after %llu tasks", w->hostname, w->processed);
    close(w->sigpipe[0]);
    close(w->sigpipe[1]);
    sig_worker = NULL;
    return 0;
}
