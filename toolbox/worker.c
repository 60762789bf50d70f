/*
 * worker.c - the worker runner's public API: registration, flags, start-up.
 * The main loop itself is in worker_run.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "toolbox/log.h"
#include "worker_internal.h"

tbx_worker *tbx_worker_new(const char *service)
{
    tbx_worker *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->service = strdup(service ? service : "celery");
    if (!w->service) {
        free(w);
        return NULL;
    }
    w->sigpipe[0] = w->sigpipe[1] = -1;
    return w;
}

void tbx_worker_free(tbx_worker *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->nhandlers; i++)
        free(w->handlers[i].name);
    free(w->handlers);
    for (size_t i = 0; i < w->nqueues; i++)
        free(w->queues[i]);
    free(w->queues);
    tbx_config_free(w->cfg);
    free(w->service);
    free(w);
}

tbx_status tbx_worker_register(tbx_worker *w, const char *name, tbx_handler_fn fn, void *userdata,
                               const tbx_task_opts *opts)
{
    static const tbx_task_opts defaults = TBX_TASK_OPTS_INIT;
    if (!w || !name || !*name || !fn || strlen(name) > 155)
        return TBX_EINVAL;
    for (size_t i = 0; i < w->nhandlers; i++)
        if (!strcmp(w->handlers[i].name, name))
            return TBX_EINVAL;
    if (w->nhandlers == w->caphandlers) {
        size_t cap = w->caphandlers ? w->caphandlers * 2 : 16;
        tbx_handler *h = realloc(w->handlers, cap * sizeof *h);
        if (!h)
            return TBX_ENOMEM;
        w->handlers = h;
        w->caphandlers = cap;
    }
    tbx_handler *h = &w->handlers[w->nhandlers];
    memset(h, 0, sizeof *h);
    if (!(h->name = strdup(name)))
        return TBX_ENOMEM;
    h->fn = fn;
    h->userdata = userdata;
    h->opts = opts ? *opts : defaults;
    w->nhandlers++;
    return TBX_OK;
}

void tbx_worker_set_hooks(tbx_worker *w, const tbx_task_hooks *hooks)
{
    if (hooks) {
        w->hooks = *hooks;
        w->has_hooks = 1;
    } else {
        memset(&w->hooks, 0, sizeof w->hooks);
        w->has_hooks = 0;
    }
}

static const char USAGE[] =
    "usage: %s [--config FILE | --env NAME] [--set KEY=VALUE ...] [--queues Q1,Q2]\n"
    "          [--concurrency N] [--prefetch N] [--max-tasks N] [--max-duration S]\n"
    "          [--hostname NAME] [--loglevel LEVEL] [--logfile FILE]\n"
    "\n"
    "Consumes its service's queue (or --queues) and runs the registered tasks:\n";

/* Map a runner flag to the configuration key it overrides. */
static const struct { const char *flag, *key; } FLAG_KEYS[] = {
    {"--queues", "worker.queues"},         {"--concurrency", "worker.concurrency"},
    {"--prefetch", "worker.prefetch"},     {"--max-tasks", "worker.max_tasks"},
    {"--max-duration", "worker.max_duration"}, {"--hostname", "worker.hostname"},
    {"--loglevel", "log.level"},           {"--logfile", "log.file"},
};

static int parse_args(tbx_worker *w, int argc, char **argv, tbx_error *err)
{
    const char *file = NULL, *env = NULL;
    const char **sets = calloc((size_t)argc + 1, sizeof *sets);
    char **owned = calloc((size_t)argc + 1, sizeof *owned);
    size_t nsets = 0, nowned = 0;
    int rc = -1;
    if (!sets || !owned) {
        tbx_seterr(err, TBX_ENOMEM, NULL);
        goto out;
    }
    for (int i = 1; i < argc; i++) {
        char *arg = argv[i];
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            printf(USAGE, argv[0]);
            for (size_t k = 0; k < w->nhandlers; k++)
                printf("  %s\n", w->handlers[k].name);
            rc = 1;
            goto out;
        }
        char *eq = strchr(arg, '=');
        size_t flen = eq ? (size_t)(eq - arg) : strlen(arg);
        const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[i + 1] : NULL);
        int used_next = !eq;
        const char *key = NULL;
        int kind = 0; /* 1 config, 2 env, 3 set, 4 mapped */
        if (!strncmp(arg, "--config", flen) && flen == 8)
            kind = 1;
        else if (!strncmp(arg, "--env", flen) && flen == 5)
            kind = 2;
        else if (!strncmp(arg, "--set", flen) && flen == 5)
            kind = 3;
        else
            for (size_t k = 0; k < sizeof FLAG_KEYS / sizeof *FLAG_KEYS; k++)
                if (strlen(FLAG_KEYS[k].flag) == flen && !strncmp(arg, FLAG_KEYS[k].flag, flen)) {
                    key = FLAG_KEYS[k].key;
                    kind = 4;
                }
        if (!kind) {
            tbx_seterr(err, TBX_ECONFIG, "unknown option %s (see --help)", arg);
            goto out;
        }
        if (!val) {
            tbx_seterr(err, TBX_ECONFIG, "%.*s needs a value", (int)flen, arg);
            goto out;
        }
        if (used_next)
            i++;
        if (kind == 1) {
            file = val;
        } else if (kind == 2) {
            env = val;
        } else if (kind == 3) {
            sets[nsets++] = val;
        } else {
            size_t n = strlen(key) + strlen(val) + 2;
            char *kv = malloc(n);
            if (!kv) {
                tbx_seterr(err, TBX_ENOMEM, NULL);
                goto out;
            }
            snprintf(kv, n, "%s=%s", key, val);
            owned[nowned++] = kv;
            sets[nsets++] = kv;
        }
    }
    sets[nsets] = NULL;
    rc = tbx_config_load(&w->cfg, file, env, sets, err) ? -1 : 0;
