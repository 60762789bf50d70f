/*
 * pool.h - the prefork pool: child processes that run handlers, and the
 * framed protocol between them and the worker's main process. Internal.
 *
 * Frames are a native u32 length followed by the payload, over a
 * socketpair. Main -> child: RUN (handler index, retries, soft limit, id,
 * body JSON). Child -> main: one OUTCOME per RUN, in order.
 */
#ifndef TOOLBOX_POOL_H
#define TOOLBOX_POOL_H

#include <jansson.h>
#include <stdint.h>
#include <sys/types.h>

#include "internal.h"
#include "toolbox/worker.h"

enum tbx_outcome {
    TBX_OUT_SUCCESS = 1,
    TBX_OUT_FAILURE = 2,
    TBX_OUT_RETRY = 3,
    TBX_OUT_NOT_RUN = 4 /* skipped because the worker is draining */
};

/* A registered handler (shared by main and children through fork). */
typedef struct tbx_handler {
    char *name;
    tbx_handler_fn fn;
    void *userdata;
    tbx_task_opts opts;
    int running; /* main process only: tasks of this handler in children */
    unsigned long long done; /* main process only: tasks finished */
} tbx_handler;

/* What the child runs: set before the pool forks. */
typedef struct tbx_pool_env {
    tbx_handler *handlers;
    size_t nhandlers;
    const tbx_task_hooks *hooks;
    const char *hostname;
} tbx_pool_env;

/* One decoded outcome frame. Pointers refer into the frame buffer. */
typedef struct tbx_outcome_msg {
    int outcome;
    double countdown;
    double runtime;
    const unsigned char *pickle;
    size_t pickle_len;
    const char *json; /* success: the result value; failure/retry: exception object */
    size_t json_len;
} tbx_outcome_msg;

/* Fork a child running the handler loop on fd pair; returns its pid and the
 * main side's fd (non-blocking) or -1. The child never returns. */
pid_t tbx_pool_spawn(const tbx_pool_env *env, int *fd_out);

/* Encode a RUN frame into b (appending). */
int tbx_pool_encode_run(tbx_buf *b, uint32_t handler, int32_t retries, double soft_limit,
                        const char *id, const void *body, size_t body_len);
/* Decode an OUTCOME payload (without the length prefix). 0 ok, -1 malformed. */
int tbx_pool_decode_outcome(const unsigned char *p, size_t n, tbx_outcome_msg *out);

#endif
