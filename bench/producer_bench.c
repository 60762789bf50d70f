/*
 * bench-producer - N real Celery v2 task messages through the toolbox
 * producer: tbx_producer_publish for each (pipelined, at most
 * broker_confirm_window unconfirmed), then tbx_producer_flush. Prints the rate
 * from the first publish until every confirm arrived. Also used by run.sh to
 * pre-fill a queue for the consumer benchmarks.
 *
 *   bench-producer [-n N] [--env NAME | --config FILE] [--task NAME] [--window W]
 *                  [--payload BYTES]
 *
 * The broker comes from the configuration ($TOOLBOX_BROKER_URL wins). The
 * topology is declared when the producer opens (not timed). Each task gets
 * args [i], or [i, "<BYTES x>"] with --payload (msg.noop returns i either way).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_amqp.h"
#include "toolbox/config.h"
#include "toolbox/producer.h"

int main(int argc, char **argv)
{
    long n = 10000, payload = 0;
    const char *env = "test", *file = NULL, *task = "msg.noop";
    char window_set[64] = "";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-n"))
            n = bench_parse_long(v, "-n"), i++;
        else if (!strcmp(a, "--env") && v)
            env = v, i++;
        else if (!strcmp(a, "--config") && v)
            file = v, i++;
        else if (!strcmp(a, "--task") && v)
            task = v, i++;
        else if (!strcmp(a, "--payload"))
            payload = bench_parse_long(v, "--payload"), i++;
        else if (!strcmp(a, "--window"))
            snprintf(window_set, sizeof window_set, "broker_confirm_window=%ld",
                     bench_parse_long(v, "--window")), i++;
        else
            bench_die("usage: bench-producer [-n N] [--env NAME | --config FILE] [--task NAME] [--window W] "
                      "[--payload BYTES]");
    }
    const char *overrides[2] = {window_set[0] ? window_set : NULL, NULL};

    char *pad = NULL;
    if (payload) {
        if (!(pad = malloc((size_t)payload + 1)))
            bench_die("out of memory");
        memset(pad, 'x', (size_t)payload);
        pad[payload] = 0;
    }

    tbx_error err = {0};
    tbx_config *cfg = NULL;
    if (tbx_config_load(&cfg, file, file ? NULL : env, overrides, &err))
        bench_die("configuration: %s", err.msg);
    tbx_producer *p = NULL;
    if (tbx_producer_open(&p, cfg, 0, &err))
        bench_die("opening the producer: %s", err.msg);

    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        json_t *args = pad ? json_pack("[Is]", (json_int_t)i, pad) : json_pack("[I]", (json_int_t)i);
        if (!args)
            bench_die("out of memory");
        tbx_status st = tbx_producer_publish(p, task, args, NULL, NULL, NULL, &err);
        json_decref(args);
        if (st)
            bench_die("publishing message %ld: %s", i, err.msg);
    }
    if (tbx_producer_flush(p, 120, &err))
        bench_die("flushing: %s", err.msg);
    double dt = bench_now() - t0;

    printf("bench-producer msgs_per_s=%.1f n=%ld window=%lld seconds=%.3f task=%s payload=%ld confirmed=%llu "
           "maxrss_kib=%ld\n",
           (double)n / dt, n, tbx_config_int(cfg, "broker_confirm_window"), dt, task, payload,
           tbx_producer_confirmed(p), bench_maxrss_kib());
    tbx_producer_close(p);
    tbx_config_free(cfg);
    free(pad);
    return 0;
}
