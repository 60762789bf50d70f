/*
 * task.c - the pool child: read RUN frames, call the handler, write OUTCOME
 * frames; and the tbx_task API handlers use.
 *
 * Soft time limits arrive as SIGUSR1 (a flag the handler can read, and an
 * interrupted sleep); SIGUSR2 means "drain": queued tasks not started yet are
 * answered NOT_RUN so the main process can return them to the broker.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "pool.h"
#include "toolbox/pickle.h"

struct tbx_task {
    const tbx_handler *handler;
    const char *id;
    int retries;
    int outcome;           /* 0 until the handler reports */
    json_t *result;        /* SUCCESS value */
    char exc_type[128];
    char exc_module[128];
    char *message;         /* FAILURE/RETRY text */
    double countdown;
};

static volatile sig_atomic_t soft_flag, drain_flag;

static void on_usr1(int sig)
{
    (void)sig;
    soft_flag = 1;
}

static void on_usr2(int sig)
{
    (void)sig;
    drain_flag = 1;
}

const char *tbx_task_id(const tbx_task *t) { return t->id; }
const char *tbx_task_name(const tbx_task *t) { return t->handler->name; }
int tbx_task_retries(const tbx_task *t) { return t->retries; }
int tbx_task_soft_limit_exceeded(const tbx_task *t)
{
    (void)t;
    return soft_flag != 0;
}

int tbx_task_sleep(tbx_task *t, double seconds)
{
    struct timespec end, now;
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += (time_t)seconds;
    end.tv_nsec += (long)((seconds - (double)(time_t)seconds) * 1e9);
    if (end.tv_nsec >= 1000000000L) {
        end.tv_sec++;
        end.tv_nsec -= 1000000000L;
    }
    while (!tbx_task_soft_limit_exceeded(t)) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > end.tv_sec || (now.tv_sec == end.tv_sec && now.tv_nsec >= end.tv_nsec))
            return 0;
        struct timespec slice = {0, 50000000L};
        nanosleep(&slice, NULL);
    }
    return 1;
}

TBX_PRINTF(5, 0)
static void set_exc(tbx_task *t, int outcome, const char *type, const char *module,
                    const char *fmt, va_list ap)
{
    t->outcome = outcome;
    snprintf(t->exc_type, sizeof t->exc_type, "%s", type && *type ? type : "Exception");
    snprintf(t->exc_module, sizeof t->exc_module, "%s", module && *module ? module : "builtins");
    free(t->message);
    t->message = NULL;
    if (fmt) {
        va_list cp;
        va_copy(cp, ap);
        int n = vsnprintf(NULL, 0, fmt, cp);
        va_end(cp);
        if (n >= 0 && (t->message = malloc((size_t)n + 1)))
            vsnprintf(t->message, (size_t)n + 1, fmt, ap);
    }
    json_decref(t->result);
    t->result = NULL;
}

void tbx_task_return(tbx_task *t, json_t *result)
{
    json_decref(t->result);
    t->result = result;
    t->outcome = TBX_OUT_SUCCESS;
}

void tbx_task_raise(tbx_task *t, const char *exc_type, const char *exc_module, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_exc(t, TBX_OUT_FAILURE, exc_type, exc_module, fmt, ap);
    va_end(ap);
}

void tbx_task_retry(tbx_task *t, double countdown, const char *exc_type, const char *exc_module,
                    const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_exc(t, TBX_OUT_RETRY, exc_type ? exc_type : "Retry", exc_module ? exc_module : "celery.exceptions",
            fmt, ap);
    va_end(ap);
    t->countdown = countdown;
}

