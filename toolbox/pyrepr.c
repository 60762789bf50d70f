/* pyrepr.c - Python repr() of JSON values (see toolbox/pyrepr.h). */
#include "toolbox/pyrepr.h"

#include "internal.h"
#include "pyrepr_table.h"
#include "pytext.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct out {
    tbx_buf b;
    size_t stop_at; /* stop rendering once b.len exceeds this (0 = never) */
    int oom;
} out;

static int full(const out *o)
{
    return o->oom || (o->stop_at && o->b.len > o->stop_at);
}

static void put(out *o, const char *s, size_t n)
{
    if (!o->oom && tbx_buf_append(&o->b, s, n))
        o->oom = 1;
}

static void puts_(out *o, const char *s)
{
    put(o, s, strlen(s));
}

static int nonprintable(uint32_t cp)
{
    size_t lo = 0, hi = sizeof tbx_pyrepr_nonprintable / sizeof tbx_pyrepr_nonprintable[0];
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < tbx_pyrepr_nonprintable[mid][0])
            hi = mid;
        else if (cp > tbx_pyrepr_nonprintable[mid][1])
            lo = mid + 1;
        else
            return 1;
    }
    return 0;
}

/* Python's unicode_repr: quote choice and escapes. */
static void repr_str(out *o, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    int has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char quote = has_sq && !has_dq ? '"' : '\'';
    char esc[16];

    put(o, &quote, 1);
    size_t i = 0;
    while (i < n && !full(o)) {
        uint32_t cp;
        size_t k = tbx_utf8_next(s + i, n - i, &cp);
        if (cp & 0x80000000u) { /* invalid byte: cannot happen for jansson strings */
            snprintf(esc, sizeof esc, "\\x%02x", (unsigned)(cp & 0xFF));
            puts_(o, esc);
        } else if (cp == (uint32_t)quote || cp == '\\') {
            esc[0] = '\\', esc[1] = (char)cp;
            put(o, esc, 2);
        } else if (cp == '\t') {
            puts_(o, "\\t");
        } else if (cp == '\n') {
            puts_(o, "\\n");
        } else if (cp == '\r') {
            puts_(o, "\\r");
        } else if (cp < 0x20 || cp == 0x7F) {
            snprintf(esc, sizeof esc, "\\x%02x", (unsigned)cp);
            puts_(o, esc);
        } else if (cp < 0x7F || !nonprintable(cp)) {
            put(o, (const char *)s + i, k);
        } else if (cp <= 0xFF) {
            snprintf(esc, sizeof esc, "\\x%02x", (unsigned)cp);
            puts_(o, esc);
        } else if (cp <= 0xFFFF) {
            snprintf(esc, sizeof esc, "\\u%04x", (unsigned)cp);
            puts_(o, esc);
        } else {
            snprintf(esc, sizeof esc, "\\U%08x", (unsigned)cp);
            puts_(o, esc);
        }
        i += k;
    }
    put(o, &quote, 1);
}

static void repr_value(out *o, const json_t *v, int depth);

static void repr_items(out *o, const json_t *arr, int depth)
{
    for (size_t i = 0; i < json_array_size(arr) && !full(o); i++) {
        if (i)
            puts_(o, ", ");
        repr_value(o, json_array_get(arr, i), depth + 1);
    }
}

static void repr_value(out *o, const json_t *v, int depth)
{
    char num[TBX_PYFLOAT_BUFSZ];
    switch (v ? json_typeof(v) : JSON_NULL) {
    case JSON_NULL:
        puts_(o, "None");
        break;
    case JSON_TRUE:
        puts_(o, "True");
        break;
    case JSON_FALSE:
        puts_(o, "False");
        break;
    case JSON_INTEGER:
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        puts_(o, num);
        break;
    case JSON_REAL:
        tbx_pyfloat_repr(json_real_value(v), num);
        puts_(o, num);
        break;
    case JSON_STRING:
        repr_str(o, json_string_value(v), json_string_length(v));
        break;
    case JSON_ARRAY:
        if (depth >= TBX_PYREPR_MAX_DEPTH) {
            puts_(o, "[...]");
            break;
        }
        puts_(o, "[");
        repr_items(o, v, depth);
        puts_(o, "]");
        break;
    case JSON_OBJECT: {
        if (depth >= TBX_PYREPR_MAX_DEPTH) {
            puts_(o, "{...}");
            break;
        }
        puts_(o, "{");
        int first = 1;
        /* jansson's iterators take a non-const object but do not modify it */
        json_t *obj = (json_t *)(uintptr_t)v;
        for (void *it = json_object_iter(obj); it && !full(o); it = json_object_iter_next(obj, it)) {
            if (!first)
                puts_(o, ", ");
            first = 0;
            repr_str(o, json_object_iter_key(it), json_object_iter_key_len(it));
            puts_(o, ": ");
            repr_value(o, json_object_iter_value(it), depth + 1);
        }
        puts_(o, "}");
        break;
    }
    }
}

/* Cut to max_len code points + "..." if longer; NUL-terminate; hand over the buffer. */
static char *finish(out *o, size_t max_len)
{
    if (!o->oom && max_len > 0) {
        size_t cps = 0, i = 0;
        while (i < o->b.len && cps < max_len) {
            uint32_t cp;
            i += tbx_utf8_next(o->b.data + i, o->b.len - i, &cp);
            cps++;
        }
        if (i < o->b.len) {
            o->b.len = i;
            puts_(o, "...");
        }
    }
    put(o, "", 1);
    if (o->oom) {
        tbx_buf_free(&o->b);
        return NULL;
    }
    return (char *)o->b.data;
}

static void init(out *o, size_t max_len)
{
    memset(o, 0, sizeof *o);
    /* max_len code points take at most 4 * max_len bytes; a little more lets
       finish() see that the text was longer. */
    if (max_len > 0 && max_len < (SIZE_MAX - 16) / 4)
        o->stop_at = 4 * max_len + 8;
}

char *tbx_pyrepr(const json_t *value, size_t max_len)
{
    out o;
    init(&o, max_len);
    repr_value(&o, value, 0);
    return finish(&o, max_len);
}

char *tbx_pyrepr_tuple(const json_t *array, size_t max_len)
{
    out o;
    init(&o, max_len);
    puts_(&o, "(");
    if (json_is_array(array)) {
        repr_items(&o, array, 0);
        if (json_array_size(array) == 1)
            puts_(&o, ",");
    } else if (array) {
        repr_value(&o, array, 1);
        puts_(&o, ",");
    }
    puts_(&o, ")");
    return finish(&o, max_len);
}
