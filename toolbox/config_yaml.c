/*
 * config_yaml.c - the file layer: read a YAML file and apply its keys.
 *
 * libyaml's event parser drives a small recursive descent. It only descends into mappings whose path is a
 * section of the key table ("worker"), so its depth is bounded by the table, not by the input; aliases are
 * refused (no billion laughs), and the input is capped at TBX_CONFIG_MAX_FILE bytes. Values are parsed into a
 * pending set first and applied only if the whole document is valid.
 */
#include "config_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

typedef struct section {
    char *name;
    unsigned long line;
} section;

typedef struct ystate {
    yaml_parser_t parser;
    yaml_event_t ev;
    int have_ev;
    const char *name; /* for messages */
    const char *text;
    size_t len;
    tbx_buf path;           /* dotted path of the current key, NUL-terminated */
    tbx_cfg_value *pending; /* per key */
    unsigned long *line;    /* per key: line it was set on in this document, 0 = not set */
    section *sections;      /* sections opened so far (for duplicates) */
    size_t nsections;
    tbx_error *err;
} ystate;

static unsigned long ev_line(const ystate *y)
{
    return (unsigned long)y->ev.start_mark.line + 1;
}

static tbx_status oom(ystate *y)
{
    return tbx_seterr(y->err, TBX_ENOMEM, "out of memory");
}

static tbx_status parser_error(ystate *y)
{
    yaml_parser_t *p = &y->parser;
    if (p->error == YAML_MEMORY_ERROR)
        return oom(y);
    unsigned long line = (unsigned long)p->problem_mark.line + 1;
    if (p->error == YAML_READER_ERROR) { /* no mark: count lines up to the bad byte */
        line = 1;
        for (size_t i = 0; i < p->problem_offset && i < y->len; i++)
            line += y->text[i] == '\n';
    }
    tbx_cfg_where w = {y->name, line, NULL, NULL};
    const char *problem = p->problem ? p->problem : "parse error";
    if (p->context)
        return tbx_cfg_fail(y->err, &w, "malformed YAML: %s (%s)", problem, p->context);
    return tbx_cfg_fail(y->err, &w, "malformed YAML: %s", problem);
}

static tbx_status next(ystate *y)
{
    if (y->have_ev) {
        yaml_event_delete(&y->ev);
        y->have_ev = 0;
    }
    if (!yaml_parser_parse(&y->parser, &y->ev))
        return parser_error(y);
    y->have_ev = 1;
    return TBX_OK;
}

static int is_null(const yaml_event_t *ev)
{
    const char *tag = (const char *)ev->data.scalar.tag;
    if (tag)
        return strcmp(tag, YAML_NULL_TAG) == 0;
    if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return 0;
    const char *v = (const char *)ev->data.scalar.value;
    size_t n = ev->data.scalar.length;
    return n == 0 || (n == 1 && v[0] == '~') ||
           (n == 4 && (!memcmp(v, "null", 4) || !memcmp(v, "Null", 4) || !memcmp(v, "NULL", 4)));
}

/* "a mapping", "a sequence", "an alias", "null" or the quoted scalar, for "got ..." */
static void got_text(const ystate *y, char *out, size_t n, int secret)
{
    switch (y->ev.type) {
    case YAML_SCALAR_EVENT:
        if (is_null(&y->ev))
            snprintf(out, n, "null");
        else
            tbx_cfg_quote(out, n, (const char *)y->ev.data.scalar.value, y->ev.data.scalar.length, secret);
        break;
    case YAML_SEQUENCE_START_EVENT:
        snprintf(out, n, "a sequence");
        break;
    case YAML_MAPPING_START_EVENT:
        snprintf(out, n, "a mapping");
        break;
    case YAML_ALIAS_EVENT:
        snprintf(out, n, "an alias (aliases are not supported)");
        break;
    default:
        snprintf(out, n, "an unexpected YAML event");
        break;
    }
}

/* The value event of list key idx is a sequence start: read its items. */
static tbx_status read_list(ystate *y, size_t idx)
{
    const tbx_cfg_key *k = &tbx_cfg_keys[idx];
    tbx_cfg_value *v = &y->pending[idx];
    char got[300];
    tbx_status st;
    for (size_t index = 0;; index++) {
        if ((st = next(y)) != TBX_OK)
            return st;
        if (y->ev.type == YAML_SEQUENCE_END_EVENT)
            return TBX_OK;
        tbx_cfg_where w = {y->name, ev_line(y), NULL, k->name};
        if (y->ev.type != YAML_SCALAR_EVENT || is_null(&y->ev)) {
            got_text(y, got, sizeof got, 0);
            return tbx_cfg_fail(y->err, &w, "item %zu: expected a string, got %s", index + 1, got);
        }
        st = tbx_cfg_list_add(k, v, (const char *)y->ev.data.scalar.value, y->ev.data.scalar.length, index,
                              &w, y->err);
        if (st)
            return st;
    }
}

