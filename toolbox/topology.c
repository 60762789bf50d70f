/* topology.c - the cadasta topology with kombu's exact declare flags (celery-wire.md §1.1). */
#include "topology.h"

#include <stdio.h>
#include <string.h>

static tbx_status declare_queue(tbx_broker *b, const char *exchange, const char *queue,
                                const char *key, tbx_error *err)
{
    /* durable=1, exclusive=0, auto_delete=0, no arguments: what kombu declares. */
    amqp_queue_declare(b->conn, b->channel, amqp_cstring_bytes(queue), 0, 1, 0, 0, amqp_empty_table);
    char what[300];
    snprintf(what, sizeof what, "declaring queue '%s'", queue);
    tbx_status st = tbx_broker_check(b, amqp_get_rpc_reply(b->conn), what, err);
    if (st)
        return st;
    amqp_queue_bind(b->conn, b->channel, amqp_cstring_bytes(queue), amqp_cstring_bytes(exchange),
                    amqp_cstring_bytes(key), amqp_empty_table);
    snprintf(what, sizeof what, "binding queue '%s' with key '%s'", queue, key);
    return tbx_broker_check(b, amqp_get_rpc_reply(b->conn), what, err);
}

tbx_status tbx_topology_declare(tbx_broker *b, const tbx_config *cfg, tbx_error *err)
{
    if (!b->channel && tbx_broker_reopen_channel(b, err))
        return TBX_EBROKER;
    const char *ex = tbx_config_str(cfg, "task_default_exchange");
    const char *type = tbx_config_str(cfg, "task_default_exchange_type");
    /* passive=0, durable=1, auto_delete=0, internal=0, no arguments. */
    amqp_exchange_declare(b->conn, b->channel, amqp_cstring_bytes(ex), amqp_cstring_bytes(type), 0, 1,
                          0, 0, amqp_empty_table);
    char what[300];
    snprintf(what, sizeof what, "declaring exchange '%s' (%s)", ex, type);
    tbx_status st = tbx_broker_check(b, amqp_get_rpc_reply(b->conn), what, err);
    if (st)
        return st;
    const char *dq = tbx_config_str(cfg, "task_default_queue");
    if ((st = declare_queue(b, ex, dq, dq, err)))
        return st;
    if ((st = declare_queue(b, ex, tbx_config_str(cfg, "platform_queue"), "#", err)))
        return st;
    size_t n = tbx_config_list_len(cfg, "queues");
    for (size_t i = 0; i < n; i++) {
        const char *q = tbx_config_list_at(cfg, "queues", i);
        if ((st = declare_queue(b, ex, q, q, err)))
            return st;
    }
    return TBX_OK;
}
