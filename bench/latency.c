/*
 * bench-latency - publish tasks at a fixed rate through the toolbox producer
 * and write, for each, its id and the wall-clock time just before it was
 * published, so that the publish-to-result-committed latency can be computed
 * from celery_taskmeta.date_done (bench/latency.py report).
 *
 *   bench-latency --rate R (-n N | --seconds S) --out FILE [--env NAME | --config FILE]
 *                 [--task NAME] [--payload BYTES]
 *
 * Task i is published at t0 + i/R (CLOCK_MONOTONIC; when the publisher falls
 * behind it publishes what is due at once, and the achieved rate says so).
 * Each task gets args [i] (or [i, "<BYTES x>"] with --payload). FILE gets one
 * line per task: "<task id> <unix time in seconds with microseconds>"
 * (CLOCK_REALTIME, the clock Postgres' now() reads). Confirms are pipelined
 * (broker_confirm_window) and all awaited before exit.
 *
 * Output: one line "bench-latency target_per_s=... achieved_per_s=... n=... seconds=...".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_amqp.h"
#include "toolbox/config.h"
#include "toolbox/producer.h"

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_until(double mono_t)
{
    struct timespec ts;
    ts.tv_sec = (time_t)mono_t;
    ts.tv_nsec = (long)((mono_t - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L)
        ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

int main(int argc, char **argv)
{
    long n = 0, payload = 0;
    double rate = 0, seconds = 0;
    const char *env = "test", *file = NULL, *task = "msg.noop", *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-n"))
            n = bench_parse_long(v, "-n"), i++;
        else if (!strcmp(a, "--rate"))
            rate = (double)bench_parse_long(v, "--rate"), i++;
        else if (!strcmp(a, "--seconds"))
            seconds = (double)bench_parse_long(v, "--seconds"), i++;
        else if (!strcmp(a, "--payload"))
            payload = bench_parse_long(v, "--payload"), i++;
        else if (!strcmp(a, "--env") && v)
            env = v, i++;
        else if (!strcmp(a, "--config") && v)
            file = v, i++;
        else if (!strcmp(a, "--task") && v)
            task = v, i++;
        else if (!strcmp(a, "--out") && v)
            out = v, i++;
        else
            bench_die("usage: bench-latency --rate R (-n N | --seconds S) --out FILE [--env NAME | "
                      "--config FILE] [--task NAME] [--payload BYTES]");
    }
    if (rate <= 0 || !out)
        bench_die("--rate and --out are required");
    if (!n)
        n = seconds > 0 ? (long)(rate * seconds + 0.5) : 0;
    if (n <= 0)
        bench_die("give -n or --seconds");

    char *pad = NULL;
    if (payload) {
        if (!(pad = malloc((size_t)payload + 1)))
            bench_die("out of memory");
        memset(pad, 'x', (size_t)payload);
        pad[payload] = 0;
    }
    FILE *f = fopen(out, "w");
    if (!f)
        bench_die("%s: %s", out, strerror(errno));

    tbx_error err = {0};
    tbx_config *cfg = NULL;
    if (tbx_config_load(&cfg, file, file ? NULL : env, NULL, &err))
        bench_die("configuration: %s", err.msg);
    tbx_producer *p = NULL;
    if (tbx_producer_open(&p, cfg, 0, &err))
        bench_die("opening the producer: %s", err.msg);

    double t0 = bench_now(), late_max = 0;
    for (long i = 0; i < n; i++) {
        double due = t0 + (double)i / rate, now = bench_now();
        if (due > now)
            sleep_until(due);
        else if (now - due > late_max)
            late_max = now - due;
        json_t *args = pad ? json_pack("[Is]", (json_int_t)i, pad) : json_pack("[I]", (json_int_t)i);
        if (!args)
            bench_die("out of memory");
        char id[TBX_TASK_ID_LEN + 1];
        double sent = wall_now();
        tbx_status st = tbx_producer_publish(p, task, args, NULL, NULL, id, &err);
        json_decref(args);
        if (st)
            bench_die("publishing message %ld: %s", i, err.msg);
        fprintf(f, "%s %.6f\n", id, sent);
    }
    double dt_pub = bench_now() - t0;
    if (tbx_producer_flush(p, 120, &err))
        bench_die("flushing: %s", err.msg);
    if (fclose(f))
        bench_die("%s: %s", out, strerror(errno));
    printf("bench-latency target_per_s=%.1f achieved_per_s=%.1f n=%ld seconds=%.3f max_behind_ms=%.1f "
           "payload=%ld task=%s\n",
           rate, n > 1 && dt_pub > 0 ? (double)(n - 1) / dt_pub : rate, n, dt_pub, late_max * 1000, payload, task);
    tbx_producer_close(p);
    tbx_config_free(cfg);
    free(pad);
    return 0;
}