/* ---- framing ----------------------------------------------------------------- */

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, void *p, size_t n)
{
    char *c = p;
    while (n) {
        ssize_t r = read(fd, c, n);
        if (r == 0)
            return -1;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

int tbx_pool_encode_run(tbx_buf *b, uint32_t handler, int32_t retries, double soft_limit,
                        const char *id, const void *body, size_t body_len)
{
    uint16_t idlen = (uint16_t)strlen(id);
    uint32_t len = (uint32_t)(4 + 4 + 8 + 2 + idlen + body_len);
    return tbx_buf_append(b, &len, 4) || tbx_buf_append(b, &handler, 4) ||
           tbx_buf_append(b, &retries, 4) || tbx_buf_append(b, &soft_limit, 8) ||
           tbx_buf_append(b, &idlen, 2) || tbx_buf_append(b, id, idlen) ||
           tbx_buf_append(b, body, body_len);
}

int tbx_pool_decode_outcome(const unsigned char *p, size_t n, tbx_outcome_msg *o)
{
    uint32_t plen;
    if (n < 1 + 8 + 8 + 4)
        return -1;
    o->outcome = p[0];
    memcpy(&o->countdown, p + 1, 8);
    memcpy(&o->runtime, p + 9, 8);
    memcpy(&plen, p + 17, 4);
    if (plen > n - 21)
        return -1;
    o->pickle = p + 21;
    o->pickle_len = plen;
    o->json = (const char *)(p + 21 + plen);
    o->json_len = n - 21 - plen;
    return (o->outcome >= TBX_OUT_SUCCESS && o->outcome <= TBX_OUT_NOT_RUN) ? 0 : -1;
}

static int send_outcome(int fd, int outcome, double countdown, double runtime,
                        const unsigned char *pk, size_t pklen, const char *json)
{
    tbx_buf b = {0};
    size_t jl = json ? strlen(json) : 0;
    uint32_t len = (uint32_t)(1 + 8 + 8 + 4 + pklen + jl), pl = (uint32_t)pklen;
    unsigned char oc = (unsigned char)outcome;
    int rc = tbx_buf_append(&b, &len, 4) || tbx_buf_append(&b, &oc, 1) ||
             tbx_buf_append(&b, &countdown, 8) || tbx_buf_append(&b, &runtime, 8) ||
             tbx_buf_append(&b, &pl, 4) || tbx_buf_append(&b, pk, pklen) ||
             tbx_buf_append(&b, json, jl);
    if (!rc)
        rc = write_all(fd, b.data, b.len);
    tbx_buf_free(&b);
    return rc;
}

/* Report an exception outcome: pickle the exception dict, send the details. */
static int send_exception(int fd, const tbx_task *t, double runtime, const char *hostname)
{
    json_t *args = json_array();
    if (t->message)
        json_array_append_new(args, json_string(t->message));
    unsigned char *pk = NULL;
    size_t pklen = 0;
    tbx_pickle_dump_exception(t->exc_type, t->exc_module, args, &pk, &pklen, NULL);
    char *tb = NULL;
    const char *msg = t->message ? t->message : "";
    size_t tbn = strlen(msg) + strlen(t->exc_type) + strlen(t->handler->name) + strlen(hostname) + 128;
    if ((tb = malloc(tbn)))
        snprintf(tb, tbn,
                 "Traceback (most recent call last):\n  C handler \"%s\" on %s\n%s: %s\n",
                 t->handler->name, hostname, t->exc_type, msg);
    json_t *info = json_pack("{s:s, s:s, s:O, s:s?}", "exc_type", t->exc_type, "exc_module",
                             t->exc_module, "exc_message", args, "traceback", tb);
    char *text = info ? json_dumps(info, JSON_COMPACT) : NULL;
    int rc = send_outcome(fd, t->outcome, t->countdown, runtime, pk, pklen, text ? text : "{}");
    free(text);
    json_decref(info);
    free(tb);
    free(pk);
    json_decref(args);
    return rc;
}

static void run_one(int fd, const tbx_pool_env *env, uint32_t hidx, int32_t retries, double soft,
                    const char *id, const char *body, size_t body_len)
{
    (void)soft;
    tbx_task t = {0};
    t.id = id;
    t.retries = retries;
    double t0 = tbx_mono();
    json_t *b = hidx < env->nhandlers ? json_loadb(body, body_len, 0, NULL) : NULL;
    if (!b || !json_is_array(b) || json_array_size(b) < 2) {
        /* The main process validated the body; this only guards the child. */
        static char qmark[] = "?";
        static const tbx_handler none = {.name = qmark};
        t.handler = hidx < env->nhandlers ? &env->handlers[hidx] : &none;
        t.outcome = TBX_OUT_FAILURE;
        snprintf(t.exc_type, sizeof t.exc_type, "InvalidTaskError");
        snprintf(t.exc_module, sizeof t.exc_module, "celery.exceptions");
        t.message = strdup("task body could not be decoded in the pool");
        send_exception(fd, &t, 0, env->hostname);
        free(t.message);
        json_decref(b);
        return;
    }
    const tbx_handler *h = &env->handlers[hidx];
    const tbx_task_hooks *hk = env->hooks;
    t.handler = h;
    soft_flag = 0;
    if (hk && hk->on_start)
        hk->on_start(&t, hk->userdata);
    h->fn(&t, json_array_get(b, 0), json_array_get(b, 1), h->userdata);
    if (!t.outcome)
        t.outcome = TBX_OUT_SUCCESS;
    double runtime = tbx_mono() - t0;
    if (t.outcome == TBX_OUT_SUCCESS) {
        json_t *res = t.result ? t.result : json_null();
        if (hk && hk->on_success)
            hk->on_success(&t, res, hk->userdata);
        unsigned char *pk = NULL;
        size_t pklen = 0;
        tbx_error err = {0};
        if (tbx_pickle_dump(res, &pk, &pklen, &err) == TBX_OK) {
            char *text = json_dumps(res, JSON_ENCODE_ANY | JSON_COMPACT);
            send_outcome(fd, TBX_OUT_SUCCESS, 0, runtime, pk, pklen, text ? text : "null");
            free(text);
        } else {
            t.outcome = TBX_OUT_FAILURE;
            snprintf(t.exc_type, sizeof t.exc_type, "EncodeError");
            snprintf(t.exc_module, sizeof t.exc_module, "kombu.exceptions");
            t.message = strdup(err.msg);
            send_exception(fd, &t, runtime, env->hostname);
        }
        free(pk);
    } else {
        if (t.outcome == TBX_OUT_FAILURE && hk && hk->on_failure)
            hk->on_failure(&t, t.exc_type, t.message ? t.message : "", hk->userdata);
        if (t.outcome == TBX_OUT_RETRY && hk && hk->on_retry)
            hk->on_retry(&t, t.message ? t.message : "", hk->userdata);
        send_exception(fd, &t, runtime, env->hostname);
    }
    if (hk && hk->cleanup)
        hk->cleanup(&t, hk->userdata);
    json_decref(t.result);
    free(t.message);
    json_decref(b);
}

static void child_main(int fd, const tbx_pool_env *env)
{
    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);
    signal(SIGINT, SIG_IGN);  /* Ctrl-C goes to the main process, which drains */
    signal(SIGTERM, SIG_DFL);
    signal(SIGCHLD, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the main process */
    unsigned char *buf = NULL;
    size_t cap = 0;
    for (;;) {
        uint32_t len;
        if (read_all(fd, &len, 4))
            _exit(0);
        if (len > cap) {
            unsigned char *nb = realloc(buf, len);
            if (!nb)
                _exit(70);
            buf = nb;
            cap = len;
        }
        if (read_all(fd, buf, len) || len < 18)
            _exit(len < 18 ? 71 : 0);
        uint32_t hidx;
        int32_t retries;
        double soft;
        uint16_t idlen;
        memcpy(&hidx, buf, 4);
        memcpy(&retries, buf + 4, 4);
        memcpy(&soft, buf + 8, 8);
        memcpy(&idlen, buf + 16, 2);
        if (18u + idlen > len)
            _exit(71);
        char id[160];
        snprintf(id, sizeof id, "%.*s", (int)idlen, (const char *)buf + 18);
        if (drain_flag) {
            send_outcome(fd, TBX_OUT_NOT_RUN, 0, 0, NULL, 0, NULL);
            continue;
        }
        run_one(fd, env, hidx, retries, soft, id, (const char *)buf + 18 + idlen, len - 18 - idlen);
    }
}

pid_t tbx_pool_spawn(const tbx_pool_env *env, int *fd_out)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    if (pid == 0) {
        close(sv[0]);
        /* Drop every inherited descriptor but stdio and our socket. */
        if (sv[1] > 3)
            close_range(3, (unsigned)sv[1] - 1, 0);
        close_range((unsigned)sv[1] + 1, ~0U, 0);
        child_main(sv[1], env);
        _exit(0);
    }
    close(sv[1]);
    *fd_out = sv[0];
    return pid;
}
