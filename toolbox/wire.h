/*
 * wire.h - Celery protocol v2 <-> AMQP basic properties, header table and body.
 * Internal: uses rabbitmq-c types, which the public headers do not expose.
 */
#ifndef TOOLBOX_WIRE_H
#define TOOLBOX_WIRE_H

#include <amqp.h>
#include <jansson.h>

#include "internal.h"
#include "toolbox/message.h"

/* One encoded publication. Everything it points to is owned by it (pool and
 * body); release with tbx_wire_free. */
typedef struct tbx_wire_msg {
    amqp_pool_t pool;
    amqp_basic_properties_t props;
    amqp_table_entry_t *headers;
    int nheaders;
    tbx_buf body;
    char id[TBX_TASK_ID_LEN + 1];
    char routing_key[256];
    char expiration[32];
} tbx_wire_msg;

/* Encode task(args, kwargs) with opts (NULL = defaults). args may be NULL
 * (empty list), kwargs may be NULL (empty object). default_priority applies
 * when opts->priority < 0. */
tbx_status tbx_wire_encode(tbx_wire_msg *out, const char *task, const json_t *args,
                           const json_t *kwargs, const tbx_send_opts *opts,
                           int default_priority, tbx_error *err);
void tbx_wire_free(tbx_wire_msg *msg);

/* Decode one delivery. max_body bounds the body size (0: no limit). On success
 * *out is a new message owned by the caller. On TBX_EDECODE/TBX_ELIMIT/
 * TBX_EUNSUPPORTED, err says why; when the id header could be read, *id_out
 * (if non-NULL) receives a malloc'd copy so the caller can record the reason. */
tbx_status tbx_wire_decode(const amqp_basic_properties_t *props, const void *body, size_t len,
                           size_t max_body, tbx_task_msg **out, char **id_out, tbx_error *err);

/* AMQP field value <-> JSON, with the type letters py-amqp reads correctly. */
json_t *tbx_wire_field_to_json(const amqp_field_value_t *v, int depth);
tbx_status tbx_wire_json_to_field(amqp_pool_t *pool, const json_t *j, amqp_field_value_t *out, int depth);

/* The basic properties (without the headers) as JSON, as kombu's message.properties shows them.
 * text turns a short string into JSON (NULL: invalid UTF-8 replaced by '?'). New reference. */
json_t *tbx_wire_props_to_json(const amqp_basic_properties_t *p, json_t *(*text)(amqp_bytes_t));

/* Duplicate an amqp_bytes_t as a NUL-terminated malloc'd string (NULL on ENOMEM). */
char *tbx_bytes_dup(amqp_bytes_t b);

#endif
