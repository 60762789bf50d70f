/*
 * wire.c - encode and decode Celery protocol v2 messages (celery-wire.md §1).
 *
 * Encoding follows Celery 5.2's as_task_v2 + kombu publish exactly: header
 * order lang, task, id, shadow, eta, expires, group, group_index, retries,
 * timelimit, root_id, parent_id, argsrepr, kwargsrepr, origin, ignore_result,
 * then the platform extras and caller headers; only the field types S, I, L,
 * d, t, V, A, F are ever written.
 */
#include "wire.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/random.h>
#include <unistd.h>

#include "toolbox/pyrepr.h"

#define TBX_MAX_HEADER_DEPTH 16
#define TBX_MAX_HEADERS 256
#define TBX_MAX_JSON_DEPTH 100 /* args/kwargs nesting accepted in a body */
#define TBX_REPR_MAX 1024

static double now_epoch(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

char *tbx_bytes_dup(amqp_bytes_t b)
{
    char *s = malloc(b.len + 1);
    if (!s)
        return NULL;
    if (b.len)
        memcpy(s, b.bytes, b.len);
    s[b.len] = '\0';
    return s;
}

static amqp_bytes_t pool_str(amqp_pool_t *pool, const char *s)
{
    amqp_bytes_t out = {0, NULL};
    size_t n = strlen(s);
    if (n == 0) {
        out.bytes = TBX_UNCONST("");
        return out;
    }
    amqp_pool_alloc_bytes(pool, n, &out);
    if (out.bytes)
        memcpy(out.bytes, s, n);
    return out;
}

/* ---- JSON <-> field values --------------------------------------------- */

tbx_status tbx_wire_json_to_field(amqp_pool_t *pool, const json_t *j, amqp_field_value_t *out,
                                  int depth)
{
    if (depth > TBX_MAX_HEADER_DEPTH)
        return TBX_ELIMIT;
    switch (json_typeof(j)) {
    case JSON_NULL:
        out->kind = AMQP_FIELD_KIND_VOID;
        return TBX_OK;
    case JSON_TRUE:
    case JSON_FALSE:
        out->kind = AMQP_FIELD_KIND_BOOLEAN;
        out->value.boolean = json_is_true(j);
        return TBX_OK;
    case JSON_INTEGER: {
        json_int_t v = json_integer_value(j);
        if (v >= INT32_MIN && v <= INT32_MAX) {
            out->kind = AMQP_FIELD_KIND_I32;
            out->value.i32 = (int32_t)v;
        } else {
            /* py-amqp reads 'L' as signed 64-bit; rabbitmq-c calls it U64. */
            out->kind = AMQP_FIELD_KIND_U64;
            out->value.u64 = (uint64_t)v;
        }
        return TBX_OK;
    }
    case JSON_REAL:
        out->kind = AMQP_FIELD_KIND_F64;
        out->value.f64 = json_real_value(j);
        return TBX_OK;
    case JSON_STRING: {
        out->kind = AMQP_FIELD_KIND_UTF8;
        size_t n = json_string_length(j);
        out->value.bytes.len = n;
        out->value.bytes.bytes = TBX_UNCONST("");
        if (n) {
            amqp_pool_alloc_bytes(pool, n, &out->value.bytes);
            if (!out->value.bytes.bytes)
                return TBX_ENOMEM;
            memcpy(out->value.bytes.bytes, json_string_value(j), n);
        }
        return TBX_OK;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        out->kind = AMQP_FIELD_KIND_ARRAY;
        out->value.array.num_entries = (int)n;
        out->value.array.entries = n ? amqp_pool_alloc(pool, n * sizeof(amqp_field_value_t)) : NULL;
        if (n && !out->value.array.entries)
            return TBX_ENOMEM;
        for (size_t i = 0; i < n; i++) {
            tbx_status st = tbx_wire_json_to_field(pool, json_array_get(j, i),
                                                   &out->value.array.entries[i], depth + 1);
            if (st)
                return st;
        }
        return TBX_OK;
    }
    case JSON_OBJECT: {
        size_t n = json_object_size(j), i = 0;
        out->kind = AMQP_FIELD_KIND_TABLE;
        out->value.table.num_entries = (int)n;
        out->value.table.entries = n ? amqp_pool_alloc(pool, n * sizeof(amqp_table_entry_t)) : NULL;
        if (n && !out->value.table.entries)
            return TBX_ENOMEM;
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)(uintptr_t)j, key, val) {
            amqp_table_entry_t *e = &out->value.table.entries[i++];
            e->key = pool_str(pool, key);
            tbx_status st = tbx_wire_json_to_field(pool, val, &e->value, depth + 1);
            if (st)
                return st;
        }
        return TBX_OK;
    }
    }
    return TBX_EINVAL;
}

