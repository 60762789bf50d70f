/*
 * producer.c - confirmed, pipelined publishing of Celery task messages.
 *
 * Publishes go out with mandatory=1 on a channel in confirm mode. Confirms
 * are tracked in a ring of `window` sequence numbers; a basic.return (which
 * RabbitMQ sends before the confirm of the same message) marks the oldest
 * unconfirmed message as unroutable.
 *
 * No call waits without a bound. rabbitmq-c does no background I/O, so every
 * flush first reads what has arrived (which also lets the library send a due
 * heartbeat), a publish waits while the broker reports connection.blocked
 * (resource alarm) instead of filling the socket, and a publish first reads
 * when nothing has been received for a heartbeat interval: rabbitmq-c 0.11's
 * amqp_basic_publish polls with an infinite timeout once the receive-heartbeat
 * deadline has passed (its bug #780, fixed in 0.14), which on a dead link
 * hangs forever; a read with a zero timeout reports the heartbeat timeout.
 */
#include "toolbox/producer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker.h"
#include "toolbox/log.h"
#include "producer_internal.h"
#include "topology.h"
#include "wire.h"

enum { SLOT_FREE = 0, SLOT_PENDING, SLOT_ACKED, SLOT_NACKED, SLOT_RETURNED };

struct tbx_producer {
    const tbx_config *cfg;
    tbx_broker *b;
    const char *exchange;
    int default_priority;
    size_t window;
    unsigned char *slots;        /* state of seq (low + i) at slots[(low + i) % window] */
    uint64_t next_seq;           /* next delivery tag to assign (first is 1) */
    uint64_t low;                /* oldest unconfirmed tag */
    uint64_t returned_pending;   /* basic.return frames not yet matched to a confirm */
    unsigned long long confirmed;
    unsigned long long failed_nack, failed_return;
    double rx_at;                /* a read got fresh bytes from the socket then (monotonic s) */
    void (*idle)(void *);        /* called while waiting for confirms or an unblock */
    void *idle_ud;
    tbx_status first_fail;
    char first_fail_id[TBX_TASK_ID_LEN + 1];
    char (*ids)[TBX_TASK_ID_LEN + 1]; /* task id of each slot, for messages */
};

tbx_status tbx_producer_open(tbx_producer **out, const tbx_config *cfg, unsigned flags,
                             tbx_error *err)
{
    *out = NULL;
    tbx_producer *p = calloc(1, sizeof *p);
    if (!p)
        return tbx_seterr(err, TBX_ENOMEM, NULL);
    p->cfg = cfg;
    p->exchange = tbx_config_str(cfg, "task_default_exchange");
    p->default_priority = (int)tbx_config_int(cfg, "task_default_priority");
    p->window = (size_t)tbx_config_int(cfg, "broker_confirm_window");
    if (p->window < 1)
        p->window = 1;
    p->slots = calloc(p->window, 1);
    p->ids = calloc(p->window, sizeof *p->ids);
    p->next_seq = p->low = 1;
    if (!p->slots || !p->ids) {
        tbx_producer_close(p);
        return tbx_seterr(err, TBX_ENOMEM, NULL);
    }
    tbx_status st = tbx_broker_open_cfg(&p->b, cfg, "toolbox producer", err);
    if (st) {
        tbx_producer_close(p);
        return st;
    }
    if (!(flags & TBX_PRODUCER_NO_SETUP)) {
        tbx_error e = {0};
        st = tbx_topology_declare(p->b, cfg, &e);
        if (st) {
            const char *mode = tbx_config_str(cfg, "setup_on_error");
            if (!mode || strcmp(mode, "log") != 0 || p->b->broken) {
                if (err)
                    *err = e;
                tbx_producer_close(p);
                return st;
            }
            tbx_log(TBX_LOG_WARNING, "topology setup failed, continuing (setup_on_error=log): %s", e.msg);
            if ((st = tbx_broker_reopen_channel(p->b, err))) {
                tbx_producer_close(p);
                return st;
            }
        }
    }
    amqp_confirm_select(p->b->conn, p->b->channel);
    st = tbx_broker_check(p->b, amqp_get_rpc_reply(p->b->conn), "enabling publisher confirms", err);
    if (st) {
        tbx_producer_close(p);
        return st;
    }
    p->rx_at = tbx_mono(); /* the RPC reply was just read */
    *out = p;
    return TBX_OK;
}

