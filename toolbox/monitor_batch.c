/*
 * monitor_batch.c - the platform monitor's batched get-or-create.
 *
 * One statement per batch, so one transaction and one fsync: task rows go in with
 * INSERT ... SELECT FROM unnest(arrays) ON CONFLICT (task_id) DO NOTHING RETURNING task_id, and
 * parked messages in a second data-modifying CTE of the same statement. The task ids that come back
 * are the new rows; every other task entry was a duplicate (a retry or a redelivery) and changed
 * nothing. If the database refuses the batch because of one entry's data, the entries are written
 * one by one and the refused ones are parked with the server's reason.
 *
 * A new row's created_date and last_updated are one clock reading: clock_timestamp() is taken once
 * per row in a subquery that OFFSET 0 keeps the planner from flattening (two calls could differ by a
 * microsecond).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "monitor_db.h"
#include "pg.h"

#define NPARAMS 21

static const char BATCH_SQL[] =
    "WITH t AS (INSERT INTO " TBX_MONITOR_TASK_TABLE " (id, task_id, type, input, options, parent_id, root_id,"
    " creator_id, related_content_type_id, related_object_id, created_date, last_updated)"
    " SELECT u.id, u.task_id, u.type, u.input::jsonb, u.options::jsonb, u.parent_id, u.root_id, u.creator_id,"
    " u.ct, u.obj, u.at, u.at"
    " FROM (SELECT w.*, clock_timestamp() AS at"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],"
    " $8::text[], $9::bigint[], $10::text[])"
    " AS w(id, task_id, type, input, options, parent_id, root_id, creator_id, ct, obj) OFFSET 0) AS u"
    " ON CONFLICT (task_id) DO NOTHING RETURNING task_id),"
    " p AS (INSERT INTO " TBX_MONITOR_PARKED_TABLE " (id, reason, task_id, routing_key, exchange, redelivered,"
    " properties, headers, body, digest, received_date)"
    " SELECT v.id, v.reason, v.task_id, v.rk, v.ex, v.redelivered, v.props::jsonb, v.headers::jsonb, v.body,"
    " v.digest, clock_timestamp()"
    " FROM unnest($11::text[], $12::text[], $13::text[], $14::text[], $15::text[], $16::boolean[],"
    " $17::text[], $18::text[], $19::bytea[], $20::text[], $21::boolean[])"
    " AS v(id, reason, task_id, rk, ex, redelivered, props, headers, body, digest, dedupe)"
    " WHERE NOT (v.dedupe AND (EXISTS (SELECT 1 FROM " TBX_MONITOR_PARKED_TABLE " x WHERE x.digest = v.digest)"
    " OR EXISTS (SELECT 1 FROM unnest($20::text[], $21::boolean[]) AS s(digest, dedupe)"
    " WHERE s.digest = v.digest AND NOT s.dedupe))) RETURNING 1)"
    " SELECT task_id FROM t UNION ALL SELECT NULL FROM p";

#define STMT "tbx_monitor_batch"

tbx_status tbx_mon_prepare(PGconn *c, tbx_error *err)
{
    PGresult *r = PQprepare(c, STMT, BATCH_SQL, 0, NULL);
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    tbx_status st = PQresultStatus(r) == PGRES_COMMAND_OK ? TBX_OK
                    : tbx_pg_fail(c, r,
                                  state && !strcmp(state, "42P01")
                                      ? "the monitor's tables are missing (run `toolbox setup`)"
                                      : "preparing the batch statement",
                                  err);
    PQclear(r);
    return st;
}

struct tbx_mon_batch {
    tbx_mon_entry *e;
    tbx_mon_fate *fate;
    size_t len, cap;
    tbx_buf arr[NPARAMS]; /* array parameters, reused from batch to batch */
    int sent;             /* a statement is in flight */
};

tbx_mon_batch *tbx_mon_batch_new(void)
{
    return calloc(1, sizeof(tbx_mon_batch));
}

void tbx_mon_batch_reset(tbx_mon_batch *b)
{
    for (size_t i = 0; i < b->len; i++)
        tbx_mon_entry_clear(&b->e[i]);
    b->len = 0;
    b->sent = 0;
}

void tbx_mon_batch_free(tbx_mon_batch *b)
{
    if (!b)
        return;
    tbx_mon_batch_reset(b);
    for (int k = 0; k < NPARAMS; k++)
        tbx_buf_free(&b->arr[k]);
    free(b->e);
    free(b->fate);
    free(b);
}

