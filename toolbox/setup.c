/*
 * setup.c - declare the broker topology and create Celery 5.2's result tables.
 *
 * The DDL is what SQLAlchemy emits for Celery 5.2.6's models
 * (celery-wire.md §2.2), guarded with IF NOT EXISTS and serialised with an
 * advisory lock so concurrent setups cannot race.
 */
#include "toolbox/setup.h"

#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "monitor_db.h"
#include "pg.h"
#include "topology.h"

static const char SCHEMA_SQL[] =
    "BEGIN;"
    "SELECT pg_advisory_xact_lock(727274001);"
    "CREATE SEQUENCE IF NOT EXISTS task_id_sequence START WITH 1;"
    "CREATE SEQUENCE IF NOT EXISTS taskset_id_sequence START WITH 1;"
    "CREATE TABLE IF NOT EXISTS celery_taskmeta ("
    " id INTEGER NOT NULL, task_id VARCHAR(155), status VARCHAR(50), result BYTEA,"
    " date_done TIMESTAMP WITHOUT TIME ZONE, traceback TEXT, name VARCHAR(155), args BYTEA,"
    " kwargs BYTEA, worker VARCHAR(155), retries INTEGER, queue VARCHAR(155),"
    " PRIMARY KEY (id), UNIQUE (task_id));"
    "CREATE TABLE IF NOT EXISTS celery_tasksetmeta ("
    " id INTEGER NOT NULL, taskset_id VARCHAR(155), result BYTEA,"
    " date_done TIMESTAMP WITHOUT TIME ZONE, PRIMARY KEY (id), UNIQUE (taskset_id));"
    "COMMIT;";


static tbx_status grant_worker(PGconn *c, const char *role, tbx_error *err)
{
    char *id = PQescapeIdentifier(c, role, strlen(role));
    if (!id)
        return tbx_pg_fail(c, NULL, "quoting the worker role", err);
    /* The worker can read and write its result rows and use the id sequence;
     * no DELETE, no TRUNCATE, nothing on any other table. */
    size_t n = 256 + 2 * strlen(id);
    char *sql = malloc(n);
    tbx_status st = TBX_ENOMEM;
    if (sql) {
        snprintf(sql, n,
                 "BEGIN;"
                 "SELECT pg_advisory_xact_lock(727274001);"
                 "GRANT SELECT, INSERT, UPDATE ON celery_taskmeta TO %s;"
                 "GRANT USAGE, SELECT ON SEQUENCE task_id_sequence TO %s;"
                 "COMMIT;",
                 id, id);
        st = tbx_pg_exec(c, sql, "granting the worker role its privileges", err);
        if (st)
            PQclear(PQexec(c, "ROLLBACK"));
    } else {
        tbx_seterr(err, st, NULL);
    }
    free(sql);
    PQfreemem(id);
    return st;
}

static tbx_status setup_database(const tbx_config *cfg, tbx_error *err)
{
    const char *admin = tbx_config_str(cfg, "database_admin_url");
    const char *worker = tbx_config_str(cfg, "result_backend");
    const char *url = (admin && *admin) ? admin : worker;
    PGconn *c;
    tbx_status st = tbx_pg_connect(url, "toolbox setup", &c, err);
    if (st)
        return st;
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    st = tbx_pg_exec(c, SCHEMA_SQL, "creating the result tables", err);
    if (st)
        PQclear(PQexec(c, "ROLLBACK"));
    if (!st && admin && *admin) {
        char *wuser = tbx_pg_url_user(worker), *auser = tbx_pg_url_user(admin);
        if (wuser && (!auser || strcmp(wuser, auser) != 0))
            st = grant_worker(c, wuser, err);
        free(wuser);
        free(auser);
    }
    if (!st)
        st = tbx_monitor_setup(c, cfg, err); /* the platform monitor's tables and grants */
    PQfinish(c);
    return st;
}

static tbx_status setup_broker(const tbx_config *cfg, tbx_error *err)
{
    tbx_broker *b;
    tbx_status st = tbx_broker_open_cfg(&b, cfg, "toolbox setup", err);
    if (st)
        return st;
    st = tbx_topology_declare(b, cfg, err);
    tbx_broker_close(b);
    return st;
}

tbx_status tbx_setup(const tbx_config *cfg, unsigned flags, tbx_error *err)
{
    tbx_status st = TBX_OK;
    if (flags & TBX_SETUP_BROKER)
        st = setup_broker(cfg, err);
    if (!st && (flags & TBX_SETUP_DATABASE))
        st = setup_database(cfg, err);
    return st;
}