static json_t *bytes_to_json_string(amqp_bytes_t b)
{
    /* Non-UTF-8 header text is kept, with invalid bytes replaced. */
    json_t *s = json_stringn(b.bytes ? (const char *)b.bytes : "", b.len);
    if (s)
        return s;
    char *copy = tbx_bytes_dup(b);
    if (!copy)
        return NULL;
    for (size_t i = 0; i < b.len; i++)
        if ((unsigned char)copy[i] >= 0x80)
            copy[i] = '?';
    s = json_string(copy);
    free(copy);
    return s;
}

json_t *tbx_wire_field_to_json(const amqp_field_value_t *v, int depth)
{
    if (depth > TBX_MAX_HEADER_DEPTH)
        return NULL;
    switch (v->kind) {
    case AMQP_FIELD_KIND_BOOLEAN: return json_boolean(v->value.boolean);
    case AMQP_FIELD_KIND_I8: return json_integer(v->value.i8);
    case AMQP_FIELD_KIND_U8: return json_integer(v->value.u8);
    case AMQP_FIELD_KIND_I16: return json_integer(v->value.i16);
    case AMQP_FIELD_KIND_U16: return json_integer(v->value.u16);
    case AMQP_FIELD_KIND_I32: return json_integer(v->value.i32);
    case AMQP_FIELD_KIND_U32: return json_integer(v->value.u32);
    case AMQP_FIELD_KIND_I64: return json_integer((json_int_t)v->value.i64);
    case AMQP_FIELD_KIND_U64: return json_integer((json_int_t)v->value.u64); /* py-amqp 'L' */
    case AMQP_FIELD_KIND_TIMESTAMP: return json_integer((json_int_t)v->value.u64);
    case AMQP_FIELD_KIND_F32:
        return isfinite(v->value.f32) ? json_real(v->value.f32) : json_null();
    case AMQP_FIELD_KIND_F64:
        return isfinite(v->value.f64) ? json_real(v->value.f64) : json_null();
    case AMQP_FIELD_KIND_DECIMAL: {
        double d = (double)v->value.decimal.value;
        for (int i = 0; i < v->value.decimal.decimals && i < 30; i++)
            d /= 10.0;
        return json_real(d);
    }
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
        return bytes_to_json_string(v->value.bytes);
    case AMQP_FIELD_KIND_VOID: return json_null();
    case AMQP_FIELD_KIND_ARRAY: {
        json_t *a = json_array();
        for (int i = 0; a && i < v->value.array.num_entries; i++) {
            json_t *e = tbx_wire_field_to_json(&v->value.array.entries[i], depth + 1);
            if (!e || json_array_append_new(a, e)) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    case AMQP_FIELD_KIND_TABLE: {
        json_t *o = json_object();
        for (int i = 0; o && i < v->value.table.num_entries; i++) {
            const amqp_table_entry_t *e = &v->value.table.entries[i];
            char *k = tbx_bytes_dup(e->key);
            json_t *val = tbx_wire_field_to_json(&e->value, depth + 1);
            if (!k || !val || json_object_set_new(o, k, val)) {
                free(k);
                json_decref(o);
                return NULL;
            }
            free(k);
        }
        return o;
    }
    }
    return NULL;
}

/* ---- encoding ------------------------------------------------------------- */

size_t tbx_routing_key(const char *task_name, char *out, size_t cap)
{
    const char *dot = strchr(task_name, '.');
    size_t n = dot ? (size_t)(dot - task_name) : strlen(task_name);
    if (cap == 0)
        return n;
    size_t c = n < cap - 1 ? n : cap - 1;
    memcpy(out, task_name, c);
    out[c] = '\0';
    return n;
}

void tbx_uuid4(char out[TBX_TASK_ID_LEN + 1])
{
    unsigned char r[16];
    ssize_t got = getrandom(r, sizeof r, GRND_NONBLOCK);
    if (got != (ssize_t)sizeof r) {
        /* Fallback: time and address entropy. Not cryptographic, still unique enough. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t s = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid();
        for (size_t i = 0; i < sizeof r; i++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            r[i] = (unsigned char)s;
        }
    }
    r[6] = (unsigned char)((r[6] & 0x0f) | 0x40);
    r[8] = (unsigned char)((r[8] & 0x3f) | 0x80);
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[r[i] >> 4];
        out[o++] = hex[r[i] & 15];
    }
    out[o] = '\0';
}

void tbx_iso_utc(double epoch, char out[40])
{
    time_t secs = (time_t)floor(epoch);
    long usec = lround((epoch - (double)secs) * 1e6);
    if (usec >= 1000000) {
        secs += 1;
        usec -= 1000000;
    }
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, 40, "%Y-%m-%dT%H:%M:%S", &tm);
    if (usec)
        snprintf(out + n, 40 - n, ".%06d+00:00", (int)usec);
    else
        snprintf(out + n, 40 - n, "+00:00");
}

static int digits(const char *s, int n, int *v)
{
    int x = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        x = x * 10 + (s[i] - '0');
    }
    *v = x;
    return 0;
}

tbx_status tbx_iso_parse(const char *t, double *epoch, tbx_error *err)
{
    int Y, M, D, h = 0, m = 0, s = 0;
    size_t n = t ? strlen(t) : 0;
    if (n < 10 || digits(t, 4, &Y) || t[4] != '-' || digits(t + 5, 2, &M) || t[7] != '-' ||
        digits(t + 8, 2, &D))
        return tbx_seterr(err, TBX_EDECODE, "not an ISO-8601 time: '%.64s'", t ? t : "");
    const char *p = t + 10;
    long usec = 0;
    int off = 0;
    if (*p == 'T' || *p == ' ') {
        if (strlen(p) < 9 || digits(p + 1, 2, &h) || p[3] != ':' || digits(p + 4, 2, &m) ||
            p[6] != ':' || digits(p + 7, 2, &s))
            return tbx_seterr(err, TBX_EDECODE, "not an ISO-8601 time: '%.64s'", t);
        p += 9;
        if (*p == '.') {
            /* Celery 5.2 reads the fraction as an integer number of microseconds. */
            int nd = 0;
            p++;
            while (p[nd] >= '0' && p[nd] <= '9')
                nd++;
            if (nd == 0 || nd > 6)
                return tbx_seterr(err, TBX_EDECODE, "bad fraction in ISO-8601 time: '%.64s'", t);
            int f;
            digits(p, nd, &f);
            usec = f;
            p += nd;
        }
        if (*p == 'Z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int oh, om = 0;
            int sign = *p == '-' ? -1 : 1;
            if (digits(p + 1, 2, &oh))
                return tbx_seterr(err, TBX_EDECODE, "bad offset in ISO-8601 time: '%.64s'", t);
            p += 3;
            if (*p == ':')
                p++;
            if (*p) {
                if (digits(p, 2, &om))
                    return tbx_seterr(err, TBX_EDECODE, "bad offset in ISO-8601 time: '%.64s'", t);
                p += 2;
            }
            off = sign * (oh * 3600 + om * 60);
        }
    }
    if (*p)
        return tbx_seterr(err, TBX_EDECODE, "trailing text in ISO-8601 time: '%.64s'", t);
    if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || s > 60)
        return tbx_seterr(err, TBX_EDECODE, "out-of-range ISO-8601 time: '%.64s'", t);
    struct tm tm = {.tm_year = Y - 1900, .tm_mon = M - 1, .tm_mday = D,
                    .tm_hour = h, .tm_min = m, .tm_sec = s};
    time_t secs = timegm(&tm);
    *epoch = (double)secs - off + (double)usec / 1e6;
    return TBX_OK;
}

