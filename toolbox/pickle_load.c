/* pickle_load.c - pickle (protocols 0-5, plain data only) -> JSON decoder (see toolbox/pickle.h).
 *
 * A small pickle machine: a value stack, a mark stack and a memo, as in CPython's
 * _pickle.c, with the same underflow rules (nothing is popped below the last MARK).
 * Every value pushed gets a record (rec) holding its JSON form and bookkeeping; the
 * stack and the memo hold record indexes, so a memoized container fetched by GET is
 * the same record and the same json_t.
 *
 * Recursion and blow-up are ruled out structurally: a container may not change once it
 * has been stored inside another one ("sealed"), which is never needed by what Python's
 * pickler writes for non-recursive data and makes reference cycles impossible; each
 * record carries the height and the expanded size (values and string bytes, a shared
 * value counted once per use) of its tree, checked against the TBX_PICKLE_MAX_* limits,
 * so the result can be walked or dumped in bounded time and memory.
 */
#include "toolbox/pickle.h"

#include "internal.h"
#include "pytext.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum kind { K_NONE, K_BOOL, K_INT, K_FLOAT, K_STR, K_BYTES, K_LIST, K_TUPLE, K_DICT, K_SET, K_FROZENSET, K_CALLABLE };
enum fn { FN_SET, FN_FROZENSET, FN_BYTES, FN_BYTEARRAY, FN_ENCODE };

static const char *const kind_names[] = {"None", "bool", "int", "float", "str", "bytes",
                                         "list", "tuple", "dict", "set", "frozenset", "class"};

typedef struct rec {
    json_t *v;      /* owned reference; NULL for K_CALLABLE */
    double f;       /* K_FLOAT: the value (v is null for NaN and inf) */
    uint64_t nodes; /* values in the expanded tree */
    uint64_t bytes; /* string bytes in the expanded tree */
    uint32_t arg[2]; /* K_TUPLE: records of the first two items (REDUCE arguments) */
    uint16_t height;
    uint8_t kind, sealed, fn;
} rec;

typedef struct memo {
    uint64_t *keys;
    size_t *vals;
    size_t cap, count; /* cap is 0 or a power of two; a val of SIZE_MAX marks a free slot */
} memo;

typedef struct vm {
    const unsigned char *start, *p, *end;
    rec *recs;
    size_t nrecs, caprecs;
    size_t *stack;
    size_t sp, capstack;
    size_t *marks;
    size_t nmarks, capmarks;
    memo memo;
    uint64_t copied_items, copied_bytes; /* work done copying shared data, bounded */
    size_t opoff;
    unsigned char opc;
    tbx_status status; /* of the last fail() */
    tbx_error *err;
} vm;

/* ---- errors ----------------------------------------------------------------- */

static const char *opname(unsigned char c)
{
    switch (c) {
    case '(': return "MARK";
    case '.': return "STOP";
    case '0': return "POP";
    case '1': return "POP_MARK";
    case '2': return "DUP";
    case 'F': return "FLOAT";
    case 'I': return "INT";
    case 'J': return "BININT";
    case 'K': return "BININT1";
    case 'L': return "LONG";
    case 'M': return "BININT2";
    case 'N': return "NONE";
    case 'P': return "PERSID";
    case 'Q': return "BINPERSID";
    case 'R': return "REDUCE";
    case 'S': return "STRING";
    case 'T': return "BINSTRING";
    case 'U': return "SHORT_BINSTRING";
    case 'V': return "UNICODE";
    case 'X': return "BINUNICODE";
    case 'a': return "APPEND";
    case 'b': return "BUILD";
    case 'c': return "GLOBAL";
    case 'd': return "DICT";
    case '}': return "EMPTY_DICT";
    case 'e': return "APPENDS";
    case 'g': return "GET";
    case 'h': return "BINGET";
    case 'i': return "INST";
    case 'j': return "LONG_BINGET";
    case 'l': return "LIST";
    case ']': return "EMPTY_LIST";
    case 'o': return "OBJ";
    case 'p': return "PUT";
    case 'q': return "BINPUT";
    case 'r': return "LONG_BINPUT";
    case 's': return "SETITEM";
    case 't': return "TUPLE";
    case ')': return "EMPTY_TUPLE";
    case 'u': return "SETITEMS";
    case 'G': return "BINFLOAT";
    case 'B': return "BINBYTES";
    case 'C': return "SHORT_BINBYTES";
    case 0x80: return "PROTO";
    case 0x81: return "NEWOBJ";
    case 0x82: return "EXT1";
    case 0x83: return "EXT2";
    case 0x84: return "EXT4";
    case 0x85: return "TUPLE1";
    case 0x86: return "TUPLE2";
    case 0x87: return "TUPLE3";
    case 0x88: return "NEWTRUE";
    case 0x89: return "NEWFALSE";
    case 0x8a: return "LONG1";
    case 0x8b: return "LONG4";
    case 0x8c: return "SHORT_BINUNICODE";
    case 0x8d: return "BINUNICODE8";
    case 0x8e: return "BINBYTES8";
    case 0x8f: return "EMPTY_SET";
    case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";
    case 0x92: return "NEWOBJ_EX";
    case 0x93: return "STACK_GLOBAL";
    case 0x94: return "MEMOIZE";
    case 0x95: return "FRAME";
    case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER";
    case 0x98: return "READONLY_BUFFER";
    }
    return NULL;
}

