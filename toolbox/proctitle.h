/*
 * proctitle.h - show what a long-running program is doing in `ps`, as
 * limpyd-jobs does: the argv area is rewritten in place (its original length
 * is the limit) and the thread name is set for `top`. Internal; used by the
 * worker runner and the platform monitor.
 */
#ifndef TOOLBOX_PROCTITLE_H
#define TOOLBOX_PROCTITLE_H

#include <stddef.h>

#include "internal.h"

typedef struct tbx_proctitle {
    char **argv;      /* main()'s argv, borrowed for the life of the process */
    size_t space;     /* bytes of contiguous argv strings */
    char name[16];    /* thread name (PR_SET_NAME keeps 15 characters) */
} tbx_proctitle;

/* Remember argv (call after the arguments were parsed: they are overwritten). */
void tbx_proctitle_init(tbx_proctitle *t, const char *name, int argc, char **argv);
void tbx_proctitle_set(tbx_proctitle *t, const char *fmt, ...) TBX_PRINTF(2, 3);

#endif
