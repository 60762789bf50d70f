/*
 * config.c - the tbx_config object: defaults, the environment and command-line layers, getters, display,
 * and tbx_config_load, the one call programs make. The file layer is in config_yaml.c, the key table in
 * config_keys.c, value parsing in config_value.c.
 */
#include "config_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

static const char env_prefix[] = "TOOLBOX_";
#define ENV_PREFIX_LEN (sizeof env_prefix - 1)

tbx_config *tbx_config_new(void)
{
    tbx_config *cfg = calloc(1, sizeof *cfg);
    if (!cfg)
        return NULL;
    cfg->vals = calloc(tbx_cfg_nkeys, sizeof *cfg->vals);
    if (!cfg->vals) {
        free(cfg);
        return NULL;
    }
    for (size_t i = 0; i < tbx_cfg_nkeys; i++)
        if (tbx_cfg_default(&tbx_cfg_keys[i], &cfg->vals[i], NULL) != TBX_OK) {
            tbx_config_free(cfg);
            return NULL;
        }
    return cfg;
}

void tbx_config_free(tbx_config *cfg)
{
    if (!cfg)
        return;
    if (cfg->vals)
        for (size_t i = 0; i < tbx_cfg_nkeys; i++)
            tbx_cfg_value_clear(&cfg->vals[i]);
    free(cfg->vals);
    free(cfg->file);
    free(cfg);
}

void tbx_cfg_commit(tbx_config *cfg, size_t idx, tbx_cfg_value *v, tbx_config_source layer)
{
    tbx_cfg_value *cur = &cfg->vals[idx];
    if (layer >= cur->src) {
        tbx_cfg_value_clear(cur);
        *cur = *v;
    } else {
        tbx_cfg_value_clear(v);
    }
    memset(v, 0, sizeof *v);
}

/* ---- command line ----------------------------------------------------------------------------------- */

tbx_status tbx_config_set(tbx_config *cfg, const char *key, const char *value, tbx_error *err)
{
    if (!cfg || !key || !value)
        return tbx_seterr(err, TBX_EINVAL, "tbx_config_set: NULL argument");
    tbx_cfg_where w = {NULL, 0, NULL, key};
    long idx = tbx_cfg_find(key, strlen(key));
    if (idx < 0)
        return tbx_cfg_fail(err, &w, "unknown key");
    tbx_cfg_value v = {0};
    tbx_status st = tbx_cfg_parse(&tbx_cfg_keys[idx], value, strlen(value), &v, &w, err);
    if (st)
        return st;
    v.src = TBX_SRC_CLI;
    tbx_cfg_commit(cfg, (size_t)idx, &v, TBX_SRC_CLI);
    return TBX_OK;
}

/* ---- environment ------------------------------------------------------------------------------------ */

tbx_status tbx_config_load_env(tbx_config *cfg, char *const *envp, tbx_error *err)
{
    if (!cfg)
        return tbx_seterr(err, TBX_EINVAL, "tbx_config_load_env: NULL config");
    if (!envp)
        return TBX_OK;
    tbx_cfg_value *pending = calloc(tbx_cfg_nkeys, sizeof *pending);
    unsigned char *seen = calloc(tbx_cfg_nkeys, 1);
    tbx_status st = TBX_OK;
    if (!pending || !seen) {
        st = tbx_seterr(err, TBX_ENOMEM, "out of memory");
        goto out;
    }
    for (char *const *e = envp; *e && st == TBX_OK; e++) {
        const char *entry = *e;
        const char *eq = strchr(entry, '=');
        if (!eq || strncmp(entry, env_prefix, ENV_PREFIX_LEN) != 0 || (size_t)(eq - entry) < ENV_PREFIX_LEN)
            continue;
        long idx = tbx_cfg_find_env(entry + ENV_PREFIX_LEN, (size_t)(eq - entry) - ENV_PREFIX_LEN);
        if (idx < 0 || seen[idx])
            continue;
        seen[idx] = 1;
        char var[128];
        snprintf(var, sizeof var, "%.*s", (int)(eq - entry), entry);
        tbx_cfg_where w = {NULL, 0, var, tbx_cfg_keys[idx].name};
        st = tbx_cfg_parse(&tbx_cfg_keys[idx], eq + 1, strlen(eq + 1), &pending[idx], &w, err);
        pending[idx].src = TBX_SRC_ENV;
    }
    if (st == TBX_OK)
        for (size_t i = 0; i < tbx_cfg_nkeys; i++)
            if (seen[i])
                tbx_cfg_commit(cfg, i, &pending[i], TBX_SRC_ENV);
out:
    if (pending)
        for (size_t i = 0; i < tbx_cfg_nkeys; i++)
            tbx_cfg_value_clear(&pending[i]);
    free(pending);
    free(seen);
    return st;
}

