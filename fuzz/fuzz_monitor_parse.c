/* fuzz_monitor_parse - AMQP properties (as on the wire) and a body into tbx_mon_parse: every input must
 * become a task row and/or a parked message whose JSON texts jsonb accepts. Input as fuzz_wire_decode:
 * u16 BE length of the property block, the block, then the body. Seed corpus: fuzz/corpus/monitor_parse, a
 * link to fuzz/corpus/wire_decode (real Celery 5.2 messages, fuzz/gen_celery_seeds.py, and a moved-aside one). */
#include <amqp.h>
#include <amqp_framing.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "monitor_db.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int valid_json(const char *s)
{
    if (!s)
        return 1;
    json_t *j = json_loads(s, 0, NULL);
    int ok = j != NULL; /* json_loads refuses an escaped U+0000, as jsonb does */
    json_decref(j);
    return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t plen = ((size_t)data[0] << 8) | data[1];
    if (plen > size - 2)
        return 0;
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);
    amqp_basic_properties_t *props = NULL;
    amqp_bytes_t enc = {plen, (void *)(uintptr_t)(data + 2)};
    if (amqp_decode_properties(AMQP_BASIC_CLASS, &pool, enc, (void **)&props) == 0 && props) {
        tbx_mon_delivery d = {props, data + 2 + plen, size - 2 - plen, amqp_cstring_bytes("x"),
                              amqp_cstring_bytes("k"), 0, 1};
        tbx_mon_entry e;
        if (tbx_mon_parse(&d, 1 << 20, &e, NULL) == TBX_OK) {
            if (!e.has_task && !e.has_parked)
                abort(); /* every delivery must become something */
            if (e.has_task && (!e.task.task_id || !e.task.type || !e.task.root_id || !e.task.options ||
                               !valid_json(e.task.options) || !valid_json(e.task.input)))
                abort();
            if (e.has_parked && (!e.parked.reason || !valid_json(e.parked.headers) ||
                                 !valid_json(e.parked.properties)))
                abort();
            tbx_mon_batch *b = tbx_mon_batch_new();
            if (b && tbx_mon_batch_add(b, &e) == 0 && tbx_mon_batch_len(b) != 1)
                abort();
            tbx_mon_entry_clear(&e);
            tbx_mon_batch_free(b);
        }
    }
    empty_amqp_pool(&pool);
    return 0;
}
