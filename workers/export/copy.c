/*
 * copy.c - COPY TO STDOUT into a file, without blocking past the soft time
 * limit: the connection is used in non-blocking reads with a 200 ms poll.
 */
#include "copy.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pg.h"

int export_connect(const char *url, PGconn **out, export_err *e)
{
    tbx_error err = {0};
    if (!url || !*url) {
        export_seterr(e, "RuntimeError", "no data database configured (export.data_url)");
        return -1;
    }
    if (tbx_pg_connect(url, "export-worker", out, &err) != TBX_OK) {
        export_seterr(e, err.code == TBX_ENOMEM ? "MemoryError" : "ConnectionError", "%s", err.msg);
        return -1;
    }
    return 0;
}

/* ---- SQL -------------------------------------------------------------------------------- */

static int put_ident(PGconn *c, tbx_buf *b, const char *name, export_err *e)
{
    char *q = PQescapeIdentifier(c, name, strlen(name));
    if (!q) {
        char m[300];
        snprintf(m, sizeof m, "%s", PQerrorMessage(c));
        m[strcspn(m, "\n")] = '\0';
        export_seterr(e, "ValueError", "invalid identifier: %s", m);
        return -1;
    }
    int rc = tbx_buf_append(b, q, strlen(q));
    PQfreemem(q);
    if (rc)
        export_seterr(e, "MemoryError", "out of memory building the query");
    return rc;
}

char *export_table_sql(PGconn *c, const char *schema, const char *table, const char *const *cols,
                       size_t ncols, export_err *e)
{
    tbx_buf b = {0};
    if (tbx_buf_printf(&b, "COPY (SELECT "))
        goto nomem;
    if (!ncols && tbx_buf_putc(&b, '*'))
        goto nomem;
    for (size_t i = 0; i < ncols; i++) {
        if (i && tbx_buf_append(&b, ", ", 2))
            goto nomem;
        if (put_ident(c, &b, cols[i], e))
            goto fail;
    }
    if (tbx_buf_printf(&b, " FROM "))
        goto nomem;
    if (schema) {
        if (put_ident(c, &b, schema, e) || tbx_buf_putc(&b, '.'))
            goto fail;
    }
    if (put_ident(c, &b, table, e))
        goto fail;
    if (tbx_buf_printf(&b, ") TO STDOUT WITH (FORMAT csv, HEADER true)") || tbx_buf_putc(&b, '\0'))
        goto nomem;
    return (char *)b.data;
nomem:
    export_seterr(e, "MemoryError", "out of memory building the query");
fail:
    tbx_buf_free(&b);
    return NULL;
}

#define CSV_OUT " TO STDOUT WITH (FORMAT csv, HEADER true)"

static const struct {
    const char *name, *sql;
} QUERIES[] = {
    /* How many tasks are in each state (the result table of this very platform). */
    {"task_states", "COPY (SELECT status, count(*) AS tasks FROM celery_taskmeta"
                    " GROUP BY status ORDER BY status)" CSV_OUT},
    /* The latest failures with their tracebacks (multi-line text: quoted fields). */
    {"recent_failures", "COPY (SELECT task_id, date_done, traceback FROM celery_taskmeta"
                        " WHERE status = 'FAILURE' ORDER BY date_done DESC NULLS LAST, task_id"
                        " LIMIT 1000)" CSV_OUT},
    /* The tables and views the data role can see, outside the system schemas. */
    {"tables", "COPY (SELECT table_schema, table_name, table_type FROM information_schema.tables"
               " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
               " ORDER BY table_schema, table_name)" CSV_OUT},
};

const char *export_named_query(const char *name)
{
    for (size_t i = 0; i < sizeof QUERIES / sizeof *QUERIES; i++)
        if (!strcmp(QUERIES[i].name, name))
            return QUERIES[i].sql;
    return NULL;
}

const char *export_named_query_list(void)
{
    return "task_states, recent_failures, tables";
}

/* ---- errors ------------------------------------------------------------------------------- */

static const char *sqlstate_type(const char *st)
{
    if (!st)
        return "RuntimeError";
    static const char *const value_states[] = {"42P01", "3F000", "42703", "42809", "42602", "42622", NULL};
    for (size_t i = 0; value_states[i]; i++)
        if (!strcmp(st, value_states[i]))
            return "ValueError";
    if (!strcmp(st, "42501"))
        return "PermissionError";
    if (!strcmp(st, "57014"))
        return "TimeoutError";
    if (!strcmp(st, "53100"))
        return "OSError";
    if (!strncmp(st, "08", 2) || !strncmp(st, "57P", 3))
        return "ConnectionError";
    return "RuntimeError";
}

