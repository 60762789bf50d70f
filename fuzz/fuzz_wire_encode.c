/*
 * fuzz_wire_encode - any JSON document drives the encoder: [task, args, kwargs,
 * headers, options]; whatever encodes must serialise with rabbitmq-c and
 * decode back to the same task, id, args and kwargs.
 */
#include <amqp.h>
#include <amqp_framing.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *doc = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
    if (!doc)
        return 0;
    const char *task = json_string_value(json_array_get(doc, 0));
    json_t *args = json_array_get(doc, 1), *kwargs = json_array_get(doc, 2);
    json_t *headers = json_array_get(doc, 3), *opts = json_array_get(doc, 4);
    tbx_send_opts o = TBX_SEND_OPTS_INIT;
    o.headers = json_is_object(headers) ? headers : NULL;
    o.task_id = json_string_value(json_object_get(opts, "id"));
    o.countdown = json_number_value(json_object_get(opts, "countdown"));
    o.expires_in = json_number_value(json_object_get(opts, "expires"));
    o.eta = json_string_value(json_object_get(opts, "eta"));
    o.time_limit = json_number_value(json_object_get(opts, "time_limit"));
    o.soft_time_limit = json_number_value(json_object_get(opts, "soft_time_limit"));
    o.parent_id = json_string_value(json_object_get(opts, "parent_id"));
    o.creator_id = json_string_value(json_object_get(opts, "creator_id"));
    o.link = json_object_get(opts, "link");
    if (json_is_integer(json_object_get(opts, "priority")))
        o.priority = (int)json_integer_value(json_object_get(opts, "priority"));
    tbx_wire_msg m;
    if (task && tbx_wire_encode(&m, task, json_is_array(args) ? args : NULL,
                                json_is_object(kwargs) ? kwargs : NULL, &o, 0, NULL) == TBX_OK) {
        static unsigned char buf[1 << 20];
        amqp_bytes_t enc = {sizeof buf, buf};
        int n = amqp_encode_properties(AMQP_BASIC_CLASS, &m.props, enc);
        if (n > 0) {
            amqp_pool_t pool;
            init_amqp_pool(&pool, 4096);
            amqp_basic_properties_t *p = NULL;
            amqp_bytes_t in = {(size_t)n, buf};
            if (amqp_decode_properties(AMQP_BASIC_CLASS, &pool, in, (void **)&p) == 0) {
                tbx_task_msg *d = NULL;
                tbx_status st = tbx_wire_decode(p, m.body.data, m.body.len, 0, &d, NULL, NULL);
                /* A header named like a Celery one may legitimately change the meaning. */
                if (st == TBX_OK && !o.headers) {
                    if (strcmp(d->task, task) || strcmp(d->id, m.id))
                        abort();
                }
                tbx_task_msg_free(d);
            }
            empty_amqp_pool(&pool);
        }
        tbx_wire_free(&m);
    }
    json_decref(doc);
    return 0;
}
