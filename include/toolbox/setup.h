/*
 * toolbox/setup.h - the topology and the result tables, declared idempotently.
 *
 * Broker: the topic exchange, the default queue (bound with its own name),
 * the platform queue (bound with '#') and each service queue (bound with its
 * name), all with the exact flags a Python Celery 5.2 worker uses (durable,
 * not exclusive, not auto-delete, no arguments) so either side can redeclare
 * without a 406. Database: Celery 5.2's celery_taskmeta/celery_tasksetmeta
 * and their sequences, and the worker role's least-privilege grants.
 */
#ifndef TOOLBOX_SETUP_H
#define TOOLBOX_SETUP_H

#include "toolbox/config.h"
#include "toolbox/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TBX_SETUP_BROKER 0x1
#define TBX_SETUP_DATABASE 0x2

/* Declare what flags ask for, using cfg's URLs (database_admin_url for DDL
 * when set). Safe to run any number of times and concurrently. */
tbx_status tbx_setup(const tbx_config *cfg, unsigned flags, tbx_error *err);

/* libpq connection string for a configured database URL: strips Celery's
 * "db+" prefix. Returns a malloc'd string (caller frees) or NULL on ENOMEM. */
char *tbx_pg_conninfo(const char *url);

#ifdef __cplusplus
}
#endif
#endif
