/*
 * config_value.c - parse and validate one configuration value; one-line error messages; URL masking.
 */
#include "config_internal.h"

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QUOTE_MAX 64 /* visible bytes of a value quoted in a message */

/* ---- message helpers ------------------------------------------------------------------------------- */

/* Copy s[0..len) into out (size n) with control bytes as \xNN, cut with "..." past max visible bytes. */
static void clean(char *out, size_t n, const char *s, size_t len, size_t max)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        size_t need = (c < 0x20 || c == 0x7f) ? 4 : 1;
        if (i >= max || o + need + 4 > n) {
            memcpy(out + o, "...", 4);
            return;
        }
        if (need == 4)
            o += (size_t)snprintf(out + o, n - o, "\\x%02x", c);
        else
            out[o++] = (char)c;
    }
    out[o] = '\0';
}

void tbx_cfg_quote(char *out, size_t n, const char *s, size_t len, int secret)
{
    char *masked = NULL;
    if (secret) {
        char *copy = malloc(len + 1);
        if (copy) {
            memcpy(copy, s, len);
            copy[len] = '\0';
            masked = tbx_mask_url(copy);
            free(copy);
        }
        if (!masked) {
            snprintf(out, n, "'****'");
            return;
        }
        s = masked;
        len = strlen(masked);
    }
    out[0] = '\'';
    clean(out + 1, n - 2, s, len, QUOTE_MAX);
    strcat(out, "'");
    free(masked);
}

tbx_status tbx_cfg_fail(tbx_error *err, const tbx_cfg_where *w, const char *fmt, ...)
{
    if (!err)
        return TBX_ECONFIG;
    char file[200], key[100], body[400];
    const char *k = w ? w->key : NULL;
    const char *v = w ? w->var : NULL;
    const char *f = w ? w->file : NULL;
    clean(key, sizeof key, k ? k : "", k ? strlen(k) : 0, 80);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    if (f) {
        clean(file, sizeof file, f, strlen(f), 160);
        char at[32] = "";
        if (w->line)
            snprintf(at, sizeof at, ":%lu", w->line);
        if (k)
            tbx_seterr(err, TBX_ECONFIG, "%s%s: %s: %s", file, at, key, body);
        else
            tbx_seterr(err, TBX_ECONFIG, "%s%s: %s", file, at, body);
    } else if (v) {
        clean(file, sizeof file, v, strlen(v), 160);
        tbx_seterr(err, TBX_ECONFIG, "%s: %s", file, body);
    } else if (k) {
        tbx_seterr(err, TBX_ECONFIG, "%s: %s", key, body);
    } else {
        tbx_seterr(err, TBX_ECONFIG, "%s", body);
    }
    for (char *p = err->msg; *p; p++) /* one line, whatever went in */
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    return TBX_ECONFIG;
}

/* Append "a, b or c" (last_or) or "a, b, c" built from the '|'-separated list to out. */
static void join(char *out, size_t n, const char *list, int last_or)
{
    size_t o = strlen(out);
    const char *p = list;
    while (*p && o < n) {
        size_t len = strcspn(p, "|");
        int last = p[len] == '\0';
        const char *sep = p == list ? "" : (last && last_or ? " or " : ", ");
        int w = snprintf(out + o, n - o, "%s%.*s", sep, (int)len, p);
        if (w < 0)
            return;
        o += (size_t)w;
        p += len + (last ? 0 : 1);
    }
}

static void describe_text(const tbx_cfg_key *k, char *out, size_t n)
{
    snprintf(out, n, "%s", k->lo >= 1 ? "a non-empty string" : "a string");
    size_t o = strlen(out);
    snprintf(out + o, n - o, " of at most %lld bytes", k->hi);
    if (k->forbid && *k->forbid) {
        o = strlen(out);
        snprintf(out + o, n - o, " without ");
        for (const char *c = k->forbid; *c; c++) {
            o = strlen(out);
            snprintf(out + o, n - o, "%s'%c'", c == k->forbid ? "" : (c[1] ? ", " : " or "), *c);
        }
    }
}

