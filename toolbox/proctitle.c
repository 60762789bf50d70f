/*
 * proctitle.c - show what the worker is doing in `ps`, as limpyd-jobs does:
 * the argv area is rewritten in place (its original length is the limit) and
 * the thread name is set for `top`.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>

#include "worker_internal.h"

void tbx_proctitle_init(tbx_worker *w, int argc, char **argv)
{
    w->argv = argv;
    w->argv_space = 0;
    if (argc <= 0 || !argv[0])
        return;
    /* Only the contiguous argv strings are used; the environment is left alone. */
    char *end = argv[0] + strlen(argv[0]) + 1;
    for (int i = 1; i < argc; i++) {
        if (argv[i] != end)
            break;
        end = argv[i] + strlen(argv[i]) + 1;
    }
    w->argv_space = (size_t)(end - argv[0]);
}

void tbx_proctitle_set(tbx_worker *w, const char *fmt, ...)
{
    char title[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(title, sizeof title, fmt, ap);
    va_end(ap);
    prctl(PR_SET_NAME, w->service);
    if (!w->argv || w->argv_space < 2)
        return;
    size_t n = strlen(title);
    if (n > w->argv_space - 1)
        n = w->argv_space - 1;
    memcpy(w->argv[0], title, n);
    memset(w->argv[0] + n, 0, w->argv_space - n);
}
