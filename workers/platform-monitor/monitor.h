/*
 * monitor.h - the platform monitor daemon's state, shared by its files:
 * main.c (flags, configuration, logging), loop.c (the main loop), process title via toolbox/proctitle.h.
 */
#ifndef PLATFORM_MONITOR_H
#define PLATFORM_MONITOR_H

#include <libpq-fe.h>
#include <stddef.h>

#include "broker.h"
#include "monitor_db.h"
#include "proctitle.h"
#include "toolbox/config.h"

typedef struct monitor {
    tbx_config *cfg;              /* owned */
    char name[256];               /* connection name: platform-monitor@host */
    const char *queue;            /* the platform queue (cfg) */
    size_t batch_size;            /* monitor.batch_size */
    double batch_s;               /* monitor.batch_ms / 1000 */
    int prefetch;                 /* >= batch_size */
    size_t max_body;              /* max_message_bytes */
    long long max_messages;       /* 0: run until stopped */

    /* broker */
    tbx_broker *b;
    unsigned gen;                 /* connection generation: tags of an older one are dead */
    int consuming;
    amqp_bytes_t ctag;
    double reconnect_at, reconnect_delay;

    /* database */
    PGconn *db;
    double db_retry_at, db_delay;
    double db_timeout;              /* database_timeout: longest wait for a batch's answer */
    int db_down;                  /* a failure is being retried */

    /* batches: `fill` collects deliveries; `flight` is being committed (or waits to be re-sent) */
    tbx_mon_batch *fill, *flight;
    unsigned fill_gen, flight_gen;
    double fill_since;            /* monotonic time of fill's first entry */
    int flight_sent;
    double flight_at;             /* when it was sent */
    double db_busy;               /* seconds the database spent on batches */
    unsigned long long batches;

    /* counters */
    unsigned long long received, recorded, duplicates, parked, acked, refused;
    double first_delivery, last_ack;

    int stopping;                 /* 1 warm, 2 cold */
    double stop_deadline;
    int sigpipe[2];

    /* process title */
    tbx_proctitle title;
} monitor;

int monitor_run(monitor *m);

#endif