out:
    for (size_t k = 0; k < nowned; k++)
        free(owned[k]);
    free(owned);
    free(sets);
    return rc;
}

static int settle_settings(tbx_worker *w, tbx_error *err)
{
    tbx_config *c = w->cfg;
    const char *host = tbx_config_str(c, "worker.hostname");
    if (host && *host) {
        snprintf(w->hostname, sizeof w->hostname, "%s", host);
    } else {
        char h[200] = "localhost";
        gethostname(h, sizeof h - 1);
        h[sizeof h - 1] = '\0';
        snprintf(w->hostname, sizeof w->hostname, "%s@%s", w->service, h);
    }
    size_t nq = tbx_config_list_len(c, "worker.queues");
    w->nqueues = nq ? nq : 1;
    w->queues = calloc(w->nqueues, sizeof *w->queues);
    if (!w->queues)
        return tbx_seterr(err, TBX_ENOMEM, NULL);
    for (size_t i = 0; i < w->nqueues; i++)
        if (!(w->queues[i] = strdup(nq ? tbx_config_list_at(c, "worker.queues", i) : w->service)))
            return tbx_seterr(err, TBX_ENOMEM, NULL);
    w->concurrency = (int)tbx_config_int(c, "worker.concurrency");
    /* Results are committed in batches before the ack: the default window holds two
     * batches, so the broker keeps delivering while one batch commits. */
    w->result_batch = (size_t)tbx_config_int(c, "worker.result_batch");
    w->prefetch = (int)tbx_config_int(c, "worker.prefetch");
    if (w->prefetch <= 0) {
        long long auto_prefetch = 2 * (long long)w->result_batch;
        if (auto_prefetch < 4LL * w->concurrency)
            auto_prefetch = 4LL * w->concurrency;
        w->prefetch = (int)(auto_prefetch > 65535 ? 65535 : auto_prefetch);
    }
    w->max_tasks = tbx_config_int(c, "worker.max_tasks");
    w->max_duration = tbx_config_double(c, "worker.max_duration");
    w->track_started = tbx_config_bool(c, "task_track_started");
    w->result_extended = tbx_config_bool(c, "result_extended");
    w->max_body = (size_t)tbx_config_int(c, "max_message_bytes");
    return 0;
}

int tbx_worker_main(tbx_worker *w, int argc, char **argv)
{
    if (!w) {
        fprintf(stderr, "worker: out of memory\n");
        return 1;
    }
    tbx_error err = {0};
    int rc = parse_args(w, argc, argv, &err);
    if (rc) {
        if (rc < 0)
            fprintf(stderr, "%s: %s\n", argv[0], err.msg);
        tbx_worker_free(w);
        return rc < 0 ? 2 : 0;
    }
    if (settle_settings(w, &err)) {
        fprintf(stderr, "%s: %s\n", argv[0], err.msg);
        tbx_worker_free(w);
        return 2;
    }
    int level = tbx_log_level_parse(tbx_config_str(w->cfg, "log.level"));
    const char *base = strrchr(argv[0], '/');
    if (tbx_log_open(base ? base + 1 : argv[0], level < 0 ? TBX_LOG_INFO : (tbx_log_level)level,
                     tbx_config_str(w->cfg, "log.file"), tbx_config_int(w->cfg, "log.max_bytes"),
                     (int)tbx_config_int(w->cfg, "log.backups"), &err)) {
        fprintf(stderr, "%s: %s\n", argv[0], err.msg);
        tbx_worker_free(w);
        return 2;
    }
    tbx_proctitle_init(&w->title, w->service, argc, argv);
    rc = tbx_worker_run(w);
    tbx_worker_free(w);
    return rc;
}