static const char *process_origin(void)
{
    static char origin[300];
    if (!origin[0]) {
        char host[256] = "localhost";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = '\0';
        snprintf(origin, sizeof origin, "gen%ld@%s", (long)getpid(), host);
    }
    return origin;
}

static const char *process_reply_to(void)
{
    static char oid[TBX_TASK_ID_LEN + 1];
    if (!oid[0])
        tbx_uuid4(oid);
    return oid;
}

typedef struct hdr_builder {
    amqp_pool_t *pool;
    amqp_table_entry_t *e;
    int n, cap;
} hdr_builder;

static amqp_field_value_t *hdr_add(hdr_builder *b, const char *key)
{
    if (b->n >= b->cap)
        return NULL;
    amqp_table_entry_t *e = &b->e[b->n++];
    e->key = pool_str(b->pool, key);
    return &e->value;
}

static int hdr_str(hdr_builder *b, const char *key, const char *val)
{
    amqp_field_value_t *v = hdr_add(b, key);
    if (!v)
        return -1;
    if (!val) {
        v->kind = AMQP_FIELD_KIND_VOID;
        return 0;
    }
    v->kind = AMQP_FIELD_KIND_UTF8;
    v->value.bytes = pool_str(b->pool, val);
    return v->value.bytes.bytes ? 0 : -1;
}

