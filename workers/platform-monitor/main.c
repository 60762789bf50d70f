/*
 * platform-monitor - consumes the catch-all queue (platform_queue, bound with '#') and records every
 * task message once in tasks_backgroundtask; messages it cannot read are set aside in
 * tasks_parkedmessage with their reason. See include/toolbox/monitor.h for the tables and loop.c for
 * how it commits, acknowledges and recovers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "monitor.h"
#include "toolbox/log.h"

static const char USAGE[] =
    "usage: %s [--config FILE | --env NAME] [--set KEY=VALUE ...] [--queue NAME]\n"
    "          [--batch-size N] [--batch-ms MS] [--prefetch N] [--max-messages N]\n"
    "          [--hostname NAME] [--loglevel LEVEL] [--logfile FILE]\n"
    "\n"
    "Records every task message of the platform queue in tasks_backgroundtask (once per task id)\n"
    "and sets aside what it cannot read in tasks_parkedmessage. A message is acknowledged only\n"
    "after its row is committed. SIGTERM/SIGINT: record what was received, then leave; a second\n"
    "signal or SIGQUIT: leave at once (unacknowledged messages return to the queue).\n"
    "\n"
    "  --queue NAME        queue to consume (platform_queue; default platform.fifo)\n"
    "  --batch-size N      messages per database commit (monitor.batch_size); after a\n"
    "                      database outage, what was held (up to --prefetch) goes at once\n"
    "  --batch-ms MS       longest a message waits for its batch (monitor.batch_ms)\n"
    "  --prefetch N        unacknowledged messages at most (default 2 x batch size, at least 2)\n"
    "  --max-messages N    leave after N messages are recorded and acknowledged\n"
    "  --hostname NAME     connection name (default platform-monitor@<host>)\n";

/* Flags that set a configuration key. */
static const struct { const char *flag, *key; } FLAG_KEYS[] = {
    {"--queue", "platform_queue"},     {"--batch-size", "monitor.batch_size"},
    {"--batch-ms", "monitor.batch_ms"}, {"--loglevel", "log.level"},
    {"--logfile", "log.file"},
};

static int parse_long(const char *flag, const char *v, long long lo, long long hi, long long *out)
{
    char *end;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "platform-monitor: %s: expected an integer from %lld to %lld, got '%s'\n", flag, lo,
                hi, v);
        return -1;
    }
    *out = x;
    return 0;
}

/* 0 ok, 1 help printed, -1 error printed. */
static int parse_args(monitor *m, int argc, char **argv, long long *prefetch, const char **host)
{
    const char *file = NULL, *env = NULL;
    const char **sets = calloc((size_t)argc + 1, sizeof *sets);
    char **owned = calloc((size_t)argc + 1, sizeof *owned);
    size_t nsets = 0, nowned = 0;
    int rc = -1;
    if (!sets || !owned) {
        fprintf(stderr, "platform-monitor: out of memory\n");
        goto out;
    }
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            printf(USAGE, argv[0]);
            rc = 1;
            goto out;
        }
        const char *eq = strchr(arg, '=');
        size_t flen = eq ? (size_t)(eq - arg) : strlen(arg);
        const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[i + 1] : NULL);
        char flag[64];
        snprintf(flag, sizeof flag, "%.*s", (int)(flen < 63 ? flen : 63), arg);
        const char *key = NULL;
        for (size_t k = 0; k < sizeof FLAG_KEYS / sizeof *FLAG_KEYS; k++)
            if (!strcmp(flag, FLAG_KEYS[k].flag))
                key = FLAG_KEYS[k].key;
        static const char *const plain[] = {"--config", "--env", "--set", "--prefetch", "--max-messages",
                                            "--hostname"};
        int known = key != NULL;
        for (size_t k = 0; k < sizeof plain / sizeof *plain; k++)
            known |= !strcmp(flag, plain[k]);
        if (!known) {
            fprintf(stderr, "platform-monitor: unknown option %s (see --help)\n", flag);
            goto out;
        }
        if (!val) {
            fprintf(stderr, "platform-monitor: %s needs a value (see --help)\n", flag);
            goto out;
        }
        if (!eq)
            i++;
        if (!strcmp(flag, "--config")) {
            file = val;
        } else if (!strcmp(flag, "--env")) {
            env = val;
        } else if (!strcmp(flag, "--set")) {
            sets[nsets++] = val;
        } else if (!strcmp(flag, "--prefetch")) {
            if (parse_long(flag, val, 1, 65535, prefetch))
                goto out;
        } else if (!strcmp(flag, "--max-messages")) {
            if (parse_long(flag, val, 1, 1LL << 62, &m->max_messages))
                goto out;
        } else if (!strcmp(flag, "--hostname")) {
            *host = val;
        } else if (key) {
            size_t n = strlen(key) + strlen(val) + 2;
            char *kv = malloc(n);
            if (!kv) {
                fprintf(stderr, "platform-monitor: out of memory\n");
                goto out;
            }
            snprintf(kv, n, "%s=%s", key, val);
            owned[nowned++] = kv;
            sets[nsets++] = kv;
        }
    }
    sets[nsets] = NULL;
    tbx_error err = {0};
    if (tbx_config_load(&m->cfg, file, env, sets, &err))
        fprintf(stderr, "platform-monitor: %s\n", err.msg);
    else
        rc = 0;
