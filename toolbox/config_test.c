/* config_test.c - unit tests of the configuration module (no services needed). */
#include "toolbox/config.h"
#include "config_internal.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

/* ---- helpers ------------------------------------------------------------------------------------------ */

static tbx_config *new_cfg(void)
{
    tbx_config *cfg = tbx_config_new();
    ck_assert_ptr_nonnull(cfg);
    return cfg;
}

static tbx_status load(tbx_config *cfg, const char *yaml, tbx_error *err)
{
    return tbx_config_load_yaml(cfg, "t.yaml", yaml, strlen(yaml), err);
}

static void load_ok(tbx_config *cfg, const char *yaml)
{
    tbx_error err = {0};
    tbx_status st = load(cfg, yaml, &err);
    ck_assert_msg(st == TBX_OK, "load failed: %s", err.msg);
}

/* Loading yaml fails with TBX_ECONFIG and exactly msg, and leaves cfg unchanged. */
static void load_fails(const char *yaml, const char *msg)
{
    tbx_config *cfg = new_cfg();
    tbx_error err = {0};
    ck_assert_int_eq(load(cfg, yaml, &err), TBX_ECONFIG);
    ck_assert_int_eq(err.code, TBX_ECONFIG);
    ck_assert_str_eq(err.msg, msg);
    ck_assert_ptr_null(strchr(err.msg, '\n'));
    for (size_t i = 0; i < tbx_config_key_count(); i++)
        ck_assert_int_eq(tbx_config_source_of(cfg, tbx_config_key_name(i)), TBX_SRC_DEFAULT);
    ck_assert_int_eq(tbx_config_int(cfg, "worker.concurrency"), 2);
    tbx_config_free(cfg);
}

static char tmpdir[64];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tbx_config_test_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static char *tmp_path(const char *name)
{
    static char buf[256];
    snprintf(buf, sizeof buf, "%s/%s", tmpdir, name);
    return buf;
}

