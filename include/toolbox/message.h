/*
 * toolbox/message.h - Celery message protocol v2 (JSON body) over AMQP 0-9-1.
 *
 * Encoding produces exactly what Celery 5.2's `send_task` publishes (see
 * shared/docs/celery-wire.md §1): the basic properties, the 16 headers in
 * wire order with the field types py-amqp reads correctly, and the body
 * `[args, kwargs, embed]`. Decoding turns a delivery from any producer (Python
 * or C) into a tbx_task_msg, or a precise reason why it is not a task.
 */
#ifndef TOOLBOX_MESSAGE_H
#define TOOLBOX_MESSAGE_H

#include <jansson.h>
#include <stddef.h>

#include "toolbox/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TBX_TASK_ID_LEN 36 /* a canonical lowercase UUID */

/* Options of one task publication. All pointers are borrowed for the call.
 * Zero-initialise (TBX_SEND_OPTS_INIT) and set what you need. */
typedef struct tbx_send_opts {
    const char *task_id;        /* NULL: a new random UUID */
    double countdown;           /* > 0: eta = now + countdown (ignored when eta is set) */
    const char *eta;            /* ISO-8601 eta, e.g. 2026-11-22T06:26:59.915085+00:00 */
    double expires_in;          /* > 0: expires = now + expires_in, and the AMQP expiration property */
    const char *expires;        /* ISO-8601 expiry (alternative to expires_in) */
    int priority;               /* 0..255; -1: the configured default */
    double time_limit;          /* hard limit, seconds; 0: none */
    double soft_time_limit;     /* soft limit, seconds; 0: none */
    int retries;                /* retries so far (0 on first send) */
    const char *parent_id;      /* NULL: none */
    const char *root_id;        /* NULL: the task's own id */
    const char *group_id;       /* NULL: none */
    int group_index;            /* < 0: none */
    const char *shadow;         /* display name; NULL: none */
    int ignore_result;          /* non-zero: ask the worker not to store SUCCESS */
    /* Cadasta platform extras, carried as headers (celery-wire.md §4.3). */
    const char *creator_id;
    long long related_content_type_id; /* 0: absent */
    const char *related_object_id;
    int is_result;                     /* non-zero: header is_result=true */
    /* Follow-ups for the embed. Each is a signature object or an array of them. */
    const json_t *link;         /* embed.callbacks */
    const json_t *link_error;   /* embed.errbacks */
    const json_t *chain;        /* embed.chain, already in wire (reversed) order */
    const json_t *headers;      /* extra headers (object), merged at the top level */
    const char *routing_key;    /* NULL: the task name's prefix before the first '.' */
    const char *origin;         /* NULL: gen<pid>@<hostname> */
} tbx_send_opts;

#define TBX_SEND_OPTS_INIT {.priority = -1, .group_index = -1}

/* A decoded task message. Every pointer is owned by the struct; free the whole
 * thing with tbx_task_msg_free. Absent optional headers are NULL / -1 / 0. */
typedef struct tbx_task_msg {
    char *task;            /* registered name, e.g. msg.add */
    char *id;              /* task id */
    char *shadow;
    char *eta;             /* ISO text as received */
    char *expires;         /* ISO text as received */
    char *group;
    int group_index;       /* -1 when absent */
    int retries;
    double time_limit;     /* hard; 0 when absent */
    double soft_time_limit;/* 0 when absent */
    char *root_id;
    char *parent_id;
    char *argsrepr;
    char *kwargsrepr;
    char *origin;
    int ignore_result;
    json_t *args;          /* array */
    json_t *kwargs;        /* object */
    json_t *embed;         /* object: callbacks, errbacks, chain, chord (values may be null) */
    json_t *headers;       /* every header as JSON, in wire order (includes the ones above) */
    json_t *properties;    /* basic properties as JSON (content_type, delivery_mode, ...) */
    int priority;
    char *routing_key;     /* delivery routing key, if known */
} tbx_task_msg;

void tbx_task_msg_free(tbx_task_msg *msg); /* NULL ok */

/* The routing key of a task name: the part before the first '.', or the whole
 * name when it has none. Writes at most cap bytes including the NUL. */
size_t tbx_routing_key(const char *task_name, char *out, size_t cap);

/* A new random (version 4) UUID in canonical lowercase form. */
void tbx_uuid4(char out[TBX_TASK_ID_LEN + 1]);

/* Format epoch seconds as Python's aware-UTC isoformat(): six fraction digits,
 * or none when the microseconds are zero, and "+00:00". */
void tbx_iso_utc(double epoch, char out[40]);

/* Parse an ISO-8601 time as Celery 5.2 does (fraction = integer microseconds,
 * at most 6 digits; Z or +HH:MM/-HH:MM offset; naive = UTC). */
tbx_status tbx_iso_parse(const char *text, double *epoch, tbx_error *err);

#ifdef __cplusplus
}
#endif
#endif