void tbx_producer_close(tbx_producer *p)
{
    if (!p)
        return;
    tbx_broker_close(p->b);
    free(p->slots);
    free(p->ids);
    free(p);
}

unsigned long long tbx_producer_confirmed(const tbx_producer *p)
{
    return p->confirmed;
}

static void settle(tbx_producer *p, uint64_t tag, int state)
{
    if (tag < p->low || tag >= p->next_seq)
        return;
    unsigned char *s = &p->slots[tag % p->window];
    if (*s != SLOT_PENDING)
        return;
    if (state == SLOT_ACKED && p->returned_pending) {
        p->returned_pending--;
        state = SLOT_RETURNED;
    }
    *s = (unsigned char)state;
    if (state != SLOT_ACKED) {
        if (state == SLOT_NACKED)
            p->failed_nack++;
        else
            p->failed_return++;
        if (!p->first_fail) {
            p->first_fail = state == SLOT_NACKED ? TBX_ENACK : TBX_EUNROUTABLE;
            memcpy(p->first_fail_id, p->ids[tag % p->window], sizeof p->first_fail_id);
        }
    }
}

static void advance_low(tbx_producer *p)
{
    while (p->low < p->next_seq) {
        unsigned char *s = &p->slots[p->low % p->window];
        if (*s == SLOT_PENDING)
            break;
        if (*s == SLOT_ACKED)
            p->confirmed++;
        *s = SLOT_FREE;
        p->low++;
    }
}

/* Read and handle one frame, waiting at most `timeout` seconds. */
static tbx_status pump(tbx_producer *p, double timeout, tbx_error *err)
{
    amqp_frame_t f;
    struct timeval tv = {(time_t)timeout, (suseconds_t)((timeout - (double)(time_t)timeout) * 1e6)};
    int rc = amqp_simple_wait_frame_noblock(p->b->conn, &f, &tv);
    if (rc == AMQP_STATUS_TIMEOUT)
        return TBX_ETIMEOUT;
    if (rc != AMQP_STATUS_OK)
        return tbx_broker_status(p->b, rc, "waiting for publisher confirms", err);
    if (f.frame_type != AMQP_FRAME_METHOD)
        return TBX_OK;
    switch (f.payload.method.id) {
    case AMQP_BASIC_ACK_METHOD:
    case AMQP_BASIC_NACK_METHOD: {
        uint64_t tag;
        int multiple, state;
        if (f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
            amqp_basic_ack_t *a = f.payload.method.decoded;
            tag = a->delivery_tag;
            multiple = a->multiple;
            state = SLOT_ACKED;
        } else {
            amqp_basic_nack_t *n = f.payload.method.decoded;
            tag = n->delivery_tag;
            multiple = n->multiple;
            state = SLOT_NACKED;
        }
        if (multiple) {
            for (uint64_t t = p->low; t <= tag && t < p->next_seq; t++)
                settle(p, t, state);
        } else {
            settle(p, tag, state);
        }
        advance_low(p);
        return TBX_OK;
    }
    case AMQP_BASIC_RETURN_METHOD: {
        amqp_message_t m;
        amqp_rpc_reply_t r = amqp_read_message(p->b->conn, f.channel, &m, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL)
            return tbx_broker_check(p->b, r, "reading a returned message", err);
        amqp_destroy_message(&m);
        p->returned_pending++;
        return TBX_OK;
    }
    case AMQP_CONNECTION_BLOCKED_METHOD:
        p->b->blocked = 1;
        tbx_log(TBX_LOG_WARNING, "broker blocked publishing (resource alarm)");
        return TBX_OK;
    case AMQP_CONNECTION_UNBLOCKED_METHOD:
        p->b->blocked = 0;
        tbx_log(TBX_LOG_INFO, "broker unblocked publishing");
        return TBX_OK;
    case AMQP_CHANNEL_CLOSE_METHOD:
    case AMQP_CONNECTION_CLOSE_METHOD: {
        amqp_rpc_reply_t r = {.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION, .reply = f.payload.method};
        tbx_broker_check(p->b, r, "publishing", err);
        p->b->broken = 1;
        return TBX_EBROKER;
    }
    default:
        return TBX_OK;
    }
}

