/*
 * settings.c - the configuration as seen from a pool child.
 *
 * The runner does not hand its tbx_config to handlers, so the child loads its
 * own copy once from the same flags (captured by export_settings_init), the
 * same environment and the same file; precedence is the runner's.
 */
#include "settings.h"

#include <stdlib.h>
#include <string.h>

#include "toolbox/config.h"

static char *g_file, *g_env;
static char **g_sets; /* NULL-terminated "key=value" from --set */
static tbx_config *g_cfg;

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

void export_settings_init(int argc, char **argv)
{
    g_sets = calloc((size_t)argc + 1, sizeof *g_sets);
    size_t n = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0)
            continue;
        const char *eq = strchr(a, '=');
        size_t flen = eq ? (size_t)(eq - a) : strlen(a);
        const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[i + 1] : NULL);
        if (!eq && val)
            i++; /* every runner option takes a value */
        if (!val)
            break;
        if (flen == 8 && !strncmp(a, "--config", 8)) {
            free(g_file);
            g_file = dup_or_null(val);
        } else if (flen == 5 && !strncmp(a, "--env", 5)) {
            free(g_env);
            g_env = dup_or_null(val);
        } else if (flen == 5 && !strncmp(a, "--set", 5) && g_sets) {
            g_sets[n++] = dup_or_null(val);
        }
    }
}

/* The value of a string key. While a key is missing from the library's table,
 * tbx_config_str returns NULL and the environment variable stands in. */
static const char *setting(const char *key, const char *envvar, const char *dflt, export_err *e)
{
    if (!g_cfg) {
        tbx_error err = {0};
        if (tbx_config_load(&g_cfg, g_file, g_env, (const char *const *)g_sets, &err) != TBX_OK) {
            export_seterr(e, "RuntimeError", "export-worker configuration: %s", err.msg);
            return NULL;
        }
    }
    const char *v = tbx_config_str(g_cfg, key);
    if (!v)
        v = getenv(envvar);
    return v ? v : dflt;
}

const char *export_data_url(export_err *e)
{
    const char *url = setting("export.data_url", "TOOLBOX_EXPORT_DATA_URL", "", e);
    if (!url)
        return NULL;
    if (!*url)
        url = tbx_config_str(g_cfg, "database_admin_url");
    if (!url || !*url)
        url = tbx_config_str(g_cfg, "result_backend");
    return url;
}

const char *export_dir(export_err *e)
{
    return setting("export.dir", "TOOLBOX_EXPORT_DIR", "/tmp/toolbox-exports", e);
}