void tbx_cfg_describe(const tbx_cfg_key *k, char *out, size_t n)
{
    out[0] = '\0';
    switch (k->type) {
    case TBX_CFG_STRING:
        describe_text(k, out, n);
        break;
    case TBX_CFG_INT:
        if (k->hi == LLONG_MAX)
            snprintf(out, n, "an integer >= %lld", k->lo);
        else
            snprintf(out, n, "an integer between %lld and %lld", k->lo, k->hi);
        break;
    case TBX_CFG_DOUBLE:
        if (k->dhi >= DBL_MAX)
            snprintf(out, n, "a number %s %.15g", (k->flags & TBX_CFGF_GT_MIN) ? ">" : ">=", k->dlo);
        else if (k->flags & TBX_CFGF_GT_MIN)
            snprintf(out, n, "a number greater than %.15g and at most %.15g", k->dlo, k->dhi);
        else
            snprintf(out, n, "a number between %.15g and %.15g", k->dlo, k->dhi);
        break;
    case TBX_CFG_BOOL:
        snprintf(out, n, "a boolean (true/false, yes/no, on/off, 1/0)");
        break;
    case TBX_CFG_ENUM:
        snprintf(out, n, "one of ");
        join(out, n, k->choices, 0);
        break;
    case TBX_CFG_LIST:
        snprintf(out, n, "a sequence of strings");
        break;
    case TBX_CFG_URL:
        snprintf(out, n, "%sa URL with scheme ", (k->flags & TBX_CFGF_EMPTY_OK) ? "an empty string or " : "");
        join(out, n, k->choices, 1);
        break;
    }
}

/* "expected <what>, got '<text>'" */
static tbx_status bad(const tbx_cfg_key *k, const char *text, size_t len, const tbx_cfg_where *w,
                      tbx_error *err)
{
    char what[256], got[QUOTE_MAX * 4 + 16];
    tbx_cfg_describe(k, what, sizeof what);
    if (memchr(text, '\0', len))
        return tbx_cfg_fail(err, w, "expected %s, got a value containing a NUL byte", what);
    tbx_cfg_quote(got, sizeof got, text, len, (k->flags & TBX_CFGF_SECRET) != 0);
    return tbx_cfg_fail(err, w, "expected %s, got %s", what, got);
}

/* ---- values ------------------------------------------------------------------------------------------- */

void tbx_cfg_value_clear(tbx_cfg_value *v)
{
    free(v->s);
    for (size_t i = 0; i < v->n; i++)
        free(v->items[i]);
    free(v->items);
    memset(v, 0, sizeof *v);
}

static char *dup_n(const char *s, size_t len)
{
    char *p = malloc(len + 1);
    if (p) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

static int ieq(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen)
        return 0;
    for (size_t i = 0; i < alen; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x >= 'A' && x <= 'Z')
            x = (unsigned char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z')
            y = (unsigned char)(y - 'A' + 'a');
        if (x != y)
            return 0;
    }
    return 1;
}

/* Find text among the '|'-separated choices (any case); start and length of the match, or NULL. */
static const char *choose(const char *choices, const char *text, size_t len, size_t *mlen)
{
    const char *p = choices;
    while (*p) {
        size_t l = strcspn(p, "|");
        if (ieq(p, l, text, len)) {
            *mlen = l;
            return p;
        }
        p += l + (p[l] ? 1 : 0);
    }
    return NULL;
}

static int parse_int(const char *text, size_t len, long long *out)
{
    char buf[32];
    if (len == 0 || len >= sizeof buf)
        return -1;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (!((c >= '0' && c <= '9') || (i == 0 && (c == '-' || c == '+'))))
            return -1;
    }
    memcpy(buf, text, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || end != buf + len)
        return -1;
    *out = v;
    return 0;
}