/* Read what has arrived without waiting: confirms, returns, connection.blocked and
 * unblocked, heartbeats (the library also sends one when it is due). A dead
 * link whose heartbeat deadline has passed is reported here (TBX_EBROKER). */
static tbx_status drain(tbx_producer *p, tbx_error *err)
{
    if (p->b->broken)
        return tbx_seterr(err, TBX_EBROKER, "the broker connection to %s is broken; reopen the producer",
                          p->b->masked_url);
    /* With nothing buffered, a frame can only come from a fresh read of the socket. */
    int fresh = !amqp_data_in_buffer(p->b->conn) && !amqp_frames_enqueued(p->b->conn);
    double t = tbx_mono();
    int frames = 0;
    tbx_status st;
    while ((st = pump(p, 0, err)) == TBX_OK)
        frames++;
    if (st != TBX_ETIMEOUT)
        return st;
    if (fresh && frames)
        p->rx_at = t;
    return TBX_OK;
}

static tbx_status wait_until(tbx_producer *p, uint64_t low_target, double timeout, tbx_error *err)
{
    double deadline = tbx_mono() + timeout;
    while (p->low < low_target) {
        double left = deadline - tbx_mono();
        if (left <= 0)
            return tbx_seterr(err, TBX_ETIMEOUT, "no publisher confirm from the broker within %.1f s",
                              timeout);
        tbx_status st = pump(p, left < 0.5 ? left : 0.5, err);
        if (st && st != TBX_ETIMEOUT)
            return st;
        if (p->idle)
            p->idle(p->idle_ud);
    }
    return TBX_OK;
}

void tbx_producer_set_idle(tbx_producer *p, void (*fn)(void *), void *userdata)
{
    p->idle = fn;
    p->idle_ud = userdata;
}

/* Publish an encoded message (mandatory) and track its confirm. */
static tbx_status publish_encoded(tbx_producer *p, const char *exchange, const char *rk,
                                  const amqp_basic_properties_t *props, const void *body, size_t len,
                                  const char *id, tbx_error *err)
{
    if (p->b->broken)
        return tbx_seterr(err, TBX_EBROKER, "the broker connection is broken; reopen the producer");
    double timeout = tbx_config_double(p->cfg, "broker_connect_timeout") * 6;
    /* Wait for room in the window. */
    if (p->next_seq - p->low >= p->window) {
        tbx_status st = wait_until(p, p->next_seq - p->window + 1, timeout, err);
        if (st)
            return st;
    }
    /* Now and then drain the confirms that have arrived, without blocking: it
     * also services heartbeats (rabbitmq-c only does that inside its calls).
     * And always when nothing fresh was read for a heartbeat interval: the
     * receive deadline (last read + 2 intervals) may then be near, and past it
     * amqp_basic_publish would wait forever on a dead link (#780, see above). */
    int hb = amqp_get_heartbeat(p->b->conn);
    if ((p->next_seq & 63) == 0 || (hb > 0 && tbx_mono() - p->rx_at >= hb)) {
        tbx_status st = drain(p, err);
        if (st)
            return st;
    }
    /* A resource alarm: the broker reads nothing from publishers until it
     * clears. Wait for connection.unblocked rather than fill the socket. */
    if (p->b->blocked) {
        double deadline = tbx_mono() + timeout;
        while (p->b->blocked) {
            double left = deadline - tbx_mono();
            if (left <= 0)
                return tbx_seterr(err, TBX_ETIMEOUT,
                                  "the broker has blocked publishing (resource alarm) for %.1f s", timeout);
            tbx_status st = pump(p, left < 0.5 ? left : 0.5, err);
            if (st && st != TBX_ETIMEOUT)
                return st;
            if (p->idle)
                p->idle(p->idle_ud);
        }
    }
    if (p->b->broken)
        return tbx_seterr(err, TBX_EBROKER, "the broker connection was lost");
    size_t max = (size_t)tbx_config_int(p->cfg, "max_message_bytes");
    if (len > max)
        return tbx_seterr(err, TBX_ELIMIT, "message body of %zu bytes exceeds max_message_bytes (%zu)", len,
                          max);
    amqp_bytes_t b = {len, TBX_UNCONST(body)};
    int rc = amqp_basic_publish(p->b->conn, p->b->channel, amqp_cstring_bytes(exchange),
                                amqp_cstring_bytes(rk), 1, 0, props, b);
    if (rc != AMQP_STATUS_OK)
        return tbx_broker_status(p->b, rc, "publishing", err);
    uint64_t seq = p->next_seq++;
    p->slots[seq % p->window] = SLOT_PENDING;
    snprintf(p->ids[seq % p->window], sizeof p->ids[0], "%s", id ? id : "?");
    return TBX_OK;
}

