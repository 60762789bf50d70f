/*
 * fault_producer.c - the fault suite's producer: a steady stream of tasks, published with confirms,
 * that records exactly which task ids the broker confirmed.
 *
 * usage: fault-producer [--env NAME | --config FILE] [--set KEY=VALUE ...] --out FILE
 *                       [--rate R] [--count N | --duration S] [--start N] [--batch B]
 *                       [--flaky-every K] [--sleep-every K] [--sleep-ms MS] [--hang-limit S]
 *                       [--give-up S] [--logfile FILE]
 *
 * Tasks: msg.add(i, i) for i = start, start+1, ...; every K-th one (--flaky-every, 0: none) is
 * msg.flaky(1) instead (one retry through the worker's follow-up producer), and every K-th of the
 * rest (--sleep-every) msg.sleep(MS / 1000), so that a worker usually has a task in flight.
 * Messages go out in batches of at most B (default rate/10), each followed by a flush (wait for
 * every confirm).
 * Only after a flush succeeds are the batch's lines appended to --out, one per task:
 *     <task id> <task name> <i>
 * A batch that fails (connection lost, broker gone, nack, return) is published again, with the same
 * task ids, on a new connection (backoff 0.2 s doubling to 5 s, plus jitter): the consumers see such
 * a task more than once and must record it once. A flush that only times out (a resource alarm blocks
 * publishing; the connection is healthy) is waited out without reconnecting.
 *
 * Between publishes it calls tbx_producer_flush(p, 0) every 50 ms at most, so that the library can
 * service heartbeats (an error there also means a new connection).
 *
 * Every library call is watched: one that has not returned after --hang-limit seconds (default 90)
 * means a call blocked forever; the producer says so on stderr ("HANG: ...") and exits with status 3.
 * SIGTERM/SIGINT: finish the current batch, then exit 0. A summary line "STATS {json}" goes to stderr
 * at the end. Exit status: 0 done, 1 gave up (could not reach the broker for --give-up seconds),
 * 2 usage, 3 hang.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "toolbox/config.h"
#include "toolbox/log.h"
#include "toolbox/message.h"
#include "toolbox/producer.h"

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
    if (s <= 0)
        return;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
}

/* ---- the watchdog: a call that never returns ------------------------------------------------ */

static atomic_llong call_started_ns; /* 0: not inside a library call */
static const char *volatile call_name = "";
static double hang_limit = 90;

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double max_call_s;

static void call_begin(const char *name)
{
    call_name = name;
    atomic_store(&call_started_ns, now_ns());
}

static void call_end(void)
{
    long long t0 = atomic_exchange(&call_started_ns, 0);
    double d = (double)(now_ns() - t0) / 1e9;
    if (t0 && d > max_call_s)
        max_call_s = d;
}

static void *watchdog(void *arg)
{
    (void)arg;
    for (;;) {
        sleep_s(0.5);
        long long t0 = atomic_load(&call_started_ns);
        if (t0 && (double)(now_ns() - t0) / 1e9 > hang_limit) {
            char line[200];
            int n = snprintf(line, sizeof line, "HANG: %s has not returned after %.0f s\n", call_name, hang_limit);
            ssize_t w = write(2, line, (size_t)n);
            (void)w;
            _exit(3);
        }
    }
    return NULL;
}

/* ---- signals ------------------------------------------------------------------------------------- */

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* ---- the stream ---------------------------------------------------------------------------------- */

typedef struct {
    char id[TBX_TASK_ID_LEN + 1];
    const char *task;
    long long i;
} item;

static double sleep_s_arg = 0.1;

typedef struct {
    tbx_config *cfg;
    tbx_producer *p;
    FILE *out;
    double backoff;
    double give_up;
    /* statistics */
    unsigned long long published, confirmed, republished, reconnects, batches_failed, flush_timeouts;
    double blocked_s;
    char last_error[600];
} stream;

static void note_error(stream *s, const char *what, const tbx_error *err)
{
    snprintf(s->last_error, sizeof s->last_error, "%s: %s", what, err->msg);
    tbx_log(TBX_LOG_WARNING, "%s: %s", what, err->msg);
}

static void drop_producer(stream *s)
{
    if (s->p) {
        call_begin("tbx_producer_close");
        tbx_producer_close(s->p);
        call_end();
        s->p = NULL;
    }
}