int tbx_mon_batch_add(tbx_mon_batch *b, tbx_mon_entry *e)
{
    if (b->len == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        tbx_mon_entry *ne = realloc(b->e, cap * sizeof *ne);
        if (!ne)
            return -1;
        b->e = ne;
        tbx_mon_fate *nf = realloc(b->fate, cap * sizeof *nf);
        if (!nf)
            return -1;
        b->fate = nf;
        b->cap = cap;
    }
    b->e[b->len] = *e;
    b->fate[b->len] = TBX_MON_PENDING;
    b->len++;
    memset(e, 0, sizeof *e);
    return 0;
}

size_t tbx_mon_batch_len(const tbx_mon_batch *b)
{
    return b->len;
}

const tbx_mon_entry *tbx_mon_batch_at(const tbx_mon_batch *b, size_t i)
{
    return i < b->len ? &b->e[i] : NULL;
}

tbx_mon_fate tbx_mon_batch_fate(const tbx_mon_batch *b, size_t i)
{
    return i < b->len ? b->fate[i] : TBX_MON_PENDING;
}

uint64_t tbx_mon_batch_last_tag(const tbx_mon_batch *b)
{
    return b->len ? b->e[b->len - 1].tag : 0;
}

/* ---- array parameters ---------------------------------------------------------------------------
 * Sent in Postgres's binary array format: no quoting on our side, no array parsing on the server's.
 * Layout: ndim=1, has-null flag, element type OID, then (size, lower bound 1); then each element as a
 * 4-byte length (-1 for NULL) and its bytes. Integers are big-endian. */

#define ARR_HEADER 20
#define OID_BOOL 16
#define OID_BYTEA 17
#define OID_INT8 20
#define OID_TEXT 25

static const uint32_t ARR_OID[NPARAMS] = {
    OID_TEXT, OID_TEXT, OID_TEXT, OID_TEXT, OID_TEXT, OID_TEXT, OID_TEXT, OID_TEXT, OID_INT8, OID_TEXT,
    OID_TEXT, OID_TEXT, OID_TEXT, OID_TEXT, OID_TEXT, OID_BOOL, OID_TEXT, OID_TEXT, OID_BYTEA, OID_TEXT,
    OID_BOOL};

static void be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Start an empty array: the header is filled by close_arrays. */
static int open_arrays(tbx_buf *arr, uint32_t *count, int *nulls)
{
    for (int k = 0; k < NPARAMS; k++) {
        arr[k].len = 0;
        count[k] = 0;
        nulls[k] = 0;
        if (tbx_buf_reserve(&arr[k], ARR_HEADER))
            return -1;
        memset(arr[k].data, 0, ARR_HEADER);
        arr[k].len = ARR_HEADER;
    }
    return 0;
}

/* One element of n bytes at p, or NULL when p is NULL. */
static int put_elem(tbx_buf *a, uint32_t *count, int *nulls, const void *p, size_t n)
{
    unsigned char len[4];
    if (n > 0x3fffffff)
        return -1;
    be32(len, p ? (uint32_t)n : 0xffffffffu);
    if (tbx_buf_append(a, len, 4) || (p && n && tbx_buf_append(a, p, n)))
        return -1;
    (*count)++;
    if (!p)
        *nulls = 1;
    return 0;
}

static void close_arrays(tbx_buf *arr, const uint32_t *count, const int *nulls)
{
    for (int k = 0; k < NPARAMS; k++) {
        unsigned char *h = arr[k].data;
        be32(h, 1);
        be32(h + 4, (uint32_t)nulls[k]);
        be32(h + 8, ARR_OID[k]);
        be32(h + 12, count[k]);
        be32(h + 16, 1);
    }
}

#define PUT(k, p, n) rc |= put_elem(&arr[k], &count[k], &nulls[k], (p), (n))
#define PUT_STR(k, s) \
    do { \
        const char *s_ = (s); \
        PUT(k, s_, s_ ? strlen(s_) : 0); \
    } while (0)

