/* pickle.c - JSON -> pickle protocol 2 encoder (see toolbox/pickle.h; decoder in pickle_load.c). */
#include "toolbox/pickle.h"

#include "internal.h"
#include "pytext.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BATCH 1000 /* pickle.Pickler._BATCHSIZE */

typedef struct enc {
    tbx_buf b;
    int oom;
} enc;

static void put(enc *e, const void *p, size_t n)
{
    if (!e->oom && tbx_buf_append(&e->b, p, n))
        e->oom = 1;
}

static void op(enc *e, unsigned char c)
{
    put(e, &c, 1);
}

static void put_le32(enc *e, uint32_t v)
{
    unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    put(e, b, 4);
}

static void put_int(enc *e, json_int_t v)
{
    if (v >= 0 && v <= 0xFF) {
        unsigned char b[2] = {'K', (unsigned char)v};
        put(e, b, 2);
    } else if (v >= 0 && v <= 0xFFFF) {
        unsigned char b[3] = {'M', (unsigned char)v, (unsigned char)(v >> 8)};
        put(e, b, 3);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
        op(e, 'J');
        put_le32(e, (uint32_t)(int32_t)v);
    } else {
        /* LONG1: shortest little-endian two's complement, as pickle.encode_long */
        uint64_t u = (uint64_t)(int64_t)v;
        unsigned char b[10] = {0x8a, 0};
        size_t n = 1;
        while (n < 8) {
            int64_t lo = -((int64_t)1 << (8 * n - 1)), hi = ((int64_t)1 << (8 * n - 1)) - 1;
            if ((int64_t)v >= lo && (int64_t)v <= hi)
                break;
            n++;
        }
        b[1] = (unsigned char)n;
        for (size_t i = 0; i < n; i++)
            b[2 + i] = (unsigned char)(u >> (8 * i));
        put(e, b, 2 + n);
    }
}

static void put_float(enc *e, double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    unsigned char b[9] = {'G'};
    for (int i = 0; i < 8; i++)
        b[1 + i] = (unsigned char)(u >> (56 - 8 * i));
    put(e, b, 9);
}

static tbx_status put_str(enc *e, const char *s, size_t n, tbx_error *err)
{
    if (n > UINT32_MAX)
        return tbx_seterr(err, TBX_ELIMIT, "pickle: string of %zu bytes exceeds protocol 2's 4 GiB", n);
    op(e, 'X');
    put_le32(e, (uint32_t)n);
    put(e, s, n);
    return TBX_OK;
}

static tbx_status put_value(enc *e, const json_t *v, int depth, tbx_error *err);

/* The items of arr (for a list body or a tuple's contents), without any framing. */
static tbx_status put_items(enc *e, const json_t *arr, size_t from, size_t to, int depth, tbx_error *err)
{
    for (size_t i = from; i < to; i++) {
        tbx_status st = put_value(e, json_array_get(arr, i), depth + 1, err);
        if (st)
            return st;
    }
    return TBX_OK;
}

/* Batching as CPython's _pickle.c (batch_list_exact / batch_dict_exact), so that the bytes
   equal pickletools.optimize(pickle.dumps(x, 2)): a single item uses APPEND/SETITEM, otherwise
   MARK ... APPENDS/SETITEMS per 1000 items (for a dict, followed by an empty batch when the
   size is a multiple of 1000). */
static tbx_status put_list(enc *e, const json_t *arr, int depth, tbx_error *err)
{
    size_t n = json_array_size(arr);
    op(e, ']');
    if (n == 1) {
        tbx_status st = put_items(e, arr, 0, 1, depth, err);
        op(e, 'a');
        return st;
    }
    for (size_t at = 0; at < n; at += BATCH) {
        size_t k = n - at < BATCH ? n - at : BATCH;
        op(e, '(');
        tbx_status st = put_items(e, arr, at, at + k, depth, err);
        if (st)
            return st;
        op(e, 'e');
    }
    return TBX_OK;
}

static tbx_status put_pair(enc *e, void *it, int depth, tbx_error *err)
{
    tbx_status st = put_str(e, json_object_iter_key(it), json_object_iter_key_len(it), err);
    return st ? st : put_value(e, json_object_iter_value(it), depth + 1, err);
}

static tbx_status put_dict(enc *e, const json_t *obj, int depth, tbx_error *err)
{
    json_t *o = (json_t *)(uintptr_t)obj; /* jansson's iterators do not modify the object */
    void *it = json_object_iter(o);
    tbx_status st;
    op(e, '}');
    if (json_object_size(obj) == 0)
        return TBX_OK;
    if (json_object_size(obj) == 1) {
        st = put_pair(e, it, depth, err);
        op(e, 's');
        return st;
    }
    size_t i;
    do {
        op(e, '(');
        for (i = 0; i < BATCH && it; i++, it = json_object_iter_next(o, it))
            if ((st = put_pair(e, it, depth, err)))
                return st;
        op(e, 'u');
    } while (i == BATCH);
    return TBX_OK;
}