static void num_field(amqp_field_value_t *v, double x)
{
    if (x <= 0) {
        v->kind = AMQP_FIELD_KIND_VOID;
    } else if (x == floor(x) && x < 2147483647.0) {
        v->kind = AMQP_FIELD_KIND_I32;
        v->value.i32 = (int32_t)x;
    } else {
        v->kind = AMQP_FIELD_KIND_F64;
        v->value.f64 = x;
    }
}

static json_t *sig_list(const json_t *v)
{
    if (!v || json_is_null(v))
        return json_null();
    if (json_is_array(v))
        return json_deep_copy(v);
    json_t *a = json_array();
    if (a)
        json_array_append_new(a, json_deep_copy(v));
    return a;
}

void tbx_wire_free(tbx_wire_msg *msg)
{
    if (!msg)
        return;
    empty_amqp_pool(&msg->pool);
    tbx_buf_free(&msg->body);
}

static int check_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 155)
        return -1;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20)
            return -1;
    return 0;
}

tbx_status tbx_wire_encode(tbx_wire_msg *out, const char *task, const json_t *args,
                           const json_t *kwargs, const tbx_send_opts *opts_in,
                           int default_priority, tbx_error *err)
{
    static const tbx_send_opts defaults = TBX_SEND_OPTS_INIT;
    const tbx_send_opts *o = opts_in ? opts_in : &defaults;
    memset(out, 0, sizeof *out);
    init_amqp_pool(&out->pool, 4096);

    if (!task || !*task || strlen(task) > 155)
        return tbx_seterr(err, TBX_EINVAL, "task name must be 1 to 155 characters");
    if (args && !json_is_array(args))
        return tbx_seterr(err, TBX_EINVAL, "args must be a JSON array");
    if (kwargs && !json_is_object(kwargs))
        return tbx_seterr(err, TBX_EINVAL, "kwargs must be a JSON object");
    if (o->headers && !json_is_object(o->headers))
        return tbx_seterr(err, TBX_EINVAL, "extra headers must be a JSON object");
    if (o->task_id) {
        if (check_id(o->task_id))
            return tbx_seterr(err, TBX_EINVAL, "task id must be 1 to 155 printable characters");
        snprintf(out->id, sizeof out->id, "%.36s", o->task_id);
        if (strlen(o->task_id) > TBX_TASK_ID_LEN)
            return tbx_seterr(err, TBX_EINVAL, "task id longer than %d characters", TBX_TASK_ID_LEN);
    } else {
        tbx_uuid4(out->id);
    }
    const char *rk_src = o->routing_key ? o->routing_key : NULL;
    if (rk_src) {
        if (strlen(rk_src) > 255)
            return tbx_seterr(err, TBX_EINVAL, "routing key longer than 255 bytes");
        snprintf(out->routing_key, sizeof out->routing_key, "%s", rk_src);
    } else if (tbx_routing_key(task, out->routing_key, sizeof out->routing_key) > 255) {
        return tbx_seterr(err, TBX_EINVAL, "routing key longer than 255 bytes");
    }

    double now = now_epoch();
    char eta[40], expires[40];
    const char *eta_s = NULL, *expires_s = NULL;
    double eta_epoch = 0;
    if (o->eta) {
        if (tbx_iso_parse(o->eta, &eta_epoch, err))
            return TBX_EINVAL;
        tbx_iso_utc(eta_epoch, eta);
        eta_s = eta;
    } else if (o->countdown > 0) {
        tbx_iso_utc(now + o->countdown, eta);
        eta_s = eta;
    }
    double expires_epoch = 0;
    if (o->expires) {
        if (tbx_iso_parse(o->expires, &expires_epoch, err))
            return TBX_EINVAL;
        tbx_iso_utc(expires_epoch, expires);
        expires_s = expires;
    } else if (o->expires_in > 0) {
        expires_epoch = now + o->expires_in;
        tbx_iso_utc(expires_epoch, expires);
        expires_s = expires;
    }
    int priority = o->priority >= 0 ? o->priority : default_priority;
    if (priority < 0 || priority > 255)
        return tbx_seterr(err, TBX_EINVAL, "priority must be 0..255");

    json_t *args_v = args ? json_incref((json_t *)(uintptr_t)args) : json_array();
    json_t *kwargs_v = kwargs ? json_incref((json_t *)(uintptr_t)kwargs) : json_object();
    char *argsrepr = tbx_pyrepr(args_v, TBX_REPR_MAX);
    char *kwargsrepr = tbx_pyrepr(kwargs_v, TBX_REPR_MAX);

    /* body = [args, kwargs, {"callbacks", "errbacks", "chain", "chord"}] */
    json_t *embed = json_object();
    json_t *body = json_array();
    tbx_status st = TBX_ENOMEM;
    if (!embed || !body || !argsrepr || !kwargsrepr)
        goto done;
    json_object_set_new(embed, "callbacks", sig_list(o->link));
    json_object_set_new(embed, "errbacks", sig_list(o->link_error));
    json_object_set_new(embed, "chain", sig_list(o->chain));
    json_object_set_new(embed, "chord", json_null());
    json_array_append(body, args_v);
    json_array_append(body, kwargs_v);
    json_array_append(body, embed);
    char *text = json_dumps(body, JSON_ENCODE_ANY | JSON_ENSURE_ASCII);
    if (!text)
        goto done;
    int rc = tbx_buf_append(&out->body, text, strlen(text));
    free(text);
    if (rc)
        goto done;

    int extra = o->headers ? (int)json_object_size(o->headers) : 0;
    if (extra > TBX_MAX_HEADERS) {
        st = tbx_seterr(err, TBX_ELIMIT, "more than %d extra headers", TBX_MAX_HEADERS);
        goto done;
    }
    hdr_builder hb = {&out->pool, NULL, 0, 16 + 4 + extra};
    hb.e = amqp_pool_alloc(&out->pool, (size_t)hb.cap * sizeof(amqp_table_entry_t));
    if (!hb.e)
        goto done;
    amqp_field_value_t *v;
    const char *root = o->root_id ? o->root_id : out->id;
    rc = hdr_str(&hb, "lang", "py") | hdr_str(&hb, "task", task) | hdr_str(&hb, "id", out->id) |
         hdr_str(&hb, "shadow", o->shadow) | hdr_str(&hb, "eta", eta_s) |
         hdr_str(&hb, "expires", expires_s) | hdr_str(&hb, "group", o->group_id);
    if (rc || !(v = hdr_add(&hb, "group_index")))
        goto done;
    if (o->group_index >= 0) {
        v->kind = AMQP_FIELD_KIND_I32;
        v->value.i32 = o->group_index;
    } else {
        v->kind = AMQP_FIELD_KIND_VOID;
    }
    if (!(v = hdr_add(&hb, "retries")))
        goto done;
    v->kind = AMQP_FIELD_KIND_I32;
    v->value.i32 = o->retries;
    if (!(v = hdr_add(&hb, "timelimit")))
        goto done;
    v->kind = AMQP_FIELD_KIND_ARRAY;
    v->value.array.num_entries = 2;
    v->value.array.entries = amqp_pool_alloc(&out->pool, 2 * sizeof(amqp_field_value_t));
    if (!v->value.array.entries)
        goto done;
    num_field(&v->value.array.entries[0], o->time_limit);      /* [hard, soft] */
    num_field(&v->value.array.entries[1], o->soft_time_limit);
    rc = hdr_str(&hb, "root_id", root) | hdr_str(&hb, "parent_id", o->parent_id) |
         hdr_str(&hb, "argsrepr", argsrepr) | hdr_str(&hb, "kwargsrepr", kwargsrepr) |
         hdr_str(&hb, "origin", o->origin ? o->origin : process_origin());
    if (rc || !(v = hdr_add(&hb, "ignore_result")))
        goto done;
    v->kind = AMQP_FIELD_KIND_BOOLEAN;
    v->value.boolean = o->ignore_result != 0;
    if (o->creator_id && hdr_str(&hb, "creator_id", o->creator_id))
        goto done;
    if (o->related_content_type_id) {
        if (!(v = hdr_add(&hb, "related_content_type_id")))
            goto done;
        json_t *n = json_integer(o->related_content_type_id);
        tbx_wire_json_to_field(&out->pool, n, v, 0);
        json_decref(n);
    }
    if (o->related_object_id && hdr_str(&hb, "related_object_id", o->related_object_id))
        goto done;
    if (o->is_result) {
        if (!(v = hdr_add(&hb, "is_result")))
            goto done;
        v->kind = AMQP_FIELD_KIND_BOOLEAN;
        v->value.boolean = 1;
    }
    if (o->headers) {
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)(uintptr_t)o->headers, key, val) {
            if (!(v = hdr_add(&hb, key)))
                goto done;
            st = tbx_wire_json_to_field(&out->pool, val, v, 0);
            if (st) {
                tbx_seterr(err, st, "extra header '%s' cannot be encoded", key);
                goto done;
            }
        }
    }
    out->headers = hb.e;
    out->nheaders = hb.n;

    amqp_basic_properties_t *p = &out->props;
    p->_flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_CONTENT_ENCODING_FLAG |
                AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
                AMQP_BASIC_PRIORITY_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG |
                AMQP_BASIC_REPLY_TO_FLAG;
    p->content_type = amqp_cstring_bytes("application/json");
    p->content_encoding = amqp_cstring_bytes("utf-8");
    p->headers.num_entries = out->nheaders;
    p->headers.entries = out->headers;
    p->delivery_mode = 2;
    p->priority = (uint8_t)priority;
    p->correlation_id = amqp_cstring_bytes(out->id);
    p->reply_to = amqp_cstring_bytes(process_reply_to());
    if (expires_s) {
        double ms = (expires_epoch - now) * 1000.0;
        if (ms < 0)
            ms = 0;
        snprintf(out->expiration, sizeof out->expiration, "%lld", (long long)ms);
        p->_flags |= AMQP_BASIC_EXPIRATION_FLAG;
        p->expiration = amqp_cstring_bytes(out->expiration);
    }
    st = TBX_OK;