static void write_file(const char *name, const char *text, size_t len)
{
    FILE *f = fopen(tmp_path(name), "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(text, 1, len, f), len);
    fclose(f);
}

static void remove_tmpdir(const char *const *names)
{
    for (; *names; names++)
        unlink(tmp_path(*names));
    rmdir(tmpdir);
}

/* Remove TOOLBOX_* from this (forked) test's environment so the caller's shell cannot interfere. */
static void scrub_env(void)
{
    for (;;) {
        char name[256] = "";
        for (char **e = environ; *e; e++)
            if (strncmp(*e, "TOOLBOX_", 8) == 0 && strncmp(*e, "TOOLBOX_SOURCE_DIR=", 19) != 0) {
                snprintf(name, sizeof name, "%.*s", (int)strcspn(*e, "="), *e);
                break;
            }
        if (!name[0])
            return;
        unsetenv(name);
    }
}

static void assert_text(const tbx_config *cfg, const char *key, int masked, const char *want)
{
    char *t = tbx_config_value_text(cfg, key, masked);
    ck_assert_ptr_nonnull(t);
    ck_assert_str_eq(t, want);
    free(t);
}

/* ---- defaults and the table ------------------------------------------------------------------------------ */

START_TEST(test_defaults)
{
    tbx_config *cfg = new_cfg();
    ck_assert_str_eq(tbx_config_str(cfg, "broker_url"), "amqp://guest:guest@localhost:5672//");
    ck_assert_str_eq(tbx_config_str(cfg, "result_backend"), "postgresql://worker:cadasta@localhost:5432/cadasta");
    ck_assert_str_eq(tbx_config_str(cfg, "database_admin_url"), "");
    ck_assert_str_eq(tbx_config_str(cfg, "task_default_exchange"), "task_exchange");
    ck_assert_str_eq(tbx_config_str(cfg, "task_default_exchange_type"), "topic");
    ck_assert_str_eq(tbx_config_str(cfg, "task_default_queue"), "celery");
    ck_assert_str_eq(tbx_config_str(cfg, "platform_queue"), "platform.fifo");
    ck_assert_uint_eq(tbx_config_list_len(cfg, "queues"), 2);
    ck_assert_str_eq(tbx_config_list_at(cfg, "queues", 0), "msg");
    ck_assert_str_eq(tbx_config_list_at(cfg, "queues", 1), "export");
    ck_assert_ptr_null(tbx_config_list_at(cfg, "queues", 2));
    ck_assert_int_eq(tbx_config_bool(cfg, "task_track_started"), 1);
    ck_assert_int_eq(tbx_config_int(cfg, "chord_unlock_max_retries"), 21600);
    ck_assert_str_eq(tbx_config_str(cfg, "setup_on_error"), "fail");
    ck_assert_int_eq(tbx_config_bool(cfg, "result_extended"), 0);
    ck_assert_double_eq(tbx_config_double(cfg, "task_default_retry_delay"), 180.0);
    ck_assert_int_eq(tbx_config_int(cfg, "task_max_retries"), 3);
    ck_assert_int_eq(tbx_config_int(cfg, "task_default_priority"), 0);
    ck_assert_int_eq(tbx_config_int(cfg, "broker_heartbeat"), 30);
    ck_assert_double_eq(tbx_config_double(cfg, "broker_connect_timeout"), 5.0);
    ck_assert_int_eq(tbx_config_int(cfg, "broker_confirm_window"), 256);
    ck_assert_int_eq(tbx_config_int(cfg, "max_message_bytes"), 16777216);
    ck_assert_int_eq(tbx_config_int(cfg, "worker.concurrency"), 2);
    ck_assert_int_eq(tbx_config_int(cfg, "worker.prefetch"), 0);
    ck_assert_int_eq(tbx_config_int(cfg, "worker.max_tasks"), 0);
    ck_assert_double_eq(tbx_config_double(cfg, "worker.max_duration"), 0.0);
    ck_assert_str_eq(tbx_config_str(cfg, "worker.hostname"), "");
    ck_assert_uint_eq(tbx_config_list_len(cfg, "worker.queues"), 0);
    ck_assert_int_eq(tbx_config_int(cfg, "worker.result_batch"), 128);
    ck_assert_str_eq(tbx_config_str(cfg, "worker.alert_command"), "");
    ck_assert_int_eq(tbx_config_int(cfg, "monitor.batch_size"), 256);
    ck_assert_int_eq(tbx_config_int(cfg, "monitor.batch_ms"), 50);
    ck_assert_str_eq(tbx_config_str(cfg, "log.level"), "info");
    ck_assert_str_eq(tbx_config_str(cfg, "log.file"), "");
    ck_assert_int_eq(tbx_config_int(cfg, "log.max_bytes"), 10485760);
    ck_assert_int_eq(tbx_config_int(cfg, "log.backups"), 5);
    ck_assert_ptr_null(tbx_config_file(cfg));
    for (size_t i = 0; i < tbx_config_key_count(); i++)
        ck_assert_int_eq(tbx_config_source_of(cfg, tbx_config_key_name(i)), TBX_SRC_DEFAULT);
    tbx_config_free(cfg);
    tbx_config_free(NULL);
}
END_TEST

START_TEST(test_table)
{
    ck_assert_uint_ge(tbx_config_key_count(), 33); /* the 33 of the architecture, and any added since */
    ck_assert_ptr_null(tbx_config_key_name(tbx_config_key_count()));
    ck_assert_ptr_null(tbx_config_key_doc(tbx_config_key_count()));
    tbx_config *cfg = new_cfg();
    for (size_t i = 0; i < tbx_cfg_nkeys; i++) {
        const tbx_cfg_key *k = &tbx_cfg_keys[i];
        tbx_error err = {0};
        tbx_cfg_value v = {0};
        ck_assert_msg(tbx_cfg_default(k, &v, &err) == TBX_OK, "bad default: %s", err.msg);
        tbx_cfg_value_clear(&v);
        ck_assert_str_eq(tbx_config_key_name(i), k->name);
        ck_assert_ptr_nonnull(tbx_config_key_doc(i));
        ck_assert_ptr_null(strchr(k->doc, '\n'));
        /* names and environment names are distinct */
        for (size_t j = 0; j < i; j++) {
            ck_assert_str_ne(k->name, tbx_cfg_keys[j].name);
            ck_assert_int_ne(tbx_cfg_find_env(k->name, strlen(k->name)), (long)j);
        }
        /* the displayed value reads back through the CLI layer unchanged */
        char *t = tbx_config_value_text(cfg, k->name, 0);
        ck_assert_ptr_nonnull(t);
        ck_assert_msg(tbx_config_set(cfg, k->name, t, &err) == TBX_OK, "%s: %s", k->name, err.msg);
        char *t2 = tbx_config_value_text(cfg, k->name, 0);
        ck_assert_str_eq(t, t2);
        free(t);
        free(t2);
    }
    ck_assert_int_eq(tbx_cfg_find_env("WORKER_CONCURRENCY", 18), tbx_cfg_find("worker.concurrency", 18));
    ck_assert_int_eq(tbx_cfg_find_env("worker_concurrency", 18), -1);
    tbx_config_free(cfg);
}
END_TEST

START_TEST(test_getters_wrong_key)
{
    tbx_config *cfg = new_cfg();
    ck_assert_ptr_null(tbx_config_str(cfg, "nope"));
    ck_assert_ptr_null(tbx_config_str(cfg, "worker.concurrency"));
    ck_assert_int_eq(tbx_config_int(cfg, "log.level"), 0);
    ck_assert_int_eq(tbx_config_int(cfg, "worker"), 0);
    ck_assert_double_eq(tbx_config_double(cfg, "worker.concurrency"), 0.0);
    ck_assert_int_eq(tbx_config_bool(cfg, "queues"), 0);
    ck_assert_uint_eq(tbx_config_list_len(cfg, "log.level"), 0);
    ck_assert_ptr_null(tbx_config_list_at(cfg, "log.level", 0));
    ck_assert_ptr_null(tbx_config_value_text(cfg, "nope", 1));
    ck_assert_int_eq(tbx_config_source_of(cfg, "nope"), TBX_SRC_DEFAULT);
    ck_assert_ptr_null(tbx_config_str(NULL, "broker_url"));
    ck_assert_ptr_null(tbx_config_file(NULL));
    tbx_config_free(cfg);
}
END_TEST

/* ---- file layer ---------------------------------------------------------------------------------------------- */

START_TEST(test_file_overrides)
{
    tbx_config *cfg = new_cfg();
    load_ok(cfg, "# comment\n"
                 "task_default_queue: jobs\n"
                 "task_track_started: off\n"
                 "task_max_retries: -1\n"
                 "task_default_retry_delay: 2.5\n"
                 "broker_connect_timeout: 1e-3\n"
                 "log.level: DEBUG\n"
                 "result_backend: db+postgresql://w:p@db:5432/x\n"
                 "log.file: '/var/log/x.log'\n");
    ck_assert_str_eq(tbx_config_str(cfg, "task_default_queue"), "jobs");
    ck_assert_int_eq(tbx_config_bool(cfg, "task_track_started"), 0);
    ck_assert_int_eq(tbx_config_int(cfg, "task_max_retries"), -1);
    ck_assert_double_eq(tbx_config_double(cfg, "task_default_retry_delay"), 2.5);
    ck_assert_double_eq(tbx_config_double(cfg, "broker_connect_timeout"), 1e-3);
    ck_assert_str_eq(tbx_config_str(cfg, "log.level"), "debug");
    ck_assert_str_eq(tbx_config_str(cfg, "result_backend"), "db+postgresql://w:p@db:5432/x");
    ck_assert_str_eq(tbx_config_str(cfg, "log.file"), "/var/log/x.log");
    ck_assert_int_eq(tbx_config_source_of(cfg, "task_default_queue"), TBX_SRC_FILE);
    ck_assert_int_eq(tbx_config_source_of(cfg, "platform_queue"), TBX_SRC_DEFAULT);
    ck_assert_str_eq(tbx_config_str(cfg, "platform_queue"), "platform.fifo");
    /* loading from memory does not record a file */
    ck_assert_ptr_null(tbx_config_file(cfg));
    /* a second file replaces the first's values */
    load_ok(cfg, "task_default_queue: other\n");
    ck_assert_str_eq(tbx_config_str(cfg, "task_default_queue"), "other");
    ck_assert_int_eq(tbx_config_bool(cfg, "task_track_started"), 0);
    tbx_config_free(cfg);
}
END_TEST

START_TEST(test_nested_and_flat)
{
    tbx_config *cfg = new_cfg();
    load_ok(cfg, "worker:\n"
                 "  concurrency: 4\n"
                 "  max_duration: 3600\n"
                 "monitor.batch_ms: 10\n"
                 "log: {level: error, backups: 0}\n"
                 "worker.hostname: w1@host\n");
    ck_assert_int_eq(tbx_config_int(cfg, "worker.concurrency"), 4);
    ck_assert_double_eq(tbx_config_double(cfg, "worker.max_duration"), 3600.0);
    ck_assert_int_eq(tbx_config_int(cfg, "monitor.batch_ms"), 10);
    ck_assert_str_eq(tbx_config_str(cfg, "log.level"), "error");
    ck_assert_int_eq(tbx_config_int(cfg, "log.backups"), 0);
    ck_assert_str_eq(tbx_config_str(cfg, "worker.hostname"), "w1@host");
    ck_assert_int_eq(tbx_config_source_of(cfg, "worker.concurrency"), TBX_SRC_FILE);
    tbx_config_free(cfg);
}
END_TEST

START_TEST(test_null_resets_and_empty)
{
    tbx_config *cfg = new_cfg();
    load_ok(cfg, "worker:\n  concurrency: 9\nlog.level: debug\nqueues: [a]\n");
    load_ok(cfg, "worker.concurrency:\nlog.level: ~\nqueues: null\nmonitor:\n");
    ck_assert_int_eq(tbx_config_int(cfg, "worker.concurrency"), 2);
    ck_assert_str_eq(tbx_config_str(cfg, "log.level"), "info");
    ck_assert_uint_eq(tbx_config_list_len(cfg, "queues"), 2);
    ck_assert_int_eq(tbx_config_source_of(cfg, "worker.concurrency"), TBX_SRC_DEFAULT);
    /* empty documents set nothing */
    load_ok(cfg, "");
    load_ok(cfg, "# only a comment\n");
    load_ok(cfg, "---\n...\n");
    load_ok(cfg, "{}");
    ck_assert_int_eq(tbx_config_source_of(cfg, "log.level"), TBX_SRC_DEFAULT);
    /* a quoted "~" is a string, not null */
    load_ok(cfg, "worker.hostname: '~'\n");
    ck_assert_str_eq(tbx_config_str(cfg, "worker.hostname"), "~");
    tbx_config_free(cfg);
}
END_TEST

START_TEST(test_bools_and_numbers)
{
    static const char *const yes[] = {"true", "True", "YES", "on", "1", "On"};
    static const char *const no[] = {"false", "FALSE", "no", "Off", "0"};
    tbx_config *cfg = new_cfg();
    tbx_error err;
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
        ck_assert_int_eq(tbx_config_set(cfg, "result_extended", yes[i], &err), TBX_OK);
        ck_assert_int_eq(tbx_config_bool(cfg, "result_extended"), 1);
    }
    for (size_t i = 0; i < sizeof no / sizeof *no; i++) {
        ck_assert_int_eq(tbx_config_set(cfg, "result_extended", no[i], &err), TBX_OK);
        ck_assert_int_eq(tbx_config_bool(cfg, "result_extended"), 0);
    }
    ck_assert_int_eq(tbx_config_set(cfg, "result_extended", "y", &err), TBX_ECONFIG);
    ck_assert_str_eq(err.msg, "result_extended: expected a boolean (true/false, yes/no, on/off, 1/0), got 'y'");
    /* 64-bit ints, range checked */
    ck_assert_int_eq(tbx_config_set(cfg, "log.max_bytes", "9223372036854775807", &err), TBX_OK);
    ck_assert_int_eq(tbx_config_int(cfg, "log.max_bytes"), 9223372036854775807LL);
    ck_assert_int_eq(tbx_config_set(cfg, "log.max_bytes", "9223372036854775808", &err), TBX_ECONFIG);
    ck_assert_str_eq(err.msg, "log.max_bytes: expected an integer >= 0, got '9223372036854775808'");
    ck_assert_int_eq(tbx_config_set(cfg, "log.max_bytes", "-1", &err), TBX_ECONFIG);
    ck_assert_int_eq(tbx_config_set(cfg, "log.max_bytes", "0x10", &err), TBX_ECONFIG);
    ck_assert_int_eq(tbx_config_set(cfg, "log.max_bytes", "1.0", &err), TBX_ECONFIG);
    ck_assert_int_eq(tbx_config_set(cfg, "log.max_bytes", "", &err), TBX_ECONFIG);
    ck_assert_int_eq(tbx_config_set(cfg, "log.max_bytes", " 1", &err), TBX_ECONFIG);
    ck_assert_int_eq(tbx_config_set(cfg, "task_max_retries", "-2", &err), TBX_ECONFIG);
    ck_assert_str_eq(err.msg, "task_max_retries: expected an integer between -1 and 1000000, got '-2'");
    /* doubles: bounds, exclusive lower bound, no inf/nan */
    ck_assert_int_eq(tbx_config_set(cfg, "broker_connect_timeout", "0", &err), TBX_ECONFIG);
    ck_assert_str_eq(err.msg, "broker_connect_timeout: expected a number greater than 0 and at most 600, got '0'");
    ck_assert_int_eq(tbx_config_set(cfg, "broker_connect_timeout", "600", &err), TBX_OK);
    ck_assert_int_eq(tbx_config_set(cfg, "broker_connect_timeout", "600.5", &err), TBX_ECONFIG);
    ck_assert_int_eq(tbx_config_set(cfg, "worker.max_duration", "inf", &err), TBX_ECONFIG);
    ck_assert_str_eq(err.msg, "worker.max_duration: expected a number >= 0, got 'inf'");
    ck_assert_int_eq(tbx_config_set(cfg, "worker.max_duration", "nan", &err), TBX_ECONFIG);
    ck_assert_int_eq(tbx_config_set(cfg, "worker.max_duration", "1e999", &err), TBX_ECONFIG);
    ck_assert_int_eq(tbx_config_set(cfg, "worker.max_duration", "-0.5", &err), TBX_ECONFIG);
    ck_assert_int_eq(tbx_config_set(cfg, "worker.max_duration", "-0", &err), TBX_OK);
    assert_text(cfg, "worker.max_duration", 0, "0");
    ck_assert_int_eq(tbx_config_set(cfg, "worker.max_duration", "1e6", &err), TBX_OK);
    assert_text(cfg, "worker.max_duration", 0, "1000000");
    ck_assert_int_eq(tbx_config_set(cfg, "task_default_retry_delay", "31536001", &err), TBX_ECONFIG);
    ck_assert_str_eq(err.msg, "task_default_retry_delay: expected a number between 0 and 31536000, got '31536001'");
    ck_assert_int_eq(tbx_config_set(cfg, "task_default_retry_delay", "0.1", &err), TBX_OK);
    assert_text(cfg, "task_default_retry_delay", 0, "0.1");
    tbx_config_free(cfg);
}
END_TEST

