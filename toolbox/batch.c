/* batch.c - coalescing result rows and committing them with one multi-row upsert. */
#include "batch.h"

#include <stdlib.h>
#include <string.h>

#include "pg.h"

typedef struct row {
    char *task_id;
    char status[16];
    unsigned char *pickle;
    size_t pickle_len;
    char *traceback;
    /* result_extended */
    char *name, *args, *kwargs, *worker, *queue;
    int retries;
} row;

struct tbx_batch {
    row *rows;
    size_t len, cap;
};

/* unnest() keeps the rows' order; the guard mirrors tbx_backend_store. */
static const char BATCH_SQL[] =
    "INSERT INTO celery_taskmeta AS t (id, task_id, status, result, date_done, traceback) "
    "SELECT nextval('task_id_sequence'), u.task_id, u.status, u.result, "
    "CASE WHEN u.status IN ('SUCCESS', 'FAILURE', 'REVOKED') THEN (now() AT TIME ZONE 'UTC') END, "
    "u.traceback FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[]) "
    "AS u(task_id, status, result, traceback) "
    "ON CONFLICT (task_id) DO UPDATE SET status = EXCLUDED.status, result = EXCLUDED.result, "
    "date_done = EXCLUDED.date_done, traceback = EXCLUDED.traceback "
    "WHERE t.status IS DISTINCT FROM 'SUCCESS' AND (t.status IS NULL OR t.status NOT IN "
    "('FAILURE', 'REVOKED') OR EXCLUDED.status IN ('SUCCESS', 'FAILURE', 'REVOKED'))";

/* The same with Celery's result_extended columns (args/kwargs as JSON bytes). */
static const char BATCH_EXT_SQL[] =
    "INSERT INTO celery_taskmeta AS t (id, task_id, status, result, date_done, traceback, "
    "name, args, kwargs, worker, retries, queue) "
    "SELECT nextval('task_id_sequence'), u.task_id, u.status, u.result, "
    "CASE WHEN u.status IN ('SUCCESS', 'FAILURE', 'REVOKED') THEN (now() AT TIME ZONE 'UTC') END, "
    "u.traceback, u.name, convert_to(u.args, 'UTF8'), convert_to(u.kwargs, 'UTF8'), u.worker, u.retries, "
    "u.queue FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::text[], $6::text[], "
    "$7::text[], $8::text[], $9::int[], $10::text[]) "
    "AS u(task_id, status, result, traceback, name, args, kwargs, worker, retries, queue) "
    "ON CONFLICT (task_id) DO UPDATE SET status = EXCLUDED.status, result = EXCLUDED.result, "
    "date_done = EXCLUDED.date_done, traceback = EXCLUDED.traceback, name = EXCLUDED.name, "
    "args = EXCLUDED.args, kwargs = EXCLUDED.kwargs, worker = EXCLUDED.worker, "
    "retries = EXCLUDED.retries, queue = EXCLUDED.queue "
    "WHERE t.status IS DISTINCT FROM 'SUCCESS' AND (t.status IS NULL OR t.status NOT IN "
    "('FAILURE', 'REVOKED') OR EXCLUDED.status IN ('SUCCESS', 'FAILURE', 'REVOKED'))";

tbx_batch *tbx_batch_new(void)
{
    return calloc(1, sizeof(tbx_batch));
}

static void row_free(row *r)
{
    free(r->task_id);
    free(r->pickle);
    free(r->traceback);
    free(r->name);
    free(r->args);
    free(r->kwargs);
    free(r->worker);
    free(r->queue);
    memset(r, 0, sizeof *r);
}

static void batch_clear(tbx_batch *b)
{
    for (size_t i = 0; i < b->len; i++)
        row_free(&b->rows[i]);
    b->len = 0;
}

void tbx_batch_free(tbx_batch *b)
{
    if (!b)
        return;
    batch_clear(b);
    free(b->rows);
    free(b);
}

size_t tbx_batch_len(const tbx_batch *b)
{
    return b->len;
}

static int dup_opt(char **dst, const char *src)
{
    *dst = src ? strdup(src) : NULL;
    return src && !*dst ? -1 : 0;
}