static int parse_double(const char *text, size_t len, double *out)
{
    char buf[64];
    int digits = 0;
    if (len == 0 || len >= sizeof buf)
        return -1;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c >= '0' && c <= '9')
            digits = 1;
        else if (!strchr("+-.eE", c) || c == '\0')
            return -1;
    }
    if (!digits)
        return -1;
    memcpy(buf, text, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    double v = strtod(buf, &end);
    if (errno || end != buf + len || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

static int parse_bool(const char *text, size_t len, long long *out)
{
    size_t m;
    if (choose("true|yes|on|1", text, len, &m))
        *out = 1;
    else if (choose("false|no|off|0", text, len, &m))
        *out = 0;
    else
        return -1;
    return 0;
}

static int text_ok(const tbx_cfg_key *k, const char *text, size_t len)
{
    if (len < (size_t)k->lo || len > (size_t)k->hi || memchr(text, '\0', len))
        return 0;
    if (k->forbid)
        for (size_t i = 0; i < len; i++)
            if (strchr(k->forbid, text[i]))
                return 0;
    return 1;
}

static int url_ok(const tbx_cfg_key *k, const char *text, size_t len)
{
    if (len == 0)
        return (k->flags & TBX_CFGF_EMPTY_OK) != 0;
    if (len > (size_t)k->hi)
        return 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)text[i] <= 0x20 || text[i] == 0x7f)
            return 0;
    const char *sep = NULL;
    for (size_t i = 0; i + 3 <= len; i++)
        if (memcmp(text + i, "://", 3) == 0) {
            sep = text + i;
            break;
        }
    size_t m;
    return sep && choose(k->choices, text, (size_t)(sep - text), &m) != NULL;
}

static void item_describe(const tbx_cfg_key *k, char *out, size_t n)
{
    describe_text(k, out, n);
}

tbx_status tbx_cfg_list_add(const tbx_cfg_key *k, tbx_cfg_value *v, const char *item, size_t len,
                            size_t index, const tbx_cfg_where *w, tbx_error *err)
{
    char what[256], got[QUOTE_MAX * 4 + 16];
    if (v->n >= TBX_CFG_MAX_ITEMS)
        return tbx_cfg_fail(err, w, "more than %d items", TBX_CFG_MAX_ITEMS);
    if (!text_ok(k, item, len)) {
        item_describe(k, what, sizeof what);
        if (memchr(item, '\0', len))
            return tbx_cfg_fail(err, w, "item %zu: expected %s, got a value containing a NUL byte", index + 1,
                                what);
        tbx_cfg_quote(got, sizeof got, item, len, 0);
        return tbx_cfg_fail(err, w, "item %zu: expected %s, got %s", index + 1, what, got);
    }
    if (k->flags & TBX_CFGF_UNIQUE)
        for (size_t i = 0; i < v->n; i++)
            if (strlen(v->items[i]) == len && memcmp(v->items[i], item, len) == 0) {
                tbx_cfg_quote(got, sizeof got, item, len, 0);
                return tbx_cfg_fail(err, w, "item %zu: %s repeats item %zu", index + 1, got, i + 1);
            }
    if ((v->n & (v->n - 1)) == 0) { /* grow at 0, 1, 2, 4, 8 ... */
        char **items = realloc(v->items, (v->n ? v->n * 2 : 1) * sizeof *items);
        if (!items)
            return tbx_seterr(err, TBX_ENOMEM, "out of memory");
        v->items = items;
    }
    if (!(v->items[v->n] = dup_n(item, len)))
        return tbx_seterr(err, TBX_ENOMEM, "out of memory");
    v->n++;
    return TBX_OK;
}

static tbx_status parse_list(const tbx_cfg_key *k, const char *text, size_t len, tbx_cfg_value *out,
                             const tbx_cfg_where *w, tbx_error *err)
{
    size_t b = 0, e = len;
    while (b < e && (text[b] == ' ' || text[b] == '\t'))
        b++;
    if (b == e)
        return TBX_OK; /* "" or blanks: the empty list */
    for (size_t index = 0, i = 0; i <= len; index++) {
        size_t end = i;
        while (end < len && text[end] != ',')
            end++;
        size_t s = i, t = end;
        while (s < t && (text[s] == ' ' || text[s] == '\t'))
            s++;
        while (t > s && (text[t - 1] == ' ' || text[t - 1] == '\t'))
            t--;
        tbx_status st = tbx_cfg_list_add(k, out, text + s, t - s, index, w, err);
        if (st)
            return st;
        i = end + 1;
    }
    return TBX_OK;
}