/* ---- layers ------------------------------------------------------------------------------------------------------ */

START_TEST(test_env_overrides_file)
{
    char e1[] = "TOOLBOX_WORKER_CONCURRENCY=8";
    char e2[] = "TOOLBOX_LOG_LEVEL=warning";
    char e3[] = "TOOLBOX_NOT_A_KEY=whatever";
    char e4[] = "TOOLBOX_ENV=dev";
    char e5[] = "PATH=/bin";
    char e6[] = "TOOLBOX_WORKER_CONCURRENCY=9"; /* second occurrence: ignored, as getenv would */
    char e7[] = "TOOLBOX_";
    char e8[] = "TOOLBOX_QUEUES=a, b ,c";
    char *envp[] = {e1, e2, e3, e4, e5, e6, e7, e8, NULL};
    tbx_error err = {0};

    tbx_config *cfg = new_cfg();
    load_ok(cfg, "worker:\n  concurrency: 4\nlog.level: error\nlog.backups: 7\n");
    ck_assert_int_eq(tbx_config_load_env(cfg, envp, &err), TBX_OK);
    ck_assert_int_eq(tbx_config_int(cfg, "worker.concurrency"), 8);
    ck_assert_str_eq(tbx_config_str(cfg, "log.level"), "warning");
    ck_assert_int_eq(tbx_config_int(cfg, "log.backups"), 7);
    ck_assert_uint_eq(tbx_config_list_len(cfg, "queues"), 3);
    ck_assert_str_eq(tbx_config_list_at(cfg, "queues", 1), "b");
    ck_assert_int_eq(tbx_config_source_of(cfg, "worker.concurrency"), TBX_SRC_ENV);
    ck_assert_int_eq(tbx_config_source_of(cfg, "log.backups"), TBX_SRC_FILE);
    /* a file loaded later does not override the environment */
    load_ok(cfg, "worker.concurrency: 5\nlog.backups: 1\nlog.level:\n");
    ck_assert_int_eq(tbx_config_int(cfg, "worker.concurrency"), 8);
    ck_assert_str_eq(tbx_config_str(cfg, "log.level"), "warning");
    ck_assert_int_eq(tbx_config_int(cfg, "log.backups"), 1);
    ck_assert_int_eq(tbx_config_load_env(cfg, NULL, &err), TBX_OK);
    tbx_config_free(cfg);
}
END_TEST

