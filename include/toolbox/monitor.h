/*
 * toolbox/monitor.h - the platform monitor's tables and the platform's family-state rule.
 *
 * The platform monitor (workers/platform-monitor) consumes the catch-all queue and records every task
 * message once, in a table modelled on the Cadasta platform's BackgroundTask (celery-wire.md §4.2):
 *
 *   tasks_backgroundtask   one row per task id (get-or-create: a retry or a redelivery changes nothing)
 *     id                      varchar(24) primary key, random [a-z0-9] without l, 1, o, 0
 *     task_id                 varchar(155) unique: the `id` header
 *     type                    varchar(155): the `task` header
 *     input                   jsonb {"args": [...], "kwargs": {...}}; NULL when the body was unreadable
 *                             (the raw message is then in tasks_parkedmessage)
 *     options                 jsonb: the message properties with the whole header table as
 *                             "application_headers", plus the eta, expires, retries, timelimit and
 *                             is_result headers when set (as the platform's consumer copies them)
 *     parent_id, root_id      text, no foreign key: a task is never refused because its parent is missing
 *     creator_id              text, related_content_type_id bigint, related_object_id text: from the
 *                             headers of those names (producers put them there, celery-wire.md §4.3)
 *     immutable               boolean, NULL (kept for the platform's model)
 *     created_date, last_updated  timestamptz
 *
 *   tasks_parkedmessage    messages set aside: reason, task_id (when known), routing key, exchange,
 *                          redelivered, properties and headers as jsonb, the raw body as bytea,
 *                          received_date. Never deleted by the monitor.
 *
 * The tables are created by `toolbox setup` (tbx_setup with TBX_SETUP_DATABASE), which also grants the
 * result_backend role SELECT and INSERT on both and nothing else on them.
 */
#ifndef TOOLBOX_MONITOR_H
#define TOOLBOX_MONITOR_H

#include <stddef.h>

#include "toolbox/config.h"
#include "toolbox/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TBX_MONITOR_TASK_TABLE "tasks_backgroundtask"
#define TBX_MONITOR_PARKED_TABLE "tasks_parkedmessage"

/* A message a worker cannot run (undecodable, unknown task, a task that kept killing its worker) is
 * moved aside: the worker publishes it unchanged to the task exchange under TBX_ASIDE_ROUTING_KEY,
 * which only the platform queue's catch-all binding matches, with these headers added; the monitor
 * parks it in tasks_parkedmessage with the reason and the original exchange and routing key (and
 * without these headers), so that `toolbox tasks --replay ID` publishes the original again. */
#define TBX_ASIDE_ROUTING_KEY "toolbox.aside"
#define TBX_ASIDE_REASON "x-toolbox-aside-reason"          /* why (text) */
#define TBX_ASIDE_WORKER "x-toolbox-aside-worker"          /* the worker's hostname */
#define TBX_ASIDE_EXCHANGE "x-toolbox-aside-exchange"      /* exchange it was published to */
#define TBX_ASIDE_ROUTING "x-toolbox-aside-routing-key"    /* its routing key */
#define TBX_ASIDE_PREFIX "x-toolbox-aside-"

/* Length of the random row ids (the platform's RandomIDModel). */
#define TBX_MONITOR_ID_LEN 24

/* The DDL of both tables and their indexes, idempotent (CREATE ... IF NOT EXISTS), as one SQL text
 * without transaction control. Static string, never NULL. */
const char *tbx_monitor_schema_sql(void);

/* The database URL the platform monitor (and `toolbox tasks`) use: monitor.database_url, or
 * result_backend when that is empty. Owned by cfg. The monitor has a role of its own so that the
 * workers' role can touch nothing but the result table. */
const char *tbx_monitor_db_url(const tbx_config *cfg);

/* The platform's overall state of a task family (BackgroundTask.overall_status): statuses[0..n) are
 * the members' stored states, NULL for a member without a result row (PENDING). Members named
 * celery.chord_unlock must be left out by the caller. One distinct state -> that state; several ->
 * "FAILURE" if any member failed, else "STARTED"; n == 0 -> "PENDING". Returns a static string, or statuses[0] itself (the
 * caller's) when every member has that one stored state. */
const char *tbx_family_status(const char *const *statuses, size_t n);

/* A new random row id: TBX_MONITOR_ID_LEN characters of [a-z0-9] without l, 1, o and 0, then a NUL. */
void tbx_monitor_random_id(char out[TBX_MONITOR_ID_LEN + 1]);

#ifdef __cplusplus
}
#endif
#endif