int tbx_batch_put(tbx_batch *b, const char *task_id, const char *status, const unsigned char *pk,
                  size_t pklen, const char *traceback, const tbx_row_ext *ext)
{
    row *r = NULL;
    /* Batches are small (worker.result_batch); search from the newest. */
    for (size_t i = b->len; i-- > 0;)
        if (!strcmp(b->rows[i].task_id, task_id)) {
            r = &b->rows[i];
            break;
        }
    row nr = {0};
    nr.task_id = strdup(task_id);
    snprintf(nr.status, sizeof nr.status, "%s", status);
    if (pk && pklen && (nr.pickle = malloc(pklen))) {
        memcpy(nr.pickle, pk, pklen);
        nr.pickle_len = pklen;
    }
    int bad = dup_opt(&nr.traceback, traceback);
    nr.retries = -1;
    if (ext) {
        bad |= dup_opt(&nr.name, ext->name) | dup_opt(&nr.args, ext->args_json) |
               dup_opt(&nr.kwargs, ext->kwargs_json) | dup_opt(&nr.worker, ext->worker) |
               dup_opt(&nr.queue, ext->queue);
        nr.retries = ext->retries;
    }
    if (!nr.task_id || (pk && pklen && !nr.pickle) || bad) {
        row_free(&nr);
        return -1;
    }
    if (r) {
        row_free(r);
        *r = nr;
        return 0;
    }
    if (b->len == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        row *rows = realloc(b->rows, cap * sizeof *rows);
        if (!rows) {
            row_free(&nr);
            return -1;
        }
        b->rows = rows;
        b->cap = cap;
    }
    b->rows[b->len++] = nr;
    return 0;
}

/* Append s as a quoted element of a Postgres array literal. */
static int put_elem(tbx_buf *a, const char *s, size_t n)
{
    if (tbx_buf_putc(a, '"'))
        return -1;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if ((c == '"' || c == '\\') && tbx_buf_putc(a, '\\'))
            return -1;
        if (tbx_buf_putc(a, (unsigned char)c))
            return -1;
    }
    return tbx_buf_putc(a, '"');
}

static int put_bytea(tbx_buf *a, const unsigned char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    /* "\\x..." : the array parser turns \\ into \, bytea reads \x<hex>. */
    if (tbx_buf_append(a, "\"\\\\x", 4) || tbx_buf_reserve(a, 2 * n + 1))
        return -1;
    for (size_t i = 0; i < n; i++) {
        a->data[a->len++] = (unsigned char)hex[p[i] >> 4];
        a->data[a->len++] = (unsigned char)hex[p[i] & 15];
    }
    return tbx_buf_putc(a, '"');
}

static int put_text(tbx_buf *a, const char *s)
{
    return s ? put_elem(a, s, strlen(s)) : tbx_buf_append(a, "NULL", 4);
}

tbx_status tbx_batch_commit(tbx_batch *b, PGconn *conn, int extended, double timeout, void (*idle)(void *),
                            void *ud, tbx_error *err)
{
    if (b->len == 0)
        return TBX_OK;
    enum { NCOLS = 10 };
    int ncols = extended ? NCOLS : 4;
    tbx_buf arr[NCOLS] = {{0}};
    int rc = 0;
    for (int k = 0; k < ncols; k++)
        rc |= tbx_buf_putc(&arr[k], '{');
    for (size_t i = 0; i < b->len && !rc; i++) {
        const row *r = &b->rows[i];
        if (i)
            for (int k = 0; k < ncols; k++)
                rc |= tbx_buf_putc(&arr[k], ',');
        rc |= put_text(&arr[0], r->task_id);
        rc |= put_text(&arr[1], r->status);
        rc |= r->pickle ? put_bytea(&arr[2], r->pickle, r->pickle_len) : tbx_buf_append(&arr[2], "NULL", 4);
        rc |= put_text(&arr[3], r->traceback);
        if (extended) {
            rc |= put_text(&arr[4], r->name) | put_text(&arr[5], r->args) | put_text(&arr[6], r->kwargs) |
                  put_text(&arr[7], r->worker) | put_text(&arr[9], r->queue);
            rc |= r->retries >= 0 ? tbx_buf_printf(&arr[8], "%d", r->retries) : tbx_buf_append(&arr[8], "NULL", 4);
        }
    }
    for (int k = 0; k < ncols; k++)
        rc |= tbx_buf_append(&arr[k], "}", 2); /* with the NUL */
    tbx_status st = TBX_OK;
    if (rc) {
        st = tbx_seterr(err, TBX_ENOMEM, "out of memory building a result batch");
    } else {
        const char *params[NCOLS];
        for (int k = 0; k < ncols; k++)
            params[k] = (const char *)arr[k].data;
        PGresult *res = tbx_pg_exec_bounded(conn, extended ? BATCH_EXT_SQL : BATCH_SQL, ncols, params, timeout,
                                            idle, ud, err);
        if (!res)
            st = err && err->code ? err->code : TBX_EDB;
        else if (PQresultStatus(res) != PGRES_COMMAND_OK)
            st = tbx_pg_fail(conn, res, "storing results", err);
        PQclear(res);
    }
    for (int k = 0; k < ncols; k++)
        tbx_buf_free(&arr[k]);
    if (!st)
        batch_clear(b);
    return st;
}