static int put_entry(tbx_buf *arr, uint32_t *count, int *nulls, const tbx_mon_entry *e)
{
    int rc = 0;
    if (e->has_task) {
        const tbx_mon_task *t = &e->task;
        unsigned char ct[8];
        uint64_t v = (uint64_t)t->related_ct;
        for (int i = 0; i < 8; i++)
            ct[i] = (unsigned char)(v >> (56 - 8 * i));
        PUT_STR(0, t->id);
        PUT_STR(1, t->task_id);
        PUT_STR(2, t->type);
        PUT_STR(3, t->input);
        PUT_STR(4, t->options);
        PUT_STR(5, t->parent_id);
        PUT_STR(6, t->root_id);
        PUT_STR(7, t->creator_id);
        PUT(8, t->has_related_ct ? ct : NULL, 8);
        PUT_STR(9, t->related_object_id);
    }
    if (e->has_parked) {
        const tbx_mon_parked *p = &e->parked;
        unsigned char redelivered = p->redelivered ? 1 : 0;
        PUT_STR(10, p->id);
        PUT_STR(11, p->reason ? p->reason : "unknown");
        PUT_STR(12, p->task_id);
        PUT_STR(13, p->routing_key);
        PUT_STR(14, p->exchange);
        PUT(15, &redelivered, 1);
        PUT_STR(16, p->properties);
        PUT_STR(17, p->headers);
        PUT(18, e->body ? (const void *)e->body : "", e->body_len);
        PUT_STR(19, p->digest[0] ? p->digest : NULL);
        unsigned char dedupe = p->dedupe ? 1 : 0;
        PUT(20, &dedupe, 1);
    }
    return rc;
}

static tbx_status send_entries(tbx_mon_batch *b, PGconn *c, size_t only, tbx_error *err)
{
    uint32_t count[NPARAMS];
    int nulls[NPARAMS];
    int rc = open_arrays(b->arr, count, nulls);
    for (size_t i = 0; i < b->len && !rc; i++)
        if (only == (size_t)-1 ? b->fate[i] == TBX_MON_PENDING : i == only)
            rc = put_entry(b->arr, count, nulls, &b->e[i]);
    if (rc)
        return tbx_seterr(err, TBX_ENOMEM, "out of memory building a batch of %zu messages", b->len);
    close_arrays(b->arr, count, nulls);
    const char *params[NPARAMS];
    int lengths[NPARAMS], formats[NPARAMS];
    for (int k = 0; k < NPARAMS; k++) {
        params[k] = (const char *)b->arr[k].data;
        lengths[k] = (int)b->arr[k].len;
        formats[k] = 1;
    }
    if (!PQsendQueryPrepared(c, STMT, NPARAMS, params, lengths, formats, 0))
        return tbx_pg_fail(c, NULL, "sending a batch", err);
    b->sent = 1;
    return TBX_OK;
}

tbx_status tbx_mon_batch_send(tbx_mon_batch *b, PGconn *c, tbx_error *err)
{
    return send_entries(b, c, (size_t)-1, err);
}

int tbx_mon_batch_ready(tbx_mon_batch *b, PGconn *c)
{
    (void)b;
    if (!PQconsumeInput(c))
        return -1;
    return PQisBusy(c) ? 0 : 1;
}

/* ---- outcome ----------------------------------------------------------------------------------- */

/* An error caused by the data of some entry: data exception (22), integrity constraint (23), program
 * limit exceeded (54, e.g. too deeply nested JSON). Anything else (connection, privilege, missing
 * table, timeout, resources) is retried with the whole batch. */
static int data_error(PGresult *r)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    return state && (!strncmp(state, "22", 2) || !strncmp(state, "23", 2) || !strncmp(state, "54", 2));
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 14695981039346656037ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

/* Set the fates of the pending entries from the task ids returned (rows of r, NULL = a parked row). */
static tbx_status apply_result(tbx_mon_batch *b, PGresult *r, size_t only, tbx_mon_counts *counts,
                               tbx_error *err)
{
    int rows = PQntuples(r);
    size_t cap = 16;
    while (cap < 2 * (size_t)rows)
        cap *= 2;
    const char **set = calloc(cap, sizeof *set);
    if (!set)
        return tbx_seterr(err, TBX_ENOMEM, NULL);
    for (int i = 0; i < rows; i++) {
        if (PQgetisnull(r, i, 0)) {
            counts->parked++;
            continue;
        }
        const char *id = PQgetvalue(r, i, 0);
        size_t h = (size_t)hash_str(id) & (cap - 1);
        while (set[h])
            h = (h + 1) & (cap - 1);
        set[h] = id;
    }
    for (size_t i = 0; i < b->len; i++) {
        if (b->fate[i] != TBX_MON_PENDING || (only != (size_t)-1 && i != only))
            continue;
        const tbx_mon_entry *e = &b->e[i];
        if (!e->has_task) {
            b->fate[i] = TBX_MON_PARKED;
            continue;
        }
        size_t h = (size_t)hash_str(e->task.task_id) & (cap - 1);
        b->fate[i] = TBX_MON_DUPLICATE;
        for (; set[h]; h = (h + 1) & (cap - 1))
            if (set[h] != (const char *)1 && !strcmp(set[h], e->task.task_id)) {
                set[h] = (const char *)1; /* taken: a second copy in this batch is a duplicate */
                b->fate[i] = TBX_MON_RECORDED;
                break;
            }
        if (b->fate[i] == TBX_MON_RECORDED)
            counts->recorded++;
        else
            counts->duplicates++;
    }
    free(set);
    return TBX_OK;
}