done:
    if (st == TBX_ENOMEM)
        tbx_seterr(err, st, "out of memory encoding task %s", task);
    if (st)
        tbx_wire_free(out);
    free(argsrepr);
    free(kwargsrepr);
    json_decref(args_v);
    json_decref(kwargs_v);
    json_decref(embed);
    json_decref(body);
    return st;
}

/* ---- decoding ------------------------------------------------------------- */

void tbx_task_msg_free(tbx_task_msg *m)
{
    if (!m)
        return;
    char **strs[] = {&m->task, &m->id, &m->shadow, &m->eta, &m->expires, &m->group,
                     &m->root_id, &m->parent_id, &m->argsrepr, &m->kwargsrepr,
                     &m->origin, &m->routing_key};
    for (size_t i = 0; i < sizeof strs / sizeof *strs; i++)
        free(*strs[i]);
    json_decref(m->args);
    json_decref(m->kwargs);
    json_decref(m->embed);
    json_decref(m->headers);
    json_decref(m->properties);
    free(m);
}

/* Text header: NULL when absent or void; TBX_EDECODE when of another type. */
static tbx_status get_text(json_t *h, const char *key, char **out, tbx_error *err)
{
    json_t *v = json_object_get(h, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return TBX_OK;
    if (!json_is_string(v))
        return tbx_seterr(err, TBX_EDECODE, "header '%s' is not a string", key);
    *out = strdup(json_string_value(v));
    return *out ? TBX_OK : tbx_seterr(err, TBX_ENOMEM, NULL);
}

static int limit_value(json_t *v, double *out)
{
    if (!v || json_is_null(v)) {
        *out = 0;
        return 0;
    }
    if (!json_is_number(v) || json_number_value(v) < 0)
        return -1;
    *out = json_number_value(v);
    return 0;
}

/* Nesting depth of a JSON text, counted over brackets outside strings: cheap, and
 * it bounds the recursion of every later walk over the value. */
static int json_too_deep(const void *text, size_t len, int max)
{
    const unsigned char *s = text;
    int depth = 0, in_str = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > max)
                return 1;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return 0;
}