/* The current event is the value of known key idx, whose name sat on line kline. */
static tbx_status read_leaf(ystate *y, size_t idx, unsigned long kline)
{
    const tbx_cfg_key *k = &tbx_cfg_keys[idx];
    tbx_cfg_where w = {y->name, kline, NULL, k->name};
    if (y->line[idx])
        return tbx_cfg_fail(y->err, &w, "duplicate key (first set on line %lu)", y->line[idx]);
    y->line[idx] = kline;
    w.line = ev_line(y);
    tbx_cfg_value *v = &y->pending[idx];
    if (y->ev.type == YAML_SCALAR_EVENT && is_null(&y->ev))
        return tbx_cfg_default(k, v, y->err); /* src DEFAULT: a reset */
    if (y->ev.type == YAML_SCALAR_EVENT && k->type != TBX_CFG_LIST) { /* lists are sequences in YAML */
        tbx_status st = tbx_cfg_parse(k, (const char *)y->ev.data.scalar.value, y->ev.data.scalar.length, v,
                                      &w, y->err);
        v->src = TBX_SRC_FILE;
        return st;
    }
    if (y->ev.type == YAML_SEQUENCE_START_EVENT && k->type == TBX_CFG_LIST) {
        v->src = TBX_SRC_FILE;
        return read_list(y, idx);
    }
    char what[256], got[64];
    tbx_cfg_describe(k, what, sizeof what);
    got_text(y, got, sizeof got, 0);
    return tbx_cfg_fail(y->err, &w, "expected %s, got %s", what, got);
}

static tbx_status read_mapping(ystate *y, size_t plen);

/* The current event is the value of section path[0..plen) ("worker"), named on line kline. */
static tbx_status read_section(ystate *y, size_t plen, unsigned long kline)
{
    const char *name = (const char *)y->path.data;
    tbx_cfg_where w = {y->name, kline, NULL, name};
    for (size_t i = 0; i < y->nsections; i++)
        if (strcmp(y->sections[i].name, name) == 0)
            return tbx_cfg_fail(y->err, &w, "duplicate key (first set on line %lu)", y->sections[i].line);
    section *s = realloc(y->sections, (y->nsections + 1) * sizeof *s);
    if (!s)
        return oom(y);
    y->sections = s;
    if (!(s[y->nsections].name = strdup(name)))
        return oom(y);
    s[y->nsections++].line = kline;
    if (y->ev.type == YAML_MAPPING_START_EVENT)
        return read_mapping(y, plen);
    if (y->ev.type == YAML_SCALAR_EVENT && is_null(&y->ev))
        return TBX_OK; /* an empty section */
    char got[300];
    got_text(y, got, sizeof got, 0);
    return tbx_cfg_fail(y->err, &w, "expected a mapping of %s.* keys, got %s", name, got);
}

/* Read a mapping (its start event consumed) whose keys are prefixed by path[0..plen) plus a dot. */
static tbx_status read_mapping(ystate *y, size_t plen)
{
    tbx_status st;
    for (;;) {
        if ((st = next(y)) != TBX_OK)
            return st;
        if (y->ev.type == YAML_MAPPING_END_EVENT)
            return TBX_OK;
        unsigned long kline = ev_line(y);
        if (y->ev.type != YAML_SCALAR_EVENT) {
            tbx_cfg_where w = {y->name, kline, NULL, NULL};
            char got[64];
            got_text(y, got, sizeof got, 0);
            return tbx_cfg_fail(y->err, &w, "expected a key name, got %s", got);
        }
        y->path.len = plen;
        if ((plen && tbx_buf_putc(&y->path, '.')) ||
            tbx_buf_append(&y->path, y->ev.data.scalar.value, y->ev.data.scalar.length) ||
            tbx_buf_putc(&y->path, '\0'))
            return oom(y);
        size_t klen = --y->path.len;
        const char *key = (const char *)y->path.data;
        long idx = tbx_cfg_find(key, klen);
        int is_section = idx < 0 && tbx_cfg_is_section(key, klen);
        if (idx < 0 && !is_section) {
            tbx_cfg_where w = {y->name, kline, NULL, key};
            return tbx_cfg_fail(y->err, &w, "unknown key");
        }
        if ((st = next(y)) != TBX_OK)
            return st;
        st = idx >= 0 ? read_leaf(y, (size_t)idx, kline) : read_section(y, klen, kline);
        if (st)
            return st;
    }
}

