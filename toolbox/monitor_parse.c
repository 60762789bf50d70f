/*
 * monitor_parse.c - one delivery of the platform queue -> a task row and/or a parked message.
 *
 * A Celery protocol v2 message that tbx_wire_decode accepts becomes a complete row, built as the
 * Cadasta platform's consumer built its BackgroundTask (celery-wire.md §4.1-4.2). Anything else is
 * read leniently: when the headers still name the task (id and task), the task is recorded with what
 * can be read (input NULL when the body cannot be) and the message is parked with the decoder's
 * reason. Two kinds of messages are complete without a v2 JSON body and are not parked: a pickle
 * body (application/x-python-serialize, which the platform accepted) of plain data, and a protocol
 * v1 message (no task header; the body is a dict with task, id, args, kwargs). Everything else is
 * parked only. Nothing here fails on input.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "monitor_db.h"
#include "toolbox/monitor.h"
#include "toolbox/pickle.h"
#include "wire.h"

#define MAX_ID 155

static const char CT_JSON[] = "application/json";
static const char CT_PICKLE[] = "application/x-python-serialize";

static void parked_clear(tbx_mon_parked *p)
{
    char **ps[] = {&p->reason, &p->task_id, &p->routing_key, &p->exchange, &p->properties, &p->headers};
    for (size_t i = 0; i < sizeof ps / sizeof *ps; i++)
        free(*ps[i]);
    memset(p, 0, sizeof *p);
}

void tbx_mon_entry_clear(tbx_mon_entry *e)
{
    if (!e)
        return;
    tbx_mon_task *t = &e->task;
    char **ts[] = {&t->task_id, &t->type, &t->input, &t->options, &t->parent_id,
                   &t->root_id, &t->creator_id, &t->related_object_id};
    for (size_t i = 0; i < sizeof ts / sizeof *ts; i++)
        free(*ts[i]);
    parked_clear(&e->parked);
    free(e->body);
    memset(e, 0, sizeof *e);
}

/* ---- text helpers ----------------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned min;
    unsigned cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, cp = c & 0x1f, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, cp = c & 0x0f, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, cp = c & 0x07, min = 0x10000;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* A NUL-terminated copy of p[0..n) that Postgres text accepts: NUL and invalid UTF-8 become '?'. */
static char *clean_text(const void *p, size_t n)
{
    const unsigned char *s = p ? p : (const unsigned char *)"";
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    size_t i = 0;
    while (i < n) {
        size_t k = s[i] ? utf8_seq(s + i, n - i) : 0;
        if (k == 0) {
            out[i++] = '?';
            continue;
        }
        memcpy(out + i, s + i, k);
        i += k;
    }
    out[n] = '\0';
    return out;
}

/* Replace every JSON escape \u0000 (which jsonb refuses) in text by \ufffd. Returns how many. */
static int fix_nul_escapes(char *text)
{
    int n = 0;
    for (char *p = text; p && *p; p++) {
        if (*p != '\\')
            continue;
        if (p[1] == 'u' && !strncmp(p + 2, "0000", 4)) {
            memcpy(p + 2, "fffd", 4);
            n++;
        }
        if (p[1])
            p++; /* skip the escaped character */
    }
    return n;
}

/* Compact JSON text of v (NULL on ENOMEM). */
static char *dump(const json_t *v)
{
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* A usable id or name: a string of 1..155 bytes without NUL. */
static const char *id_value(const json_t *v)
{
    if (!json_is_string(v))
        return NULL;
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    if (n == 0 || n > MAX_ID || strlen(s) != n)
        return NULL;
    return s;
}

/* A header value as text (strings as they are, integers in decimal), else NULL. malloc'd. */
static char *text_value(const json_t *v, int *oom)
{
    char buf[32];
    const char *s = NULL;
    if (json_is_string(v) && json_string_length(v) > 0) {
        s = json_string_value(v);
    } else if (json_is_integer(v)) {
        snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v));
        s = buf;
    }
    if (!s)
        return NULL;
    char *out = strdup(s);
    if (!out)
        *oom = 1;
    return out;
}

static int ct_is(const amqp_basic_properties_t *p, const char *ct, int prefix)
{
    if (!(p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG))
        return 0;
    size_t n = strlen(ct);
    if (prefix ? p->content_type.len < n : p->content_type.len != n)
        return 0;
    if (memcmp(p->content_type.bytes, ct, n) != 0)
        return 0;
    /* "application/json; charset=utf-8" counts as JSON; "application/jsonx" does not. */
    if (prefix && p->content_type.len > n) {
        char c = ((const char *)p->content_type.bytes)[n];
        return c == ';' || c == ' ';
    }
    return 1;
}

