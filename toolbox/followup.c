/*
 * followup.c - messages a finished task sends on, as Celery's tracer does:
 * a retry (same id, retries+1, eta, parent_id = own id), callbacks (`link`,
 * the result prepended to their args), errbacks (`link_error`, called with
 * the task id) and the next step of a chain (embed.chain is reversed: the
 * last element runs next and carries the rest along).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "producer_internal.h"
#include "toolbox/log.h"
#include "worker_internal.h"

void tbx_worker_keep_alive(void *ud)
{
    tbx_worker *w = ud;
    if (!w->b || w->b->broken)
        return;
    int hb = amqp_get_heartbeat(w->b->conn);
    double now = tbx_mono();
    if (hb <= 0 || now - w->hb_sent_at < hb / 2.0)
        return;
    amqp_frame_t f = {.frame_type = AMQP_FRAME_HEARTBEAT, .channel = 0};
    if (amqp_send_frame(w->b->conn, &f) == AMQP_STATUS_OK)
        w->hb_sent_at = now;
}

tbx_status tbx_followup_producer(tbx_worker *w, tbx_error *err)
{
    if (w->prod)
        return TBX_OK;
    tbx_status st = tbx_producer_open(&w->prod, w->cfg, TBX_PRODUCER_NO_SETUP, err);
    if (!st)
        tbx_producer_set_idle(w->prod, tbx_worker_keep_alive, w);
    return st;
}

static tbx_status publish(tbx_worker *w, const char *task, const json_t *args, const json_t *kwargs,
                          const tbx_send_opts *o, tbx_error *err)
{
    tbx_status st = tbx_followup_producer(w, err);
    if (st)
        return st;
    st = tbx_producer_send(w->prod, task, args, kwargs, o, NULL, err);
    if (st == TBX_EBROKER || st == TBX_ETIMEOUT) {
        /* The publishing connection died: one fresh attempt. */
        tbx_producer_close(w->prod);
        w->prod = NULL;
        if (!tbx_followup_producer(w, NULL))
            st = tbx_producer_send(w->prod, task, args, kwargs, o, NULL, err);
    }
    return st;
}

tbx_status tbx_followup_retry(tbx_worker *w, const job *j, double countdown, tbx_error *err)
{
    const tbx_task_msg *m = j->msg;
    const tbx_handler *h = &w->handlers[j->handler];
    tbx_send_opts o = TBX_SEND_OPTS_INIT;
    o.task_id = m->id;
    o.retries = m->retries + 1;
    o.countdown = countdown > 0 ? countdown : 0.000001;
    o.expires = m->expires;
    o.time_limit = m->time_limit;
    o.soft_time_limit = m->soft_time_limit;
    o.parent_id = m->id; /* sent from inside the task, as Celery does */
    o.root_id = m->root_id;
    o.group_id = m->group;
    o.group_index = m->group_index;
    o.shadow = m->shadow;
    o.ignore_result = m->ignore_result;
    int prio = m->priority + h->opts.retry_priority_delta;
    o.priority = prio < 0 ? 0 : prio > 255 ? 255 : prio;
    o.link = json_object_get(m->embed, "callbacks");
    o.link_error = json_object_get(m->embed, "errbacks");
    o.chain = json_object_get(m->embed, "chain");
    o.routing_key = m->routing_key;
    return publish(w, m->task, m->args, m->kwargs, &o, err);
}

/* Publish one signature object with `first` (if non-NULL) prepended to its args. */
static tbx_status apply_sig(tbx_worker *w, const job *j, const json_t *sig, const json_t *first,
                            const json_t *chain_rest, tbx_error *err)
{
    const char *task = json_string_value(json_object_get(sig, "task"));
    if (!task)
        return tbx_seterr(err, TBX_EDECODE, "follow-up signature of %s has no task name", j->msg->id);
    json_t *sargs = json_object_get(sig, "args");
    json_t *kwargs = json_object_get(sig, "kwargs");
    json_t *opts = json_object_get(sig, "options");
    json_t *args = json_array();
    if (first && !json_is_true(json_object_get(sig, "immutable")))
        json_array_append(args, (json_t *)(uintptr_t)first);
    if (json_is_array(sargs))
        json_array_extend(args, sargs);
    tbx_send_opts o = TBX_SEND_OPTS_INIT;
    o.task_id = json_string_value(json_object_get(opts, "task_id"));
    o.parent_id = j->msg->id;
    o.root_id = j->msg->root_id;
    json_t *v;
    if (json_is_number(v = json_object_get(opts, "countdown")))
        o.countdown = json_number_value(v);
    if (json_is_string(v = json_object_get(opts, "eta")))
        o.eta = json_string_value(v);
    if (json_is_number(v = json_object_get(opts, "expires")))
        o.expires_in = json_number_value(v);
    else if (json_is_string(v = json_object_get(opts, "expires")))
        o.expires = json_string_value(v);
    if (json_is_integer(v = json_object_get(opts, "priority")))
        o.priority = (int)json_integer_value(v);
    if (json_is_number(v = json_object_get(opts, "time_limit")))
        o.time_limit = json_number_value(v);
    if (json_is_number(v = json_object_get(opts, "soft_time_limit")))
        o.soft_time_limit = json_number_value(v);
    o.link = json_object_get(opts, "link");
    o.link_error = json_object_get(opts, "link_error");
    if (chain_rest && json_array_size(chain_rest))
        o.chain = chain_rest;
    if (o.priority > 255 || o.priority < -1)
        o.priority = -1;
    tbx_status st = publish(w, task, args, json_is_object(kwargs) ? kwargs : NULL, &o, err);
    json_decref(args);
    return st;
}

tbx_status tbx_followup_success(tbx_worker *w, const job *j, const char *result_json, tbx_error *err)
{
    json_t *callbacks = json_object_get(j->msg->embed, "callbacks");
    json_t *chain = json_object_get(j->msg->embed, "chain");
    if (!json_array_size(callbacks) && !json_array_size(chain))
        return TBX_OK;
    json_t *result = json_loads(result_json ? result_json : "null", JSON_DECODE_ANY, NULL);
    if (!result)
        result = json_null();
    tbx_status st = TBX_OK;
    size_t i;
    json_t *sig;
    json_array_foreach(callbacks, i, sig) {
        if (json_is_object(sig) && (st = apply_sig(w, j, sig, result, NULL, err)))
            break;
    }
    if (!st && json_array_size(chain)) {
        json_t *rest = json_copy(chain);
        size_t n = json_array_size(rest);
        json_t *next = json_incref(json_array_get(rest, n - 1));
        json_array_remove(rest, n - 1);
        if (json_is_object(next))
            st = apply_sig(w, j, next, result, rest, err);
        json_decref(next);
        json_decref(rest);
    }
    json_decref(result);
    return st;
}

tbx_status tbx_followup_failure(tbx_worker *w, const job *j, tbx_error *err)
{
    json_t *errbacks = json_object_get(j->msg->embed, "errbacks");
    if (!json_array_size(errbacks))
        return TBX_OK;
    json_t *id = json_string(j->msg->id);
    tbx_status st = TBX_OK;
    size_t i;
    json_t *sig;
    json_array_foreach(errbacks, i, sig) {
        if (json_is_object(sig) && (st = apply_sig(w, j, sig, id, NULL, err)))
            break;
    }
    json_decref(id);
    return st;
}
