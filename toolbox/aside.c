/*
 * aside.c - move a message the worker cannot run out of its queue, to where an operator sees it.
 *
 * The message goes out unchanged (properties, headers, body) through the worker's follow-up producer
 * to the task exchange under TBX_ASIDE_ROUTING_KEY, with x-toolbox-aside-* headers saying why, which
 * worker, and where it was first published. Only the platform queue's catch-all binding matches that
 * key, so the platform monitor parks it in tasks_parkedmessage (`toolbox tasks --parked`, and
 * `--replay ID` to publish the original again). Publisher confirms and mandatory routing make the
 * move safe: the original is acknowledged only once the broker holds the copy.
 */
#include <stdlib.h>
#include <string.h>

#include "producer_internal.h"
#include "toolbox/log.h"
#include "toolbox/monitor.h"
#include "worker_internal.h"

static amqp_table_entry_t text_entry(const char *key, amqp_bytes_t value)
{
    amqp_table_entry_t e;
    e.key = amqp_cstring_bytes(key);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = value;
    return e;
}

int tbx_set_aside(tbx_worker *w, const amqp_envelope_t *env, const char *id, const char *reason)
{
    tbx_error err = {0};
    const amqp_basic_properties_t *in = &env->message.properties;
    int nold = (in->_flags & AMQP_BASIC_HEADERS_FLAG) ? in->headers.num_entries : 0;
    amqp_table_entry_t *entries = calloc((size_t)nold + 4, sizeof *entries);
    if (!entries) {
        tbx_log(TBX_LOG_ERROR, "out of memory moving message %s aside", id ? id : "(no id)");
        return -1;
    }
    int n = 0;
    for (int i = 0; i < nold; i++) { /* drop stale aside headers of a replayed copy */
        amqp_bytes_t k = in->headers.entries[i].key;
        if (k.len >= strlen(TBX_ASIDE_PREFIX) && !memcmp(k.bytes, TBX_ASIDE_PREFIX, strlen(TBX_ASIDE_PREFIX)))
            continue;
        entries[n++] = in->headers.entries[i];
    }
    entries[n++] = text_entry(TBX_ASIDE_REASON, amqp_cstring_bytes(reason));
    entries[n++] = text_entry(TBX_ASIDE_WORKER, amqp_cstring_bytes(w->hostname));
    entries[n++] = text_entry(TBX_ASIDE_EXCHANGE, env->exchange);
    entries[n++] = text_entry(TBX_ASIDE_ROUTING, env->routing_key);
    amqp_basic_properties_t p = *in;
    p._flags |= AMQP_BASIC_HEADERS_FLAG;
    p.headers.num_entries = n;
    p.headers.entries = entries;
    int rc = -1;
    if (!tbx_followup_producer(w, &err) &&
        !tbx_producer_publish_raw(w->prod, tbx_config_str(w->cfg, "task_default_exchange"), TBX_ASIDE_ROUTING_KEY,
                                  &p, env->message.body.bytes, env->message.body.len, id ? id : "", &err))
        rc = 0;
    else
        tbx_log(TBX_LOG_ERROR, "cannot move message %s aside (%s): rejecting it instead", id ? id : "(no id)",
                err.msg);
    free(entries);
    return rc;
}