static tbx_status fail(vm *m, tbx_status code, const char *fmt, ...) TBX_PRINTF(3, 4);

static tbx_status fail(vm *m, tbx_status code, const char *fmt, ...)
{
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *name = opname(m->opc);
    m->status = code;
    return tbx_seterr(m->err, code, "pickle: %s (opcode %s at offset %zu)", msg, name ? name : "?", m->opoff);
}

static tbx_status oom(vm *m)
{
    return fail(m, TBX_ENOMEM, "out of memory");
}

/* Copy up to 60 bytes of untrusted text for a message, printable ASCII only. */
static const char *clean(char out[64], const unsigned char *s, size_t n)
{
    size_t k = n < 60 ? n : 60;
    for (size_t i = 0; i < k; i++)
        out[i] = s[i] >= 0x20 && s[i] < 0x7F ? (char)s[i] : '?';
    out[k] = '\0';
    return out;
}

/* ---- growable arrays --------------------------------------------------------- */

static int grow(void *pp, size_t *cap, size_t need, size_t elsz)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap : 16;
    while (nc < need)
        nc *= 2;
    void *np = realloc(*(void **)pp, nc * elsz);
    if (!np)
        return -1;
    *(void **)pp = np;
    *cap = nc;
    return 0;
}

/* ---- memo ---------------------------------------------------------------- */

static size_t memo_slot(uint64_t k, size_t cap)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (size_t)k & (cap - 1);
}

static int memo_set(memo *t, uint64_t key, size_t val)
{
    if ((t->count + 1) * 2 > t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 64;
        uint64_t *nk = malloc(nc * sizeof *nk);
        size_t *nv = malloc(nc * sizeof *nv);
        if (!nk || !nv) {
            free(nk);
            free(nv);
            return -1;
        }
        for (size_t i = 0; i < nc; i++)
            nv[i] = SIZE_MAX;
        for (size_t i = 0; i < t->cap; i++) {
            if (t->vals[i] == SIZE_MAX)
                continue;
            size_t j = memo_slot(t->keys[i], nc);
            while (nv[j] != SIZE_MAX)
                j = (j + 1) & (nc - 1);
            nk[j] = t->keys[i];
            nv[j] = t->vals[i];
        }
        free(t->keys);
        free(t->vals);
        t->keys = nk;
        t->vals = nv;
        t->cap = nc;
    }
    size_t j = memo_slot(key, t->cap);
    while (t->vals[j] != SIZE_MAX && t->keys[j] != key)
        j = (j + 1) & (t->cap - 1);
    if (t->vals[j] == SIZE_MAX)
        t->count++;
    t->keys[j] = key;
    t->vals[j] = val;
    return 0;
}

static int memo_get(const memo *t, uint64_t key, size_t *val)
{
    if (!t->cap)
        return -1;
    size_t j = memo_slot(key, t->cap);
    while (t->vals[j] != SIZE_MAX) {
        if (t->keys[j] == key) {
            *val = t->vals[j];
            return 0;
        }
        j = (j + 1) & (t->cap - 1);
    }
    return -1;
}

/* ---- records and the stack ---------------------------------------------------- */

static int is_container(int kind)
{
    return kind >= K_LIST && kind <= K_FROZENSET;
}

/* Take ownership of v (may be NULL only for K_CALLABLE) as a new record. */
static tbx_status new_rec(vm *m, json_t *v, int kind, size_t *idx)
{
    if (!v && kind != K_CALLABLE)
        return oom(m);
    if (m->nrecs >= TBX_PICKLE_MAX_ITEMS) {
        json_decref(v);
        return fail(m, TBX_ELIMIT, "more than %u values", TBX_PICKLE_MAX_ITEMS);
    }
    if (grow(&m->recs, &m->caprecs, m->nrecs + 1, sizeof *m->recs)) {
        json_decref(v);
        return oom(m);
    }
    rec *r = &m->recs[m->nrecs];
    memset(r, 0, sizeof *r);
    r->v = v;
    r->kind = (uint8_t)kind;
    r->nodes = 1;
    r->bytes = json_is_string(v) ? json_string_length(v) : 0;
    r->height = is_container(kind) ? 1 : 0;
    *idx = m->nrecs++;
    return TBX_OK;
}

static tbx_status push(vm *m, size_t idx)
{
    if (m->sp >= TBX_PICKLE_MAX_ITEMS)
        return fail(m, TBX_ELIMIT, "stack deeper than %u", TBX_PICKLE_MAX_ITEMS);
    if (grow(&m->stack, &m->capstack, m->sp + 1, sizeof *m->stack))
        return oom(m);
    m->stack[m->sp++] = idx;
    return TBX_OK;
}

static tbx_status push_new(vm *m, json_t *v, int kind)
{
    size_t idx = 0;
    tbx_status st = new_rec(m, v, kind, &idx);
    return st ? st : push(m, idx);
}

static size_t fence(const vm *m)
{
    return m->nmarks ? m->marks[m->nmarks - 1] : 0;
}

static tbx_status underflow(vm *m)
{
    return fail(m, TBX_EDECODE, "stack underflow");
}

static tbx_status pop(vm *m, size_t *idx)
{
    if (m->sp <= fence(m))
        return underflow(m);
    *idx = m->stack[--m->sp];
    return TBX_OK;
}