START_TEST(test_env_errors)
{
    char e1[] = "TOOLBOX_LOG_LEVEL=debug";
    char e2[] = "TOOLBOX_WORKER_CONCURRENCY=abc";
    char *envp[] = {e1, e2, NULL};
    tbx_error err = {0};
    tbx_config *cfg = new_cfg();
    ck_assert_int_eq(tbx_config_load_env(cfg, envp, &err), TBX_ECONFIG);
    ck_assert_str_eq(err.msg, "TOOLBOX_WORKER_CONCURRENCY: expected an integer between 1 and 256, got 'abc'");
    /* nothing applied */
    ck_assert_str_eq(tbx_config_str(cfg, "log.level"), "info");
    char e3[] = "TOOLBOX_BROKER_URL=http://user:hunter2@h/";
    char *envp2[] = {e3, NULL};
    ck_assert_int_eq(tbx_config_load_env(cfg, envp2, &err), TBX_ECONFIG);
    ck_assert_str_eq(err.msg, "TOOLBOX_BROKER_URL: expected a URL with scheme amqp or amqps, got 'http://user:****@h/'");
    char e4[] = "TOOLBOX_QUEUES=msg,,export";
    char *envp3[] = {e4, NULL};
    ck_assert_int_eq(tbx_config_load_env(cfg, envp3, &err), TBX_ECONFIG);
    ck_assert_str_eq(err.msg, "TOOLBOX_QUEUES: item 2: expected a non-empty string of at most 255 bytes "
                              "without '.', '#' or '*', got ''");
    tbx_config_free(cfg);
}
END_TEST

START_TEST(test_cli_overrides_env)
{
    char e1[] = "TOOLBOX_WORKER_CONCURRENCY=8";
    char *envp[] = {e1, NULL};
    tbx_error err = {0};
    tbx_config *cfg = new_cfg();
    ck_assert_int_eq(tbx_config_set(cfg, "worker.concurrency", "16", &err), TBX_OK);
    ck_assert_int_eq(tbx_config_load_env(cfg, envp, &err), TBX_OK);
    load_ok(cfg, "worker.concurrency: 3\n");
    ck_assert_int_eq(tbx_config_int(cfg, "worker.concurrency"), 16);
    ck_assert_int_eq(tbx_config_source_of(cfg, "worker.concurrency"), TBX_SRC_CLI);
    ck_assert_int_eq(tbx_config_set(cfg, "worker.concurrency", "17", &err), TBX_OK);
    ck_assert_int_eq(tbx_config_int(cfg, "worker.concurrency"), 17);

    ck_assert_int_eq(tbx_config_set(cfg, "worker.concurrency", "abc", &err), TBX_ECONFIG);
    ck_assert_str_eq(err.msg, "worker.concurrency: expected an integer between 1 and 256, got 'abc'");
    ck_assert_int_eq(tbx_config_int(cfg, "worker.concurrency"), 17);
    ck_assert_int_eq(tbx_config_set(cfg, "bogus", "1", &err), TBX_ECONFIG);
    ck_assert_str_eq(err.msg, "bogus: unknown key");
    ck_assert_int_eq(tbx_config_set(cfg, "worker", "1", &err), TBX_ECONFIG);
    ck_assert_int_eq(tbx_config_set(cfg, "log.level", "Warning", &err), TBX_OK);
    ck_assert_str_eq(tbx_config_str(cfg, "log.level"), "warning");
    ck_assert_int_eq(tbx_config_set(cfg, "log.level", "loud", &err), TBX_ECONFIG);
    ck_assert_str_eq(err.msg, "log.level: expected one of debug, info, warning, error, got 'loud'");
    ck_assert_int_eq(tbx_config_set(NULL, "log.level", "info", &err), TBX_EINVAL);
    ck_assert_int_eq(tbx_config_set(cfg, "log.level", NULL, NULL), TBX_EINVAL);
    tbx_config_free(cfg);
}
END_TEST

/* ---- file errors ------------------------------------------------------------------------------------------------- */

