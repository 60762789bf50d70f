/*
 * strikes.c - bound the deliveries of a message that keeps killing the worker.
 *
 * A crash of a pool process is recorded as FAILURE and acknowledged, so it
 * never loops. A message that takes the main process down (or a task that
 * never finishes before the connection is lost) comes back with
 * redelivered=1 each time. Only for those redeliveries, the worker counts
 * strikes per task id in a small file of its own (worker.state_dir, one file
 * per hostname, rewritten atomically); past worker.max_redeliveries the
 * message is set aside: FAILURE row with the reason, moved to the platform
 * queue (aside.c) where the monitor parks it for inspection and replay, never
 * run again.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "toolbox/log.h"
#include "worker_internal.h"

#define STRIKES_MAX_IDS 4096

typedef struct strike {
    char id[160];
    int count;
} strike;

static char *state_path(const tbx_worker *w)
{
    const char *dir = tbx_config_str(w->cfg, "worker.state_dir");
    if (!dir || !*dir)
        return NULL;
    size_t n = strlen(dir) + strlen(w->hostname) + 32;
    char *p = malloc(n);
    if (!p)
        return NULL;
    int k = snprintf(p, n, "%s/%s.strikes", dir, w->hostname);
    for (char *c = p + strlen(dir) + 1; c < p + k; c++)
        if (*c == '/')
            *c = '_';
    return p;
}

static size_t load(const char *path, strike *s, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n = 0;
    if (!f)
        return 0;
    char line[256];
    while (n < cap && fgets(line, sizeof line, f)) {
        int count;
        char id[160];
        if (sscanf(line, "%d %159s", &count, id) == 2 && count > 0) {
            s[n].count = count;
            snprintf(s[n].id, sizeof s[n].id, "%s", id);
            n++;
        }
    }
    fclose(f);
    return n;
}

static int save(const char *path, const strike *s, size_t n)
{
    size_t len = strlen(path) + 8;
    char *tmp = malloc(len);
    if (!tmp)
        return -1;
    snprintf(tmp, len, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    int rc = -1;
    if (f) {
        for (size_t i = 0; i < n; i++)
            fprintf(f, "%d %s\n", s[i].count, s[i].id);
        rc = fflush(f) || fsync(fileno(f)) ? -1 : 0;
        rc |= fclose(f);
        if (!rc)
            rc = rename(tmp, path);
    }
    free(tmp);
    return rc;
}

int tbx_strike(tbx_worker *w, const char *id)
{
    char *path = state_path(w);
    strike *s = path ? calloc(STRIKES_MAX_IDS, sizeof *s) : NULL;
    if (!s) {
        free(path);
        return 0; /* counting is off (no state_dir) or out of memory: never set aside */
    }
    mkdir(tbx_config_str(w->cfg, "worker.state_dir"), 0750);
    size_t n = load(path, s, STRIKES_MAX_IDS), i;
    for (i = 0; i < n; i++)
        if (!strcmp(s[i].id, id))
            break;
    if (i == n) {
        if (n == STRIKES_MAX_IDS) { /* forget the oldest */
            memmove(s, s + 1, (n - 1) * sizeof *s);
            n--;
        }
        i = n++;
        snprintf(s[i].id, sizeof s[i].id, "%s", id);
        s[i].count = 0;
    }
    int count = ++s[i].count;
    if (save(path, s, n))
        tbx_log(TBX_LOG_WARNING, "cannot write %s: %s (redeliveries not counted)", path, strerror(errno));
    free(s);
    free(path);
    return count;
}