/* ---- one call for programs ---------------------------------------------------------------------------- */

static int valid_envname(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' ||
              *s == '-'))
            return 0;
    return 1;
}

/* The file tbx_config_load reads: *path is malloc'd, or NULL for none. */
static tbx_status pick_file(const char *file, const char *envname, char **path, tbx_error *err)
{
    *path = NULL;
    if (file) {
        if (!(*path = strdup(file)))
            return tbx_seterr(err, TBX_ENOMEM, "out of memory");
        return TBX_OK;
    }
    const char *name = envname;
    tbx_cfg_where w = {NULL, 0, NULL, NULL};
    if (!name) {
        name = getenv("TOOLBOX_ENV");
        if (!name || !*name)
            return TBX_OK;
        w.var = "TOOLBOX_ENV";
    }
    if (!valid_envname(name)) {
        char got[300];
        tbx_cfg_quote(got, sizeof got, name, strlen(name), 0);
        return tbx_cfg_fail(err, &w, "expected an environment name (letters, digits, '_' or '-'), got %s", got);
    }
    const char *dir = getenv("TOOLBOX_CONFIG_DIR");
    if (!dir || !*dir)
        dir = "config";
    tbx_buf b = {0};
    if (tbx_buf_printf(&b, "%s/%s.yaml", dir, name)) {
        tbx_buf_free(&b);
        return tbx_seterr(err, TBX_ENOMEM, "out of memory");
    }
    *path = (char *)b.data;
    return TBX_OK;
}

static tbx_status apply_overrides(tbx_config *cfg, const char *const *overrides, tbx_error *err)
{
    for (; overrides && *overrides; overrides++) {
        const char *o = *overrides;
        const char *eq = strchr(o, '=');
        if (!eq || eq == o) {
            char got[300];
            tbx_cfg_quote(got, sizeof got, o, strlen(o), 0);
            return tbx_cfg_fail(err, NULL, "expected key=value, got %s", got);
        }
        char *key = strndup(o, (size_t)(eq - o));
        if (!key)
            return tbx_seterr(err, TBX_ENOMEM, "out of memory");
        tbx_status st = tbx_config_set(cfg, key, eq + 1, err);
        free(key);
        if (st)
            return st;
    }
    return TBX_OK;
}

tbx_status tbx_config_load(tbx_config **out, const char *file, const char *envname,
                           const char *const *overrides, tbx_error *err)
{
    if (!out)
        return tbx_seterr(err, TBX_EINVAL, "tbx_config_load: NULL out");
    *out = NULL;
    tbx_config *cfg = tbx_config_new();
    if (!cfg)
        return tbx_seterr(err, TBX_ENOMEM, "out of memory");
    char *path = NULL;
    tbx_status st = pick_file(file, envname, &path, err);
    if (st == TBX_OK && path)
        st = tbx_config_load_file(cfg, path, err);
    if (st == TBX_OK)
        st = tbx_config_load_env(cfg, environ, err);
    if (st == TBX_OK)
        st = apply_overrides(cfg, overrides, err);
    free(path);
    if (st) {
        tbx_config_free(cfg);
        return st;
    }
    *out = cfg;
    return TBX_OK;
}

/* ---- getters ------------------------------------------------------------------------------------------- */

static const tbx_cfg_value *get(const tbx_config *cfg, const char *key, const tbx_cfg_key **k)
{
    if (!cfg || !key)
        return NULL;
    long idx = tbx_cfg_find(key, strlen(key));
    if (idx < 0)
        return NULL;
    *k = &tbx_cfg_keys[idx];
    return &cfg->vals[idx];
}

