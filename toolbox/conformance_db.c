/*
 * conformance_db.c - the result database checks, run with the worker's own credentials (result_backend).
 *
 * Celery 5.2's database backend (celery-wire.md §2.2) inserts (id = nextval('task_id_sequence'), task_id,
 * status, date_done) into celery_taskmeta and updates the row by task_id. The checks read the catalogs
 * (pg_attribute and friends are readable without privileges), and prove writing with that exact INSERT and
 * UPDATE on a probe row inside a transaction that is always rolled back; they never call nextval(), whose
 * effect a rollback would not undo.
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conformance_internal.h"
#include "pg.h"
#include "toolbox/message.h"

#define TABLE "celery_taskmeta"
#define WRITE_FIX "GRANT INSERT, UPDATE ON " TABLE " TO %s (`toolbox setup` with database_admin_url does)"

/* Open the result database; NULL when it cannot be reached (database_reachable reports that). */
static PGconn *db_open(const tbx_conf_ctx *c, tbx_error *err)
{
    PGconn *db = NULL;
    if (tbx_pg_connect(c->result_backend, "toolbox-conformance", &db, err))
        return NULL;
    PQclear(PQexec(db, "SET statement_timeout = '20s'"));
    return db;
}

/* Run sql with text parameters; the result, or NULL (msg gets the server's one-line message). */
static PGresult *run(PGconn *db, const char *sql, int n, const char *const *params, char *msg, size_t cap)
{
    PGresult *r = PQexecParams(db, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType s = PQresultStatus(r);
    if (s == PGRES_TUPLES_OK || s == PGRES_COMMAND_OK)
        return r;
    const char *m = r ? PQresultErrorMessage(r) : PQerrorMessage(db);
    snprintf(msg, cap, "%s", m && *m ? m : "unknown error");
    tbx_conf_one_line(msg);
    size_t len = strlen(msg);
    while (len && msg[len - 1] == ' ')
        msg[--len] = '\0';
    PQclear(r);
    return NULL;
}

/* The columns Celery's backend needs: name, accepted types (pg_type.typname), smallest varchar length. */
typedef struct column {
    const char *name, *types;
    int min_len, extended;
} column;

static const column COLUMNS[] = {
    {"id", "int2 int4 int8", 0, 0},
    {"task_id", "varchar text bpchar", 36, 0},
    {"status", "varchar text bpchar", 7, 0},
    {"result", "bytea", 0, 0},
    {"date_done", "timestamp timestamptz", 0, 0},
    {"traceback", "text varchar", 0, 0},
    {"name", "varchar text", 0, 1},
    {"args", "bytea", 0, 1},
    {"kwargs", "bytea", 0, 1},
    {"worker", "varchar text", 0, 1},
    {"retries", "int2 int4 int8", 0, 1},
    {"queue", "varchar text", 0, 1},
};
#define NCOLUMNS (sizeof COLUMNS / sizeof COLUMNS[0])

static int type_ok(const char *types, const char *t)
{
    size_t n = strlen(t);
    for (const char *p = types; (p = strstr(p, t)) != NULL; p += n)
        if ((p == types || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
            return 1;
    return 0;
}

/* The table as the worker sees it. */
typedef struct table {
    int exists, sequence;            /* celery_taskmeta; task_id_sequence is a sequence */
    int have[NCOLUMNS];              /* column present */
    char type[NCOLUMNS][64];
    int len[NCOLUMNS];               /* varchar length, -1 when unlimited */
    char user[128];
} table;

/* 0 on success, else msg says why. */
static int read_table(PGconn *db, table *t, char *msg, size_t cap)
{
    memset(t, 0, sizeof *t);
    PGresult *r = run(db,
                      "SELECT to_regclass('" TABLE "') IS NOT NULL, "
                      " coalesce((SELECT relkind = 'S' FROM pg_class WHERE oid = to_regclass('task_id_sequence')),"
                      " false), current_user",
                      0, NULL, msg, cap);
    if (!r)
        return -1;
    t->exists = PQgetvalue(r, 0, 0)[0] == 't';
    t->sequence = PQgetvalue(r, 0, 1)[0] == 't';
    snprintf(t->user, sizeof t->user, "%s", PQgetvalue(r, 0, 2));
    PQclear(r);
    if (!t->exists)
        return 0;
    r = run(db,
            "SELECT a.attname, t.typname, CASE WHEN t.typname IN ('varchar', 'bpchar') AND a.atttypmod > 4"
            " THEN a.atttypmod - 4 ELSE -1 END FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
            " WHERE a.attrelid = to_regclass('" TABLE "') AND a.attnum > 0 AND NOT a.attisdropped",
            0, NULL, msg, cap);
    if (!r)
        return -1;
    for (int i = 0; i < PQntuples(r); i++)
        for (size_t k = 0; k < NCOLUMNS; k++)
            if (!strcmp(PQgetvalue(r, i, 0), COLUMNS[k].name)) {
                t->have[k] = 1;
                snprintf(t->type[k], sizeof t->type[k], "%s", PQgetvalue(r, i, 1));
                t->len[k] = atoi(PQgetvalue(r, i, 2));
            }
    PQclear(r);
    return 0;
}

static size_t col_index(const char *name)
{
    for (size_t k = 0; k < NCOLUMNS; k++)
        if (!strcmp(COLUMNS[k].name, name))
            return k;
    return 0;
}

/* ---- checks ------------------------------------------------------------------------------------------- */

START_TEST(check_database_reachable)
{
    const tbx_conf_ctx *c = tbx_conf_ctx_of(_i, NULL);
    tbx_conf_verdict v = {0};
    tbx_error err = {0};
    PGconn *db = db_open(c, &err);
    if (!db) {
        tbx_conf_expected(&v, "to log in to the result database (result_backend) as the worker");
        tbx_conf_found(&v, "%s", err.msg);
        tbx_conf_fix(&v, "check result_backend (host, port, database, user, password, sslmode)");
    } else {
        const char *mode = NULL;
        PQconninfoOption *opts = PQconninfo(db);
        for (PQconninfoOption *o = opts; o && o->keyword; o++)
            if (!strcmp(o->keyword, "sslmode") && o->val)
                mode = o->val;
        int wants = mode && (!strcmp(mode, "require") || !strcmp(mode, "verify-ca") ||
                             !strcmp(mode, "verify-full"));
        if (wants && !PQsslInUse(db)) {
            tbx_conf_expected(&v, "TLS to the result database (sslmode=%s)", mode);
            tbx_conf_found(&v, "a connection without TLS");
            tbx_conf_fix(&v, "enable ssl on the database server");
        }
        PQconninfoFree(opts);
    }
    PQfinish(db);
    tbx_conf_report(&v);
}
END_TEST

START_TEST(check_result_table_schema)
{
    const tbx_conf_ctx *c = tbx_conf_ctx_of(_i, NULL);
    tbx_conf_verdict v = {0};
    PGconn *db = db_open(c, NULL);
    table t;
    char msg[512];
    if (db && read_table(db, &t, msg, sizeof msg)) {
        tbx_conf_fail(&v, "to read the catalog of the result database", msg, "check the worker role's login");
    } else if (db && !t.exists) {
        tbx_conf_expected(&v, "table " TABLE " (Celery 5.2's database result backend)");
        tbx_conf_found(&v, "no such table in the search_path of role '%s'", t.user);
        tbx_conf_fix(&v, "run `toolbox setup` (creates it with database_admin_url)");
    } else if (db) {
        tbx_buf missing = {0}, wrong = {0};
        for (size_t k = 0; k < NCOLUMNS; k++) {
            if (COLUMNS[k].extended && !c->result_extended)
                continue;
            if (!t.have[k])
                tbx_buf_printf(&missing, "%s%s", missing.len ? ", " : "", COLUMNS[k].name);
            else if (!type_ok(COLUMNS[k].types, t.type[k]))
                tbx_buf_printf(&wrong, "%s%s is %s (want %s)", wrong.len ? ", " : "", COLUMNS[k].name,
                               t.type[k], COLUMNS[k].types);
            else if (COLUMNS[k].min_len && t.len[k] >= 0 && t.len[k] < COLUMNS[k].min_len)
                tbx_buf_printf(&wrong, "%s%s is %s(%d) (want at least %d)", wrong.len ? ", " : "",
                               COLUMNS[k].name, t.type[k], t.len[k], COLUMNS[k].min_len);
        }
        if (missing.len || wrong.len || !t.sequence) {
            tbx_conf_expected(&v, "table " TABLE " with Celery 5.2's columns id, task_id, status, result, "
                                  "date_done, traceback%s, and sequence task_id_sequence",
                              c->result_extended ? ", name, args, kwargs, worker, retries, queue" : "");
            if (missing.len)
                tbx_conf_found(&v, "missing column%s %.*s", strchr((const char *)missing.data, ',') ? "s" : "",
                               (int)missing.len, (const char *)missing.data);
            if (wrong.len)
                tbx_conf_found(&v, "%.*s", (int)wrong.len, (const char *)wrong.data);
            if (!t.sequence)
                tbx_conf_found(&v, "no sequence task_id_sequence");
            if (missing.len || wrong.len)
                tbx_conf_fix(&v, "as the table's owner, ALTER TABLE " TABLE " ADD/ALTER the columns as Celery "
                                 "5.2 creates them (see `toolbox setup`)");
            if (!t.sequence)
                tbx_conf_fix(&v, "CREATE SEQUENCE task_id_sequence (Celery inserts nextval('task_id_sequence'))");
        }
        tbx_buf_free(&missing);
        tbx_buf_free(&wrong);
    }
    PQfinish(db);
    tbx_conf_report(&v);
}
END_TEST

START_TEST(check_result_table_readable)
{
    const tbx_conf_ctx *c = tbx_conf_ctx_of(_i, NULL);
    tbx_conf_verdict v = {0};
    PGconn *db = db_open(c, NULL);
    table t;
    char msg[512];
    if (db && !read_table(db, &t, msg, sizeof msg) && t.exists) {
        /* What AsyncResult reads. WHERE false reads no row; privileges are checked all the same. */
        tbx_buf sql = {0};
        tbx_buf_printf(&sql, "SELECT ");
        size_t n = 0;
        for (size_t k = 0; k < NCOLUMNS; k++)
            if (t.have[k] && (!COLUMNS[k].extended || c->result_extended))
                tbx_buf_printf(&sql, "%s%s", n++ ? ", " : "", COLUMNS[k].name);
        tbx_buf_printf(&sql, "%s FROM " TABLE " WHERE false", n ? "" : "1");
        PGresult *r = tbx_buf_putc(&sql, '\0') ? NULL : run(db, (const char *)sql.data, 0, NULL, msg, sizeof msg);
        if (!r) {
            tbx_conf_expected(&v, "role '%s' to read " TABLE " (results and their states)", t.user);
            tbx_conf_found(&v, "%s", msg);
            tbx_conf_fix(&v, "GRANT SELECT ON " TABLE " TO %s (`toolbox setup` with database_admin_url does)",
                         t.user);
        }
        PQclear(r);
        tbx_buf_free(&sql);
    }
    PQfinish(db);
    tbx_conf_report(&v);
}
END_TEST

START_TEST(check_result_table_writable)
{
    const tbx_conf_ctx *c = tbx_conf_ctx_of(_i, NULL);
    tbx_conf_verdict v = {0};
    PGconn *db = db_open(c, NULL);
    table t;
    char msg[512];
    if (db && !read_table(db, &t, msg, sizeof msg) && t.exists) {
        /* Celery's first write, on a probe row no one else can know of, then rolled back. */
        char id[TBX_TASK_ID_LEN + 1], num[32];
        tbx_uuid4(id);
        unsigned long x = strtoul(id + 24, NULL, 16) & 0x3fffffffUL;
        size_t k_id = col_index("id");
        snprintf(num, sizeof num, "-%lu", 1 + x % (!strcmp(t.type[k_id], "int2") ? 30000UL : 2000000000UL));
        tbx_buf ins = {0}, vals = {0};
        const char *params[2];
        int np = 0;
        static const char *const insert_cols[] = {"id", "task_id", "status", "date_done"};
        for (size_t i = 0; i < 4; i++) {
            if (!t.have[col_index(insert_cols[i])])
                continue; /* result_table_schema reports it */
            tbx_buf_printf(&ins, "%s%s", ins.len ? ", " : "", insert_cols[i]);
            if (i == 0 || i == 1) {
                params[np++] = i == 0 ? num : id;
                tbx_buf_printf(&vals, "%s$%d", vals.len ? ", " : "", np);
            } else {
                tbx_buf_printf(&vals, "%s%s", vals.len ? ", " : "", i == 2 ? "'PENDING'" : "now() AT TIME ZONE 'utc'");
            }
        }
        PGresult *r = run(db, "BEGIN", 0, NULL, msg, sizeof msg);
        PQclear(r);
        PQclear(PQexec(db, "SET LOCAL lock_timeout = '2s'"));
        PQclear(PQexec(db, "SET LOCAL statement_timeout = '10s'"));
        tbx_buf sql = {0};
        tbx_buf_printf(&sql, "INSERT INTO " TABLE " (%.*s) VALUES (%.*s)", (int)ins.len,
                       ins.data ? (const char *)ins.data : "", (int)vals.len,
                       vals.data ? (const char *)vals.data : "");
        tbx_buf_putc(&sql, '\0');
        r = ins.len ? run(db, (const char *)sql.data, np, params, msg, sizeof msg) : NULL;
        if (ins.len && !r) {
            tbx_conf_expected(&v, "role '%s' to insert into " TABLE " as Celery does", t.user);
            tbx_conf_found(&v, "%s", msg);
            tbx_conf_fix(&v, WRITE_FIX, t.user);
        } else if (r) {
            PQclear(r);
            /* The UPDATE reads task_id; without SELECT on it result_table_readable fails, not this check. */
            const char *cp[] = {id};
            r = run(db, "SELECT has_column_privilege('" TABLE "', 'task_id', 'SELECT')", 0, NULL, msg, sizeof msg);
            int can_read = r && PQgetvalue(r, 0, 0)[0] == 't';
            PQclear(r);
            if (can_read && t.have[col_index("task_id")] && t.have[col_index("status")]) {
                r = run(db, "UPDATE " TABLE " SET status = 'SUCCESS' WHERE task_id = $1", 1, cp, msg, sizeof msg);
                if (!r) {
                    tbx_conf_expected(&v, "role '%s' to update its rows of " TABLE " as Celery does", t.user);
                    tbx_conf_found(&v, "%s", msg);
                    tbx_conf_fix(&v, WRITE_FIX, t.user);
                }
                PQclear(r);
            }
        }
        PQclear(PQexec(db, "ROLLBACK"));
        if (t.sequence) {
            r = run(db, "SELECT has_sequence_privilege('task_id_sequence', 'USAGE') OR "
                        "has_sequence_privilege('task_id_sequence', 'UPDATE')", 0, NULL, msg, sizeof msg);
            if (r && PQgetvalue(r, 0, 0)[0] != 't') {
                tbx_conf_expected(&v, "role '%s' to use sequence task_id_sequence (nextval)", t.user);
                tbx_conf_found(&v, "no USAGE privilege on it");
                tbx_conf_fix(&v, "GRANT USAGE, SELECT ON SEQUENCE task_id_sequence TO %s", t.user);
            }
            PQclear(r);
        }
        tbx_buf_free(&sql);
        tbx_buf_free(&ins);
        tbx_buf_free(&vals);
    }
    PQfinish(db);
    tbx_conf_report(&v);
}
END_TEST

/* Every privilege of the current role beyond what a worker needs, one row per relation. Objects that belong to
 * extensions (e.g. PostGIS's spatial_ref_sys, readable by PUBLIC) are not application data and are skipped. */
static const char EXCESS_SQL[] =
    "WITH rel AS ("
    " SELECT c.oid, c.relkind, format('%I.%I', n.nspname, c.relname) AS name"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p', 'S')"
    "  AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
    "  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'"
    "  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass"
    "                  AND d.objid = c.oid AND d.deptype = 'e')),"
    " priv AS ("
    " SELECT r.oid, r.name, r.relkind, p.priv FROM rel r CROSS JOIN LATERAL unnest(CASE WHEN r.relkind = 'S'"
    "  THEN ARRAY['USAGE', 'SELECT', 'UPDATE']"
    "  ELSE ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'] END) AS p(priv)"
    " WHERE CASE WHEN r.relkind = 'S' THEN has_sequence_privilege(r.oid, p.priv)"
    "  WHEN p.priv IN ('SELECT', 'INSERT', 'UPDATE', 'REFERENCES') THEN has_any_column_privilege(r.oid, p.priv)"
    "  ELSE has_table_privilege(r.oid, p.priv) END)"
    " SELECT name, relkind = 'S', string_agg(priv, ', ' ORDER BY priv) FROM priv WHERE NOT ("
    "  (oid IN (coalesce(to_regclass('celery_taskmeta')::oid, 0), coalesce(to_regclass('celery_tasksetmeta')::oid, 0))"
    "   AND priv IN ('SELECT', 'INSERT', 'UPDATE'))"
    "  OR (oid IN (coalesce(to_regclass('task_id_sequence')::oid, 0), coalesce(to_regclass('taskset_id_sequence')::oid, 0))"
    "   AND priv IN ('USAGE', 'SELECT')))"
    " GROUP BY name, relkind ORDER BY name";

START_TEST(check_worker_least_privilege)
{
    const tbx_conf_ctx *c = tbx_conf_ctx_of(_i, NULL);
    tbx_conf_verdict v = {0};
    PGconn *db = db_open(c, NULL);
    char msg[512];
    tbx_buf found = {0}, fix = {0};
    char user[128] = "";
    int failed = 0;
    PGresult *r = db ? run(db,
                           "SELECT current_user, current_database(), concat_ws(' ', CASE WHEN rolsuper THEN"
                           " 'SUPERUSER' END, CASE WHEN rolcreatedb THEN 'CREATEDB' END, CASE WHEN rolcreaterole"
                           " THEN 'CREATEROLE' END, CASE WHEN rolreplication THEN 'REPLICATION' END, CASE WHEN"
                           " rolbypassrls THEN 'BYPASSRLS' END),"
                           " (SELECT string_agg(b.rolname, ', ' ORDER BY b.rolname) FROM pg_auth_members m"
                           "  JOIN pg_roles b ON b.oid = m.roleid WHERE m.member = u.oid),"
                           " has_database_privilege(current_database(), 'CREATE'),"
                           " (SELECT string_agg(nspname, ', ' ORDER BY nspname) FROM pg_namespace WHERE nspname"
                           "  NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'"
                           "  AND has_schema_privilege(oid, 'CREATE'))"
                           " FROM pg_roles u WHERE u.rolname = current_user",
                           0, NULL, msg, sizeof msg)
                     : NULL;
    if (db && !r) {
        tbx_conf_fail(&v, "to read the worker role's privileges", msg, "check the worker role's login");
    } else if (r && PQntuples(r) == 1) {
        snprintf(user, sizeof user, "%s", PQgetvalue(r, 0, 0));
        const char *dbname = PQgetvalue(r, 0, 1), *attrs = PQgetvalue(r, 0, 2), *member = PQgetvalue(r, 0, 3);
        const char *schemas = PQgetvalue(r, 0, 5);
        if (*attrs) {
            tbx_buf_printf(&found, "%srole attributes %s", found.len ? "; " : "", attrs);
            tbx_buf_printf(&fix, "%sALTER ROLE %s NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS",
                           fix.len ? "; " : "", user);
        }
        if (*member) {
            tbx_buf_printf(&found, "%smember of %s", found.len ? "; " : "", member);
            tbx_buf_printf(&fix, "%sREVOKE %s FROM %s", fix.len ? "; " : "", member, user);
        }
        if (PQgetvalue(r, 0, 4)[0] == 't') {
            tbx_buf_printf(&found, "%sCREATE on database %s", found.len ? "; " : "", dbname);
            tbx_buf_printf(&fix, "%sREVOKE CREATE ON DATABASE %s FROM %s, PUBLIC", fix.len ? "; " : "", dbname,
                           user);
        }
        if (*schemas) {
            tbx_buf_printf(&found, "%sCREATE on schema %s", found.len ? "; " : "", schemas);
            tbx_buf_printf(&fix, "%sREVOKE CREATE ON SCHEMA %s FROM %s, PUBLIC", fix.len ? "; " : "", schemas,
                           user);
        }
        PQclear(r);
        r = run(db, EXCESS_SQL, 0, NULL, msg, sizeof msg);
        if (!r) {
            tbx_buf_printf(&found, "%scannot list privileges: %s", found.len ? "; " : "", msg);
            failed = 1;
        }
        for (int i = 0; r && i < PQntuples(r); i++) {
            int seq = PQgetvalue(r, i, 1)[0] == 't';
            tbx_buf_printf(&found, "%s%s %s", found.len ? "; " : "", PQgetvalue(r, i, 2), PQgetvalue(r, i, 0));
            tbx_buf_printf(&fix, "%sREVOKE %s ON %s%s FROM %s, PUBLIC", fix.len ? "; " : "", PQgetvalue(r, i, 2),
                           seq ? "SEQUENCE " : "", PQgetvalue(r, i, 0), user);
        }
    }
    PQclear(r);
    if (found.len || failed) {
        tbx_conf_expected(&v, "worker role '%s' to hold nothing but SELECT, INSERT, UPDATE on " TABLE
                              " (and celery_tasksetmeta) and USAGE, SELECT on their sequences",
                          user);
        tbx_conf_found(&v, "%.*s", (int)found.len, found.data ? (const char *)found.data : "");
        tbx_conf_fix(&v, "%.*s", (int)fix.len, fix.data ? (const char *)fix.data : "grant nothing else");
    }
    tbx_buf_free(&found);
    tbx_buf_free(&fix);
    PQfinish(db);
    tbx_conf_report(&v);
}
END_TEST

void tbx_conf_add_db_checks(Suite *s, int ctx_index, const tbx_conf_ctx *c)
{
    double t = 60;
    tbx_conf_add(s, "database_reachable", check_database_reachable, ctx_index, 0, t);
    tbx_conf_add(s, "result_table_schema", check_result_table_schema, ctx_index, 0, t);
    tbx_conf_add(s, "result_table_readable", check_result_table_readable, ctx_index, 0, t);
    if (!c->producer_only) {
        tbx_conf_add(s, "result_table_writable", check_result_table_writable, ctx_index, 0, t);
        tbx_conf_add(s, "worker_least_privilege", check_worker_least_privilege, ctx_index, 0, t);
    }
}