json_t *tbx_wire_props_to_json(const amqp_basic_properties_t *p, json_t *(*text)(amqp_bytes_t))
{
    if (!text)
        text = bytes_to_json_string;
    json_t *o = json_object();
    if (!o)
        return NULL;
    struct { amqp_flags_t flag; const char *name; const amqp_bytes_t *b; } strs[] = {
        {AMQP_BASIC_CONTENT_TYPE_FLAG, "content_type", &p->content_type},
        {AMQP_BASIC_CONTENT_ENCODING_FLAG, "content_encoding", &p->content_encoding},
        {AMQP_BASIC_CORRELATION_ID_FLAG, "correlation_id", &p->correlation_id},
        {AMQP_BASIC_REPLY_TO_FLAG, "reply_to", &p->reply_to},
        {AMQP_BASIC_EXPIRATION_FLAG, "expiration", &p->expiration},
        {AMQP_BASIC_MESSAGE_ID_FLAG, "message_id", &p->message_id},
        {AMQP_BASIC_TYPE_FLAG, "type", &p->type},
        {AMQP_BASIC_USER_ID_FLAG, "user_id", &p->user_id},
        {AMQP_BASIC_APP_ID_FLAG, "app_id", &p->app_id},
        {AMQP_BASIC_CLUSTER_ID_FLAG, "cluster_id", &p->cluster_id},
    };
    for (size_t i = 0; i < sizeof strs / sizeof *strs; i++)
        if (p->_flags & strs[i].flag)
            json_object_set_new(o, strs[i].name, text(*strs[i].b));
    if (p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG)
        json_object_set_new(o, "delivery_mode", json_integer(p->delivery_mode));
    if (p->_flags & AMQP_BASIC_PRIORITY_FLAG)
        json_object_set_new(o, "priority", json_integer(p->priority));
    if (p->_flags & AMQP_BASIC_TIMESTAMP_FLAG)
        json_object_set_new(o, "timestamp", json_integer((json_int_t)p->timestamp));
    return o;
}