static tbx_status top(vm *m, size_t *idx)
{
    if (m->sp <= fence(m))
        return underflow(m);
    *idx = m->stack[m->sp - 1];
    return TBX_OK;
}

static tbx_status pop_mark(vm *m, size_t *x)
{
    if (!m->nmarks)
        return fail(m, TBX_EDECODE, "no MARK on the stack");
    *x = m->marks[--m->nmarks];
    return TBX_OK;
}

/* ---- building containers ---------------------------------------------------- */

static tbx_status check_size(vm *m, const rec *p)
{
    if (p->height > TBX_PICKLE_MAX_DEPTH)
        return fail(m, TBX_ELIMIT, "nested deeper than %d", TBX_PICKLE_MAX_DEPTH);
    if (p->nodes > TBX_PICKLE_MAX_ITEMS)
        return fail(m, TBX_ELIMIT, "more than %u values", TBX_PICKLE_MAX_ITEMS);
    if (p->bytes > TBX_PICKLE_MAX_BYTES)
        return fail(m, TBX_ELIMIT, "more than %u string bytes", TBX_PICKLE_MAX_BYTES);
    return TBX_OK;
}

/* Account for child going into parent; seal child. */
static tbx_status adopt(vm *m, size_t parent, size_t child)
{
    rec *p = &m->recs[parent], *c = &m->recs[child];
    if (c->kind == K_CALLABLE)
        return fail(m, TBX_EUNSUPPORTED, "a Python class or function used as a value");
    if (parent == child)
        return fail(m, TBX_EUNSUPPORTED, "recursive structure: a %s inside itself", kind_names[p->kind]);
    if (p->sealed)
        return fail(m, TBX_EUNSUPPORTED, "a %s changed after being stored in another container "
                                         "(recursive structure)", kind_names[p->kind]);
    p->nodes += c->nodes;
    p->bytes += c->bytes;
    if (c->height + 1 > p->height)
        p->height = (uint16_t)(c->height + 1);
    c->sealed = 1;
    return check_size(m, p);
}

static tbx_status append_item(vm *m, size_t parent, size_t child)
{
    tbx_status st = adopt(m, parent, child);
    if (st)
        return st;
    if (json_array_append(m->recs[parent].v, m->recs[child].v))
        return oom(m);
    return TBX_OK;
}

static tbx_status set_item(vm *m, size_t dict, size_t key, size_t val)
{
    tbx_status st = adopt(m, dict, val);
    if (st)
        return st;
    const rec *k = &m->recs[key];
    char num[TBX_PYFLOAT_BUFSZ];
    const char *ks;
    size_t kl;
    switch (k->kind) {
    case K_STR:
        ks = json_string_value(k->v);
        kl = json_string_length(k->v);
        break;
    case K_INT:
        kl = (size_t)snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(k->v));
        ks = num;
        break;
    case K_FLOAT:
        kl = tbx_pyfloat_repr(k->f, num);
        ks = num;
        break;
    case K_BOOL:
        ks = json_is_true(k->v) ? "True" : "False";
        kl = strlen(ks);
        break;
    case K_NONE:
        ks = "None";
        kl = 4;
        break;
    default:
        return fail(m, TBX_EUNSUPPORTED, "dict key of type %s has no JSON form", kind_names[k->kind]);
    }
    rec *d = &m->recs[dict];
    d->nodes += 1;
    d->bytes += kl;
    m->copied_bytes += kl;
    if (m->copied_bytes > TBX_PICKLE_MAX_BYTES)
        return fail(m, TBX_ELIMIT, "more than %u bytes of dict keys", TBX_PICKLE_MAX_BYTES);
    if ((st = check_size(m, d)))
        return st;
    if (json_object_setn_nocheck(d->v, ks, kl, m->recs[val].v))
        return oom(m);
    return TBX_OK;
}

/* Move stack[x..sp) into parent (pairs for a dict), then drop them from the stack. */
static tbx_status fill(vm *m, size_t parent, size_t x)
{
    tbx_status st = TBX_OK;
    if (m->recs[parent].kind == K_DICT) {
        if ((m->sp - x) % 2)
            return fail(m, TBX_EDECODE, "odd number of items for a dict");
        for (size_t i = x; i < m->sp && !st; i += 2)
            st = set_item(m, parent, m->stack[i], m->stack[i + 1]);
    } else {
        for (size_t i = x; i < m->sp && !st; i++)
            st = append_item(m, parent, m->stack[i]);
    }
    m->sp = x;
    return st;
}

/* LIST, DICT, TUPLE, FROZENSET, TUPLE1-3: a new container from stack[x..sp). */
static tbx_status build(vm *m, size_t x, int kind)
{
    size_t idx = 0;
    tbx_status st = new_rec(m, kind == K_DICT ? json_object() : json_array(), kind, &idx);
    if (!st && kind == K_TUPLE) {
        for (size_t i = 0; i < 2 && x + i < m->sp; i++)
            m->recs[idx].arg[i] = (uint32_t)m->stack[x + i];
    }
    if (!st)
        st = fill(m, idx, x);
    return st ? st : push(m, idx);
}

/* APPEND(S), SETITEM(S), ADDITEMS: stack[x..sp) into the container at stack[x-1]. */
static tbx_status extend(vm *m, size_t x, int kind)
{
    if (x > m->sp || x <= fence(m))
        return underflow(m);
    if (x == m->sp)
        return TBX_OK;
    size_t target = m->stack[x - 1];
    if (m->recs[target].kind != kind)
        return fail(m, TBX_EDECODE, "target is a %s, not a %s", kind_names[m->recs[target].kind], kind_names[kind]);
    return fill(m, target, x);
}

