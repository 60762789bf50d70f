/*
 * config_keys.c - THE table of configuration keys. Adding a key is adding one row here.
 *
 * Defaults are written in the environment syntax (lists comma-separated) and go through the same parser as
 * every other layer; config_test.c checks that each one is valid.
 */
#include "config_internal.h"

#include <float.h>
#include <limits.h>
#include <string.h>

#define NOMAX LLONG_MAX  /* int: no upper bound */
#define DNOMAX DBL_MAX   /* double: no upper bound */
#define NAMEMAX 255      /* AMQP short string: exchange, queue and routing-key names */
#define TEXTMAX 4096     /* free text: paths, commands, URLs */
#define QNAME_FORBID ".#*" /* service queue names are routing-key words */
#define URL_PG "postgresql|postgres|db+postgresql|db+postgres"

/* name, default, minimum and maximum length, forbidden characters, doc */
#define KEY_STR(n, d, lo, hi, forbid, doc) {n, TBX_CFG_STRING, d, lo, hi, 0, 0, NULL, forbid, 0, doc}
/* name, default, minimum, maximum, doc */
#define KEY_INT(n, d, lo, hi, doc) {n, TBX_CFG_INT, #d, lo, hi, 0, 0, NULL, NULL, 0, doc}
/* name, default, minimum, maximum, flags (TBX_CFGF_GT_MIN), doc */
#define KEY_DBL(n, d, lo, hi, fl, doc) {n, TBX_CFG_DOUBLE, #d, 0, 0, lo, hi, NULL, NULL, fl, doc}
/* name, default (true or false), doc */
#define KEY_BOOL(n, d, doc) {n, TBX_CFG_BOOL, #d, 0, 0, 0, 0, NULL, NULL, 0, doc}
/* name, default, '|'-separated choices, doc */
#define KEY_ENUM(n, d, choices, doc) {n, TBX_CFG_ENUM, d, 0, 0, 0, 0, choices, NULL, 0, doc}
/* name, default (comma-separated), maximum item length, forbidden characters, doc; items non-empty, distinct */
#define KEY_LIST(n, d, hi, forbid, doc) {n, TBX_CFG_LIST, d, 1, hi, 0, 0, NULL, forbid, TBX_CFGF_UNIQUE, doc}
/* name, default, '|'-separated schemes, flags (TBX_CFGF_EMPTY_OK), doc; always secret */
#define KEY_URL(n, d, schemes, fl, doc) \
    {n, TBX_CFG_URL, d, 0, TEXTMAX, 0, 0, schemes, NULL, TBX_CFGF_SECRET | (fl), doc}

