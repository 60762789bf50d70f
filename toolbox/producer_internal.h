/* producer_internal.h - what the worker needs from the producer beyond the public API. Internal. */
#ifndef TOOLBOX_PRODUCER_INTERNAL_H
#define TOOLBOX_PRODUCER_INTERNAL_H

#include <amqp.h>

#include "toolbox/producer.h"

/* Publish an already encoded message (properties and body as received) to
 * exchange/routing_key and wait for its confirm. id names it in errors. */
tbx_status tbx_producer_publish_raw(tbx_producer *p, const char *exchange, const char *routing_key,
                                    const amqp_basic_properties_t *props, const void *body, size_t len,
                                    const char *id, tbx_error *err);

#endif
