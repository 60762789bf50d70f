/*
 * title.c - show what the monitor is doing in `ps`, as the service workers do: the argv area is
 * rewritten in place (its original length is the limit) and the thread name is set for `top`.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>

#include "monitor.h"

void title_init(monitor *m, int argc, char **argv)
{
    m->argv = argv;
    m->argv_space = 0;
    if (argc <= 0 || !argv[0])
        return;
    /* Only the contiguous argv strings are used; the environment is left alone. */
    char *end = argv[0] + strlen(argv[0]) + 1;
    for (int i = 1; i < argc; i++) {
        if (argv[i] != end)
            break;
        end = argv[i] + strlen(argv[i]) + 1;
    }
    m->argv_space = (size_t)(end - argv[0]);
}

void title_set(monitor *m, const char *fmt, ...)
{
    char title[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(title, sizeof title, fmt, ap);
    va_end(ap);
    prctl(PR_SET_NAME, "platform-monitor");
    if (!m->argv || m->argv_space < 2)
        return;
    size_t n = strlen(title);
    if (n > m->argv_space - 1)
        n = m->argv_space - 1;
    memcpy(m->argv[0], title, n);
    memset(m->argv[0] + n, 0, m->argv_space - n);
}
