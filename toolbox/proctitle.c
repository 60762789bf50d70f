/* proctitle.c - the process title in ps and top (see proctitle.h). */
#include "proctitle.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>

void tbx_proctitle_init(tbx_proctitle *t, const char *name, int argc, char **argv)
{
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name ? name : "toolbox");
    if (argc <= 0 || !argv || !argv[0])
        return;
    t->argv = argv;
    /* Only the contiguous argv strings are used; the environment is left alone. */
    char *end = argv[0] + strlen(argv[0]) + 1;
    for (int i = 1; i < argc; i++) {
        if (argv[i] != end)
            break;
        end = argv[i] + strlen(argv[i]) + 1;
    }
    t->space = (size_t)(end - argv[0]);
}

void tbx_proctitle_set(tbx_proctitle *t, const char *fmt, ...)
{
    char title[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(title, sizeof title, fmt, ap);
    va_end(ap);
    prctl(PR_SET_NAME, t->name);
    if (!t->argv || t->space < 2)
        return;
    size_t n = strlen(title);
    if (n > t->space - 1)
        n = t->space - 1;
    memcpy(t->argv[0], title, n);
    memset(t->argv[0] + n, 0, t->space - n);
}