const tbx_cfg_key tbx_cfg_keys[] = {
    KEY_URL("broker_url", "amqp://guest:guest@localhost:5672//", "amqp|amqps", 0,
            "RabbitMQ broker URI (amqp:// or amqps://)"),
    KEY_URL("result_backend", "postgresql://worker:cadasta@localhost:5432/cadasta", URL_PG, 0,
            "PostgreSQL result database URI used by workers (libpq URI; db+postgresql:// accepted)"),
    KEY_URL("broker_management_url", "", "http|https", TBX_CFGF_EMPTY_OK,
            "RabbitMQ management API (read by the conformance suite); empty = http(s)://<broker host>:15672(1)"),
    KEY_URL("database_admin_url", "", URL_PG, TBX_CFGF_EMPTY_OK,
            "PostgreSQL URI for DDL and grants by `toolbox setup`; empty = use result_backend"),
    KEY_STR("task_default_exchange", "task_exchange", 1, NAMEMAX, NULL, "exchange tasks are published to"),
    KEY_ENUM("task_default_exchange_type", "topic", "topic|direct|fanout|headers", "type of the task exchange"),
    KEY_STR("task_default_queue", "celery", 1, NAMEMAX, NULL, "queue of tasks that name no service"),
    KEY_STR("platform_queue", "platform.fifo", 1, NAMEMAX, NULL,
            "queue receiving a copy of every task message (platform monitor)"),
    KEY_LIST("queues", "msg,export", NAMEMAX, QNAME_FORBID, "service queues (routing-key prefixes)"),
    KEY_BOOL("task_track_started", true, "report the STARTED state when a worker begins a task"),
    KEY_INT("chord_unlock_max_retries", 21600, 0, 1000000000, "retry bound of self-retrying tasks (chord_unlock)"),
    KEY_ENUM("setup_on_error", "fail", "fail|log", "what `toolbox setup` does when a step fails"),
    KEY_BOOL("result_extended", false, "store task name, args and kwargs with results"),
    KEY_DBL("task_default_retry_delay", 180, 0, 31536000, 0, "seconds before a task retry"),
    KEY_INT("task_max_retries", 3, -1, 1000000, "retries of a failing task; -1 = unlimited"),
    KEY_INT("task_default_priority", 0, 0, 255, "priority of published tasks"),
    KEY_INT("broker_heartbeat", 30, 0, 3600, "AMQP heartbeat in seconds; 0 = off"),
    KEY_DBL("broker_connect_timeout", 5, 0, 600, TBX_CFGF_GT_MIN, "seconds to wait for a broker connection"),
    KEY_DBL("database_timeout", 60, 0, 86400, TBX_CFGF_GT_MIN,
            "seconds a worker or the monitor waits for the database to answer a statement before it gives the "
            "connection up and retries on a new one"),
    KEY_DBL("startup_retry", 60, 0, 86400, 0,
            "seconds a worker or the monitor keeps retrying an unreachable broker or database at start-up; 0 = give up at once"),
    KEY_STR("broker_ssl_ca_file", "", 0, TEXTMAX, NULL,
            "amqps://: PEM file of the CAs trusted to sign the broker's certificate; empty = the system's CAs"),
    KEY_STR("broker_ssl_cert_file", "", 0, TEXTMAX, NULL,
            "amqps://: PEM client certificate (chain) shown to the broker; empty = none"),
    KEY_STR("broker_ssl_key_file", "", 0, TEXTMAX, NULL,
            "amqps://: PEM private key (unencrypted) of broker_ssl_cert_file; empty = in broker_ssl_cert_file"),
    KEY_BOOL("broker_ssl_verify", true,
             "amqps://: verify the broker's certificate and host name; false is insecure (testing only)"),
    KEY_INT("broker_confirm_window", 256, 1, 65535, "publisher confirms awaited at most at once"),
    KEY_INT("max_message_bytes", 16777216, 1024, 536870912, "largest message body accepted or sent"),
    KEY_INT("worker.concurrency", 2, 1, 256, "tasks a worker runs at once"),
    KEY_INT("worker.prefetch", 0, 0, 65535,
            "unacknowledged messages per worker; 0 = max(2 x result_batch, 4 x concurrency); lower it for long tasks"),
    KEY_INT("worker.max_tasks", 0, 0, NOMAX, "tasks before a worker exits; 0 = unlimited"),
    KEY_DBL("worker.max_duration", 0, 0, DNOMAX, 0, "seconds before a worker exits; 0 = unlimited"),
    KEY_STR("worker.hostname", "", 0, NAMEMAX, NULL, "worker node name; empty = celery@<host>"),
    KEY_LIST("worker.queues", "", NAMEMAX, NULL, "queues to consume; empty = the service's own queue"),
    KEY_DBL("worker.eta_hold_max", 1200, 1, 1500, 0,
            "seconds: a task whose eta is further away is parked in a delay queue instead of held unacked"),
    KEY_INT("worker.park_min_ttl", 600, 1, 86400, "seconds: the shortest delay queue (others are 2^k times longer)"),
    KEY_STR("worker.state_dir", "/var/tmp/toolbox-worker", 0, TEXTMAX, NULL,
            "where the worker counts redeliveries of unfinished tasks; empty = do not count"),
    KEY_INT("worker.max_redeliveries", 5, 0, 1000000,
            "a task redelivered unfinished more often is set aside (FAILURE, rejected); 0 = never"),
    KEY_INT("worker.result_batch", 128, 1, 10000, "results written per database transaction at most"),
    KEY_STR("worker.alert_command", "", 0, TEXTMAX, NULL, "shell command run on worker alerts; empty = none"),
    KEY_URL("monitor.database_url", "", URL_PG, TBX_CFGF_EMPTY_OK,
            "platform monitor's own database role (its tables only); empty = result_backend"),
    KEY_INT("monitor.batch_size", 256, 1, 100000, "platform monitor: messages per database batch at most"),
    KEY_INT("monitor.batch_ms", 50, 1, 60000, "platform monitor: milliseconds a batch may wait to fill"),
    KEY_URL("export.data_url", "", URL_PG, TBX_CFGF_EMPTY_OK,
            "export-worker: database to export from (empty: database_admin_url, else result_backend)"),
    KEY_STR("export.dir", "/tmp/toolbox-exports", 1, TEXTMAX, NULL, "export-worker: directory of the CSV files it writes"),
    KEY_ENUM("log.level", "info", "debug|info|warning|error", "least severe level logged"),
    KEY_STR("log.file", "", 0, TEXTMAX, NULL, "log file; empty = standard error"),
    KEY_INT("log.max_bytes", 10485760, 0, NOMAX, "log file size before rotation; 0 = never rotate"),
    KEY_INT("log.backups", 5, 0, 100, "rotated log files kept"),
};

const size_t tbx_cfg_nkeys = sizeof tbx_cfg_keys / sizeof tbx_cfg_keys[0];

long tbx_cfg_find(const char *name, size_t len)
{
    for (size_t i = 0; i < tbx_cfg_nkeys; i++) {
        const char *k = tbx_cfg_keys[i].name;
        if (strlen(k) == len && memcmp(k, name, len) == 0)
            return (long)i;
    }
    return -1;
}

/* Does the variable suffix v[0..len) spell key k (upper case, '.' as '_')? */
static int env_matches(const char *k, const char *v, size_t len)
{
    size_t i = 0;
    for (; i < len && k[i]; i++) {
        char c = k[i];
        if (c == '.')
            c = '_';
        else if (c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        if (c != v[i])
            return 0;
    }
    return i == len && k[i] == '\0';
}

long tbx_cfg_find_env(const char *name, size_t len)
{
    for (size_t i = 0; i < tbx_cfg_nkeys; i++)
        if (env_matches(tbx_cfg_keys[i].name, name, len))
            return (long)i;
    return -1;
}

int tbx_cfg_is_section(const char *name, size_t len)
{
    for (size_t i = 0; i < tbx_cfg_nkeys; i++) {
        const char *k = tbx_cfg_keys[i].name;
        if (strlen(k) > len && memcmp(k, name, len) == 0 && k[len] == '.')
            return 1;
    }
    return 0;
}