/* ---- scalars ---------------------------------------------------------------- */

/* The next n bytes, or NULL (m->status set) if the input is shorter. */
static const unsigned char *take(vm *m, uint64_t n)
{
    if ((uint64_t)(m->end - m->p) < n) {
        fail(m, TBX_EDECODE, "truncated input");
        return NULL;
    }
    const unsigned char *s = m->p;
    m->p += n;
    return s;
}

static uint64_t le(const unsigned char *s, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)s[i] << (8 * i);
    return v;
}

/* A little-endian length of n bytes, then that many bytes (returned, length in *len). */
static const unsigned char *counted(vm *m, size_t n, int is_signed, size_t *len)
{
    const unsigned char *h = take(m, n);
    if (!h)
        return NULL;
    uint64_t l = le(h, n);
    if (is_signed && (l & 0x80000000u)) {
        fail(m, TBX_EDECODE, "negative length");
        return NULL;
    }
    *len = (size_t)l;
    return take(m, l);
}

/* A text-form argument: the bytes up to '\n' (excluded), length in *n. */
static const char *line(vm *m, size_t *n)
{
    const unsigned char *nl = memchr(m->p, '\n', (size_t)(m->end - m->p));
    if (!nl) {
        fail(m, TBX_EDECODE, "truncated input: missing newline");
        return NULL;
    }
    const char *s = (const char *)m->p;
    *n = (size_t)(nl - m->p);
    m->p = nl + 1;
    return s;
}

static tbx_status push_int(vm *m, int64_t v)
{
    return push_new(m, json_integer((json_int_t)v), K_INT);
}

static tbx_status push_float(vm *m, double f)
{
    size_t idx = 0;
    tbx_status st = new_rec(m, isfinite(f) ? json_real(f) : json_null(), K_FLOAT, &idx);
    if (st)
        return st;
    m->recs[idx].f = f;
    return push(m, idx);
}

/* LONG1/LONG4 payload: little-endian two's complement. */
static tbx_status push_long(vm *m, const unsigned char *b, size_t n)
{
    while (n > 1 && ((b[n - 1] == 0x00 && !(b[n - 2] & 0x80)) || (b[n - 1] == 0xFF && (b[n - 2] & 0x80))))
        n--;
    if (n > 8)
        return fail(m, TBX_EUNSUPPORTED, "int does not fit in 64 bits");
    uint64_t u = le(b, n);
    if (n > 0 && n < 8 && (b[n - 1] & 0x80))
        u |= ~(uint64_t)0 << (8 * n);
    int64_t v = (u >> 63) ? -(int64_t)(~u) - 1 : (int64_t)u;
    return push_int(m, v);
}

/* Text integer: [ws][+-]digits (base as strtoll with the given base). */
static tbx_status push_text_int(vm *m, const char *s, size_t n, int base)
{
    char buf[72];
    size_t i = 0;
    while (i < n && (s[i] == ' ' || s[i] == '\t'))
        i++;
    if (i < n && (s[i] == '+' || s[i] == '-'))
        i++;
    size_t d = i;
    while (d < n && s[d] >= '0' && s[d] <= '9')
        d++;
    if (n >= sizeof buf) {
        if (d == n && d > i)
            return fail(m, TBX_EUNSUPPORTED, "int does not fit in 64 bits");
        return fail(m, TBX_EDECODE, "bad integer literal");
    }
    memcpy(buf, s, n);
    buf[n] = '\0';
    errno = 0;
    char *end;
    long long v = strtoll(buf, &end, base);
    if (end == buf || *end != '\0' || (base == 10 && d != n))
        return fail(m, TBX_EDECODE, "bad integer literal '%s'", clean((char[64]){0}, (const unsigned char *)s, n));
    if (errno == ERANGE)
        return fail(m, TBX_EUNSUPPORTED, "int does not fit in 64 bits");
    return push_int(m, v);
}

/* A str from UTF-8 bytes. python_utf8: the bytes came from Python's str encoder
   (surrogatepass), so invalid UTF-8 is malformed input rather than unsupported data. */
static tbx_status push_text(vm *m, const unsigned char *s, size_t n, int kind, int python_utf8)
{
    int u = tbx_utf8_check(s, n);
    if (u < 0 && python_utf8)
        return fail(m, TBX_EDECODE, "str is not valid UTF-8");
    if (u < 0)
        return fail(m, TBX_EUNSUPPORTED, "%s value is not valid UTF-8", kind == K_STR ? "str" : "bytes");
    if (u > 0)
        return fail(m, TBX_EUNSUPPORTED, "%s with lone surrogates has no JSON form", kind_names[kind]);
    return push_new(m, json_stringn_nocheck((const char *)s, n), kind);
}

