/*
 * toolbox/conformance.h - the conformance suite: prove a worker's (or a producer's) configuration, and the
 * live broker and database it points at, against the platform architecture.
 *
 * tbx_conformance_suite() turns a loaded configuration into a Check suite. Run it like any other Check suite
 * (srunner_create / srunner_run_all / srunner_ntests_failed), from `toolbox-conformance` or from a service
 * worker's own test program. Each check is one TCase named after what it proves; a failing check fails with
 * one line:  "expected ...; found ...; fix: ...".
 *
 * The checks (worker-only ones marked *):
 *   configuration   default_queue_name, platform_queue_name, exchange_type_configured,
 *                   chord_unlock_retries_bounded, task_retries_bounded*, worker_queues*, queue_names_distinct
 *   broker          broker_reachable (TLS when broker_url is amqps://), exchange_exists, exchange_type (topic),
 *                   exchange_flags (Celery 5.2's declare: no 406 on redeclare), queues_exist, queue_flags,
 *                   bindings_readable, platform_catches_all, route_to_<queue> (one per default and service
 *                   queue), unknown_prefix_platform_only
 *   database        database_reachable (TLS when the URL's sslmode asks), result_table_schema,
 *                   result_table_readable, result_table_writable*, worker_least_privilege*
 *
 * Each check proves one property. A check whose prerequisite does not hold (broker or database unreachable,
 * exchange, queue or result table missing, bindings unreadable) passes without testing anything, so that
 * exactly the root cause fails; the suite as a whole still fails. Likewise the routing checks read the live
 * bindings with topic semantics whatever the exchange's type, which exchange_type checks on its own.
 *
 * Do no harm. The suite is safe to run against a production system: it publishes, consumes, requeues and
 * purges nothing, creates and deletes no exchange, queue or binding, and commits nothing. What it does:
 *   - AMQP: a passive declare of each entity, then, only for entities that exist, a redeclare with Celery's
 *     exact flags (an equivalent redeclare changes nothing; a 406/405 closes only the probing channel).
 *     The broker user therefore needs configure permission on them, as a Celery worker does. An entity
 *     deleted by someone else between the passive and the active declare would be recreated with Celery's
 *     flags (what `toolbox setup` does anyway).
 *   - Routing: AMQP 0-9-1 cannot list bindings, and RabbitMQ cannot route a message without delivering it:
 *     a probe published to the real exchange always reaches the platform queue through '#', where the
 *     platform monitor records it, and any queue with a waiting consumer gets it even with expiration "0";
 *     transactions route only at commit; a temporary exchange bound to or from the real one either routes
 *     into the real queues or learns nothing about their bindings. So the suite reads the exchange's bindings
 *     (following exchange-to-exchange bindings) read-only from RabbitMQ's management HTTP API and evaluates
 *     them with RabbitMQ's topic matching rules. The API is found at, in order: the configuration key
 *     broker_management_url if the key table has one, $TOOLBOX_BROKER_MANAGEMENT_URL, or
 *     http(s)://<broker user>:<password>@<broker host>:15672 (15671 for amqps) derived from broker_url. Its
 *     user needs the "monitoring" or "management" tag. HTTPS verifies the peer ($TOOLBOX_BROKER_CA_FILE).
 *   - PostgreSQL, with the worker's credentials (result_backend): catalog queries, and one INSERT (plus an
 *     UPDATE) of a probe row in a transaction that is always rolled back, with a lock and statement timeout.
 *     It never calls nextval(). Non-transactional side effects of triggers on celery_taskmeta, if any, are
 *     the only thing it cannot roll back.
 *
 * Ownership: cfg is borrowed for the call only; the suite keeps a private copy of what it needs, which lives
 * until the process exits (a few kilobytes per call). The returned Suite belongs to the caller and is freed by
 * srunner_free() of the SRunner it was added to. Safe to call from several threads.
 */
#ifndef TOOLBOX_CONFORMANCE_H
#define TOOLBOX_CONFORMANCE_H

#include <check.h>

#include "toolbox/config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The suite "conformance" for cfg. producer_only non-zero leaves out the checks that only a worker needs
 * (writing results, least privilege, retries, consumed queues). NULL if cfg is NULL or on ENOMEM. */
Suite *tbx_conformance_suite(const tbx_config *cfg, int producer_only);

#ifdef __cplusplus
}
#endif
#endif
