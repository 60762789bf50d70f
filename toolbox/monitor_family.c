/* monitor_family.c - the platform's family-state rule and its random row ids. */
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "toolbox/monitor.h"

const char *tbx_family_status(const char *const *statuses, size_t n)
{
    /* cadasta-platform tasks/models.py BackgroundTask.overall_status: the set of the family's result
     * states (None for no result row); one -> it (None -> PENDING); else FAILURE if any failed,
     * else STARTED. */
    if (n == 0)
        return "PENDING";
    const char *first = statuses[0];
    int same = 1, failed = 0;
    for (size_t i = 0; i < n; i++) {
        const char *s = statuses[i];
        if (s && !strcmp(s, "FAILURE"))
            failed = 1;
        if ((s == NULL) != (first == NULL) || (s && strcmp(s, first) != 0))
            same = 0;
    }
    if (same)
        return first ? first : "PENDING";
    return failed ? "FAILURE" : "STARTED";
}

/* 32 symbols: [a-z0-9] without l, 1, o, 0 (the platform's RandomIDModel alphabet). */
static const char ALPHABET[] = "abcdefghijkmnpqrstuvwxyz23456789";

void tbx_monitor_random_id(char out[TBX_MONITOR_ID_LEN + 1])
{
    /* Bytes are drawn in blocks: one getrandom() call per 170 ids. */
    static _Thread_local unsigned char pool[4096];
    static _Thread_local size_t avail;
    if (avail < TBX_MONITOR_ID_LEN) {
        ssize_t got = getrandom(pool, sizeof pool, 0);
        if (got != (ssize_t)sizeof pool) {
            /* No entropy source: a xorshift seeded from the clock and pid; unique enough. */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            static _Thread_local unsigned long long s;
            s ^= (unsigned long long)ts.tv_nsec ^ ((unsigned long long)ts.tv_sec << 20) ^
                 ((unsigned long long)getpid() << 40) ^ 0x9e3779b97f4a7c15ULL;
            for (size_t i = 0; i < sizeof pool; i++) {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                pool[i] = (unsigned char)(s >> 24);
            }
        }
        avail = sizeof pool;
    }
    for (size_t i = 0; i < TBX_MONITOR_ID_LEN; i++)
        out[i] = ALPHABET[pool[--avail] & 31];
    out[TBX_MONITOR_ID_LEN] = '\0';
}