out:
    for (size_t k = 0; k < nowned; k++)
        free(owned[k]);
    free(owned);
    free(sets);
    return rc;
}

int main(int argc, char **argv)
{
    monitor m;
    memset(&m, 0, sizeof m);
    m.sigpipe[0] = m.sigpipe[1] = -1;
    long long prefetch = 0;
    const char *host = NULL;
    int rc = parse_args(&m, argc, argv, &prefetch, &host);
    if (rc)
        return rc < 0 ? 2 : 0;
    m.queue = tbx_config_str(m.cfg, "platform_queue");
    m.batch_size = (size_t)tbx_config_int(m.cfg, "monitor.batch_size");
    m.batch_s = (double)tbx_config_int(m.cfg, "monitor.batch_ms") / 1000.0;
    m.max_body = (size_t)tbx_config_int(m.cfg, "max_message_bytes");
    /* The window holds a batch being committed and the next one filling. */
    if (!prefetch)
        prefetch = m.batch_size * 2 > 65535 ? 65535 : (long long)m.batch_size * 2;
    m.prefetch = (int)(prefetch < 2 ? 2 : prefetch);
    if ((size_t)m.prefetch < m.batch_size) {
        fprintf(stderr, "platform-monitor: --prefetch %d is smaller than the batch size %zu\n", m.prefetch,
                m.batch_size);
        tbx_config_free(m.cfg);
        return 2;
    }
    if (host && *host) {
        snprintf(m.name, sizeof m.name, "%s", host);
    } else {
        char h[200] = "localhost";
        gethostname(h, sizeof h - 1);
        h[sizeof h - 1] = '\0';
        snprintf(m.name, sizeof m.name, "platform-monitor@%s", h);
    }
    int level = tbx_log_level_parse(tbx_config_str(m.cfg, "log.level"));
    tbx_error err = {0};
    if (tbx_log_open("platform-monitor", level < 0 ? TBX_LOG_INFO : (tbx_log_level)level,
                     tbx_config_str(m.cfg, "log.file"), tbx_config_int(m.cfg, "log.max_bytes"),
                     (int)tbx_config_int(m.cfg, "log.backups"), &err)) {
        fprintf(stderr, "platform-monitor: %s\n", err.msg);
        tbx_config_free(m.cfg);
        return 2;
    }
    tbx_proctitle_init(&m.title, "platform-monitor", argc, argv);
    rc = monitor_run(&m);
    tbx_config_free(m.cfg);
    return rc;
}