START_TEST(test_error_unknown_key)
{
    load_fails("worker.concurrency: 2\nlog:\n  level: info\nbogus: 1\n", "t.yaml:4: bogus: unknown key");
    load_fails("worker:\n  concurrency: 2\n  bogus: 1\n", "t.yaml:3: worker.bogus: unknown key");
    load_fails("worker.:\n", "t.yaml:1: worker.: unknown key");
    load_fails("'': 1\n", "t.yaml:1: : unknown key");
    load_fails("[a]: 1\n", "t.yaml:1: expected a key name, got a sequence");
    load_fails("bad\tkey\x01: 1\n", "t.yaml:1: malformed YAML: control characters are not allowed");
    load_fails("\"bad\\nkey\": 1\n", "t.yaml:1: bad\\x0akey: unknown key");
}
END_TEST

START_TEST(test_error_wrong_type)
{
    load_fails("log:\n  level: info\nworker:\n  concurrency: abc\n",
               "t.yaml:4: worker.concurrency: expected an integer between 1 and 256, got 'abc'");
    load_fails("worker.concurrency: {a: 1}\n",
               "t.yaml:1: worker.concurrency: expected an integer between 1 and 256, got a mapping");
    load_fails("task_track_started: [1]\n",
               "t.yaml:1: task_track_started: expected a boolean (true/false, yes/no, on/off, 1/0), got a sequence");
    load_fails("queues: msg\n", "t.yaml:1: queues: expected a sequence of strings, got 'msg'");
    load_fails("queues: {a: b}\n", "t.yaml:1: queues: expected a sequence of strings, got a mapping");
    load_fails("queues:\n  - msg\n  - [x]\n", "t.yaml:3: queues: item 2: expected a string, got a sequence");
    load_fails("queues:\n  - msg\n  -\n", "t.yaml:3: queues: item 2: expected a string, got null");
    load_fails("worker: 3\n", "t.yaml:1: worker: expected a mapping of worker.* keys, got '3'");
    load_fails("worker: [a]\n", "t.yaml:1: worker: expected a mapping of worker.* keys, got a sequence");
    load_fails("a: &x 1\nlog.file: *x\n", "t.yaml:1: a: unknown key");
    load_fails("log.file: &x 1\nworker.hostname: *x\n",
               "t.yaml:2: worker.hostname: expected a string of at most 255 bytes, got an alias (aliases are not "
               "supported)");
    load_fails("log.file: \"a\\0b\"\n", "t.yaml:1: log.file: expected a string of at most 4096 bytes, got a value "
                                        "containing a NUL byte");
}
END_TEST

START_TEST(test_error_range_enum_url)
{
    load_fails("worker:\n  concurrency: 257\n",
               "t.yaml:2: worker.concurrency: expected an integer between 1 and 256, got '257'");
    load_fails("worker:\n  concurrency: 0\n",
               "t.yaml:2: worker.concurrency: expected an integer between 1 and 256, got '0'");
    load_fails("max_message_bytes: 1023\n",
               "t.yaml:1: max_message_bytes: expected an integer between 1024 and 536870912, got '1023'");
    load_fails("task_default_exchange: ''\n",
               "t.yaml:1: task_default_exchange: expected a non-empty string of at most 255 bytes, got ''");
    load_fails("\n\ntask_default_exchange_type: fanfare\n",
               "t.yaml:3: task_default_exchange_type: expected one of topic, direct, fanout, headers, got 'fanfare'");
    load_fails("log.level: verbose\n", "t.yaml:1: log.level: expected one of debug, info, warning, error, got "
                                       "'verbose'");
    load_fails("broker_url: http://guest:secret@localhost:5672//\n",
               "t.yaml:1: broker_url: expected a URL with scheme amqp or amqps, got 'http://guest:****@localhost:5672//'");
    load_fails("result_backend: mysql://u:secret@h/db\n",
               "t.yaml:1: result_backend: expected a URL with scheme postgresql, postgres, db+postgresql or "
               "db+postgres, got 'mysql://u:****@h/db'");
    load_fails("database_admin_url: amqp://x\n",
               "t.yaml:1: database_admin_url: expected an empty string or a URL with scheme postgresql, postgres, "
               "db+postgresql or db+postgres, got 'amqp://x'");
    load_fails("result_backend: ''\n",
               "t.yaml:1: result_backend: expected a URL with scheme postgresql, postgres, db+postgresql or "
               "db+postgres, got ''");
    load_fails("broker_url: amqp//localhost\n",
               "t.yaml:1: broker_url: expected a URL with scheme amqp or amqps, got 'amqp//localhost'");
    /* long values are cut in messages */
    load_fails("log.level: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
               "t.yaml:1: log.level: expected one of debug, info, warning, error, got "
               "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...'");

    tbx_config *cfg = new_cfg();
    load_ok(cfg, "database_admin_url: ''\nbroker_url: AMQPS://u:p@h:5671/v\nresult_backend: postgres://h/db\n");
    ck_assert_str_eq(tbx_config_str(cfg, "broker_url"), "AMQPS://u:p@h:5671/v");
    tbx_config_free(cfg);
}
END_TEST

START_TEST(test_error_malformed)
{
    load_fails("worker:\n  concurrency: 2\n queues: [a\n",
               "t.yaml:3: malformed YAML: did not find expected key (while parsing a block mapping)");
    load_fails("log.file: 'unterminated\n", "t.yaml:2: malformed YAML: found unexpected end of stream (while scanning a "
                                     "quoted scalar)");
    load_fails("log.level: info\n\xff\xfe\n", "t.yaml:2: malformed YAML: invalid leading UTF-8 octet");
}
END_TEST

START_TEST(test_error_not_mapping)
{
    load_fails("- a\n- b\n", "t.yaml:1: expected a mapping of keys, got a sequence");
    load_fails("just text\n", "t.yaml:1: expected a mapping of keys, got 'just text'");
    load_fails("log.level: info\n---\nlog.level: debug\n", "t.yaml:2: expected one YAML document, got several");
    load_fails("&a [*a]\n", "t.yaml:1: expected a mapping of keys, got a sequence");
    load_fails("\n'amqp://u:secret@h//'\n", "t.yaml:2: expected a mapping of keys, got 'amqp://u:****@h//'");
}
END_TEST

START_TEST(test_error_duplicate)
{
    load_fails("worker.concurrency: 2\nlog.level: info\nworker:\n  concurrency: 3\n",
               "t.yaml:4: worker.concurrency: duplicate key (first set on line 1)");
    load_fails("log.level: info\nlog.level: debug\n", "t.yaml:2: log.level: duplicate key (first set on line 1)");
    load_fails("worker:\n  concurrency: 3\nlog.level: info\nworker:\n  prefetch: 3\n",
               "t.yaml:4: worker: duplicate key (first set on line 1)");
    load_fails("queues: [a, b, a]\n", "t.yaml:1: queues: item 3: 'a' repeats item 1");
    load_fails("log.level:\nlog.level: info\n", "t.yaml:2: log.level: duplicate key (first set on line 1)");
}
END_TEST

