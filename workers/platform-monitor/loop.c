/*
 * loop.c - the platform monitor's main loop.
 *
 * One thread owns the broker connection (one channel, one consumer on the platform queue) and the
 * database connection. Each turn: read broker frames without blocking and turn each delivery into a
 * task row and/or a parked message in the `fill` batch; when the database is idle and the fill batch
 * is due, send it as one statement (get-or-create, asynchronous) and keep reading deliveries while it
 * runs; when its result arrives, acknowledge every message up to its highest delivery tag in one
 * multiple ack. Nothing is acknowledged before its row is committed. Then poll() on the broker
 * socket, the database socket and the signal pipe, or until the next deadline.
 *
 * Faults: a lost database keeps the batch (and everything after it) unacknowledged; the monitor
 * reconnects with a doubling backoff and sends the batch again (a repeat changes nothing). A lost
 * broker drops what was received on that connection (the broker redelivers it), reconnects with a
 * backoff, redeclares the topology and consumes again.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "monitor.h"
#include "pg.h"
#include "toolbox/log.h"
#include "topology.h"

#define STOP_GRACE 30.0    /* seconds a warm stop may wait for the database */
#define STATS_EVERY 60.0   /* seconds between progress lines in the log */

static monitor *sig_monitor;

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char c = (unsigned char)sig;
    if (sig_monitor && sig_monitor->sigpipe[1] >= 0) {
        ssize_t r = write(sig_monitor->sigpipe[1], &c, 1);
        (void)r;
    }
    errno = saved;
}

/* ---- broker -------------------------------------------------------------------------------------- */