tbx_status tbx_wire_decode(const amqp_basic_properties_t *p, const void *body, size_t len,
                           size_t max_body, tbx_task_msg **out, char **id_out, tbx_error *err)
{
    *out = NULL;
    if (id_out)
        *id_out = NULL;
    if (max_body && len > max_body)
        return tbx_seterr(err, TBX_ELIMIT, "message body of %zu bytes exceeds the limit of %zu",
                          len, max_body);
    tbx_task_msg *m = calloc(1, sizeof *m);
    if (!m)
        return tbx_seterr(err, TBX_ENOMEM, NULL);
    m->group_index = -1;
    tbx_status st;
    m->properties = tbx_wire_props_to_json(p, NULL);
    if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG) || p->headers.num_entries == 0) {
        st = tbx_seterr(err, TBX_EUNSUPPORTED, "no headers: not a Celery protocol v2 message");
        goto fail;
    }
    if (p->headers.num_entries > TBX_MAX_HEADERS) {
        st = tbx_seterr(err, TBX_ELIMIT, "%d headers exceed the limit of %d",
                        p->headers.num_entries, TBX_MAX_HEADERS);
        goto fail;
    }
    amqp_field_value_t table = {.kind = AMQP_FIELD_KIND_TABLE};
    table.value.table = p->headers;
    m->headers = tbx_wire_field_to_json(&table, 0);
    if (!m->headers) {
        st = tbx_seterr(err, TBX_EDECODE, "header table nested too deeply or unreadable");
        goto fail;
    }
    json_t *h = m->headers;
    if ((st = get_text(h, "id", &m->id, err)))
        goto fail;
    if (id_out && m->id)
        *id_out = strdup(m->id);
    if ((st = get_text(h, "task", &m->task, err)))
        goto fail;
    if (!m->task) {
        st = tbx_seterr(err, TBX_EUNSUPPORTED, "no 'task' header: not a Celery protocol v2 message");
        goto fail;
    }
    if (!m->id || !*m->id) {
        st = tbx_seterr(err, TBX_EDECODE, "task %.155s has no 'id' header", m->task);
        goto fail;
    }
    if (strlen(m->id) > 155 || strlen(m->task) > 155) {
        st = tbx_seterr(err, TBX_EDECODE, "task name or id longer than 155 characters");
        goto fail;
    }
    if ((p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG) &&
        !(p->content_type.len == 16 && !memcmp(p->content_type.bytes, "application/json", 16))) {
        char *ct = tbx_bytes_dup(p->content_type);
        st = tbx_seterr(err, TBX_EUNSUPPORTED, "content type '%.60s' is not accepted (only application/json)",
                        ct ? ct : "?");
        free(ct);
        goto fail;
    }
    if ((st = get_text(h, "shadow", &m->shadow, err)) || (st = get_text(h, "eta", &m->eta, err)) ||
        (st = get_text(h, "expires", &m->expires, err)) || (st = get_text(h, "group", &m->group, err)) ||
        (st = get_text(h, "root_id", &m->root_id, err)) ||
        (st = get_text(h, "parent_id", &m->parent_id, err)) ||
        (st = get_text(h, "argsrepr", &m->argsrepr, err)) ||
        (st = get_text(h, "kwargsrepr", &m->kwargsrepr, err)) ||
        (st = get_text(h, "origin", &m->origin, err)))
        goto fail;
    double tmp;
    if (m->eta && tbx_iso_parse(m->eta, &tmp, err)) {
        st = tbx_seterr(err, TBX_EDECODE, "bad eta '%.64s'", m->eta);
        goto fail;
    }
    if (m->expires && tbx_iso_parse(m->expires, &tmp, err)) {
        st = tbx_seterr(err, TBX_EDECODE, "bad expires '%.64s'", m->expires);
        goto fail;
    }
    json_t *v = json_object_get(h, "retries");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX) {
            st = tbx_seterr(err, TBX_EDECODE, "header 'retries' is not a non-negative integer");
            goto fail;
        }
        m->retries = (int)json_integer_value(v);
    }
    v = json_object_get(h, "group_index");
    if (v && json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) <= INT32_MAX)
        m->group_index = (int)json_integer_value(v);
    v = json_object_get(h, "timelimit");
    if (v && !json_is_null(v)) {
        if (!json_is_array(v) || json_array_size(v) != 2 ||
            limit_value(json_array_get(v, 0), &m->time_limit) ||
            limit_value(json_array_get(v, 1), &m->soft_time_limit)) {
            st = tbx_seterr(err, TBX_EDECODE, "header 'timelimit' is not [hard, soft]");
            goto fail;
        }
    }
    m->ignore_result = json_is_true(json_object_get(h, "ignore_result"));
    m->priority = (p->_flags & AMQP_BASIC_PRIORITY_FLAG) ? p->priority : 0;

    json_error_t jerr;
    if (json_too_deep(body, len, TBX_MAX_JSON_DEPTH)) {
        st = tbx_seterr(err, TBX_ELIMIT, "body nests deeper than %d levels", TBX_MAX_JSON_DEPTH);
        goto fail;
    }
    json_t *b = json_loadb(body, len, JSON_DECODE_ANY, &jerr);
    if (!b) {
        st = tbx_seterr(err, TBX_EDECODE, "body is not JSON: %s at offset %d", jerr.text, jerr.position);
        goto fail;
    }
    if (!json_is_array(b) || json_array_size(b) != 3 || !json_is_array(json_array_get(b, 0)) ||
        !json_is_object(json_array_get(b, 1)) ||
        !(json_is_object(json_array_get(b, 2)) || json_is_null(json_array_get(b, 2)))) {
        json_decref(b);
        st = tbx_seterr(err, TBX_EDECODE, "body is not [args(list), kwargs(object), embed(object)]");
        goto fail;
    }
    m->args = json_incref(json_array_get(b, 0));
    m->kwargs = json_incref(json_array_get(b, 1));
    m->embed = json_is_object(json_array_get(b, 2)) ? json_incref(json_array_get(b, 2)) : json_object();
    json_decref(b);
    if (!m->root_id)
        m->root_id = strdup(m->id);
    *out = m;
    return TBX_OK;
fail:
    tbx_task_msg_free(m);
    return st;
}