static int put_utf8(tbx_buf *b, uint32_t cp)
{
    unsigned char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (unsigned char)cp, n = 1;
    } else if (cp < 0x800) {
        u[0] = (unsigned char)(0xC0 | (cp >> 6)), u[1] = (unsigned char)(0x80 | (cp & 0x3F)), n = 2;
    } else if (cp < 0x10000) {
        u[0] = (unsigned char)(0xE0 | (cp >> 12)), u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (unsigned char)(0x80 | (cp & 0x3F)), n = 3;
    } else {
        u[0] = (unsigned char)(0xF0 | (cp >> 18)), u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F)), u[3] = (unsigned char)(0x80 | (cp & 0x3F)), n = 4;
    }
    return tbx_buf_append(b, u, n);
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* UNICODE: raw-unicode-escape (latin-1 bytes, \uXXXX and \UXXXXXXXX escapes). */
static tbx_status push_unicode(vm *m, const unsigned char *s, size_t n)
{
    tbx_buf b = {0};
    tbx_status st = TBX_OK;
    int bad = 0;
    for (size_t i = 0; i < n && !st && !bad;) {
        unsigned char c = s[i++];
        if (c != '\\' || i == n || (s[i] != 'u' && s[i] != 'U')) {
            if (put_utf8(&b, c) || (c == '\\' && i < n && put_utf8(&b, s[i++])))
                bad = -1;
            continue;
        }
        size_t cnt = s[i++] == 'u' ? 4 : 8;
        uint32_t cp = 0;
        for (size_t k = 0; k < cnt && !st; k++) {
            int h = i < n ? hexval(s[i]) : -1;
            if (h < 0)
                st = fail(m, TBX_EDECODE, "truncated \\u escape in UNICODE");
            cp = (cp << 4) | (uint32_t)(h & 0xF);
            i++;
        }
        if (st)
            break;
        if (cp > 0x10FFFF)
            st = fail(m, TBX_EDECODE, "\\U escape out of range in UNICODE");
        else if (cp >= 0xD800 && cp <= 0xDFFF)
            st = fail(m, TBX_EUNSUPPORTED, "str with lone surrogates has no JSON form");
        else if (put_utf8(&b, cp))
            bad = -1;
    }
    if (!st && bad)
        st = oom(m);
    if (!st)
        st = push_new(m, json_stringn_nocheck(b.data ? (const char *)b.data : "", b.len), K_STR);
    tbx_buf_free(&b);
    return st;
}

/* STRING: a quoted Python 2 str literal, decoded like codecs.escape_decode. */
static tbx_status push_string(vm *m, const char *s, size_t n)
{
    if (n < 2 || s[0] != s[n - 1] || (s[0] != '\'' && s[0] != '"'))
        return fail(m, TBX_EDECODE, "STRING argument must be quoted");
    s++, n -= 2;
    unsigned char *o = malloc(n + 1);
    if (!o)
        return oom(m);
    size_t k = 0;
    tbx_status st = TBX_OK;
    for (size_t i = 0; i < n && !st;) {
        unsigned char c = (unsigned char)s[i++];
        if (c != '\\') {
            o[k++] = c;
            continue;
        }
        if (i == n) {
            st = fail(m, TBX_EDECODE, "trailing \\ in STRING");
            break;
        }
        c = (unsigned char)s[i++];
        const char *simple = strchr("\\\\''\"\"b\bf\ft\tn\nr\rv\va\a", c);
        if (c == '\n') {
            continue;
        } else if (c && simple && (simple - "\\\\''\"\"b\bf\ft\tn\nr\rv\va\a") % 2 == 0) {
            o[k++] = (unsigned char)simple[1];
        } else if (c >= '0' && c <= '7') {
            unsigned v = c - '0';
            for (int d = 0; d < 2 && i < n && s[i] >= '0' && s[i] <= '7'; d++)
                v = v * 8 + (unsigned)(s[i++] - '0');
            o[k++] = (unsigned char)v;
        } else if (c == 'x') {
            int h1 = i < n ? hexval((unsigned char)s[i]) : -1, h2 = i + 1 < n ? hexval((unsigned char)s[i + 1]) : -1;
            if (h1 < 0 || h2 < 0)
                st = fail(m, TBX_EDECODE, "invalid \\x escape in STRING");
            o[k++] = (unsigned char)(h1 * 16 + h2);
            i += 2;
        } else {
            o[k++] = '\\';
            o[k++] = c;
        }
    }
    if (!st)
        st = push_text(m, o, k, K_STR, 0);
    free(o);
    return st;
}

/* ---- globals and REDUCE (only builtins that rebuild plain data) ------------- */

static int whitelisted(const char *mod, size_t ml, const char *name, size_t nl, int *fn)
{
    static const struct {
        const char *mod, *name;
        int fn;
    } ok[] = {
        {"builtins", "set", FN_SET},           {"__builtin__", "set", FN_SET},
        {"builtins", "frozenset", FN_FROZENSET}, {"__builtin__", "frozenset", FN_FROZENSET},
        {"builtins", "bytes", FN_BYTES},       {"__builtin__", "bytes", FN_BYTES},
        {"builtins", "bytearray", FN_BYTEARRAY}, {"__builtin__", "bytearray", FN_BYTEARRAY},
        {"_codecs", "encode", FN_ENCODE},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        if (strlen(ok[i].mod) == ml && !memcmp(ok[i].mod, mod, ml) && strlen(ok[i].name) == nl &&
            !memcmp(ok[i].name, name, nl)) {
            *fn = ok[i].fn;
            return 1;
        }
    }
    return 0;
}

