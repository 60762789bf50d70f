/*
 * fuzz_wire_decode - AMQP content-header properties (as on the wire) and a body
 * into tbx_wire_decode. Input: u16 big-endian length of the property block,
 * the block (starting with the flags word), then the body.
 */
#include <amqp.h>
#include <amqp_framing.h>
#include <stdint.h>
#include <stdlib.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
    amqp_bytes_t enc = {plen, TBX_UNCONST(data + 2)};
    if (amqp_decode_properties(AMQP_BASIC_CLASS, &pool, enc, (void **)&props) == 0 && props) {
        tbx_task_msg *m = NULL;
        char *id = NULL;
        if (tbx_wire_decode(props, data + 2 + plen, size - 2 - plen, 1 << 20, &m, &id, NULL) == TBX_OK) {
            /* A decoded message must re-encode. */
            tbx_send_opts o = TBX_SEND_OPTS_INIT;
            o.task_id = m->id;
            tbx_wire_msg out;
            if (tbx_wire_encode(&out, m->task, m->args, m->kwargs, &o, 0, NULL) == TBX_OK)
                tbx_wire_free(&out);
        }
        tbx_task_msg_free(m);
        free(id);
    }
    empty_amqp_pool(&pool);
    return 0;
}
