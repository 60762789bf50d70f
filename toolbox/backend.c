/*
 * backend.c - reading and writing celery_taskmeta rows (celery-wire.md §2.4-2.5).
 */
#include "toolbox/result.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pg.h"
#include "toolbox/pickle.h"

struct tbx_backend {
    PGconn *conn;
    char *url;
};

static const char STORE_SQL[] =
    "INSERT INTO celery_taskmeta AS t (id, task_id, status, result, date_done, traceback) "
    "VALUES (nextval('task_id_sequence'), $1, $2, $3, "
    "CASE WHEN $4::boolean THEN (now() AT TIME ZONE 'UTC') END, $5) "
    "ON CONFLICT (task_id) DO UPDATE SET status = EXCLUDED.status, result = EXCLUDED.result, "
    "date_done = EXCLUDED.date_done, traceback = EXCLUDED.traceback "
    "WHERE t.status IS DISTINCT FROM 'SUCCESS' AND (t.status IS NULL OR t.status NOT IN "
    "('FAILURE', 'REVOKED') OR EXCLUDED.status IN ('SUCCESS', 'FAILURE', 'REVOKED'))";

static const char GET_SQL[] =
    "SELECT status, result, traceback, date_done::timestamp::text FROM celery_taskmeta "
    "WHERE task_id = $1";

int tbx_state_is_ready(const char *s)
{
    return s && (!strcmp(s, "SUCCESS") || !strcmp(s, "FAILURE") || !strcmp(s, "REVOKED"));
}

static tbx_status connect_backend(tbx_backend *b, tbx_error *err)
{
    tbx_status st = tbx_pg_connect(b->url, "toolbox result backend", &b->conn, err);
    if (st)
        return st;
    /* date_done is naive UTC in Celery's table and timestamptz in Cadasta's. */
    return tbx_pg_exec(b->conn, "SET TIME ZONE 'UTC'", "setting the session time zone", err);
}

tbx_status tbx_backend_open(tbx_backend **out, const char *url, tbx_error *err)
{
    *out = NULL;
    tbx_backend *b = calloc(1, sizeof *b);
    if (!b || !(b->url = strdup(url ? url : ""))) {
        free(b);
        return tbx_seterr(err, TBX_ENOMEM, NULL);
    }
    tbx_status st = connect_backend(b, err);
    if (st) {
        tbx_backend_close(b);
        return st;
    }
    *out = b;
    return TBX_OK;
}

void tbx_backend_close(tbx_backend *b)
{
    if (!b)
        return;
    if (b->conn)
        PQfinish(b->conn);
    free(b->url);
    free(b);
}

/* After a failed statement on a dead connection, reconnect once so the next call can work. */
static void maybe_reset(tbx_backend *b)
{
    if (PQstatus(b->conn) == CONNECTION_BAD) {
        PQreset(b->conn);
        if (PQstatus(b->conn) == CONNECTION_OK)
            PQclear(PQexec(b->conn, "SET TIME ZONE 'UTC'"));
    }
}

void tbx_result_clear(tbx_result *r)
{
    if (!r)
        return;
    free(r->status);
    json_decref(r->result);
    free(r->result_error);
    free(r->traceback);
    free(r->date_done);
    memset(r, 0, sizeof *r);
}

static char *col_dup(PGresult *r, int col)
{
    if (PQgetisnull(r, 0, col))
        return NULL;
    int n = PQgetlength(r, 0, col);
    char *s = malloc((size_t)n + 1);
    if (s) {
        memcpy(s, PQgetvalue(r, 0, col), (size_t)n);
        s[n] = '\0';
    }
    return s;
}

tbx_status tbx_backend_get(tbx_backend *b, const char *task_id, tbx_result *out, tbx_error *err)
{
    memset(out, 0, sizeof *out);
    const char *params[1] = {task_id};
    PGresult *r = PQexecParams(b->conn, GET_SQL, 1, NULL, params, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        tbx_status st = tbx_pg_fail(b->conn, r, "reading the result", err);
        PQclear(r);
        maybe_reset(b);
        return st;
    }
    if (PQntuples(r) == 0) {
        PQclear(r);
        return TBX_OK;
    }
    out->found = 1;
    out->status = col_dup(r, 0);
    out->traceback = col_dup(r, 2);
    out->date_done = col_dup(r, 3);
    if (!PQgetisnull(r, 0, 1)) {
        tbx_error e = {0};
        if (tbx_pickle_load((const unsigned char *)PQgetvalue(r, 0, 1), (size_t)PQgetlength(r, 0, 1),
                            &out->result, &e))
            out->result_error = strdup(e.msg);
    }
    PQclear(r);
    return TBX_OK;
}

tbx_status tbx_backend_wait(tbx_backend *b, const char *task_id, double timeout, double interval,
                            tbx_result *out, tbx_error *err)
{
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (interval <= 0)
        interval = 0.1;
    for (;;) {
        tbx_status st = tbx_backend_get(b, task_id, out, err);
        if (st)
            return st;
        if (out->found && tbx_state_is_ready(out->status))
            return TBX_OK;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double el = (double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) / 1e9;
        if (timeout > 0 && el >= timeout)
            return tbx_seterr(err, TBX_ETIMEOUT, "task %s not ready after %.1f s (state %s)", task_id,
                              timeout, out->found ? out->status : "PENDING");
        tbx_result_clear(out);
        struct timespec ts = {(time_t)interval, (long)((interval - (double)(time_t)interval) * 1e9)};
        nanosleep(&ts, NULL);
    }
}

tbx_status tbx_backend_store(tbx_backend *b, const char *task_id, const char *status,
                             const unsigned char *result, size_t len, const char *traceback,
                             int *applied, tbx_error *err)
{
    const char *params[5] = {task_id, status, (const char *)result,
                             tbx_state_is_ready(status) ? "true" : "false", traceback};
    int lengths[5] = {0, 0, (int)len, 0, 0};
    int formats[5] = {0, 0, 1, 0, 0};
    PGresult *r = PQexecParams(b->conn, STORE_SQL, 5, NULL, params, lengths, formats, 0);
    tbx_status st = TBX_OK;
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        st = tbx_pg_fail(b->conn, r, "storing the result", err);
    } else if (applied) {
        *applied = atoi(PQcmdTuples(r)) > 0;
    }
    PQclear(r);
    if (st)
        maybe_reset(b);
    return st;
}

json_t *tbx_result_to_json(const char *task_id, const tbx_result *r)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "task_id", json_string(task_id));
    json_object_set_new(o, "status", json_string(r->found && r->status ? r->status : "PENDING"));
    json_object_set_new(o, "result", r->result ? json_incref(r->result) : json_null());
    if (r->result_error)
        json_object_set_new(o, "result_error", json_string(r->result_error));
    json_object_set_new(o, "traceback", r->traceback ? json_string(r->traceback) : json_null());
    json_object_set_new(o, "date_done", r->date_done ? json_string(r->date_done) : json_null());
    return o;
}