static tbx_status push_global(vm *m, const char *mod, size_t ml, const char *name, size_t nl)
{
    int fn;
    char a[64], b[64];
    if (!whitelisted(mod, ml, name, nl, &fn))
        return fail(m, TBX_EUNSUPPORTED, "%s.%s is a Python object, not plain data",
                    clean(a, (const unsigned char *)mod, ml), clean(b, (const unsigned char *)name, nl));
    size_t idx = 0;
    tbx_status st = new_rec(m, NULL, K_CALLABLE, &idx);
    if (st)
        return st;
    m->recs[idx].fn = (uint8_t)fn;
    return push(m, idx);
}

static int is_str(const rec *r, const char *s)
{
    return r->kind == K_STR && json_string_length(r->v) == strlen(s) && !strcmp(json_string_value(r->v), s);
}

/* _codecs.encode(text, 'latin1') -> bytes (how protocols 0-2 spell bytes). */
static tbx_status encode_latin1(vm *m, const rec *text)
{
    const unsigned char *s = (const unsigned char *)json_string_value(text->v);
    size_t n = json_string_length(text->v), k = 0;
    m->copied_bytes += n;
    if (m->copied_bytes > TBX_PICKLE_MAX_BYTES)
        return fail(m, TBX_ELIMIT, "more than %u bytes copied", TBX_PICKLE_MAX_BYTES);
    unsigned char *o = malloc(n + 1);
    if (!o)
        return oom(m);
    tbx_status st = TBX_OK;
    for (size_t i = 0; i < n && !st;) {
        uint32_t cp;
        i += tbx_utf8_next(s + i, n - i, &cp);
        if (cp > 0xFF)
            st = fail(m, TBX_EDECODE, "_codecs.encode: character beyond latin-1");
        o[k++] = (unsigned char)cp;
    }
    if (!st)
        st = push_text(m, o, k, K_BYTES, 0);
    free(o);
    return st;
}

static tbx_status reduce(vm *m)
{
    size_t ai = 0, fi = 0;
    tbx_status st = pop(m, &ai);
    if (!st)
        st = pop(m, &fi);
    if (st)
        return st;
    const rec *f = &m->recs[fi], *args = &m->recs[ai];
    if (f->kind != K_CALLABLE || args->kind != K_TUPLE)
        return fail(m, TBX_EUNSUPPORTED, "REDUCE builds a Python object");
    size_t argc = json_array_size(args->v);
    const rec *a0 = argc > 0 ? &m->recs[args->arg[0]] : NULL, *a1 = argc > 1 ? &m->recs[args->arg[1]] : NULL;
    switch (f->fn) {
    case FN_SET:
    case FN_FROZENSET: {
        int kind = f->fn == FN_SET ? K_SET : K_FROZENSET;
        if (argc == 0)
            return push_new(m, json_array(), kind);
        if (argc != 1 || !a0 || (a0->kind != K_LIST && a0->kind != K_TUPLE && a0->kind != K_SET &&
                                 a0->kind != K_FROZENSET))
            break;
        size_t n = json_array_size(a0->v), idx = 0;
        m->copied_items += n;
        if (m->copied_items > TBX_PICKLE_MAX_ITEMS)
            return fail(m, TBX_ELIMIT, "more than %u values copied", TBX_PICKLE_MAX_ITEMS);
        rec src = *a0; /* new_rec may move m->recs */
        if ((st = new_rec(m, json_array(), kind, &idx)))
            return st;
        rec *r = &m->recs[idx];
        for (size_t i = 0; i < n; i++)
            if (json_array_append(r->v, json_array_get(src.v, i)))
                return oom(m);
        r->nodes = src.nodes;
        r->bytes = src.bytes;
        r->height = src.height;
        return push(m, idx);
    }
    case FN_BYTES:
    case FN_BYTEARRAY:
        if (argc == 0)
            return push_new(m, json_stringn_nocheck("", 0), K_BYTES);
        if (argc == 1 && a0 && a0->kind == K_BYTES)
            return push_new(m, json_incref(a0->v), K_BYTES);
        break;
    case FN_ENCODE:
        if (argc == 2 && a0 && a1 && a0->kind == K_STR &&
            (is_str(a1, "latin1") || is_str(a1, "latin-1") || is_str(a1, "iso-8859-1")))
            return encode_latin1(m, a0);
        break;
    }
    return fail(m, TBX_EUNSUPPORTED, "REDUCE with arguments that are not plain data");
}

/* ---- the machine ------------------------------------------------------------- */

static tbx_status memo_put(vm *m, uint64_t key)
{
    size_t idx = 0;
    tbx_status st = top(m, &idx);
    if (st)
        return st;
    if (m->memo.count >= TBX_PICKLE_MAX_ITEMS)
        return fail(m, TBX_ELIMIT, "more than %u memo entries", TBX_PICKLE_MAX_ITEMS);
    return memo_set(&m->memo, key, idx) ? oom(m) : TBX_OK;
}

static tbx_status memo_push(vm *m, uint64_t key)
{
    size_t idx = 0;
    if (memo_get(&m->memo, key, &idx))
        return fail(m, TBX_EDECODE, "memo key %llu not found", (unsigned long long)key);
    return push(m, idx);
}

/* PUT/GET text argument: a non-negative decimal. */
static tbx_status text_key(vm *m, uint64_t *key)
{
    size_t n = 0;
    const char *s = line(m, &n);
    if (!s)
        return m->status;
    uint64_t k = 0;
    if (n == 0)
        return fail(m, TBX_EDECODE, "empty memo key");
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9' || k > (UINT64_MAX - 9) / 10)
            return fail(m, TBX_EDECODE, "bad memo key");
        k = k * 10 + (uint64_t)(s[i] - '0');
    }
    *key = k;
    return TBX_OK;
}