START_TEST(test_error_files)
{
    static const char *const names[] = {"big.yaml", "ok.yaml", "bad.yaml", NULL};
    make_tmpdir();
    tbx_config *cfg = new_cfg();
    tbx_error err = {0};
    char want[512];

    /* missing */
    ck_assert_int_eq(tbx_config_load_file(cfg, tmp_path("nope.yaml"), &err), TBX_ECONFIG);
    snprintf(want, sizeof want, "%s: cannot open: No such file or directory", tmp_path("nope.yaml"));
    ck_assert_str_eq(err.msg, want);
    /* a directory */
    ck_assert_int_eq(tbx_config_load_file(cfg, tmpdir, &err), TBX_ECONFIG);
    snprintf(want, sizeof want, "%s: cannot read: Is a directory", tmpdir);
    ck_assert_str_eq(err.msg, want);

    /* too large: 1 MiB of comments plus one byte */
    size_t big = TBX_CONFIG_MAX_FILE + 1;
    char *text = malloc(big);
    ck_assert_ptr_nonnull(text);
    memset(text, '#', big);
    text[big - 1] = '\n';
    write_file("big.yaml", text, big);
    ck_assert_int_eq(tbx_config_load_file(cfg, tmp_path("big.yaml"), &err), TBX_ECONFIG);
    snprintf(want, sizeof want, "%s: file is larger than 1048576 bytes", tmp_path("big.yaml"));
    ck_assert_str_eq(err.msg, want);
    ck_assert_int_eq(tbx_config_load_yaml(cfg, "mem.yaml", text, big, &err), TBX_ECONFIG);
    ck_assert_str_eq(err.msg, "mem.yaml: file is larger than 1048576 bytes");
    /* exactly 1 MiB is fine */
    ck_assert_int_eq(tbx_config_load_yaml(cfg, "mem.yaml", text, big - 1, &err), TBX_OK);
    free(text);

    /* good file: recorded */
    const char *ok = "worker:\n  concurrency: 7\n";
    write_file("ok.yaml", ok, strlen(ok));
    ck_assert_int_eq(tbx_config_load_file(cfg, tmp_path("ok.yaml"), &err), TBX_OK);
    ck_assert_int_eq(tbx_config_int(cfg, "worker.concurrency"), 7);
    ck_assert_str_eq(tbx_config_file(cfg), tmp_path("ok.yaml"));

    /* bad file: message names the path and line; config and recorded file unchanged */
    const char *bad = "# x\nworker:\n  concurrency: 1000\n";
    write_file("bad.yaml", bad, strlen(bad));
    ck_assert_int_eq(tbx_config_load_file(cfg, tmp_path("bad.yaml"), &err), TBX_ECONFIG);
    snprintf(want, sizeof want, "%s:3: worker.concurrency: expected an integer between 1 and 256, got '1000'",
             tmp_path("bad.yaml"));
    ck_assert_str_eq(err.msg, want);
    ck_assert_int_eq(tbx_config_int(cfg, "worker.concurrency"), 7);
    ck_assert_str_eq(tbx_config_file(cfg), tmp_path("ok.yaml"));

    ck_assert_int_eq(tbx_config_load_file(NULL, "x", &err), TBX_EINVAL);
    ck_assert_int_eq(tbx_config_load_yaml(cfg, NULL, NULL, 1, &err), TBX_EINVAL);
    ck_assert_int_eq(tbx_config_load_yaml(cfg, NULL, NULL, 0, &err), TBX_OK);
    tbx_config_free(cfg);
    remove_tmpdir(names);
}
END_TEST

/* ---- lists and masking --------------------------------------------------------------------------------------------- */

START_TEST(test_lists)
{
    tbx_config *cfg = new_cfg();
    tbx_error err = {0};
    load_ok(cfg, "queues:\n  - msg\n  - export\n  - geo\nworker:\n  queues: [msg, platform.fifo]\n");
    ck_assert_uint_eq(tbx_config_list_len(cfg, "queues"), 3);
    ck_assert_str_eq(tbx_config_list_at(cfg, "queues", 2), "geo");
    ck_assert_uint_eq(tbx_config_list_len(cfg, "worker.queues"), 2);
    ck_assert_str_eq(tbx_config_list_at(cfg, "worker.queues", 1), "platform.fifo");
    assert_text(cfg, "queues", 0, "msg,export,geo");
    load_ok(cfg, "worker.queues: []\n");
    ck_assert_uint_eq(tbx_config_list_len(cfg, "worker.queues"), 0);
    assert_text(cfg, "worker.queues", 0, "");

    ck_assert_int_eq(tbx_config_set(cfg, "queues", " a ,b,  c", &err), TBX_OK);
    ck_assert_uint_eq(tbx_config_list_len(cfg, "queues"), 3);
    ck_assert_str_eq(tbx_config_list_at(cfg, "queues", 0), "a");
    ck_assert_str_eq(tbx_config_list_at(cfg, "queues", 2), "c");
    ck_assert_int_eq(tbx_config_set(cfg, "worker.queues", "", &err), TBX_OK);
    ck_assert_uint_eq(tbx_config_list_len(cfg, "worker.queues"), 0);
    ck_assert_int_eq(tbx_config_set(cfg, "worker.queues", "one", &err), TBX_OK);
    ck_assert_uint_eq(tbx_config_list_len(cfg, "worker.queues"), 1);

    ck_assert_int_eq(tbx_config_set(cfg, "queues", "msg,a.b", &err), TBX_ECONFIG);
    ck_assert_str_eq(err.msg, "queues: item 2: expected a non-empty string of at most 255 bytes without '.', '#' "
                              "or '*', got 'a.b'");
    ck_assert_int_eq(tbx_config_set(cfg, "queues", "msg,", &err), TBX_ECONFIG);
    ck_assert_int_eq(tbx_config_set(cfg, "queues", "x#", &err), TBX_ECONFIG);
    ck_assert_int_eq(tbx_config_set(cfg, "queues", "msg,msg", &err), TBX_ECONFIG);
    ck_assert_str_eq(err.msg, "queues: item 2: 'msg' repeats item 1");
    ck_assert_uint_eq(tbx_config_list_len(cfg, "queues"), 3);
    load_fails("queues:\n  - ok\n  - 'a*'\n", "t.yaml:3: queues: item 2: expected a non-empty string of at most "
                                             "255 bytes without '.', '#' or '*', got 'a*'");

    /* at most TBX_CFG_MAX_ITEMS items */
    tbx_buf b = {0};
    for (int i = 0; i <= TBX_CFG_MAX_ITEMS; i++)
        ck_assert_int_eq(tbx_buf_printf(&b, "%sq%d", i ? "," : "", i), 0);
    ck_assert_int_eq(tbx_config_set(cfg, "worker.queues", (char *)b.data, &err), TBX_ECONFIG);
    ck_assert_str_eq(err.msg, "worker.queues: more than 1024 items");
    tbx_buf_free(&b);
    tbx_config_free(cfg);
}
END_TEST