/* Open a producer, retrying with a backoff. -1 when --give-up seconds pass without success. */
static int ensure_producer(stream *s)
{
    double first_fail = 0;
    while (!s->p) {
        tbx_error err = {0};
        call_begin("tbx_producer_open");
        tbx_status st = tbx_producer_open(&s->p, s->cfg, 0, &err);
        call_end();
        if (!st) {
            s->backoff = 0.2;
            return 0;
        }
        note_error(s, "connect", &err);
        double now = mono();
        if (!first_fail)
            first_fail = now;
        if (now - first_fail > s->give_up)
            return -1;
        sleep_s(s->backoff + s->backoff * (double)(rand() % 1000) / 1000.0);
        s->backoff = fmin(s->backoff * 2, 5);
    }
    return 0;
}

/* Publish batch[0..n) and wait for every confirm; on a broken connection publish it again on a new one.
 * 0 when confirmed (and written to out), -1 when giving up. */
static int send_batch(stream *s, item *batch, size_t n)
{
    json_t *args = json_array();
    for (int attempt = 0;; attempt++) {
        if (ensure_producer(s)) {
            json_decref(args);
            return -1;
        }
        if (attempt > 0)
            s->republished += n;
        tbx_error err = {0};
        tbx_status st = TBX_OK;
        for (size_t k = 0; k < n && !st; k++) {
            json_array_clear(args);
            if (!strcmp(batch[k].task, "msg.flaky"))
                json_array_append_new(args, json_integer(1));
            else if (!strcmp(batch[k].task, "msg.sleep"))
                json_array_append_new(args, json_real(sleep_s_arg));
            else {
                json_array_append_new(args, json_integer(batch[k].i));
                json_array_append_new(args, json_integer(batch[k].i));
            }
            tbx_send_opts o = TBX_SEND_OPTS_INIT;
            o.task_id = batch[k].id;
            /* A timeout leaves the connection usable (a resource alarm, a full window): wait on. */
            double t0 = mono();
            for (;;) {
                call_begin("tbx_producer_publish");
                st = tbx_producer_publish(s->p, batch[k].task, args, NULL, &o, NULL, &err);
                call_end();
                if (st != TBX_ETIMEOUT || mono() - t0 > s->give_up)
                    break;
                s->flush_timeouts++;
                tbx_log(TBX_LOG_WARNING, "publish waiting: %s", err.msg);
            }
            s->blocked_s += st == TBX_OK && mono() - t0 > 1 ? mono() - t0 : 0;
            if (!st)
                s->published++;
        }
        if (!st) {
            /* A timeout with a healthy connection (a resource alarm holds the confirms): keep waiting. */
            double t0 = mono();
            for (;;) {
                call_begin("tbx_producer_flush");
                st = tbx_producer_flush(s->p, 5, &err);
                call_end();
                if (st != TBX_ETIMEOUT)
                    break;
                s->flush_timeouts++;
                tbx_log(TBX_LOG_WARNING, "no confirms for %.0f s (blocked by a resource alarm?): still waiting",
                        mono() - t0);
                if (mono() - t0 > s->give_up)
                    break;
            }
            s->blocked_s += mono() - t0 > 5 ? mono() - t0 : 0;
        }
        if (!st) {
            for (size_t k = 0; k < n; k++)
                fprintf(s->out, "%s %s %lld\n", batch[k].id, batch[k].task, batch[k].i);
            fflush(s->out);
            s->confirmed += n;
            json_decref(args);
            return 0;
        }
        s->batches_failed++;
        note_error(s, "batch", &err);
        drop_producer(s);
        s->reconnects++;
        sleep_s(s->backoff + s->backoff * (double)(rand() % 1000) / 1000.0);
        s->backoff = fmin(s->backoff * 2, 5);
    }
}

static int usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s [--env NAME | --config FILE] [--set KEY=VALUE ...] --out FILE [--rate R]\n"
            "          [--count N | --duration S] [--start N] [--batch B] [--flaky-every K]\n"
            "          [--sleep-every K] [--sleep-ms MS] [--hang-limit S] [--give-up S] [--logfile FILE]\n",
            prog);
    return 2;
}