static tbx_status unsupported_op(vm *m)
{
    return fail(m, TBX_EUNSUPPORTED, "builds a Python object, not plain data");
}

#define TAKE(n) ((s = take(m, (n))) == NULL)
#define COUNTED(n, sgn) ((s = counted(m, (n), (sgn), &len)) == NULL)
#define LINE(p, n) ((p = line(m, &(n))) == NULL)

/* Opcodes that carry a fixed-size or counted argument. */
static tbx_status step_binary(vm *m, unsigned char c)
{
    const unsigned char *s;
    size_t len = 0;
    switch (c) {
    case 'K':
        return TAKE(1) ? m->status : push_int(m, s[0]);
    case 'M':
        return TAKE(2) ? m->status : push_int(m, (int64_t)le(s, 2));
    case 'J':
        return TAKE(4) ? m->status : push_int(m, (int32_t)(uint32_t)le(s, 4));
    case 0x8a: /* LONG1 */
        if (TAKE(1) || TAKE(s[0]))
            return m->status;
        return push_long(m, s, (size_t)(m->p - s));
    case 0x8b: /* LONG4 */
        return COUNTED(4, 1) ? m->status : push_long(m, s, len);
    case 'G': {
        if (TAKE(8))
            return m->status;
        uint64_t u = 0;
        for (int i = 0; i < 8; i++)
            u = (u << 8) | s[i];
        double d;
        memcpy(&d, &u, sizeof d);
        return push_float(m, d);
    }
    case 'X':
        return COUNTED(4, 0) ? m->status : push_text(m, s, len, K_STR, 1);
    case 0x8c:
        return COUNTED(1, 0) ? m->status : push_text(m, s, len, K_STR, 1);
    case 0x8d:
        return COUNTED(8, 0) ? m->status : push_text(m, s, len, K_STR, 1);
    case 'T':
        return COUNTED(4, 1) ? m->status : push_text(m, s, len, K_STR, 0);
    case 'U':
        return COUNTED(1, 0) ? m->status : push_text(m, s, len, K_STR, 0);
    case 'B':
        return COUNTED(4, 0) ? m->status : push_text(m, s, len, K_BYTES, 0);
    case 'C':
        return COUNTED(1, 0) ? m->status : push_text(m, s, len, K_BYTES, 0);
    case 0x8e:
    case 0x96:
        return COUNTED(8, 0) ? m->status : push_text(m, s, len, K_BYTES, 0);
    case 'q':
        return TAKE(1) ? m->status : memo_put(m, s[0]);
    case 'r':
        return TAKE(4) ? m->status : memo_put(m, le(s, 4));
    case 'h':
        return TAKE(1) ? m->status : memo_push(m, s[0]);
    case 'j':
        return TAKE(4) ? m->status : memo_push(m, le(s, 4));
    case 0x80:
        if (TAKE(1))
            return m->status;
        if (s[0] > 5)
            return fail(m, TBX_EUNSUPPORTED, "unsupported pickle protocol %u", s[0]);
        return TBX_OK;
    case 0x95: /* FRAME: the frame's bytes simply follow */
        if (TAKE(8))
            return m->status;
        if (le(s, 8) > (uint64_t)(m->end - m->p))
            return fail(m, TBX_EDECODE, "truncated input: frame longer than the data");
        return TBX_OK;
    }
    return fail(m, TBX_EDECODE, "unknown opcode 0x%02x", c);
}

/* Protocol 0 opcodes with a newline-terminated argument. */
static tbx_status step_text(vm *m, unsigned char c)
{
    const char *s, *s2;
    size_t n = 0, n2 = 0;
    uint64_t key = 0;
    double d = 0;
    tbx_status st;
    char a[64], b[64];
    switch (c) {
    case 'I':
        if (LINE(s, n))
            return m->status;
        if (n == 2 && s[0] == '0' && (s[1] == '0' || s[1] == '1'))
            return push_new(m, json_boolean(s[1] == '1'), K_BOOL);
        return push_text_int(m, s, n, 0);
    case 'L':
        if (LINE(s, n))
            return m->status;
        return push_text_int(m, s, n > 0 && s[n - 1] == 'L' ? n - 1 : n, 10);
    case 'F':
        if (LINE(s, n))
            return m->status;
        if (tbx_pyfloat_parse(s, n, &d))
            return fail(m, TBX_EDECODE, "bad float literal '%s'", clean(a, (const unsigned char *)s, n));
        return push_float(m, d);
    case 'S':
        return LINE(s, n) ? m->status : push_string(m, s, n);
    case 'V':
        return LINE(s, n) ? m->status : push_unicode(m, (const unsigned char *)s, n);
    case 'p':
        return (st = text_key(m, &key)) ? st : memo_put(m, key);
    case 'g':
        return (st = text_key(m, &key)) ? st : memo_push(m, key);
    case 'c':
        if (LINE(s, n) || LINE(s2, n2))
            return m->status;
        return push_global(m, s, n, s2, n2);
    case 'i':
        if (LINE(s, n) || LINE(s2, n2))
            return m->status;
        return fail(m, TBX_EUNSUPPORTED, "%s.%s is a Python object, not plain data",
                    clean(a, (const unsigned char *)s, n), clean(b, (const unsigned char *)s2, n2));
    case 'P':
        return LINE(s, n) ? m->status : unsupported_op(m);
    }
    return step_binary(m, c);
}