/* The database refused entry e. First time: drop its task row and park the message instead (fresh
 * random ids, in case they clashed). Second time: park it without properties and headers. */
static int refuse(tbx_mon_entry *e, const char *why, int minimal)
{
    tbx_mon_parked *p = &e->parked;
    tbx_buf r = {0};
    const char *old = e->has_parked && p->reason ? p->reason : NULL;
    int rc;
    if (!minimal)
        rc = tbx_buf_printf(&r, "%s%sthe database refused the task row: %s", old ? old : "", old ? "; " : "",
                            why);
    else
        rc = tbx_buf_printf(&r, "%s%sproperties and headers left out, the database refused them: %s",
                            old ? old : "", old ? "; " : "", why);
    if (rc || tbx_buf_putc(&r, '\0')) {
        tbx_buf_free(&r);
        return -1;
    }
    if (!e->has_parked) {
        memset(p, 0, sizeof *p);
        p->task_id = e->task.task_id ? strdup(e->task.task_id) : NULL;
        p->headers = e->task.options ? strdup(e->task.options) : NULL; /* it holds every header */
    }
    if (minimal) {
        free(p->properties);
        free(p->headers);
        p->properties = p->headers = NULL;
    }
    tbx_monitor_random_id(p->id);
    free(p->reason);
    p->reason = (char *)r.data;
    e->has_parked = 1;
    e->has_task = 0;
    return 0;
}

/* Write the pending entries one statement each; park what the database refuses. */
static tbx_status one_by_one(tbx_mon_batch *b, PGconn *c, tbx_mon_counts *counts, tbx_error *err)
{
    for (size_t i = 0; i < b->len; i++) {
        if (b->fate[i] != TBX_MON_PENDING)
            continue;
        for (int attempt = 0;; attempt++) {
            tbx_status st = send_entries(b, c, i, err);
            if (st)
                return st;
            PGresult *r = tbx_pg_last_result(c);
            b->sent = 0;
            if (PQresultStatus(r) == PGRES_TUPLES_OK) {
                st = apply_result(b, r, i, counts, err);
                PQclear(r);
                if (st)
                    return st;
                if (b->fate[i] == TBX_MON_PARKED && attempt > 0)
                    counts->refused++;
                break;
            }
            if (!data_error(r) || attempt >= 2) {
                st = tbx_pg_fail(c, r, "recording a message", err);
                PQclear(r);
                return st;
            }
            char why[400];
            snprintf(why, sizeof why, "%s", PQresultErrorMessage(r));
            why[strcspn(why, "\n")] = '\0';
            PQclear(r);
            if (refuse(&b->e[i], why, attempt > 0 || !b->e[i].has_task))
                return tbx_seterr(err, TBX_ENOMEM, NULL);
        }
    }
    return TBX_OK;
}

tbx_status tbx_mon_batch_finish(tbx_mon_batch *b, PGconn *c, tbx_mon_counts *counts, tbx_error *err)
{
    memset(counts, 0, sizeof *counts);
    if (!b->sent)
        return tbx_seterr(err, TBX_ESTATE, "no batch in flight");
    PGresult *r = tbx_pg_last_result(c);
    b->sent = 0;
    tbx_status st;
    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
        st = apply_result(b, r, (size_t)-1, counts, err);
    } else if (data_error(r) && PQstatus(c) == CONNECTION_OK) {
        PQclear(r);
        r = NULL;
        st = one_by_one(b, c, counts, err);
    } else {
        st = tbx_pg_fail(c, r, "recording a batch", err);
    }
    PQclear(r);
    return st;
}

tbx_status tbx_mon_batch_commit(tbx_mon_batch *b, PGconn *c, tbx_mon_counts *counts, tbx_error *err)
{
    memset(counts, 0, sizeof *counts);
    if (b->len == 0)
        return TBX_OK;
    tbx_status st = tbx_mon_batch_send(b, c, err);
    return st ? st : tbx_mon_batch_finish(b, c, counts, err);
}