const char *tbx_config_str(const tbx_config *cfg, const char *key)
{
    const tbx_cfg_key *k;
    const tbx_cfg_value *v = get(cfg, key, &k);
    if (!v || !(k->type == TBX_CFG_STRING || k->type == TBX_CFG_URL || k->type == TBX_CFG_ENUM))
        return NULL;
    return v->s;
}

long long tbx_config_int(const tbx_config *cfg, const char *key)
{
    const tbx_cfg_key *k;
    const tbx_cfg_value *v = get(cfg, key, &k);
    return v && k->type == TBX_CFG_INT ? v->i : 0;
}

double tbx_config_double(const tbx_config *cfg, const char *key)
{
    const tbx_cfg_key *k;
    const tbx_cfg_value *v = get(cfg, key, &k);
    return v && k->type == TBX_CFG_DOUBLE ? v->d : 0.0;
}

int tbx_config_bool(const tbx_config *cfg, const char *key)
{
    const tbx_cfg_key *k;
    const tbx_cfg_value *v = get(cfg, key, &k);
    return v && k->type == TBX_CFG_BOOL ? (int)v->i : 0;
}

size_t tbx_config_list_len(const tbx_config *cfg, const char *key)
{
    const tbx_cfg_key *k;
    const tbx_cfg_value *v = get(cfg, key, &k);
    return v && k->type == TBX_CFG_LIST ? v->n : 0;
}

const char *tbx_config_list_at(const tbx_config *cfg, const char *key, size_t i)
{
    const tbx_cfg_key *k;
    const tbx_cfg_value *v = get(cfg, key, &k);
    return v && k->type == TBX_CFG_LIST && i < v->n ? v->items[i] : NULL;
}

tbx_config_source tbx_config_source_of(const tbx_config *cfg, const char *key)
{
    const tbx_cfg_key *k;
    const tbx_cfg_value *v = get(cfg, key, &k);
    return v ? v->src : TBX_SRC_DEFAULT;
}

const char *tbx_config_file(const tbx_config *cfg)
{
    return cfg ? cfg->file : NULL;
}

/* ---- display ---------------------------------------------------------------------------------------------- */

size_t tbx_config_key_count(void)
{
    return tbx_cfg_nkeys;
}

const char *tbx_config_key_name(size_t i)
{
    return i < tbx_cfg_nkeys ? tbx_cfg_keys[i].name : NULL;
}

const char *tbx_config_key_doc(size_t i)
{
    return i < tbx_cfg_nkeys ? tbx_cfg_keys[i].doc : NULL;
}

char *tbx_config_value_text(const tbx_config *cfg, const char *key, int masked)
{
    const tbx_cfg_key *k;
    const tbx_cfg_value *v = get(cfg, key, &k);
    if (!v)
        return NULL;
    tbx_buf b = {0};
    int fail = 0;
    switch (k->type) {
    case TBX_CFG_URL:
        return masked && (k->flags & TBX_CFGF_SECRET) ? tbx_mask_url(v->s) : strdup(v->s);
    case TBX_CFG_STRING:
    case TBX_CFG_ENUM:
        return strdup(v->s);
    case TBX_CFG_INT:
        fail = tbx_buf_printf(&b, "%lld", v->i);
        break;
    case TBX_CFG_DOUBLE:
        fail = tbx_buf_printf(&b, "%.15g", v->d);
        if (!fail && strtod((char *)b.data, NULL) != v->d) {
            b.len = 0;
            fail = tbx_buf_printf(&b, "%.17g", v->d);
        }
        break;
    case TBX_CFG_BOOL:
        return strdup(v->i ? "true" : "false");
    case TBX_CFG_LIST:
        for (size_t i = 0; i < v->n && !fail; i++)
            fail = (i && tbx_buf_putc(&b, ',')) || tbx_buf_append(&b, v->items[i], strlen(v->items[i]));
        fail = fail || tbx_buf_putc(&b, '\0');
        break;
    }
    if (fail) {
        tbx_buf_free(&b);
        return NULL;
    }
    return (char *)b.data;
}
