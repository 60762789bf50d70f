/*
 * worker_internal.h - state of the worker runner's main process. Internal.
 *
 * A job is one delivery on its way through the worker:
 *   delivered -> (eta heap) -> ready queue -> child FIFO (running at its head)
 *   -> outcome -> result row in the batch -> committed -> ack.
 */
#ifndef TOOLBOX_WORKER_INTERNAL_H
#define TOOLBOX_WORKER_INTERNAL_H

#include <libpq-fe.h>
#include <sys/types.h>

#include "batch.h"
#include "broker.h"
#include "pool.h"
#include "proctitle.h"
#include "toolbox/config.h"
#include "toolbox/message.h"
#include "toolbox/producer.h"
#include "toolbox/worker.h"

typedef struct job {
    struct job *next;         /* ready queue or child FIFO */
    uint64_t tag;             /* delivery tag */
    unsigned gen;             /* broker connection generation the tag belongs to */
    int redelivered;
    tbx_task_msg *msg;
    unsigned char *body;      /* raw JSON body, sent to the child */
    size_t body_len;
    int handler;              /* index into w->handlers */
    double eta;               /* epoch; 0 = none */
    double expires;           /* epoch; 0 = none */
    double started;           /* monotonic start, 0 until running */
    double soft, hard;        /* limits in seconds; 0 = none */
    int soft_sent;
    int interrupt;            /* INT_NONE, or a pending control request */
    double interrupt_countdown;
} job;

enum { INT_NONE = 0, INT_CANCEL, INT_RETRY };

typedef struct child {
    pid_t pid;
    int fd;
    job *head, *tail;         /* dispatched, in order; head is running */
    int depth;
    tbx_buf in;               /* partial outcome frames */
    tbx_buf out;              /* RUN frames not yet written */
    int kill_reason;          /* 0, or why we killed it (KILL_*) */
    double retry_countdown;   /* with KILL_RETRY */
} child;

enum { KILL_NONE = 0, KILL_TIMEOUT, KILL_REVOKE, KILL_RETRY, KILL_SHUTDOWN };

/* A pending broker action, performed once the rows before it are committed. */
typedef struct action {
    uint64_t tag;
    unsigned gen;
    int kind; /* ACT_ACK, ACT_REJECT, ACT_REQUEUE */
} action;

enum { ACT_ACK = 1, ACT_REJECT, ACT_REQUEUE };

struct tbx_worker {
    char *service;
    tbx_handler *handlers;
    size_t nhandlers, caphandlers;
    tbx_task_hooks hooks;
    int has_hooks;

    /* settings */
    tbx_config *cfg;
    char hostname[256];
    char **queues;
    size_t nqueues;
    int concurrency, prefetch;
    long long max_tasks;
    double max_duration;
    int track_started;
    int result_extended;
    size_t result_batch;
    size_t max_body;

    /* runtime */
    tbx_broker *b;
    unsigned gen;
    int consuming;
    amqp_bytes_t ctags[16];   /* consumer tags, one per queue */
    amqp_bytes_t ctl_tag;     /* consumer tag of the remote-control (pidbox) queue */
    char **revoked;           /* ring of revoked task ids */
    size_t nrevoked, revoked_next;
    double reconnect_at;
    double reconnect_delay;
    PGconn *db;
    double db_retry_at, db_delay;
    double db_timeout;        /* database_timeout: longest wait for one statement's answer */
    tbx_producer *prod;
    double hb_sent_at;        /* last heartbeat sent by hand on the consumer connection */
    tbx_batch *batch;
    double batch_since;       /* monotonic time of the oldest uncommitted row */
    action *acts;
    size_t nacts, capacts;
    child *children;
    job *ready_head, *ready_tail;
    job **eta_heap;
    size_t neta, capeta;
    int qos_applied;          /* prefetch currently set on the channel */
    unsigned long long processed, received;
    double started_mono;
    int stopping;             /* 1 warm, 2 cold */
    int sigpipe[2];
    tbx_proctitle title;
};

#define TBX_MAX_PIPELINE 8

/* worker_run.c */
int tbx_worker_run(tbx_worker *w);
void tbx_job_free(job *j);
void tbx_act_now(tbx_worker *w, uint64_t tag, unsigned gen, int kind);
void tbx_act_after_commit(tbx_worker *w, const job *j, int kind);
/* Queue a result row; m (may be NULL) supplies the result_extended columns. */
void tbx_put_row(tbx_worker *w, const tbx_task_msg *m, const char *id, const char *status,
                 const unsigned char *pk, size_t len, const char *tb);
void tbx_put_exc_row(tbx_worker *w, const tbx_task_msg *m, const char *id, const char *status,
                     const char *type, const char *module, const char *message, const char *tb);

/* strikes.c: count a redelivered task id; returns the count (0: counting is off). */
int tbx_strike(tbx_worker *w, const char *id);

/* control.c: Celery's remote control (pidbox): ping, revoke, and our interrupt. */
tbx_status tbx_control_start(tbx_worker *w, tbx_error *err);   /* declare + consume, on each connect */
void tbx_control_on_message(tbx_worker *w, const amqp_envelope_t *env);
int tbx_control_is_revoked(const tbx_worker *w, const char *id);
void tbx_control_free(tbx_worker *w);

/* followup.c: retries and follow-up tasks go out through w->prod (opened on first use). */
tbx_status tbx_followup_producer(tbx_worker *w, tbx_error *err);

/* While the main loop waits on something else (a follow-up's confirm, the database), the consumer
 * connection must not go silent: rabbitmq-c only sends heartbeats inside its own calls, so send one
 * when due. ud is the worker. */
void tbx_worker_keep_alive(void *ud);

/* aside.c: publish env's message (borrowed) unchanged, with x-toolbox-aside-* headers giving reason,
 * to the platform queue (toolbox/monitor.h, TBX_ASIDE_ROUTING_KEY) and wait for the confirm. 0 when
 * the broker holds the copy (then ack the original), -1 otherwise (logged; reject it instead). */
int tbx_set_aside(tbx_worker *w, const amqp_envelope_t *env, const char *id, const char *reason);
tbx_status tbx_followup_retry(tbx_worker *w, const job *j, double countdown, tbx_error *err);
tbx_status tbx_followup_success(tbx_worker *w, const job *j, const char *result_json, tbx_error *err);
tbx_status tbx_followup_failure(tbx_worker *w, const job *j, tbx_error *err);

#endif