/* ---- JSON views of the message ---------------------------------------------------------------- */

static json_t *bytes_json(amqp_bytes_t b)
{
    char *s = clean_text(b.bytes, b.len);
    json_t *j = s ? json_string(s) : NULL;
    free(s);
    return j;
}

/* The header table as JSON, or NULL when absent or unreadable. */
static json_t *headers_json(const amqp_basic_properties_t *p)
{
    if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG))
        return NULL;
    amqp_field_value_t table = {.kind = AMQP_FIELD_KIND_TABLE};
    table.value.table = p->headers;
    return tbx_wire_field_to_json(&table, 0);
}

/* options = properties + application_headers + the eta, expires, retries, timelimit values that are
 * set (not null, not [null, null]), as the platform's consumer copied them, + is_result. src holds
 * those keys: the headers (v2) or the body (v1). */
static json_t *options_json(const json_t *props, const json_t *headers, const json_t *src)
{
    json_t *o = props ? json_copy((json_t *)(uintptr_t)props) : json_object();
    if (!o)
        return NULL;
    /* Shared, not copied: options is only dumped, while headers is alive. */
    json_object_set_new(o, "application_headers",
                        headers ? json_incref((json_t *)(uintptr_t)headers) : json_object());
    static const char *const keys[] = {"eta", "expires", "retries", "timelimit"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        json_t *v = json_object_get(src, keys[i]);
        if (!v || json_is_null(v))
            continue;
        if (json_is_array(v) && json_array_size(v) == 2 && json_is_null(json_array_get(v, 0)) &&
            json_is_null(json_array_get(v, 1)))
            continue;
        json_object_set(o, keys[i], v);
    }
    json_t *r = json_object_get(src, "is_result");
    if (!r && headers != src)
        r = json_object_get(headers, "is_result");
    if (r)
        json_object_set(o, "is_result", r);
    return o;
}

/* creator_id, related_content_type_id, related_object_id from the headers. */
static void extras(tbx_mon_task *t, const json_t *h, int *oom)
{
    t->creator_id = text_value(json_object_get(h, "creator_id"), oom);
    t->related_object_id = text_value(json_object_get(h, "related_object_id"), oom);
    json_t *ct = json_object_get(h, "related_content_type_id");
    if (json_is_integer(ct)) {
        t->related_ct = json_integer_value(ct);
        t->has_related_ct = 1;
    } else if (json_is_string(ct)) {
        char *end;
        long long v = strtoll(json_string_value(ct), &end, 10);
        if (end != json_string_value(ct) && *end == '\0') {
            t->related_ct = v;
            t->has_related_ct = 1;
        }
    }
}

/* {"args": args, "kwargs": kwargs} as JSON text (NULL on ENOMEM). */
static char *input_text(json_t *args, json_t *kwargs)
{
    json_t *in = json_pack("{s:O, s:O}", "args", args, "kwargs", kwargs);
    char *text = in ? dump(in) : NULL;
    json_decref(in);
    return text;
}

/* The body as [args(list), kwargs(object), ...] decoded from JSON or a plain-data pickle; NULL
 * with *why set when it is not. */