static tbx_status connect_broker(monitor *m, tbx_error *err)
{
    /* broker_url, heartbeat, connect timeout and the broker_ssl_* keys of amqps:// */
    tbx_status st = tbx_broker_open_cfg(&m->b, m->cfg, m->name, err);
    if (st)
        return st;
    m->gen++;
    amqp_connection_state_t c = m->b->conn;
    if ((st = tbx_topology_declare(m->b, m->cfg, err)))
        goto fail;
    amqp_basic_qos(c, m->b->channel, 0, (uint16_t)m->prefetch, 0);
    if ((st = tbx_broker_check(m->b, amqp_get_rpc_reply(c), "setting the prefetch", err)))
        goto fail;
    amqp_basic_consume_ok_t *ok = amqp_basic_consume(c, m->b->channel, amqp_cstring_bytes(m->queue),
                                                     amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
    if ((st = tbx_broker_check(m->b, amqp_get_rpc_reply(c), "starting to consume", err)))
        goto fail;
    amqp_bytes_free(m->ctag);
    m->ctag = amqp_bytes_malloc_dup(ok->consumer_tag);
    m->consuming = 1;
    m->reconnect_delay = 1;
    return TBX_OK;
fail:
    tbx_broker_close(m->b);
    m->b = NULL;
    return st;
}

static void broker_lost(monitor *m, const char *why)
{
    double wait = tbx_backoff(&m->reconnect_delay);
    tbx_log(TBX_LOG_ERROR, "broker connection lost: %s; reconnecting in %.1f s", why, wait);
    tbx_broker_close(m->b);
    m->b = NULL;
    m->consuming = 0;
    /* What this connection delivered and we did not acknowledge comes back from the broker. */
    tbx_mon_batch_reset(m->fill);
    m->reconnect_at = tbx_mono() + wait;
}

static void nack_requeue(monitor *m, uint64_t tag)
{
    if (m->b && !m->b->broken && m->b->channel)
        amqp_basic_nack(m->b->conn, m->b->channel, tag, 0, 1);
}

static void on_delivery(monitor *m, const amqp_basic_deliver_t *d, const amqp_message_t *msg)
{
    double now = tbx_mono();
    if (m->received++ == 0)
        m->first_delivery = now;
    tbx_mon_delivery dv = {&msg->properties, msg->body.bytes, msg->body.len, d->exchange,
                           d->routing_key, d->redelivered, d->delivery_tag};
    tbx_mon_entry e;
    tbx_error err = {0};
    if (tbx_mon_parse(&dv, m->max_body, &e, &err)) {
        tbx_log(TBX_LOG_ERROR, "%s; the message goes back to the queue", err.msg);
        nack_requeue(m, d->delivery_tag);
        return;
    }
    if (tbx_mon_batch_len(m->fill) == 0) {
        m->fill_since = now;
        m->fill_gen = m->gen;
    }
    if (tbx_mon_batch_add(m->fill, &e)) {
        tbx_log(TBX_LOG_ERROR, "out of memory batching a message; it goes back to the queue");
        tbx_mon_entry_clear(&e);
        nack_requeue(m, d->delivery_tag);
    }
}

static void read_broker(monitor *m)
{
    for (int n = 0; n < 1024 && m->b; n++) {
        amqp_frame_t f;
        struct timeval zero = {0, 0};
        int rc = amqp_simple_wait_frame_noblock(m->b->conn, &f, &zero);
        if (rc == AMQP_STATUS_TIMEOUT)
            break;
        if (rc != AMQP_STATUS_OK) {
            broker_lost(m, amqp_error_string2(rc));
            return;
        }
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        switch (f.payload.method.id) {
        case AMQP_BASIC_DELIVER_METHOD: {
            amqp_basic_deliver_t *d = f.payload.method.decoded;
            amqp_message_t msg;
            amqp_rpc_reply_t r = amqp_read_message(m->b->conn, f.channel, &msg, 0);
            if (r.reply_type != AMQP_RESPONSE_NORMAL) {
                broker_lost(m, "reading a delivery failed");
                return;
            }
            on_delivery(m, d, &msg);
            amqp_destroy_message(&msg);
            break;
        }
        case AMQP_BASIC_CANCEL_METHOD:
            broker_lost(m, "the broker cancelled our consumer (queue deleted?)");
            return;
        case AMQP_CHANNEL_CLOSE_METHOD:
        case AMQP_CONNECTION_CLOSE_METHOD: {
            amqp_rpc_reply_t r = {.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION, .reply = f.payload.method};
            tbx_error err = {0};
            tbx_broker_check(m->b, r, "consuming", &err);
            broker_lost(m, err.msg);
            return;
        }
        default:
            break;
        }
    }
    if (m->b)
        amqp_maybe_release_buffers(m->b->conn);
}

/* ---- database ------------------------------------------------------------------------------------ */

/* libpq's notices (e.g. "terminating connection due to administrator command") go to the log. */
static void on_notice(void *arg, const char *message)
{
    (void)arg;
    char line[512];
    snprintf(line, sizeof line, "%s", message);
    line[strcspn(line, "\n")] = '\0';
    tbx_log(TBX_LOG_WARNING, "database: %s", line);
}

static tbx_status connect_db(monitor *m, tbx_error *err)
{
    tbx_status st = tbx_pg_connect(tbx_monitor_db_url(m->cfg), "platform-monitor", &m->db, err);
    if (st)
        return st;
    PQsetNoticeProcessor(m->db, on_notice, NULL);
    /* Text parameters are UTF-8; a stuck statement is retried rather than waited for forever. */
    st = tbx_pg_exec(m->db, "SET client_encoding = 'UTF8'; SET statement_timeout = '60s'",
                     "configuring the session", err);
    if (!st)
        st = tbx_mon_prepare(m->db, err);
    if (st) {
        PQfinish(m->db);
        m->db = NULL;
    }
    return st;
}

static void db_failed(monitor *m, const char *msg, double now)
{
    if (m->db && PQstatus(m->db) == CONNECTION_BAD) {
        PQfinish(m->db);
        m->db = NULL;
    }
    tbx_log(TBX_LOG_ERROR, "%s (retrying in %.1f s; nothing is acknowledged meanwhile)", msg, m->db_delay);
    m->db_down = 1;
    m->db_retry_at = now + m->db_delay + tbx_jitter(m->db_delay / 4);
    m->db_delay = fmin(m->db_delay * 2, 30);
}

static void send_flight(monitor *m, double now)
{
    tbx_error err = {0};
    if (tbx_mon_batch_send(m->flight, m->db, &err)) {
        db_failed(m, err.msg, now);
        return;
    }
    m->flight_sent = 1;
    m->flight_at = now;
}

static const char *fate_word(tbx_mon_fate f)
{
    return f == TBX_MON_RECORDED ? "recorded" : f == TBX_MON_DUPLICATE ? "already recorded" : "parked";
}

static void report_entries(const monitor *m, const tbx_mon_batch *b)
{
    (void)m;
    for (size_t i = 0; i < tbx_mon_batch_len(b); i++) {
        const tbx_mon_entry *e = tbx_mon_batch_at(b, i);
        tbx_mon_fate f = tbx_mon_batch_fate(b, i);
        if (f == TBX_MON_DUPLICATE)
            tbx_log(TBX_LOG_INFO, "task %s[%s] already recorded (retries=%d): unchanged", e->task.type,
                    e->task.task_id, e->task.retries);
        else if (f == TBX_MON_RECORDED)
            tbx_log(TBX_LOG_DEBUG, "task %s[%s] recorded", e->task.type, e->task.task_id);
        if (e->has_parked)
            tbx_log(TBX_LOG_WARNING, "message %s%s%s set aside in " TBX_MONITOR_PARKED_TABLE " (id %s): %s",
                    e->parked.task_id ? e->parked.task_id : "(no task id)", f == TBX_MON_PARKED ? "" : ", task ",
                    f == TBX_MON_PARKED ? "" : fate_word(f), e->parked.id, e->parked.reason);
    }
}

static void ack_flight(monitor *m)
{
    size_t n = tbx_mon_batch_len(m->flight);
    if (m->flight_gen != m->gen || !m->b || m->b->broken || !m->b->channel)
        return; /* those deliveries died with their connection: the broker redelivers them */
    int rc = amqp_basic_ack(m->b->conn, m->b->channel, tbx_mon_batch_last_tag(m->flight), 1);
    if (rc != AMQP_STATUS_OK) {
        tbx_error err = {0};
        tbx_broker_status(m->b, rc, "acknowledging", &err);
        tbx_log(TBX_LOG_ERROR, "%s", err.msg);
        return;
    }
    m->acked += n;
    m->last_ack = tbx_mono();
}

static void finish_flight(monitor *m, double now)
{
    tbx_error err = {0};
    tbx_mon_counts c;
    tbx_status st = tbx_mon_batch_finish(m->flight, m->db, &c, &err);
    m->flight_sent = 0;
    m->db_busy += tbx_mono() - m->flight_at;
    m->batches++;
    if (st) {
        db_failed(m, err.msg, now);
        return;
    }
    if (m->db_down) {
        tbx_log(TBX_LOG_INFO, "database back: resumed recording");
        m->db_down = 0;
    }
    m->db_delay = 0.5;
    m->recorded += c.recorded;
    m->duplicates += c.duplicates;
    m->parked += c.parked;
    m->refused += c.refused;
    report_entries(m, m->flight);
    ack_flight(m);
    tbx_mon_batch_reset(m->flight);
}

/* Start a commit when the database is free: re-send a batch that failed, or the fill batch when it
 * is full, old enough, or nothing more is arriving right now. */
static void step_db(monitor *m, double now, int drained)
{
    if (m->flight_sent)
        return;
    size_t fl = tbx_mon_batch_len(m->flight);
    if (fl && m->flight_gen != m->gen) {
        tbx_mon_batch_reset(m->flight); /* its deliveries died with their connection */
        fl = 0;
    }
    if (now < m->db_retry_at)
        return;
    if (!m->db) {
        tbx_error err = {0};
        if (connect_db(m, &err)) {
            db_failed(m, err.msg, now);
            return;
        }
        tbx_log(TBX_LOG_INFO, "reconnected to the database");
    }
    if (fl) {
        send_flight(m, now);
        return;
    }
    size_t n = tbx_mon_batch_len(m->fill);
    if (n == 0)
        return;
    if (!(n >= m->batch_size || now - m->fill_since >= m->batch_s || drained || m->stopping ||
          n >= (size_t)m->prefetch))
        return;
    tbx_mon_batch *t = m->flight;
    m->flight = m->fill;
    m->flight_gen = m->fill_gen;
    m->fill = t;
    send_flight(m, now);
}

/* ---- signals, title, stopping ------------------------------------------------------------------ */

static int setup_signals(monitor *m)
{
    if (pipe2(m->sigpipe, O_NONBLOCK | O_CLOEXEC))
        return -1;
    sig_monitor = m;
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

static void begin_stop(monitor *m, int cold, const char *why)
{
    if (cold) {
        tbx_log(TBX_LOG_WARNING, "cold shutdown (%s): leaving at once; unacknowledged messages return to the queue",
                why);
        m->stopping = 2;
        return;
    }
    if (m->stopping)
        return;
    tbx_log(TBX_LOG_INFO, "warm shutdown (%s): recording what was received, then leaving", why);
    m->stopping = 1;
    m->stop_deadline = tbx_mono() + STOP_GRACE;
}

static void handle_signals(monitor *m)
{
    unsigned char sigs[64];
    ssize_t n;
    while ((n = read(m->sigpipe[0], sigs, sizeof sigs)) > 0)
        for (ssize_t i = 0; i < n; i++) {
            const char *name = sigs[i] == SIGTERM ? "SIGTERM" : sigs[i] == SIGINT ? "SIGINT" : "SIGQUIT";
            begin_stop(m, sigs[i] == SIGQUIT || m->stopping == 1, name);
        }
}

static void cancel_consumer(monitor *m)
{
    if (!m->consuming)
        return;
    m->consuming = 0;
    if (!m->b || m->b->broken)
        return;
    /* Deliveries racing the cancel are queued by rabbitmq-c; read_broker records them. */
    amqp_basic_cancel(m->b->conn, m->b->channel, m->ctag);
    tbx_error err = {0};
    if (tbx_broker_check(m->b, amqp_get_rpc_reply(m->b->conn), "cancelling the consumer", &err))
        tbx_log(TBX_LOG_ERROR, "%s", err.msg);
}

static double rate(const monitor *m)
{
    double dt = m->last_ack - m->first_delivery;
    return dt > 0 ? (double)m->acked / dt : 0;
}

static void update_title(monitor *m)
{
    const char *state = m->stopping ? "stopping" : !m->b ? "broker-down" : m->db_down ? "database-down" : "running";
    tbx_proctitle_set(&m->title, "platform-monitor: %s recorded=%llu duplicates=%llu parked=%llu pending=%zu queue=%s", state,
              m->recorded, m->duplicates, m->parked, tbx_mon_batch_len(m->fill) + tbx_mon_batch_len(m->flight),
              m->queue);
}

static int stop_done(monitor *m, double now)
{
    if (m->stopping == 2)
        return 1;
    if (m->stopping != 1)
        return 0;
    size_t pending = tbx_mon_batch_len(m->fill) + tbx_mon_batch_len(m->flight);
    if (!m->b)
        return 1; /* nothing more can be acknowledged: the broker has taken back what is pending */
    if (pending == 0 && !m->consuming && !amqp_frames_enqueued(m->b->conn) && !amqp_data_in_buffer(m->b->conn))
        return 1;
    if (now >= m->stop_deadline) {
        tbx_log(TBX_LOG_WARNING, "%zu messages not recorded after %.0f s (database unavailable?): leaving them "
                "unacknowledged; the broker delivers them again", pending, STOP_GRACE);
        return 1;
    }
    return 0;
}

/* One start-up attempt (tbx_retry_startup): the database, then the broker. */
static tbx_status startup_attempt(void *ud, tbx_error *err)
{
    monitor *m = ud;
    tbx_status st = m->db ? TBX_OK : connect_db(m, err);
    return st ? st : connect_broker(m, err);
}

/* ---- the loop ------------------------------------------------------------------------------------ */

int monitor_run(monitor *m)
{
    tbx_error err = {0};
    srand((unsigned)(getpid() ^ (unsigned)time(NULL)));
    if (setup_signals(m)) {
        tbx_log(TBX_LOG_ERROR, "cannot set up signal handling: %s", strerror(errno));
        return 1;
    }
    m->fill = tbx_mon_batch_new();
    m->flight = tbx_mon_batch_new();
    if (!m->fill || !m->flight) {
        tbx_log(TBX_LOG_ERROR, "out of memory");
        return 1;
    }
    m->db_delay = 0.5;
    m->db_timeout = tbx_config_double(m->cfg, "database_timeout");
    m->reconnect_delay = 1;
    int up = tbx_retry_startup(tbx_config_double(m->cfg, "startup_retry"), m->sigpipe[0], startup_attempt, m, &err);
    if (up) {
        if (up < 0)
            tbx_log(TBX_LOG_ERROR, "%s", err.msg);
        else
            tbx_log(TBX_LOG_INFO, "stopped by a signal while connecting at start-up");
        PQfinish(m->db);
        m->db = NULL;
        tbx_mon_batch_free(m->fill);
        tbx_mon_batch_free(m->flight);
        return up < 0 ? 1 : 0;
    }
    tbx_log(TBX_LOG_INFO, "%s ready: queue %s, batches of %zu messages or %.0f ms, prefetch %d", m->name, m->queue,
            m->batch_size, m->batch_s * 1000, m->prefetch);
    double last_title = 0, last_stats = tbx_mono();
    unsigned long long stats_seen = 0;
    int rc = 0;
    for (;;) {
        double now = tbx_mono();
        handle_signals(m);
        if (!m->stopping && m->max_messages > 0 && (long long)m->acked >= m->max_messages)
            begin_stop(m, 0, "--max-messages reached");
        if (m->stopping == 1)
            cancel_consumer(m);
        if (stop_done(m, now))
            break;
        if (!m->b && !m->stopping && now >= m->reconnect_at) {
            if (connect_broker(m, &err)) {
                double wait = tbx_backoff(&m->reconnect_delay);
                tbx_log(TBX_LOG_ERROR, "%s (retrying in %.1f s)", err.msg, wait);
                m->reconnect_at = now + wait;
            } else {
                tbx_log(TBX_LOG_INFO, "reconnected to the broker: consuming %s again", m->queue);
            }
        }
        if (m->b)
            read_broker(m);
        int drained = !m->b || (!amqp_data_in_buffer(m->b->conn) && !amqp_frames_enqueued(m->b->conn));
        now = tbx_mono();
        if (m->flight_sent && m->db) {
            int r = tbx_mon_batch_ready(m->flight, m->db);
            if (r != 0) {
                finish_flight(m, now);
            } else if (now - m->flight_at > m->db_timeout) {
                /* A silent link (TCP still ACKs, nothing answers): give the connection up; the batch is
                 * sent again on a new one (a repeat changes nothing). */
                char why[160];
                snprintf(why, sizeof why, "the database did not answer a batch within %.0f s (database_timeout): "
                         "connection given up", m->db_timeout);
                PQfinish(m->db);
                m->db = NULL;
                m->flight_sent = 0;
                db_failed(m, why, now);
            }
        }
        step_db(m, now, drained);
        if (now - last_title >= 1) {
            update_title(m);
            last_title = now;
        }
        if (now - last_stats >= STATS_EVERY) {
            if (m->received != stats_seen)
                tbx_log(TBX_LOG_INFO, "received %llu: recorded %llu, already recorded %llu, parked %llu",
                        m->received, m->recorded, m->duplicates, m->parked);
            stats_seen = m->received;
            last_stats = now;
        }
        /* Wait for the broker, the database, a signal, or the next deadline. */
        if (m->b && !m->b->broken && (amqp_data_in_buffer(m->b->conn) || amqp_frames_enqueued(m->b->conn)))
            continue;
        struct pollfd pfds[3];
        int nf = 0, dbfd = -1;
        pfds[nf++] = (struct pollfd){.fd = m->sigpipe[0], .events = POLLIN};
        if (m->b && !m->b->broken)
            pfds[nf++] = (struct pollfd){.fd = amqp_get_sockfd(m->b->conn), .events = POLLIN};
        if (m->db && PQsocket(m->db) >= 0) {
            /* Idle, the socket only speaks when the server ends the session: notice it at once. */
            dbfd = nf;
            pfds[nf++] = (struct pollfd){.fd = PQsocket(m->db), .events = POLLIN};
        }
        double timeout = 0.25;
        if (!m->flight_sent) {
            size_t n = tbx_mon_batch_len(m->fill) + tbx_mon_batch_len(m->flight);
            if (n)
                timeout = fmin(timeout, fmax(0, (m->db_down ? m->db_retry_at : m->fill_since + m->batch_s) - now));
        }
        if (!m->b && !m->stopping)
            timeout = fmin(timeout, fmax(0, m->reconnect_at - now));
        int pr = poll(pfds, (nfds_t)nf, (int)ceil(timeout * 1000));
        if (pr < 0 && errno != EINTR) {
            tbx_log(TBX_LOG_ERROR, "poll: %s", strerror(errno));
            rc = 1;
            break;
        }
        if (pr > 0 && dbfd >= 0 && !m->flight_sent && (pfds[dbfd].revents & (POLLIN | POLLHUP | POLLERR)) &&
            (!PQconsumeInput(m->db) || PQstatus(m->db) == CONNECTION_BAD)) {
            PQfinish(m->db);
            m->db = NULL;
            db_failed(m, "database connection lost while idle", tbx_mono());
        }
    }
    if (m->b) {
        if (m->stopping == 2)
            m->b->broken = 1; /* cold: drop the socket; the broker takes back what is unacknowledged */
        tbx_broker_close(m->b);
        m->b = NULL;
    }
    PQfinish(m->db);
    m->db = NULL;
    tbx_log(TBX_LOG_INFO,
            "%s stopped: %llu messages received, %llu acknowledged (%.1f/s), recorded %llu, already recorded "
            "%llu, parked %llu (task rows refused by the database %llu); %llu database commits (%.2f s)",
            m->name, m->received, m->acked, rate(m), m->recorded, m->duplicates, m->parked, m->refused,
            m->batches, m->db_busy);
    tbx_mon_batch_free(m->fill);
    tbx_mon_batch_free(m->flight);
    amqp_bytes_free(m->ctag);
    close(m->sigpipe[0]);
    close(m->sigpipe[1]);
    sig_monitor = NULL;
    return rc;
}
