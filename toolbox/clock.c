/*
 * clock.c - monotonic time, retry jitter and bounded waits shared by the worker, the monitor and
 * the producer.
 */
#define _GNU_SOURCE
#include "internal.h"

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
