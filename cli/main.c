/*
 * main.c - `toolbox`: set up the topology, send tasks, read results, inspect
 * queues and show the configuration.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "toolbox/log.h"

static const char *opt_config, *opt_env;
static const char *opt_sets[65];
static int nsets;

static const char USAGE[] =
    "usage: toolbox [--config FILE | --env NAME] [--set KEY=VALUE ...] COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  setup [--broker-only | --database-only]   declare the topology and create missing tables\n"
    "  send TASK [--args JSON] [--kwargs JSON] [--countdown S | --eta ISO] [--expires S | --expires-at ISO]\n"
    "            [--priority N] [--time-limit S] [--soft-time-limit S] [--id ID]\n"
    "            [--link TASK|SIG] [--link-error TASK|SIG] [--parent-id ID] [--root-id ID]\n"
    "            [--creator-id ID] [--related-content-type-id N] [--related-object-id ID]\n"
    "            [--is-result] [--ignore-result] [--count N] [--wait [--timeout S]]\n"
    "  result TASK_ID [--wait] [--timeout S]      print the stored state and result as JSON\n"
    "  inspect                                    queues, depths and consumers\n"
    "  ping [--timeout S] [--limit N]             which workers answer remote control\n"
    "  revoke TASK_ID [--terminate]               discard a task; --terminate stops it if running\n"
    "  interrupt TASK_ID (--retry [--countdown S] | --cancel)   stop a task: put it back later, or cancel it\n"
    "                                             (remote control waits --timeout S for --limit N replies)\n"
    "  tasks [--root ID | --parked | --replay ID] [--json]   what the platform monitor recorded or parked\n"
    "  config show                                the effective configuration, secrets masked\n"
    "\n"
    "The configuration file is --config FILE, or config/NAME.yaml for --env NAME or\n"
    "$TOOLBOX_ENV; every key can be overridden with TOOLBOX_<KEY> or --set KEY=VALUE.\n";

int cli_opt(cli_args *a, const char *name, const char **value)
{
    if (a->i >= a->argc)
        return 0;
    const char *arg = a->argv[a->i];
    size_t n = strlen(name);
    if (strncmp(arg, name, n) != 0)
        return 0;
    if (arg[n] == '=') {
        *value = arg + n + 1;
        a->i++;
        return 1;
    }
    if (arg[n] != '\0')
        return 0;
    if (a->i + 1 >= a->argc) {
        fprintf(stderr, "toolbox: %s needs a value\n", name);
        return -1;
    }
    *value = a->argv[a->i + 1];
    a->i += 2;
    return 1;
}

int cli_flag(cli_args *a, const char *name)
{
    if (a->i < a->argc && !strcmp(a->argv[a->i], name)) {
        a->i++;
        return 1;
    }
    return 0;
}

int cli_common(cli_args *a)
{
    const char *v;
    int r;
    if ((r = cli_opt(a, "--config", &v)) != 0) {
        opt_config = v;
        return r;
    }
    if ((r = cli_opt(a, "--env", &v)) != 0) {
        opt_env = v;
        return r;
    }
    if ((r = cli_opt(a, "--set", &v)) != 0) {
        if (r > 0) {
            if (nsets >= 64) {
                fprintf(stderr, "toolbox: too many --set options\n");
                return -1;
            }
            opt_sets[nsets++] = v;
        }
        return r;
    }
    return 0;
}

tbx_config *cli_config(void)
{
    tbx_config *cfg = NULL;
    tbx_error err = {0};
    opt_sets[nsets] = NULL;
    tbx_status st = tbx_config_load(&cfg, opt_config, opt_env, opt_sets, &err);
    if (st) {
        fprintf(stderr, "toolbox: %s\n", err.msg[0] ? err.msg : tbx_strerror(st));
        return NULL;
    }
    int level = tbx_log_level_parse(tbx_config_str(cfg, "log.level"));
    tbx_log_open("toolbox", level < 0 ? TBX_LOG_WARNING : (tbx_log_level)level, NULL, 0, 0, NULL);
    return cfg;
}

int cli_fail(tbx_status st, const tbx_error *err)
{
    fprintf(stderr, "toolbox: %s\n", err && err->msg[0] ? err->msg : tbx_strerror(st));
    if (st == TBX_ECONFIG)
        return CLI_USAGE;
    if (st == TBX_ETIMEOUT)
        return CLI_TIMEOUT;
    return CLI_FAIL;
}

int cli_parse_double(const char *opt, const char *text, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || v < 0 || v != v) {
        fprintf(stderr, "toolbox: %s: expected a non-negative number, got '%s'\n", opt, text);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_int(const char *opt, const char *text, long long min, long long max, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max) {
        fprintf(stderr, "toolbox: %s: expected an integer from %lld to %lld, got '%s'\n", opt, min,
                max, text);
        return -1;
    }
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    cli_args a = {argc, argv, 1};
    while (a.i < argc && argv[a.i][0] == '-') {
        if (!strcmp(argv[a.i], "-h") || !strcmp(argv[a.i], "--help")) {
            fputs(USAGE, stdout);
            return CLI_OK;
        }
        int r = cli_common(&a);
        if (r < 0)
            return CLI_USAGE;
        if (r == 0) {
            fprintf(stderr, "toolbox: unknown option %s (see toolbox --help)\n", argv[a.i]);
            return CLI_USAGE;
        }
    }
    if (a.i >= argc) {
        fputs(USAGE, stderr);
        return CLI_USAGE;
    }
    const char *cmd = argv[a.i++];
    static const struct { const char *name; int (*fn)(cli_args *); } cmds[] = {
        {"setup", cmd_setup}, {"send", cmd_send}, {"result", cmd_result},
        {"inspect", cmd_inspect}, {"config", cmd_config},
        {"tasks", cmd_tasks},
    };
    if (!strcmp(cmd, "ping") || !strcmp(cmd, "revoke") || !strcmp(cmd, "interrupt"))
        return cmd_control(&a, cmd);
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++)
        if (!strcmp(cmd, cmds[i].name))
            return cmds[i].fn(&a);
    fprintf(stderr, "toolbox: unknown command '%s' (see toolbox --help)\n", cmd);
    return CLI_USAGE;
}
