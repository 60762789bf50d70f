/*
 * clock.c - monotonic time, retry jitter, bounded waits and the start-up retry loop shared by the
 * worker, the monitor and the producer.
 */
#define _GNU_SOURCE
#include "internal.h"
#include "toolbox/log.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <time.h>

double tbx_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double tbx_jitter(double upto)
{
    return upto * (double)(rand() % 1000) / 1000.0;
}

double tbx_backoff(double *delay)
{
    double wait = *delay + tbx_jitter(1);
    *delay = fmin(*delay * 2, 30);
    return wait;
}

int tbx_wait_readable(int fd, double seconds)
{
    double until = tbx_mono() + seconds;
    for (;;) {
        double left = until - tbx_mono();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, (int)ceil(left * 1000));
        if (r > 0)
            return 1;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

int tbx_retry_startup(double seconds, int stop_fd, tbx_status (*attempt)(void *ud, tbx_error *err), void *ud,
                      tbx_error *err)
{
    double give_up = tbx_mono() + seconds;
    double delay = 1;
    for (;;) {
        if (!attempt(ud, err))
            return 0;
        double left = give_up - tbx_mono();
        if (left <= 0)
            return -1;
        double wait = fmin(tbx_backoff(&delay), left);
        tbx_log(TBX_LOG_ERROR, "%s (starting: retrying in %.1f s, giving up in %.0f s)", err->msg, wait, left);
        if (tbx_wait_readable(stop_fd, wait) > 0)
            return 1;
    }
}