static tbx_status put_tuple(enc *e, const json_t *arr, int depth, tbx_error *err)
{
    size_t n = json_array_size(arr);
    if (n == 0) {
        op(e, ')');
        return TBX_OK;
    }
    if (n > 3)
        op(e, '(');
    tbx_status st = put_items(e, arr, 0, n, depth, err);
    if (st)
        return st;
    op(e, n == 1 ? 0x85 : n == 2 ? 0x86 : n == 3 ? 0x87 : 't');
    return TBX_OK;
}

/* depth: number of containers around v. */
static tbx_status put_value(enc *e, const json_t *v, int depth, tbx_error *err)
{
    if (depth >= TBX_PICKLE_MAX_DEPTH && (json_is_array(v) || json_is_object(v)))
        return tbx_seterr(err, TBX_ELIMIT, "pickle: containers nested deeper than %d", TBX_PICKLE_MAX_DEPTH);
    if (e->oom)
        return TBX_ENOMEM;
    switch (json_typeof(v)) {
    case JSON_NULL:
        op(e, 'N');
        break;
    case JSON_TRUE:
        op(e, 0x88);
        break;
    case JSON_FALSE:
        op(e, 0x89);
        break;
    case JSON_INTEGER:
        put_int(e, json_integer_value(v));
        break;
    case JSON_REAL:
        put_float(e, json_real_value(v));
        break;
    case JSON_STRING:
        return put_str(e, json_string_value(v), json_string_length(v), err);
    case JSON_ARRAY:
        return put_list(e, v, depth, err);
    case JSON_OBJECT:
        return put_dict(e, v, depth, err);
    }
    return TBX_OK;
}

/* STOP; hand the buffer over, or free it on failure. */
static tbx_status finish(enc *e, tbx_status st, unsigned char **out, size_t *outlen, tbx_error *err)
{
    if (!st) {
        op(e, '.');
        if (e->oom)
            st = tbx_seterr(err, TBX_ENOMEM, "pickle: out of memory");
    } else if (st == TBX_ENOMEM) {
        tbx_seterr(err, TBX_ENOMEM, "pickle: out of memory");
    }
    if (st) {
        tbx_buf_free(&e->b);
        return st;
    }
    *out = e->b.data;
    *outlen = e->b.len;
    return TBX_OK;
}

static int start(enc *e, unsigned char **out, size_t *outlen)
{
    memset(e, 0, sizeof *e);
    if (out)
        *out = NULL;
    if (outlen)
        *outlen = 0;
    return !out || !outlen ? -1 : 0;
}

static void put_proto(enc *e)
{
    unsigned char proto[2] = {0x80, 2};
    put(e, proto, 2);
}

tbx_status tbx_pickle_dump(const json_t *value, unsigned char **out, size_t *outlen, tbx_error *err)
{
    enc e;
    if (start(&e, out, outlen) || !value)
        return tbx_seterr(err, TBX_EINVAL, "pickle: NULL value or output pointer");
    put_proto(&e);
    return finish(&e, put_value(&e, value, 0, err), out, outlen, err);
}

tbx_status tbx_pickle_dump_exception(const char *exc_type, const char *exc_module, const json_t *args,
                                     unsigned char **out, size_t *outlen, tbx_error *err)
{
    enc e;
    if (start(&e, out, outlen) || !exc_type || !exc_module)
        return tbx_seterr(err, TBX_EINVAL, "pickle: NULL exception type, module or output pointer");
    if (args && !json_is_array(args))
        return tbx_seterr(err, TBX_EINVAL, "pickle: exception args must be a JSON array");
    size_t tl = strlen(exc_type), ml = strlen(exc_module);
    if (tbx_utf8_check((const unsigned char *)exc_type, tl) != 0 ||
        tbx_utf8_check((const unsigned char *)exc_module, ml) != 0)
        return tbx_seterr(err, TBX_EINVAL, "pickle: exception type or module is not valid UTF-8");

    static const char k_type[] = "exc_type", k_msg[] = "exc_message", k_mod[] = "exc_module";
    tbx_status st;
    put_proto(&e);
    op(&e, '}');
    op(&e, '(');
    if ((st = put_str(&e, k_type, sizeof k_type - 1, err)) || (st = put_str(&e, exc_type, tl, err)) ||
        (st = put_str(&e, k_msg, sizeof k_msg - 1, err)))
        return finish(&e, st, out, outlen, err);
    if (args) {
        st = put_tuple(&e, args, 1, err);
    } else {
        op(&e, ')');
        st = TBX_OK;
    }
    if (!st && !(st = put_str(&e, k_mod, sizeof k_mod - 1, err)) && !(st = put_str(&e, exc_module, ml, err)))
        op(&e, 'u');
    return finish(&e, st, out, outlen, err);
}
