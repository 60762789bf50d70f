/*
 * toolbox/worker.h - the worker runner: register handlers by task name, then
 * hand control to tbx_worker_main().
 *
 * Model. The runner's main process owns the broker connection, the result
 * database connection and a pool of `concurrency` child processes. Handlers
 * run in the children, so a handler that crashes or hangs costs only its own
 * task (FAILURE WorkerLostError / TimeLimitExceeded) and the child is
 * replaced. Every state change is written to celery_taskmeta as Celery's
 * database backend would, and a delivery is acknowledged only after its
 * task's final row is committed.
 *
 *     int main(int argc, char **argv) {
 *         tbx_worker *w = tbx_worker_new("msg");
 *         tbx_worker_register(w, "msg.add", msg_add, NULL, NULL);
 *         return tbx_worker_main(w, argc, argv);   // frees w
 *     }
 */
#ifndef TOOLBOX_WORKER_H
#define TOOLBOX_WORKER_H

#include <jansson.h>

#include "toolbox/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tbx_worker tbx_worker;
typedef struct tbx_task tbx_task; /* the running task, valid during a handler call */

/* A handler. args (array) and kwargs (object) are borrowed. Report the outcome
 * with tbx_task_return / tbx_task_raise / tbx_task_retry; returning without
 * any of them means SUCCESS with result None. Runs in a pool child. */
typedef void (*tbx_handler_fn)(tbx_task *task, const json_t *args, const json_t *kwargs,
                               void *userdata);

/* Per-task options. Zero-initialise with TBX_TASK_OPTS_INIT. */
typedef struct tbx_task_opts {
    int max_retries;          /* -2: config task_max_retries; -1: unlimited */
    double retry_delay;       /* < 0: config task_default_retry_delay (seconds) */
    double retry_backoff;     /* each retry multiplies the delay by this (<= 1: constant) */
    double retry_backoff_max; /* cap of the delay with backoff; 0: none */
    int retry_priority_delta; /* added to the priority on each retry (clamped 0..255) */
    double time_limit;        /* hard limit when the message has none; 0: none */
    double soft_time_limit;   /* soft limit when the message has none; 0: none */
    int ignore_result;        /* do not store SUCCESS (failures are still stored) */
    int max_concurrency;      /* at most this many running at once; 0: no limit */
} tbx_task_opts;

#define TBX_TASK_OPTS_INIT {.max_retries = -2, .retry_delay = -1, .retry_backoff = 1}

/* Hooks, all optional, all run in the pool child around each handler call.
 * cleanup always runs, whatever the outcome. */
typedef struct tbx_task_hooks {
    void (*on_start)(tbx_task *task, void *userdata);
    void (*on_success)(tbx_task *task, const json_t *result, void *userdata);
    void (*on_failure)(tbx_task *task, const char *exc_type, const char *message, void *userdata);
    void (*on_retry)(tbx_task *task, const char *message, void *userdata);
    void (*cleanup)(tbx_task *task, void *userdata);
    void *userdata;
} tbx_task_hooks;

/* service: the service name, whose queue is consumed by default (e.g. "msg").
 * NULL on ENOMEM. The worker is freed by tbx_worker_main or tbx_worker_free. */
tbx_worker *tbx_worker_new(const char *service);
void tbx_worker_free(tbx_worker *w);

/* Register a handler for a task name. opts may be NULL (defaults); it is
 * copied. userdata is passed to the handler as is. */
tbx_status tbx_worker_register(tbx_worker *w, const char *name, tbx_handler_fn fn, void *userdata,
                               const tbx_task_opts *opts);
void tbx_worker_set_hooks(tbx_worker *w, const tbx_task_hooks *hooks);

/* Parse the runner's flags (--config/--env/--set, --queues, --concurrency N,
 * --prefetch N, --max-tasks N, --max-duration S, --hostname NAME,
 * --loglevel LEVEL, --logfile FILE), load the configuration, run until
 * stopped, free w, and return the process exit status (0 after a warm
 * shutdown, 2 on a configuration error, 1 on a fatal error). */
int tbx_worker_main(tbx_worker *w, int argc, char **argv);

/* ---- inside a handler ---------------------------------------------------- */

const char *tbx_task_id(const tbx_task *t);
const char *tbx_task_name(const tbx_task *t);
int tbx_task_retries(const tbx_task *t);
/* Non-zero once the soft time limit has passed: the handler should wrap up,
 * e.g. with tbx_task_raise(t, "SoftTimeLimitExceeded", "billiard.exceptions", NULL). */
int tbx_task_soft_limit_exceeded(const tbx_task *t);
/* Sleep up to `seconds`, returning early (non-zero) when the soft limit passes. */
int tbx_task_sleep(tbx_task *t, double seconds);

/* SUCCESS with result (reference stolen; NULL = None). */
void tbx_task_return(tbx_task *t, json_t *result);
/* FAILURE with a Python exception: exc_module "builtins" and a builtin name
 * (ValueError, TypeError, ...) give Python clients the real exception class.
 * fmt may be NULL (no message). */
void tbx_task_raise(tbx_task *t, const char *exc_type, const char *exc_module, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
/* Ask for a retry after countdown seconds (< 0: the task's retry delay with
 * backoff). When the retries are used up the task fails with this exception. */
void tbx_task_retry(tbx_task *t, double countdown, const char *exc_type, const char *exc_module,
                    const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;

#ifdef __cplusplus
}
#endif
#endif
