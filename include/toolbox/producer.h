/*
 * toolbox/producer.h - publish Celery tasks to the topic exchange with
 * publisher confirms.
 *
 * A tbx_producer owns one AMQP connection and must be used from one thread.
 * tbx_producer_send() returns only once the broker has confirmed the message
 * (it is on disk in every queue it was routed to). tbx_producer_publish()
 * pipelines up to broker_confirm_window unconfirmed messages; call
 * tbx_producer_flush() to wait for all of them.
 */
#ifndef TOOLBOX_PRODUCER_H
#define TOOLBOX_PRODUCER_H

#include <jansson.h>

#include "toolbox/config.h"
#include "toolbox/error.h"
#include "toolbox/message.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tbx_producer tbx_producer;

/* Flags for tbx_producer_open. */
#define TBX_PRODUCER_NO_SETUP 0x1 /* do not declare the topology first */

/* Connect to broker_url from cfg and, unless TBX_PRODUCER_NO_SETUP, declare the
 * topology (as cadasta-workertoolbox's setup_app): with setup_on_error=fail a
 * declare error fails the open, with =log it is logged and the open goes on.
 * cfg is borrowed and must outlive the producer. *out is owned by the caller. */
tbx_status tbx_producer_open(tbx_producer **out, const tbx_config *cfg, unsigned flags,
                             tbx_error *err);
void tbx_producer_close(tbx_producer *p); /* NULL ok; does not wait for confirms */

/* Publish task(args, kwargs) and wait for the broker's confirm. args/kwargs may
 * be NULL (empty); opts may be NULL. If id_out is non-NULL it receives the
 * task id. TBX_EUNROUTABLE: no queue is bound to the routing key (not even the
 * platform queue); TBX_ENACK: the broker refused it. */
tbx_status tbx_producer_send(tbx_producer *p, const char *task, const json_t *args,
                             const json_t *kwargs, const tbx_send_opts *opts,
                             char id_out[TBX_TASK_ID_LEN + 1], tbx_error *err);

/* Like send, but returns once written (waiting only when the confirm window is full). */
tbx_status tbx_producer_publish(tbx_producer *p, const char *task, const json_t *args,
                                const json_t *kwargs, const tbx_send_opts *opts,
                                char id_out[TBX_TASK_ID_LEN + 1], tbx_error *err);

/* Wait up to timeout seconds until every published message is confirmed.
 * Reports the first failure since the last flush (TBX_ENACK/TBX_EUNROUTABLE)
 * with the count of failed messages. */
tbx_status tbx_producer_flush(tbx_producer *p, double timeout, tbx_error *err);

/* Messages published and confirmed so far. */
unsigned long long tbx_producer_confirmed(const tbx_producer *p);

#ifdef __cplusplus
}
#endif
#endif