START_TEST(test_masking)
{
    static const char *const cases[][2] = {
        {"amqp://guest:guest@localhost:5672//", "amqp://guest:****@localhost:5672//"},
        {"amqps://u:p@ss@h:5671/v", "amqps://u:****@h:5671/v"},
        {"amqp://localhost//", "amqp://localhost//"},
        {"amqp://user@localhost//", "amqp://user@localhost//"},
        {"amqp://user:@localhost//", "amqp://user:@localhost//"},
        {"postgresql://w:c@h:5432/db?sslmode=require", "postgresql://w:****@h:5432/db?sslmode=require"},
        {"postgresql://h/db?user=w&password=secret&x=1", "postgresql://h/db?user=w&password=****&x=1"},
        {"host=h password=secret dbname=d", "host=h password=**** dbname=d"},
        {"u:secret@host", "u:****@host"},
        {"amqp://h/x@y:z", "amqp://h/x@y:z"},
        {":secret@host", ":****@host"},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *m = tbx_mask_url(cases[i][0]);
        ck_assert_ptr_nonnull(m);
        ck_assert_str_eq(m, cases[i][1]);
        free(m);
    }
    ck_assert_ptr_null(tbx_mask_url(NULL));

    tbx_config *cfg = new_cfg();
    assert_text(cfg, "broker_url", 1, "amqp://guest:****@localhost:5672//");
    assert_text(cfg, "broker_url", 0, "amqp://guest:guest@localhost:5672//");
    assert_text(cfg, "result_backend", 1, "postgresql://worker:****@localhost:5432/cadasta");
    assert_text(cfg, "database_admin_url", 1, "");
    assert_text(cfg, "worker.concurrency", 1, "2");
    assert_text(cfg, "task_track_started", 1, "true");
    assert_text(cfg, "task_default_retry_delay", 1, "180");
    assert_text(cfg, "broker_connect_timeout", 1, "5");
    assert_text(cfg, "queues", 1, "msg,export");
    assert_text(cfg, "log.level", 1, "info");
    tbx_config_free(cfg);
}
END_TEST

/* ---- tbx_config_load ------------------------------------------------------------------------------------------------ */

START_TEST(test_load_env_name)
{
    static const char *const names[] = {"staging.yaml", "other.yaml", NULL};
    scrub_env();
    make_tmpdir();
    const char *staging = "worker:\n  concurrency: 3\nlog.level: debug\nlog.backups: 9\n";
    write_file("staging.yaml", staging, strlen(staging));
    write_file("other.yaml", "log.backups: 1\n", 15);
    ck_assert_int_eq(setenv("TOOLBOX_CONFIG_DIR", tmpdir, 1), 0);
    ck_assert_int_eq(setenv("TOOLBOX_LOG_LEVEL", "error", 1), 0);
    ck_assert_int_eq(setenv("TOOLBOX_WORKER_CONCURRENCY", "5", 1), 0);

    tbx_config *cfg = NULL;
    tbx_error err = {0};
    const char *const overrides[] = {"worker.concurrency=6", "queues=a,b", NULL};
    ck_assert_msg(tbx_config_load(&cfg, NULL, "staging", overrides, &err) == TBX_OK, "%s", err.msg);
    ck_assert_str_eq(tbx_config_file(cfg), tmp_path("staging.yaml"));
    ck_assert_int_eq(tbx_config_int(cfg, "log.backups"), 9);                 /* file */
    ck_assert_str_eq(tbx_config_str(cfg, "log.level"), "error");             /* env over file */
    ck_assert_int_eq(tbx_config_int(cfg, "worker.concurrency"), 6);          /* CLI over env */
    ck_assert_int_eq(tbx_config_source_of(cfg, "log.backups"), TBX_SRC_FILE);
    ck_assert_int_eq(tbx_config_source_of(cfg, "log.level"), TBX_SRC_ENV);
    ck_assert_int_eq(tbx_config_source_of(cfg, "worker.concurrency"), TBX_SRC_CLI);
    ck_assert_int_eq(tbx_config_source_of(cfg, "queues"), TBX_SRC_CLI);
    tbx_config_free(cfg);

    /* TOOLBOX_ENV when no --env */
    ck_assert_int_eq(setenv("TOOLBOX_ENV", "other", 1), 0);
    ck_assert_int_eq(tbx_config_load(&cfg, NULL, NULL, NULL, &err), TBX_OK);
    ck_assert_str_eq(tbx_config_file(cfg), tmp_path("other.yaml"));
    ck_assert_int_eq(tbx_config_int(cfg, "log.backups"), 1);
    tbx_config_free(cfg);
    /* --env wins over TOOLBOX_ENV, --config over both */
    ck_assert_int_eq(tbx_config_load(&cfg, NULL, "staging", NULL, &err), TBX_OK);
    ck_assert_int_eq(tbx_config_int(cfg, "log.backups"), 9);
    tbx_config_free(cfg);
    ck_assert_int_eq(tbx_config_load(&cfg, tmp_path("other.yaml"), "staging", NULL, &err), TBX_OK);
    ck_assert_int_eq(tbx_config_int(cfg, "log.backups"), 1);
    tbx_config_free(cfg);

    /* errors */
    ck_assert_int_eq(tbx_config_load(&cfg, NULL, "../etc/x", NULL, &err), TBX_ECONFIG);
    ck_assert_ptr_null(cfg);
    ck_assert_str_eq(err.msg, "expected an environment name (letters, digits, '_' or '-'), got '../etc/x'");
    ck_assert_int_eq(tbx_config_load(&cfg, NULL, "", NULL, &err), TBX_ECONFIG);
    ck_assert_int_eq(setenv("TOOLBOX_ENV", "a b", 1), 0);
    ck_assert_int_eq(tbx_config_load(&cfg, NULL, NULL, NULL, &err), TBX_ECONFIG);
    ck_assert_str_eq(err.msg, "TOOLBOX_ENV: expected an environment name (letters, digits, '_' or '-'), got 'a b'");
    ck_assert_int_eq(tbx_config_load(&cfg, NULL, "missing", NULL, &err), TBX_ECONFIG);
    char want[512];
    snprintf(want, sizeof want, "%s: cannot open: No such file or directory", tmp_path("missing.yaml"));
    ck_assert_str_eq(err.msg, want);
    const char *const bad_override[] = {"worker.concurrency", NULL};
    ck_assert_int_eq(tbx_config_load(&cfg, NULL, "staging", bad_override, &err), TBX_ECONFIG);
    ck_assert_str_eq(err.msg, "expected key=value, got 'worker.concurrency'");
    ck_assert_int_eq(setenv("TOOLBOX_WORKER_CONCURRENCY", "x", 1), 0);
    ck_assert_int_eq(tbx_config_load(&cfg, NULL, "staging", NULL, &err), TBX_ECONFIG);
    ck_assert_str_eq(err.msg, "TOOLBOX_WORKER_CONCURRENCY: expected an integer between 1 and 256, got 'x'");
    ck_assert_ptr_null(cfg);
    ck_assert_int_eq(tbx_config_load(NULL, NULL, NULL, NULL, &err), TBX_EINVAL);
    remove_tmpdir(names);
}
END_TEST