static tbx_status read_stream(ystate *y)
{
    tbx_status st;
    if ((st = next(y)) != TBX_OK) /* stream start */
        return st;
    if ((st = next(y)) != TBX_OK)
        return st;
    if (y->ev.type == YAML_STREAM_END_EVENT)
        return TBX_OK; /* no document at all: nothing to set */
    if ((st = next(y)) != TBX_OK) /* the document's root node */
        return st;
    tbx_cfg_where w = {y->name, ev_line(y), NULL, NULL};
    if (y->ev.type == YAML_MAPPING_START_EVENT) {
        if ((st = read_mapping(y, 0)) != TBX_OK)
            return st;
    } else if (!(y->ev.type == YAML_SCALAR_EVENT && is_null(&y->ev))) {
        char got[300];
        got_text(y, got, sizeof got, 1); /* could be a bare URL: mask it */
        return tbx_cfg_fail(y->err, &w, "expected a mapping of keys, got %s", got);
    }
    if ((st = next(y)) != TBX_OK) /* document end */
        return st;
    if ((st = next(y)) != TBX_OK)
        return st;
    if (y->ev.type != YAML_STREAM_END_EVENT) {
        w.line = ev_line(y);
        return tbx_cfg_fail(y->err, &w, "expected one YAML document, got several");
    }
    return TBX_OK;
}

tbx_status tbx_config_load_yaml(tbx_config *cfg, const char *name, const char *text, size_t len,
                                tbx_error *err)
{
    if (!cfg || (!text && len))
        return tbx_seterr(err, TBX_EINVAL, "tbx_config_load_yaml: NULL argument");
    if (!name)
        name = "<yaml>";
    tbx_cfg_where w = {name, 0, NULL, NULL};
    if (len > TBX_CONFIG_MAX_FILE)
        return tbx_cfg_fail(err, &w, "file is larger than %u bytes", TBX_CONFIG_MAX_FILE);
    ystate y;
    memset(&y, 0, sizeof y);
    y.name = name;
    y.text = text ? text : "";
    y.len = len;
    y.err = err;
    y.pending = calloc(tbx_cfg_nkeys, sizeof *y.pending);
    y.line = calloc(tbx_cfg_nkeys, sizeof *y.line);
    tbx_status st;
    if (!y.pending || !y.line || !yaml_parser_initialize(&y.parser)) {
        free(y.pending);
        free(y.line);
        return tbx_seterr(err, TBX_ENOMEM, "out of memory");
    }
    yaml_parser_set_input_string(&y.parser, (const unsigned char *)y.text, len);
    st = read_stream(&y);
    if (y.have_ev)
        yaml_event_delete(&y.ev);
    yaml_parser_delete(&y.parser);
    for (size_t i = 0; i < tbx_cfg_nkeys; i++) {
        if (st == TBX_OK && y.line[i])
            tbx_cfg_commit(cfg, i, &y.pending[i], TBX_SRC_FILE);
        tbx_cfg_value_clear(&y.pending[i]);
    }
    for (size_t i = 0; i < y.nsections; i++)
        free(y.sections[i].name);
    free(y.sections);
    free(y.pending);
    free(y.line);
    tbx_buf_free(&y.path);
    return st;
}

tbx_status tbx_config_load_file(tbx_config *cfg, const char *path, tbx_error *err)
{
    if (!cfg || !path)
        return tbx_seterr(err, TBX_EINVAL, "tbx_config_load_file: NULL argument");
    tbx_cfg_where w = {path, 0, NULL, NULL};
    FILE *f = fopen(path, "rb");
    if (!f)
        return tbx_cfg_fail(err, &w, "cannot open: %s", strerror(errno));
    tbx_buf b = {0};
    tbx_status st = TBX_OK;
    unsigned char chunk[16384];
    size_t n;
    while (b.len <= TBX_CONFIG_MAX_FILE && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (tbx_buf_append(&b, chunk, n)) {
            st = tbx_seterr(err, TBX_ENOMEM, "out of memory");
            break;
        }
    if (st == TBX_OK && ferror(f))
        st = tbx_cfg_fail(err, &w, "cannot read: %s", strerror(errno));
    fclose(f);
    char *copy = NULL;
    if (st == TBX_OK && b.len > TBX_CONFIG_MAX_FILE)
        st = tbx_cfg_fail(err, &w, "file is larger than %u bytes", TBX_CONFIG_MAX_FILE);
    if (st == TBX_OK && !(copy = strdup(path)))
        st = tbx_seterr(err, TBX_ENOMEM, "out of memory");
    if (st == TBX_OK)
        st = tbx_config_load_yaml(cfg, path, (const char *)b.data, b.len, err);
    if (st == TBX_OK) {
        free(cfg->file);
        cfg->file = copy;
        copy = NULL;
    }
    free(copy);
    tbx_buf_free(&b);
    return st;
}
