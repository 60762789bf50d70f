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

/* While a send or flush waits (for confirms, or for a resource alarm to clear), call
 * fn(userdata) about twice a second: the worker keeps its consumer connection's
 * heartbeats going meanwhile. fn must not use this producer. */
void tbx_producer_set_idle(tbx_producer *p, void (*fn)(void *), void *userdata);

#endif