tbx_status tbx_producer_publish(tbx_producer *p, const char *task, const json_t *args,
                                const json_t *kwargs, const tbx_send_opts *opts,
                                char id_out[TBX_TASK_ID_LEN + 1], tbx_error *err)
{
    tbx_wire_msg m;
    tbx_status st = tbx_wire_encode(&m, task, args, kwargs, opts, p->default_priority, err);
    if (st)
        return st;
    st = publish_encoded(p, p->exchange, m.routing_key, &m.props, m.body.data, m.body.len, m.id, err);
    if (!st && id_out)
        memcpy(id_out, m.id, sizeof m.id);
    tbx_wire_free(&m);
    return st;
}

tbx_status tbx_producer_publish_raw(tbx_producer *p, const char *exchange, const char *routing_key,
                                    const amqp_basic_properties_t *props, const void *body, size_t len,
                                    const char *id, tbx_error *err)
{
    tbx_status st = publish_encoded(p, exchange, routing_key, props, body, len, id, err);
    if (st)
        return st;
    return tbx_producer_flush(p, tbx_config_double(p->cfg, "broker_connect_timeout") * 6, err);
}

tbx_status tbx_producer_flush(tbx_producer *p, double timeout, tbx_error *err)
{
    /* Service the connection even when nothing is pending: an idle producer
     * that never reads or writes misses heartbeats and the broker drops it. */
    tbx_status st = drain(p, err);
    if (st)
        return st;
    st = wait_until(p, p->next_seq, timeout, err);
    if (st)
        return st;
    if (p->first_fail) {
        unsigned long long nack = p->failed_nack, ret = p->failed_return;
        st = p->first_fail;
        p->first_fail = TBX_OK;
        p->failed_nack = p->failed_return = 0;
        if (st == TBX_ENACK)
            return tbx_seterr(err, st, "the broker refused %llu message(s), first task %s", nack,
                              p->first_fail_id);
        return tbx_seterr(err, st,
                          "%llu message(s) reached no queue (nothing bound to the routing key), "
                          "first task %s", ret, p->first_fail_id);
    }
    return TBX_OK;
}

tbx_status tbx_producer_send(tbx_producer *p, const char *task, const json_t *args,
                             const json_t *kwargs, const tbx_send_opts *opts,
                             char id_out[TBX_TASK_ID_LEN + 1], tbx_error *err)
{
    tbx_status st = tbx_producer_flush(p, tbx_config_double(p->cfg, "broker_connect_timeout") * 6, err);
    if (st)
        return st;
    st = tbx_producer_publish(p, task, args, kwargs, opts, id_out, err);
    if (st)
        return st;
    return tbx_producer_flush(p, tbx_config_double(p->cfg, "broker_connect_timeout") * 6, err);
}