#undef TAKE
#undef COUNTED
#undef LINE

/* Opcodes without an argument. */
static tbx_status step(vm *m, unsigned char c)
{
    size_t x = 0, i1 = 0, i2 = 0;
    tbx_status st;
    switch (c) {
    case 'N':
        return push_new(m, json_null(), K_NONE);
    case 0x88:
    case 0x89:
        return push_new(m, json_boolean(c == 0x88), K_BOOL);
    case ']':
        return push_new(m, json_array(), K_LIST);
    case ')':
        return push_new(m, json_array(), K_TUPLE);
    case '}':
        return push_new(m, json_object(), K_DICT);
    case 0x8f:
        return push_new(m, json_array(), K_SET);
    case '(':
        if (m->nmarks >= TBX_PICKLE_MAX_ITEMS)
            return fail(m, TBX_ELIMIT, "more than %u marks", TBX_PICKLE_MAX_ITEMS);
        if (grow(&m->marks, &m->capmarks, m->nmarks + 1, sizeof *m->marks))
            return oom(m);
        m->marks[m->nmarks++] = m->sp;
        return TBX_OK;
    case '0':
        if (m->nmarks && m->marks[m->nmarks - 1] == m->sp) {
            m->nmarks--;
            return TBX_OK;
        }
        return pop(m, &x);
    case '1':
        if ((st = pop_mark(m, &x)))
            return st;
        m->sp = x;
        return TBX_OK;
    case '2':
        return (st = top(m, &x)) ? st : push(m, x);
    case 0x94:
        return memo_put(m, m->memo.count);
    case 'a':
        if (m->sp < 1)
            return underflow(m);
        return extend(m, m->sp - 1, K_LIST);
    case 's':
        if (m->sp < 2)
            return underflow(m);
        return extend(m, m->sp - 2, K_DICT);
    case 'e':
        return (st = pop_mark(m, &x)) ? st : extend(m, x, K_LIST);
    case 'u':
        return (st = pop_mark(m, &x)) ? st : extend(m, x, K_DICT);
    case 0x90:
        return (st = pop_mark(m, &x)) ? st : extend(m, x, K_SET);
    case 't':
        return (st = pop_mark(m, &x)) ? st : build(m, x, K_TUPLE);
    case 'l':
        return (st = pop_mark(m, &x)) ? st : build(m, x, K_LIST);
    case 'd':
        return (st = pop_mark(m, &x)) ? st : build(m, x, K_DICT);
    case 0x91:
        return (st = pop_mark(m, &x)) ? st : build(m, x, K_FROZENSET);
    case 0x85:
    case 0x86:
    case 0x87:
        if (m->sp - fence(m) < (size_t)(c - 0x84))
            return underflow(m);
        return build(m, m->sp - (size_t)(c - 0x84), K_TUPLE);
    case 'R':
        return reduce(m);
    case 0x93: /* STACK_GLOBAL */
        if ((st = pop(m, &i2)) || (st = pop(m, &i1)))
            return st;
        if (m->recs[i1].kind != K_STR || m->recs[i2].kind != K_STR)
            return fail(m, TBX_EDECODE, "STACK_GLOBAL needs two str");
        return push_global(m, json_string_value(m->recs[i1].v), json_string_length(m->recs[i1].v),
                           json_string_value(m->recs[i2].v), json_string_length(m->recs[i2].v));
    case 'b': case 'o': case 'Q': case 0x81: case 0x82: case 0x83: case 0x84: case 0x92: case 0x97: case 0x98:
        return unsupported_op(m);
    }
    return step_text(m, c);
}

static void vm_free(vm *m)
{
    for (size_t i = 0; i < m->nrecs; i++)
        json_decref(m->recs[i].v);
    free(m->recs);
    free(m->stack);
    free(m->marks);
    free(m->memo.keys);
    free(m->memo.vals);
}

tbx_status tbx_pickle_load(const unsigned char *data, size_t len, json_t **out, tbx_error *err)
{
    if (out)
        *out = NULL;
    if (!out || (!data && len))
        return tbx_seterr(err, TBX_EINVAL, "pickle: NULL data or output pointer");
    if (len == 0)
        return tbx_seterr(err, TBX_EDECODE, "pickle: empty input");
    vm m;
    memset(&m, 0, sizeof m);
    m.start = m.p = data;
    m.end = data + len;
    m.err = err;
    tbx_status st = TBX_OK;
    while (!st) {
        if (m.p >= m.end) {
            st = fail(&m, TBX_EDECODE, "truncated input: no STOP opcode");
            break;
        }
        m.opoff = (size_t)(m.p - m.start);
        m.opc = *m.p++;
        if (m.opc == '.') {
            size_t idx = 0;
            if ((st = pop(&m, &idx)))
                break;
            if (m.recs[idx].kind == K_CALLABLE) {
                st = fail(&m, TBX_EUNSUPPORTED, "the pickled value is a Python class or function");
                break;
            }
            *out = json_incref(m.recs[idx].v);
            break;
        }
        st = step(&m, m.opc);
    }
    vm_free(&m);
    return st;
}
