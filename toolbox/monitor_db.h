/*
 * monitor_db.h - the platform monitor's parts in libtoolbox: turning a delivery into a task row
 * and/or a parked message (monitor_parse.c), writing them in batches with get-or-create
 * (monitor_batch.c), and creating the tables with their grants (monitor_schema.c). Internal:
 * uses rabbitmq-c and libpq types. See toolbox/monitor.h for the tables.
 */
#ifndef TOOLBOX_MONITOR_DB_H
#define TOOLBOX_MONITOR_DB_H

#include <amqp.h>
#include <libpq-fe.h>
#include <stdint.h>

#include "internal.h"
#include "toolbox/config.h"
#include "toolbox/monitor.h"

/* ---- schema ---------------------------------------------------------------------------------- */

/* Create the monitor's tables (idempotent, serialised with setup's advisory lock) on c, connected as
 * the owner, and when cfg's database_admin_url and result_backend name different roles, grant the
 * result_backend role SELECT, INSERT on both tables. */
tbx_status tbx_monitor_setup(PGconn *c, const tbx_config *cfg, tbx_error *err);

/* ---- one delivery ---------------------------------------------------------------------------- */

/* A borrowed view of one delivery. */
typedef struct tbx_mon_delivery {
    const amqp_basic_properties_t *props;
    const void *body;
    size_t len;
    amqp_bytes_t exchange;
    amqp_bytes_t routing_key;
    int redelivered;
    uint64_t tag;
} tbx_mon_delivery;

/* A task row. Strings are malloc'd and owned; NULL means SQL NULL. */
typedef struct tbx_mon_task {
    char id[TBX_MONITOR_ID_LEN + 1];
    char *task_id;
    char *type;
    char *input;   /* JSON text {"args": [...], "kwargs": {...}}, or NULL */
    char *options; /* JSON text */
    char *parent_id;
    char *root_id;
    char *creator_id;
    char *related_object_id;
    long long related_ct; /* related_content_type_id, when has_related_ct */
    int has_related_ct;
    int retries;          /* the retries header, for logs */
} tbx_mon_task;

/* A message set aside. Strings malloc'd and owned; NULL means SQL NULL. */
typedef struct tbx_mon_parked {
    char id[TBX_MONITOR_ID_LEN + 1];
    char *reason;
    char *task_id;
    char *routing_key;
    char *exchange;
    char *properties; /* JSON text */
    char *headers;    /* JSON text */
    int redelivered;
    char digest[17];  /* hex FNV-1a 64 of headers and body: a redelivered copy is parked once */
    int dedupe;       /* a copy (redelivered, or moved aside by a worker): parked only when no row with
                         this digest exists and the batch parks no first copy of it */
} tbx_mon_parked;

/* What one delivery becomes: a task row, a parked message, or both (a task whose body could not be
 * read is recorded without input, and the message is parked with the reason). */
typedef struct tbx_mon_entry {
    uint64_t tag;
    int has_task;
    int has_parked;
    tbx_mon_task task;
    tbx_mon_parked parked;
    unsigned char *body; /* copy of the raw body (parked rows and the per-row fallback use it) */
    size_t body_len;
} tbx_mon_entry;

/* Turn d into *out (zeroed first). Never fails on input: anything unreadable becomes a parked
 * message with its reason. max_body: bodies beyond it are not parsed (0: no limit). Only TBX_ENOMEM
 * is returned as an error. On error *out is cleared. */
tbx_status tbx_mon_parse(const tbx_mon_delivery *d, size_t max_body, tbx_mon_entry *out, tbx_error *err);
void tbx_mon_entry_clear(tbx_mon_entry *e);

/* ---- batches --------------------------------------------------------------------------------- */

typedef struct tbx_mon_batch tbx_mon_batch;

/* What became of an entry once its batch committed. */
typedef enum tbx_mon_fate {
    TBX_MON_PENDING = 0,
    TBX_MON_RECORDED,   /* a new task row (and a parked copy if has_parked) */
    TBX_MON_DUPLICATE,  /* its task id was already recorded: nothing changed (a parked copy may be new) */
    TBX_MON_PARKED      /* parked only (no task row, or the task row was refused by the database) */
} tbx_mon_fate;

tbx_mon_batch *tbx_mon_batch_new(void);
void tbx_mon_batch_free(tbx_mon_batch *b); /* NULL ok */
/* Drop every entry and reset the batch (keeps its memory). */
void tbx_mon_batch_reset(tbx_mon_batch *b);

/* Move *e into the batch (on success *e is zeroed). 0 ok, -1 ENOMEM (e untouched). */
int tbx_mon_batch_add(tbx_mon_batch *b, tbx_mon_entry *e);
size_t tbx_mon_batch_len(const tbx_mon_batch *b);
const tbx_mon_entry *tbx_mon_batch_at(const tbx_mon_batch *b, size_t i);
tbx_mon_fate tbx_mon_batch_fate(const tbx_mon_batch *b, size_t i);
uint64_t tbx_mon_batch_last_tag(const tbx_mon_batch *b);

/* Totals of the last commit. */
typedef struct tbx_mon_counts {
    size_t recorded;   /* new task rows */
    size_t duplicates; /* task messages whose id was already recorded */
    size_t parked;     /* parked rows written */
    size_t refused;    /* task rows the database refused (parked instead, with its reason) */
} tbx_mon_counts;

/* Prepare the batch statement on a new connection c (once per connection, before any send). Fails
 * with TBX_EDB when the tables are missing ("run toolbox setup") or the role may not use them. */
tbx_status tbx_mon_prepare(PGconn *c, tbx_error *err);

/* Asynchronous commit: one statement (both inserts, one transaction) is sent on c, which must have
 * no other query in progress. Then poll c's socket and call tbx_mon_batch_ready until it returns 1
 * (0: not yet; -1: the connection failed, call tbx_mon_batch_finish to learn why), and then
 * tbx_mon_batch_finish. */
tbx_status tbx_mon_batch_send(tbx_mon_batch *b, PGconn *c, tbx_error *err);
int tbx_mon_batch_ready(tbx_mon_batch *b, PGconn *c);

/* Read the outcome. TBX_OK: everything is committed (fates and *counts set). When the database
 * refuses the batch because of one entry's data (SQLSTATE classes 22, 23, 54), the entries are
 * written one by one and those it still refuses are parked with the server's reason, so one bad
 * message never blocks the others. TBX_EDB: nothing is known to be committed (the connection was
 * lost, or another error such as a missing table or privilege); the batch is unchanged and can be
 * sent again: get-or-create makes a repeat harmless. */
tbx_status tbx_mon_batch_finish(tbx_mon_batch *b, PGconn *c, tbx_mon_counts *counts, tbx_error *err);

/* Synchronous send + finish. */
tbx_status tbx_mon_batch_commit(tbx_mon_batch *b, PGconn *c, tbx_mon_counts *counts, tbx_error *err);

#endif