tbx_status tbx_cfg_parse(const tbx_cfg_key *k, const char *text, size_t len, tbx_cfg_value *out,
                         const tbx_cfg_where *w, tbx_error *err)
{
    size_t m;
    const char *c;
    tbx_status st;
    tbx_cfg_value_clear(out);
    switch (k->type) {
    case TBX_CFG_STRING:
    case TBX_CFG_URL:
        if (k->type == TBX_CFG_STRING ? !text_ok(k, text, len) : !url_ok(k, text, len))
            return bad(k, text, len, w, err);
        if (!(out->s = dup_n(text, len)))
            return tbx_seterr(err, TBX_ENOMEM, "out of memory");
        return TBX_OK;
    case TBX_CFG_ENUM:
        if (!(c = choose(k->choices, text, len, &m)))
            return bad(k, text, len, w, err);
        if (!(out->s = dup_n(c, m)))
            return tbx_seterr(err, TBX_ENOMEM, "out of memory");
        return TBX_OK;
    case TBX_CFG_INT:
        if (parse_int(text, len, &out->i) || out->i < k->lo || out->i > k->hi)
            return bad(k, text, len, w, err);
        return TBX_OK;
    case TBX_CFG_DOUBLE:
        if (parse_double(text, len, &out->d) || out->d > k->dhi || out->d < k->dlo ||
            ((k->flags & TBX_CFGF_GT_MIN) && out->d == k->dlo))
            return bad(k, text, len, w, err);
        if (out->d == 0)
            out->d = 0.0; /* not -0 */
        return TBX_OK;
    case TBX_CFG_BOOL:
        if (parse_bool(text, len, &out->i))
            return bad(k, text, len, w, err);
        return TBX_OK;
    case TBX_CFG_LIST:
        if ((st = parse_list(k, text, len, out, w, err)) != TBX_OK)
            tbx_cfg_value_clear(out);
        return st;
    }
    return tbx_seterr(err, TBX_EINVAL, "bad key type");
}

tbx_status tbx_cfg_default(const tbx_cfg_key *k, tbx_cfg_value *out, tbx_error *err)
{
    tbx_cfg_where w = {NULL, 0, NULL, k->name};
    tbx_status st = tbx_cfg_parse(k, k->def, strlen(k->def), out, &w, err);
    out->src = TBX_SRC_DEFAULT;
    return st;
}

/* ---- masking ---------------------------------------------------------------------------------------------- */

char *tbx_mask_url(const char *url)
{
    if (!url)
        return NULL;
    size_t len = strlen(url);
    const char *sep = strstr(url, "://");
    size_t start = sep ? (size_t)(sep - url) + 3 : 0;
    size_t aend = start + strcspn(url + start, "/?#");
    size_t at = SIZE_MAX, colon = SIZE_MAX;
    for (size_t i = start; i < aend; i++)
        if (url[i] == '@')
            at = i;
    if (at != SIZE_MAX)
        for (size_t i = start; i < at; i++)
            if (url[i] == ':') {
                colon = i;
                break;
            }
    tbx_buf b = {0};
    size_t i = 0;
    int fail = 0;
    if (colon != SIZE_MAX && colon + 1 < at) { /* user:password@ */
        fail |= tbx_buf_append(&b, url, colon + 1) | tbx_buf_append(&b, "****", 4);
        i = at;
    }
    static const char pw[] = "password=";
    while (i < len && !fail) {
        size_t key = i; /* start of the parameter name: password=, sslpassword=, ... */
        while (key > 0 && (url[key - 1] == '_' || (url[key - 1] >= 'a' && url[key - 1] <= 'z')))
            key--;
        if (strncmp(url + i, pw, sizeof pw - 1) == 0 && (key == 0 || strchr("?& ", url[key - 1]))) {
            size_t j = i + sizeof pw - 1;
            size_t vend = j + strcspn(url + j, "& #");
            fail |= tbx_buf_append(&b, pw, sizeof pw - 1);
            if (vend > j)
                fail |= tbx_buf_append(&b, "****", 4);
            i = vend;
            continue;
        }
        fail |= tbx_buf_putc(&b, (unsigned char)url[i++]);
    }
    fail |= tbx_buf_putc(&b, '\0');
    if (fail) {
        tbx_buf_free(&b);
        return NULL;
    }
    return (char *)b.data;
}