int main(int argc, char **argv)
{
    const char *env = NULL, *file = NULL, *outpath = NULL, *logfile = NULL;
    const char **sets = calloc((size_t)argc + 1, sizeof *sets);
    size_t nsets = 0;
    double rate = 50, duration = 0, give_up = 300;
    long long count = 0, start = 1, flaky_every = 0, sleep_every = 0, batch_max = 0;
    if (!sets)
        return 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            return usage(argv[0]);
        if (!strcmp(a, "--env"))
            env = v;
        else if (!strcmp(a, "--config"))
            file = v;
        else if (!strcmp(a, "--set"))
            sets[nsets++] = v;
        else if (!strcmp(a, "--out"))
            outpath = v;
        else if (!strcmp(a, "--logfile"))
            logfile = v;
        else if (!strcmp(a, "--rate"))
            rate = atof(v);
        else if (!strcmp(a, "--duration"))
            duration = atof(v);
        else if (!strcmp(a, "--count"))
            count = atoll(v);
        else if (!strcmp(a, "--start"))
            start = atoll(v);
        else if (!strcmp(a, "--batch"))
            batch_max = atoll(v);
        else if (!strcmp(a, "--flaky-every"))
            flaky_every = atoll(v);
        else if (!strcmp(a, "--sleep-every"))
            sleep_every = atoll(v);
        else if (!strcmp(a, "--sleep-ms"))
            sleep_s_arg = atof(v) / 1000;
        else if (!strcmp(a, "--hang-limit"))
            hang_limit = atof(v);
        else if (!strcmp(a, "--give-up"))
            give_up = atof(v);
        else
            return usage(argv[0]);
        i++;
    }
    if (!outpath || rate <= 0 || (count <= 0 && duration <= 0) || hang_limit < 1)
        return usage(argv[0]);
    if (batch_max <= 0)
        batch_max = rate >= 10 ? (long long)(rate / 10) : 1;

    tbx_error err = {0};
    if (tbx_log_open("fault-producer", TBX_LOG_INFO, logfile, 0, 0, &err)) {
        fprintf(stderr, "fault-producer: %s\n", err.msg);
        return 1;
    }
    stream s = {.backoff = 0.2, .give_up = give_up};
    if (tbx_config_load(&s.cfg, file, env, sets, &err)) {
        fprintf(stderr, "fault-producer: %s\n", err.msg);
        return 2;
    }
    s.out = fopen(outpath, "a");
    if (!s.out) {
        fprintf(stderr, "fault-producer: %s: %s\n", outpath, strerror(errno));
        return 1;
    }
    srand((unsigned)getpid() ^ (unsigned)time(NULL));
    struct sigaction sa = {0};
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    pthread_t wd;
    pthread_create(&wd, NULL, watchdog, NULL);
    pthread_detach(wd);

    item *batch = calloc((size_t)batch_max, sizeof *batch);
    if (!batch)
        return 1;
    int rc = 0;
    double t0 = mono();
    long long next = start, sent = 0;
    tbx_log(TBX_LOG_INFO, "streaming at %.0f tasks/s from index %lld (batch %lld)", rate, start, batch_max);
    while (!stop_requested) {
        double now = mono();
        if (duration > 0 && now - t0 >= duration)
            break;
        if (count > 0 && sent >= count)
            break;
        long long due = (long long)((now - t0) * rate) - sent;
        if (due <= 0) {
            /* Idle: let the library service heartbeats (rabbitmq-c only does inside its calls), as
             * a well-behaved application between publishes does. */
            if (s.p) {
                tbx_error e = {0};
                call_begin("tbx_producer_flush (idle)");
                tbx_status st = tbx_producer_flush(s.p, 0, &e);
                call_end();
                if (st && st != TBX_ETIMEOUT) {
                    note_error(&s, "idle", &e);
                    drop_producer(&s);
                    s.reconnects++;
                }
            }
            sleep_s(fmin(0.05, (double)(sent + 1) / rate - (now - t0)));
            continue;
        }
        size_t n = 0;
        while (n < (size_t)batch_max && due-- > 0 && !(count > 0 && sent + (long long)n >= count)) {
            item *it = &batch[n++];
            tbx_uuid4(it->id);
            it->i = next++;
            it->task = flaky_every > 0 && it->i % flaky_every == 0   ? "msg.flaky"
                       : sleep_every > 0 && it->i % sleep_every == 0 ? "msg.sleep"
                                                                      : "msg.add";
        }
        if (send_batch(&s, batch, n)) {
            tbx_log(TBX_LOG_ERROR, "giving up: no broker for %.0f s (%s)", give_up, s.last_error);
            rc = 1;
            break;
        }
        sent += (long long)n;
    }
    drop_producer(&s);
    fclose(s.out);
    fprintf(stderr,
            "STATS {\"published\": %llu, \"confirmed\": %llu, \"republished\": %llu, \"reconnects\": %llu, "
            "\"batches_failed\": %llu, \"flush_timeouts\": %llu, \"blocked_s\": %.1f, \"max_call_s\": %.2f, "
            "\"next_index\": %lld, \"elapsed_s\": %.1f}\n",
            s.published, s.confirmed, s.republished, s.reconnects, s.batches_failed, s.flush_timeouts,
            s.blocked_s, max_call_s, next, mono() - t0);
    free(batch);
    free(sets);
    tbx_config_free(s.cfg);
    return rc;
}