static json_t *body_v2(const tbx_mon_delivery *d, size_t max_body, char *why, size_t cap)
{
    if (max_body && d->len > max_body) {
        snprintf(why, cap, "body of %zu bytes exceeds max_message_bytes (%zu)", d->len, max_body);
        return NULL;
    }
    json_t *v = NULL;
    if (ct_is(d->props, CT_PICKLE, 0)) {
        tbx_error err = {0};
        if (tbx_pickle_load(d->body, d->len, &v, &err)) {
            snprintf(why, cap, "pickle body not readable: %.200s", err.msg);
            return NULL;
        }
    } else if (!(d->props->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG) || ct_is(d->props, CT_JSON, 1)) {
        json_error_t je;
        /* Python's json writes U+0000 as \u0000; it is replaced when the row is written (nul_check). */
        v = json_loadb(d->body, d->len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        if (!v) {
            snprintf(why, cap, "body is not JSON: %.160s", je.text);
            return NULL;
        }
    } else {
        char *ct = clean_text(d->props->content_type.bytes, d->props->content_type.len);
        snprintf(why, cap, "body of content type '%.60s' not readable", ct ? ct : "?");
        free(ct);
        return NULL;
    }
    if (!json_is_array(v) || json_array_size(v) < 2 || json_array_size(v) > 3 ||
        !json_is_array(json_array_get(v, 0)) || !json_is_object(json_array_get(v, 1))) {
        snprintf(why, cap, "body is not [args(list), kwargs(object), embed]");
        json_decref(v);
        return NULL;
    }
    return v;
}

/* ---- building the entry ------------------------------------------------------------------------ */

static tbx_status oom(tbx_mon_entry *e, tbx_error *err)
{
    tbx_mon_entry_clear(e);
    return tbx_seterr(err, TBX_ENOMEM, "out of memory reading a message");
}

/* Fill e->parked. headers/props may be NULL. */
static int park(tbx_mon_entry *e, const tbx_mon_delivery *d, const char *reason, const json_t *props,
                const json_t *headers, const char *task_id)
{
    tbx_mon_parked *p = &e->parked;
    e->has_parked = 1;
    tbx_monitor_random_id(p->id);
    p->reason = clean_text(reason, strlen(reason));
    p->task_id = task_id ? strdup(task_id) : NULL;
    p->routing_key = clean_text(d->routing_key.bytes, d->routing_key.len);
    p->exchange = clean_text(d->exchange.bytes, d->exchange.len);
    p->properties = props ? dump(props) : NULL;
    p->headers = headers ? dump(headers) : NULL;
    p->redelivered = d->redelivered != 0;
    p->dedupe = p->redelivered;
    fix_nul_escapes(p->properties);
    fix_nul_escapes(p->headers);
    uint64_t h = 14695981039346656037ULL;
    if (p->headers)
        h = fnv1a(h, p->headers, strlen(p->headers));
    h = fnv1a(h, "\0", 1);
    h = fnv1a(h, d->body, d->len);
    snprintf(p->digest, sizeof p->digest, "%016llx", (unsigned long long)h);
    if (!p->reason || (task_id && !p->task_id) || !p->routing_key || !p->exchange ||
        (props && !p->properties) || (headers && !p->headers))
        return -1;
    return 0;
}

/* Common task fields. parent/root may be NULL (root then defaults to the id). */
static int task_basics(tbx_mon_task *t, const char *id, const char *type, const char *parent,
                       const char *root, json_t *options)
{
    tbx_monitor_random_id(t->id);
    t->task_id = strdup(id);
    t->type = strdup(type);
    t->parent_id = parent && *parent ? strdup(parent) : NULL;
    t->root_id = strdup(root && *root ? root : id);
    t->options = options ? dump(options) : NULL;
    return (!t->task_id || !t->type || (parent && *parent && !t->parent_id) || !t->root_id ||
            !t->options) ? -1 : 0;
}

/* jsonb cannot hold U+0000: record U+FFFD instead and keep the original in the parked table. */
static int nul_check(tbx_mon_entry *e, const tbx_mon_delivery *d, const json_t *props, const json_t *headers)
{
    int n = fix_nul_escapes(e->task.input) + fix_nul_escapes(e->task.options);
    if (n == 0 || e->has_parked)
        return 0;
    return park(e, d,
                "NUL character (U+0000) in the message, which jsonb cannot store: the task row holds "
                "U+FFFD in its place; the original message is kept here",
                props, headers, e->task.task_id);
}

static tbx_status from_v2(tbx_mon_entry *e, const tbx_mon_delivery *d, tbx_task_msg *m, tbx_error *err)
{
    tbx_mon_task *t = &e->task;
    int nomem = 0;
    json_t *options = options_json(m->properties, m->headers, m->headers);
    e->has_task = 1;
    t->retries = m->retries;
    nomem |= task_basics(t, m->id, m->task, m->parent_id, m->root_id, options);
    nomem |= !(t->input = input_text(m->args, m->kwargs));
    extras(t, m->headers, &nomem);
    if (!nomem)
        nomem |= nul_check(e, d, m->properties, m->headers);
    json_decref(options);
    return nomem ? oom(e, err) : TBX_OK;
}

/* Protocol v1: no task header; the body is {"task", "id", "args", "kwargs", "eta", ...}. */
static int try_v1(tbx_mon_entry *e, const tbx_mon_delivery *d, size_t max_body, json_t *props,
                  json_t *headers, int *nomem)
{
    if ((max_body && d->len > max_body) ||
        ((d->props->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG) && !ct_is(d->props, CT_JSON, 1)))
        return 0;
    json_t *b = json_loadb(d->body, d->len, JSON_ALLOW_NUL, NULL);
    const char *id = id_value(json_object_get(b, "id")), *task = id_value(json_object_get(b, "task"));
    json_t *args = json_object_get(b, "args"), *kwargs = json_object_get(b, "kwargs");
    if (!json_is_object(b) || !id || !task || (args && !json_is_array(args)) ||
        (kwargs && !json_is_object(kwargs))) {
        json_decref(b);
        return 0;
    }
    json_t *a = args ? json_incref(args) : json_array(), *k = kwargs ? json_incref(kwargs) : json_object();
    json_t *options = options_json(props, headers, b);
    tbx_mon_task *t = &e->task;
    e->has_task = 1;
    *nomem |= task_basics(t, id, task, NULL, NULL, options);
    *nomem |= !(t->input = input_text(a, k));
    json_t *r = json_object_get(b, "retries");
    t->retries = json_is_integer(r) ? (int)json_integer_value(r) : 0;
    extras(t, headers, nomem);
    if (!*nomem)
        *nomem |= nul_check(e, d, props, headers);
    json_decref(options);
    json_decref(a);
    json_decref(k);
    json_decref(b);
    return 1;
}

static tbx_status lenient(tbx_mon_entry *e, const tbx_mon_delivery *d, size_t max_body, const char *reason,
                          tbx_error *err)
{
    int nomem = 0;
    json_t *props = tbx_wire_props_to_json(d->props, bytes_json);
    json_t *headers = headers_json(d->props);
    if (!props)
        return oom(e, err);
    const char *id = id_value(json_object_get(headers, "id"));
    const char *task = id_value(json_object_get(headers, "task"));
    char why[300] = "";
    if (!json_object_get(headers, "task") && try_v1(e, d, max_body, props, headers, &nomem)) {
        /* complete: recorded, nothing to park */
    } else if (id && task) {
        tbx_mon_task *t = &e->task;
        e->has_task = 1;
        json_t *body = body_v2(d, max_body, why, sizeof why);
        json_t *options = options_json(props, headers, headers);
        json_t *parent = json_object_get(headers, "parent_id"), *root = json_object_get(headers, "root_id");
        nomem |= task_basics(t, id, task, json_is_string(parent) ? json_string_value(parent) : NULL,
                             json_is_string(root) ? json_string_value(root) : NULL, options);
        if (body)
            nomem |= !(t->input = input_text(json_array_get(body, 0), json_array_get(body, 1)));
        json_t *r = json_object_get(headers, "retries");
        t->retries = json_is_integer(r) ? (int)json_integer_value(r) : 0;
        extras(t, headers, &nomem);
        /* A readable body whose only fault was its content type (pickle, JSON with parameters) is
         * a complete task; anything else is parked as well. */
        int ct_only = body && (d->props->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG) && !ct_is(d->props, CT_JSON, 0);
        if (!nomem && !ct_only) {
            /* When the decoder's reason is about the body already, the body's own is a repeat. */
            int about_body = !strncmp(reason, "body", 4) || !strncmp(reason, "content type", 12) ||
                             !strncmp(reason, "message body", 12);
            char full[900];
            snprintf(full, sizeof full, "%s%s%s%s", reason, body ? "" : "; the task is recorded without its input",
                     body || about_body ? "" : ": ", body || about_body ? "" : why);
            nomem |= park(e, d, full, props, headers, id);
        }
        if (!nomem)
            nomem |= nul_check(e, d, props, headers);
        json_decref(body);
        json_decref(options);
    } else {
        nomem |= park(e, d, reason, props, headers, id);
    }
    json_decref(props);
    json_decref(headers);
    return nomem ? oom(e, err) : TBX_OK;
}

static int key_is(amqp_bytes_t k, const char *name)
{
    return k.len == strlen(name) && !memcmp(k.bytes, name, k.len);
}

static amqp_bytes_t field_text(const amqp_field_value_t *v)
{
    if (v->kind == AMQP_FIELD_KIND_UTF8 || v->kind == AMQP_FIELD_KIND_BYTES)
        return v->value.bytes;
    return amqp_empty_bytes;
}

/* A message a worker moved aside (toolbox/aside.c, TBX_ASIDE_* headers): read the original - its
 * headers without the aside ones, its first exchange and routing key - as any delivery (the task row,
 * if readable, is a get-or-create like any copy) and park it with the worker's reason, so that a
 * replay publishes the original where it first went. When we cannot read it either, the platform
 * queue's own copy is parked with the same digest, and this one only where that one is not. */
static tbx_status from_aside(const tbx_mon_delivery *d, size_t max_body, tbx_mon_entry *out, tbx_error *err)
{
    const amqp_table_t *h = &d->props->headers;
    amqp_table_entry_t *kept = malloc(((size_t)h->num_entries + 1) * sizeof *kept);
    if (!kept) {
        memset(out, 0, sizeof *out);
        return tbx_seterr(err, TBX_ENOMEM, "out of memory reading a message");
    }
    amqp_bytes_t reason = amqp_empty_bytes, worker = amqp_empty_bytes;
    tbx_mon_delivery orig = *d;
    int n = 0;
    size_t plen = strlen(TBX_ASIDE_PREFIX);
    for (int i = 0; i < h->num_entries; i++) {
        const amqp_table_entry_t *e = &h->entries[i];
        if (e->key.len < plen || memcmp(e->key.bytes, TBX_ASIDE_PREFIX, plen)) {
            kept[n++] = *e;
            continue;
        }
        if (key_is(e->key, TBX_ASIDE_REASON))
            reason = field_text(&e->value);
        else if (key_is(e->key, TBX_ASIDE_WORKER))
            worker = field_text(&e->value);
        else if (key_is(e->key, TBX_ASIDE_EXCHANGE))
            orig.exchange = field_text(&e->value);
        else if (key_is(e->key, TBX_ASIDE_ROUTING))
            orig.routing_key = field_text(&e->value);
    }
    amqp_basic_properties_t props = *d->props;
    props.headers.num_entries = n;
    props.headers.entries = kept;
    orig.props = &props;
    tbx_status st = tbx_mon_parse(&orig, max_body, out, err); /* no aside headers left: no recursion */
    if (st) {
        free(kept);
        return st;
    }
    char *r = clean_text(reason.bytes, reason.len), *wk = clean_text(worker.bytes, worker.len);
    json_t *pj = tbx_wire_props_to_json(&props, bytes_json), *hj = headers_json(&props);
    char why[2200];
    int nomem = !r || !wk || !pj;
    if (!nomem && out->has_parked) {
        /* Unreadable to us as well: the platform queue's own copy of the original is parked with the
         * same digest; this one is parked only if that copy never reached us (a second row would
         * invite a second replay). */
        snprintf(why, sizeof why, "%.1000s (also set aside by worker %.200s: %.900s)", out->parked.reason,
                 *wk ? wk : "(unknown)", *r ? r : "(no reason given)");
        char *reason_text = strdup(why);
        nomem = !reason_text;
        if (!nomem) {
            free(out->parked.reason);
            out->parked.reason = reason_text;
            out->parked.dedupe = 1;
        }
    } else if (!nomem) {
        snprintf(why, sizeof why, "set aside by worker %.200s: %.900s", *wk ? wk : "(unknown)",
                 *r ? r : "(no reason given)");
        const char *id = out->has_task ? out->task.task_id : id_value(json_object_get(hj, "id"));
        nomem = park(out, &orig, why, pj, hj, id);
    }
    free(r);
    free(wk);
    json_decref(pj);
    json_decref(hj);
    free(kept);
    return nomem ? oom(out, err) : TBX_OK;
}

static int has_aside_reason(const amqp_basic_properties_t *p)
{
    if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG))
        return 0;
    for (int i = 0; i < p->headers.num_entries; i++)
        if (key_is(p->headers.entries[i].key, TBX_ASIDE_REASON))
            return 1;
    return 0;
}

tbx_status tbx_mon_parse(const tbx_mon_delivery *d, size_t max_body, tbx_mon_entry *out, tbx_error *err)
{
    if (has_aside_reason(d->props))
        return from_aside(d, max_body, out, err);
    memset(out, 0, sizeof *out);
    out->tag = d->tag;
    out->body_len = d->len;
    out->body = malloc(d->len ? d->len : 1);
    if (!out->body)
        return oom(out, err);
    if (d->len)
        memcpy(out->body, d->body, d->len);
    tbx_task_msg *m = NULL;
    tbx_error derr = {0};
    tbx_status st = tbx_wire_decode(d->props, d->body, d->len, max_body, &m, NULL, &derr);
    if (st == TBX_ENOMEM)
        return oom(out, err);
    if (st == TBX_OK) {
        st = from_v2(out, d, m, err);
        tbx_task_msg_free(m);
        return st;
    }
    return lenient(out, d, max_body, derr.msg[0] ? derr.msg : tbx_strerror(st), err);
}