START_TEST(test_load_defaults_only)
{
    scrub_env();
    tbx_config *cfg = NULL;
    tbx_error err = {0};
    ck_assert_int_eq(tbx_config_load(&cfg, NULL, NULL, NULL, &err), TBX_OK);
    ck_assert_ptr_null(tbx_config_file(cfg));
    ck_assert_str_eq(tbx_config_str(cfg, "broker_url"), "amqp://guest:guest@localhost:5672//");
    tbx_config_free(cfg);
}
END_TEST

/* ---- the shipped files ----------------------------------------------------------------------------------------- */

static tbx_config *load_shipped(const char *env)
{
    const char *src = getenv("TOOLBOX_SOURCE_DIR");
    ck_assert_msg(src != NULL, "TOOLBOX_SOURCE_DIR is not set (run through ctest)");
    char path[1024];
    snprintf(path, sizeof path, "%s/config/%s.yaml", src, env);
    tbx_config *cfg = new_cfg();
    tbx_error err = {0};
    ck_assert_msg(tbx_config_load_file(cfg, path, &err) == TBX_OK, "%s", err.msg);
    return cfg;
}

START_TEST(test_shipped_files)
{
    tbx_config *dev = load_shipped("dev");
    ck_assert_str_eq(tbx_config_str(dev, "broker_url"), "amqp://guest:guest@127.0.0.1:35672//");
    ck_assert_str_eq(tbx_config_str(dev, "result_backend"), "postgresql://worker:cadasta@127.0.0.1:35432/cadasta");
    ck_assert_str_eq(tbx_config_str(dev, "database_admin_url"), "postgresql://toolbox:toolbox@127.0.0.1:35432/cadasta");
    ck_assert_uint_eq(tbx_config_list_len(dev, "queues"), 2);
    ck_assert_str_eq(tbx_config_list_at(dev, "queues", 0), "msg");
    ck_assert_str_eq(tbx_config_list_at(dev, "queues", 1), "export");
    ck_assert_str_eq(tbx_config_str(dev, "log.level"), "info");
    ck_assert_int_eq(tbx_config_int(dev, "worker.concurrency"), 2);
    tbx_config_free(dev);

    tbx_config *test = load_shipped("test");
    ck_assert_str_eq(tbx_config_str(test, "broker_url"), "amqp://guest:guest@127.0.0.1:35672//");
    ck_assert_str_eq(tbx_config_str(test, "result_backend"), "postgresql://worker:cadasta@127.0.0.1:35432/cadasta");
    ck_assert_str_eq(tbx_config_str(test, "database_admin_url"),
                     "postgresql://toolbox:toolbox@127.0.0.1:35432/cadasta");
    ck_assert_uint_eq(tbx_config_list_len(test, "queues"), 2);
    ck_assert_str_eq(tbx_config_str(test, "log.level"), "warning");
    tbx_config_free(test);

    /* prod: the defaults written out, secrets left to the environment */
    tbx_config *prod = load_shipped("prod");
    tbx_config *def = new_cfg();
    for (size_t i = 0; i < tbx_config_key_count(); i++) {
        const char *k = tbx_config_key_name(i);
        char *a = tbx_config_value_text(prod, k, 0), *b = tbx_config_value_text(def, k, 0);
        ck_assert_msg(strcmp(a, b) == 0, "%s: prod %s, default %s", k, a, b);
        free(a);
        free(b);
    }
    ck_assert_int_eq(tbx_config_source_of(prod, "broker_url"), TBX_SRC_DEFAULT);
    ck_assert_int_eq(tbx_config_source_of(prod, "result_backend"), TBX_SRC_DEFAULT);
    ck_assert_int_eq(tbx_config_source_of(prod, "task_default_exchange"), TBX_SRC_FILE);
    tbx_config_free(def);
    tbx_config_free(prod);
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("tbx_config");
    TCase *t = tcase_create("table");
    tcase_add_test(t, test_defaults);
    tcase_add_test(t, test_table);
    tcase_add_test(t, test_getters_wrong_key);
    suite_add_tcase(s, t);

    t = tcase_create("file");
    tcase_add_test(t, test_file_overrides);
    tcase_add_test(t, test_nested_and_flat);
    tcase_add_test(t, test_null_resets_and_empty);
    tcase_add_test(t, test_bools_and_numbers);
    tcase_add_test(t, test_lists);
    suite_add_tcase(s, t);

    t = tcase_create("layers");
    tcase_add_test(t, test_env_overrides_file);
    tcase_add_test(t, test_env_errors);
    tcase_add_test(t, test_cli_overrides_env);
    tcase_add_test(t, test_load_env_name);
    tcase_add_test(t, test_load_defaults_only);
    suite_add_tcase(s, t);

    t = tcase_create("errors");
    tcase_add_test(t, test_error_unknown_key);
    tcase_add_test(t, test_error_wrong_type);
    tcase_add_test(t, test_error_range_enum_url);
    tcase_add_test(t, test_error_malformed);
    tcase_add_test(t, test_error_not_mapping);
    tcase_add_test(t, test_error_duplicate);
    tcase_add_test(t, test_error_files);
    suite_add_tcase(s, t);

    t = tcase_create("display");
    tcase_add_test(t, test_masking);
    tcase_add_test(t, test_shipped_files);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(config_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
