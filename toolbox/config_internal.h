/*
 * config_internal.h - private parts of the configuration module (config*.c); not installed.
 *
 * config_keys.c   the key table (one row per key) and lookups
 * config_value.c  parsing and validating one value, error messages, URL masking
 * config_yaml.c   the YAML file layer (libyaml event parser)
 * config.c        the tbx_config object, the env/CLI layers, getters, tbx_config_load
 */
#ifndef TOOLBOX_CONFIG_INTERNAL_H
#define TOOLBOX_CONFIG_INTERNAL_H

#include "toolbox/config.h"
#include "internal.h"

#include <stddef.h>

typedef enum tbx_cfg_type {
    TBX_CFG_STRING,
    TBX_CFG_INT,
    TBX_CFG_DOUBLE,
    TBX_CFG_BOOL,
    TBX_CFG_ENUM,
    TBX_CFG_LIST,
    TBX_CFG_URL
} tbx_cfg_type;

/* Key flags. */
#define TBX_CFGF_SECRET 0x1u   /* value may hold a password: masked when shown */
#define TBX_CFGF_EMPTY_OK 0x2u /* url: the empty string is allowed too */
#define TBX_CFGF_GT_MIN 0x4u   /* double: the lower bound is exclusive */
#define TBX_CFGF_UNIQUE 0x8u   /* list: items must be distinct */

/* Most items a list may hold. */
#define TBX_CFG_MAX_ITEMS 1024

/* One row of the key table. All strings are static. */
typedef struct tbx_cfg_key {
    const char *name;    /* dotted key, e.g. "worker.concurrency" */
    tbx_cfg_type type;
    const char *def;     /* default, written in the environment syntax */
    long long lo, hi;    /* int: range; string, url, list item: length range in bytes */
    double dlo, dhi;     /* double: range */
    const char *choices; /* enum: choices; url: schemes; '|'-separated, lower case */
    const char *forbid;  /* string, list item: characters not allowed, or NULL */
    unsigned flags;      /* TBX_CFGF_* */
    const char *doc;     /* one line */
} tbx_cfg_key;

extern const tbx_cfg_key tbx_cfg_keys[];
extern const size_t tbx_cfg_nkeys;

/* Index of the key named by name[0..len), or -1. */
long tbx_cfg_find(const char *name, size_t len);
/* Index of the key whose variable is TOOLBOX_<name[0..len)>, or -1. */
long tbx_cfg_find_env(const char *name, size_t len);
/* Non-zero if name[0..len) followed by '.' starts some key (a YAML section such as "worker"). */
int tbx_cfg_is_section(const char *name, size_t len);

/* A value. Owns its strings. Zero-initialised is empty. */
typedef struct tbx_cfg_value {
    tbx_config_source src;
    long long i;  /* int; bool as 0/1 */
    double d;     /* double */
    char *s;      /* string, url, enum (canonical choice) */
    char **items; /* list */
    size_t n;
} tbx_cfg_value;

struct tbx_config {
    tbx_cfg_value *vals; /* tbx_cfg_nkeys values, in table order */
    char *file;          /* last file loaded, or NULL */
};

/* Where a value comes from, for error messages. Exactly one of the forms:
 * file+line+key ("f:12: key: "), var ("TOOLBOX_X: "), key only ("key: "). */
typedef struct tbx_cfg_where {
    const char *file;
    unsigned long line;
    const char *var;
    const char *key;
} tbx_cfg_where;

/* Fill err with TBX_ECONFIG and "<where>: <formatted message>" on one line; returns TBX_ECONFIG. */
tbx_status tbx_cfg_fail(tbx_error *err, const tbx_cfg_where *w, const char *fmt, ...) TBX_PRINTF(3, 4);

/* Write s[0..len) into out (size n >= 16) quoted for a message: 'text', control bytes escaped, truncated with
 * "..."; with secret non-zero, any password is masked. */
void tbx_cfg_quote(char *out, size_t n, const char *s, size_t len, int secret);

/* Write what key k expects ("an integer between 1 and 256") into out. */
void tbx_cfg_describe(const tbx_cfg_key *k, char *out, size_t n);

/* Parse text[0..len) as a value of key k into *out (cleared first; src left 0). Lists take the comma syntax.
 * TBX_OK, TBX_ECONFIG (message from w) or TBX_ENOMEM. */
tbx_status tbx_cfg_parse(const tbx_cfg_key *k, const char *text, size_t len, tbx_cfg_value *out,
                         const tbx_cfg_where *w, tbx_error *err);

/* Validate item[0..len) as the (index+1)-th item of list key k and append a copy to v. */
tbx_status tbx_cfg_list_add(const tbx_cfg_key *k, tbx_cfg_value *v, const char *item, size_t len,
                            size_t index, const tbx_cfg_where *w, tbx_error *err);

/* Free what v owns and zero it. */
void tbx_cfg_value_clear(tbx_cfg_value *v);

/* Parse key k's default into *out with source TBX_SRC_DEFAULT. */
tbx_status tbx_cfg_default(const tbx_cfg_key *k, tbx_cfg_value *out, tbx_error *err);

/* Store *v as key idx's value if the layer `layer` has at least the precedence of the current value's source
 * (v->src is what gets recorded: the layer, or TBX_SRC_DEFAULT for a null YAML value that resets the key).
 * Takes ownership of *v's contents in every case (v is left zeroed). */
void tbx_cfg_commit(tbx_config *cfg, size_t idx, tbx_cfg_value *v, tbx_config_source layer);

#endif
