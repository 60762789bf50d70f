/*
 * monitor_schema.c - the platform monitor's tables, created by `toolbox setup`, and their grants.
 *
 * Modelled on the Cadasta platform's tasks_backgroundtask (celery-wire.md §4.2), with two deliberate
 * differences: parent_id and root_id are plain text (the platform's foreign keys made a task whose
 * parent was not recorded yet fail at commit, and the consumer then dropped it), and creator /
 * related object are plain values (they come from message headers, not from the platform's users).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "monitor_db.h"
#include "pg.h"
#include "toolbox/setup.h"

/* Same advisory lock key as setup.c, so concurrent setups serialise. */
#define SETUP_LOCK "727274001"

static const char SCHEMA_SQL[] =
    "CREATE TABLE IF NOT EXISTS " TBX_MONITOR_TASK_TABLE " ("
    " id VARCHAR(24) NOT NULL PRIMARY KEY,"
    " task_id VARCHAR(155) NOT NULL UNIQUE,"
    " type VARCHAR(155) NOT NULL,"
    " input JSONB,"
    " options JSONB NOT NULL DEFAULT '{}',"
    " parent_id TEXT,"
    " root_id TEXT NOT NULL,"
    " creator_id TEXT,"
    " related_content_type_id BIGINT,"
    " related_object_id TEXT,"
    " immutable BOOLEAN,"
    " created_date TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),"
    " last_updated TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now());"
    "CREATE INDEX IF NOT EXISTS tasks_backgroundtask_root_id_idx ON " TBX_MONITOR_TASK_TABLE " (root_id);"
    "CREATE INDEX IF NOT EXISTS tasks_backgroundtask_created_idx ON " TBX_MONITOR_TASK_TABLE
    " (created_date);"
    "CREATE TABLE IF NOT EXISTS " TBX_MONITOR_PARKED_TABLE " ("
    " id VARCHAR(24) NOT NULL PRIMARY KEY,"
    " reason TEXT NOT NULL,"
    " task_id TEXT,"
    " routing_key TEXT,"
    " exchange TEXT,"
    " redelivered BOOLEAN NOT NULL DEFAULT false,"
    " properties JSONB,"
    " headers JSONB,"
    " body BYTEA NOT NULL,"
    " digest TEXT,"
    " received_date TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now());"
    "CREATE INDEX IF NOT EXISTS tasks_parkedmessage_digest_idx ON " TBX_MONITOR_PARKED_TABLE " (digest);"
    "CREATE INDEX IF NOT EXISTS tasks_parkedmessage_received_idx ON " TBX_MONITOR_PARKED_TABLE
    " (received_date);";

const char *tbx_monitor_schema_sql(void)
{
    return SCHEMA_SQL;
}

const char *tbx_monitor_db_url(const tbx_config *cfg)
{
    const char *u = tbx_config_str(cfg, "monitor.database_url");
    return u && *u ? u : tbx_config_str(cfg, "result_backend");
}


static tbx_status run_tx(PGconn *c, const char *body, const char *what, tbx_error *err)
{
    tbx_buf sql = {0};
    if (tbx_buf_printf(&sql, "BEGIN;SELECT pg_advisory_xact_lock(" SETUP_LOCK ");%sCOMMIT;", body))
        return tbx_seterr(err, TBX_ENOMEM, NULL);
    tbx_status st = tbx_pg_exec(c, (const char *)sql.data, what, err);
    if (st)
        PQclear(PQexec(c, "ROLLBACK"));
    tbx_buf_free(&sql);
    return st;
}

static tbx_status grant_monitor(PGconn *c, const char *role, int own_role, tbx_error *err)
{
    char *id = PQescapeIdentifier(c, role, strlen(role));
    if (!id)
        return tbx_pg_fail(c, NULL, "quoting the monitor role", err);
    /* get-or-create needs SELECT on the conflict key (ON CONFLICT DO NOTHING); the parked table is
     * read to skip a redelivered copy. No UPDATE, DELETE or TRUNCATE. */
    tbx_buf sql = {0};
    tbx_status st = TBX_OK;
    if (tbx_buf_printf(&sql,
                       "GRANT SELECT, INSERT ON " TBX_MONITOR_TASK_TABLE " TO %s;"
                       "GRANT SELECT, INSERT ON " TBX_MONITOR_PARKED_TABLE " TO %s;"
                       "%s%s%s",
                       id, id, own_role ? "GRANT SELECT ON celery_taskmeta TO " : "", own_role ? id : "",
                       own_role ? ";" : ""))
        st = tbx_seterr(err, TBX_ENOMEM, NULL);
    else
        st = run_tx(c, (const char *)sql.data, "granting the monitor role its privileges", err);
    tbx_buf_free(&sql);
    PQfreemem(id);
    return st;
}

tbx_status tbx_monitor_setup(PGconn *c, const tbx_config *cfg, tbx_error *err)
{
    tbx_status st = run_tx(c, SCHEMA_SQL, "creating the platform monitor's tables", err);
    if (st)
        return st;
    const char *admin = tbx_config_str(cfg, "database_admin_url");
    const char *role_url = tbx_monitor_db_url(cfg);
    if (!admin || !*admin || !role_url)
        return TBX_OK; /* one role does everything: it owns the tables */
    char *role = tbx_pg_url_user(role_url), *owner = tbx_pg_url_user(admin);
    char *worker = tbx_pg_url_user(tbx_config_str(cfg, "result_backend"));
    /* A monitor role of its own also reads task states (toolbox tasks); the workers' role never
     * gets more than the result table. */
    int own_role = role && (!worker || strcmp(role, worker) != 0);
    if (role && (!owner || strcmp(role, owner) != 0))
        st = grant_monitor(c, role, own_role, err);
    free(role);
    free(owner);
    free(worker);
    return st;
}