/* e from a failed result (r may be NULL: connection-level failure). */
static int pgerr(PGconn *c, const PGresult *r, export_err *e)
{
    const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *m = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    char msg[400];
    snprintf(msg, sizeof msg, "%s", m && *m ? m : PQerrorMessage(c));
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\t')
            *p = ' ';
    size_t n = strlen(msg);
    while (n && msg[n - 1] == ' ')
        msg[--n] = '\0';
    const char *type = r ? sqlstate_type(st) : "ConnectionError";
    if (st)
        export_seterr(e, type, "%s (SQLSTATE %s)", msg, st);
    else
        export_seterr(e, type, "%s", msg);
    return -1;
}

/* ---- streaming ---------------------------------------------------------------------------- */

static void cancel(PGconn *c)
{
    PGcancel *k = PQgetCancel(c);
    if (k) {
        char buf[256];
        (void)PQcancel(k, buf, sizeof buf);
        PQfreeCancel(k);
    }
}

/* Wait up to 200 ms for input, then read it. -1 with e on a dead connection or
 * a passed soft limit. */
static int wait_input(PGconn *c, tbx_task *t, export_err *e)
{
    struct pollfd p = {.fd = PQsocket(c), .events = POLLIN};
    if (p.fd < 0)
        return pgerr(c, NULL, e);
    int r = poll(&p, 1, 200);
    if (r < 0 && errno != EINTR) {
        export_seterr(e, "ConnectionError", "poll on the database socket: %s", strerror(errno));
        return -1;
    }
    if (t && tbx_task_soft_limit_exceeded(t)) {
        cancel(c);
        export_seterr(e, "SoftTimeLimitExceeded", "soft time limit exceeded during the export");
        return -1;
    }
    if (r > 0 && !PQconsumeInput(c))
        return pgerr(c, NULL, e);
    return 0;
}

/* The next result, waiting without blocking past the soft limit. *out NULL at the end. */
static int next_result(PGconn *c, tbx_task *t, PGresult **out, export_err *e)
{
    while (PQisBusy(c))
        if (wait_input(c, t, e))
            return -1;
    *out = PQgetResult(c);
    return 0;
}

static int simple(PGconn *c, const char *sql, export_err *e)
{
    PGresult *r = PQexec(c, sql);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        rc = pgerr(c, r, e);
    PQclear(r);
    return rc;
}

int export_copy(PGconn *c, const char *copy_sql, export_writer *w, tbx_task *t, uint64_t *rows,
                export_err *e)
{
    *rows = 0;
    if (simple(c, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", e))
        return -1;
    if (!PQsendQuery(c, copy_sql))
        return pgerr(c, NULL, e);
    PGresult *r = NULL;
    if (next_result(c, t, &r, e))
        return -1;
    if (PQresultStatus(r) != PGRES_COPY_OUT) {
        pgerr(c, r, e);
        PQclear(r);
        return -1;
    }
    PQclear(r);
    for (;;) {
        char *buf = NULL;
        int n = PQgetCopyData(c, &buf, 1);
        if (n > 0) {
            int bad = export_writer_write(w, buf, (size_t)n, e);
            PQfreemem(buf);
            if (bad) {
                cancel(c);
                return -1;
            }
            if (t && tbx_task_soft_limit_exceeded(t)) {
                cancel(c);
                export_seterr(e, "SoftTimeLimitExceeded", "soft time limit exceeded during the export");
                return -1;
            }
        } else if (n == 0) {
            if (wait_input(c, t, e))
                return -1;
        } else if (n == -1) {
            break;
        } else {
            return pgerr(c, NULL, e);
        }
    }
    if (next_result(c, t, &r, e))
        return -1;
    if (PQresultStatus(r) != PGRES_COMMAND_OK) { /* e.g. an error raised while rows were produced */
        pgerr(c, r, e);
        PQclear(r);
        return -1;
    }
    *rows = strtoull(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    for (;;) { /* drain: PQgetResult must return NULL before the next command */
        if (next_result(c, t, &r, e))
            return -1;
        if (!r)
            break;
        PQclear(r);
    }
    return simple(c, "COMMIT", e);
}
