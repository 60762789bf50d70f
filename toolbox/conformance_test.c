/* conformance_test.c - unit tests of the conformance suite's offline parts: topic matching, URLs, the HTTP
 * client (against a one-shot server in a child process), the suite's shape and its configuration checks.
 * The live checks are exercised by tests/conformance (break-it tests against the real services). */
#include <check.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "conformance_internal.h"
#include "toolbox/conformance.h"

START_TEST(test_topic_match)
{
    static const struct {
        const char *pattern, *key;
        int match;
    } cases[] = {
        {"#", "msg", 1},        {"#", "", 1},           {"#", "a.b.c", 1},     {"*", "msg", 1},
        {"*", "", 0},           {"*", "a.b", 0},        {"msg", "msg", 1},     {"msg", "msgs", 0},
        {"msg", "msg.add", 0},  {"msg.#", "msg", 1},    {"msg.#", "msg.a.b", 1}, {"msg.*", "msg", 0},
        {"#.msg", "a.msg", 1},  {"#.msg", "msg", 1},    {"a.#.b", "a.b", 1},   {"a.#.b", "a.x.y.b", 1},
        {"a.*.b", "a.b", 0},    {"", "", 1},            {"", "a", 0},          {"a.", "a.", 1},
        {"a.*", "a.", 1},       {"#.#", "x", 1},        {"*.#", "", 0},        {"celery", "celery", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        ck_assert_msg(tbx_conf_topic_match(cases[i].pattern, cases[i].key) == cases[i].match,
                      "pattern '%s' key '%s'", cases[i].pattern, cases[i].key);
}
END_TEST

START_TEST(test_urls)
{
    char *u = tbx_conf_mgmt_url_from_broker("amqp://guest:guest@localhost:5672//");
    ck_assert_str_eq(u, "http://guest:guest@localhost:15672");
    free(u);
    u = tbx_conf_mgmt_url_from_broker("amqps://us%40r:p%3Aw@rmq.example:5671/prod");
    ck_assert_str_eq(u, "https://us%40r:p%3Aw@rmq.example:15671");
    free(u);
    ck_assert_ptr_null(tbx_conf_mgmt_url_from_broker("http://x/"));
    char *v = tbx_conf_broker_vhost("amqp://guest:guest@localhost:5672//");
    ck_assert_str_eq(v, "/");
    free(v);
    v = tbx_conf_broker_vhost("amqp://h/t_conf_1");
    ck_assert_str_eq(v, "t_conf_1");
    free(v);
    v = tbx_conf_broker_vhost("amqp://h");
    ck_assert_str_eq(v, "/");
    free(v);
    tbx_buf b = {0};
    tbx_http_path_segment(&b, "/a b.c");
    tbx_buf_putc(&b, 0);
    ck_assert_str_eq((const char *)b.data, "%2Fa%20b.c");
    tbx_buf_free(&b);
}
END_TEST

/* A server for one request: replies with reply and sends the request it got back through fd. */
static int serve_once(const char *reply, pid_t *pid, int *req_fd)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(s, 1), 0);
    socklen_t len = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &len);
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    *pid = fork();
    if (*pid == 0) {
        close(p[0]);
        int c = accept(s, NULL, NULL);
        char buf[4096];
        size_t n = 0;
        while (n < sizeof buf - 1) {
            ssize_t r = read(c, buf + n, sizeof buf - 1 - n);
            if (r <= 0)
                break;
            n += (size_t)r;
            buf[n] = 0;
            if (strstr(buf, "\r\n\r\n"))
                break;
        }
        (void)!write(p[1], buf, n);
        (void)!write(c, reply, strlen(reply));
        close(c);
        _exit(0);
    }
    close(p[1]);
    close(s);
    *req_fd = p[0];
    return ntohs(a.sin_port);
}

START_TEST(test_http_get)
{
    pid_t pid;
    int fd;
    int port = serve_once("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                          "4\r\n[1, \r\n3\r\n2]\n\r\n0\r\n\r\n",
                          &pid, &fd);
    char url[128];
    snprintf(url, sizeof url, "http://us%%40r:pw@127.0.0.1:%d/prefix/", port);
    int status;
    char *body;
    size_t len;
    tbx_error err = {0};
    ck_assert_int_eq(tbx_http_get(url, "/api/x", 5, &status, &body, &len, &err), TBX_OK);
    ck_assert_int_eq(status, 200);
    ck_assert_str_eq(body, "[1, 2]\n");
    ck_assert_uint_eq(len, 7);
    free(body);
    char req[4096] = "";
    ck_assert_int_gt(read(fd, req, sizeof req - 1), 0);
    close(fd);
    waitpid(pid, NULL, 0);
    ck_assert_msg(!strncmp(req, "GET /prefix/api/x HTTP/1.0\r\n", 28), "%s", req);
    ck_assert_ptr_nonnull(strstr(req, "Authorization: Basic dXNAcjpwdw==\r\n")); /* us@r:pw */

    port = serve_once("HTTP/1.1 401 Unauthorized\r\ncontent-length: 5\r\n\r\nnope!", &pid, &fd);
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    ck_assert_int_eq(tbx_http_get(url, "/", 5, &status, &body, &len, &err), TBX_OK);
    ck_assert_int_eq(status, 401);
    ck_assert_str_eq(body, "nope!");
    free(body);
    close(fd);
    waitpid(pid, NULL, 0);

    ck_assert_int_ne(tbx_http_get("ftp://x", "/", 1, &status, &body, &len, &err), TBX_OK);
    ck_assert_int_ne(tbx_http_get("http://127.0.0.1:1", "/", 1, &status, &body, &len, &err), TBX_OK);
    ck_assert_ptr_nonnull(strstr(err.msg, "cannot connect"));
}
END_TEST

static tbx_config *cfg_with(const char *const *sets)
{
    tbx_config *cfg = tbx_config_new();
    ck_assert_ptr_nonnull(cfg);
    for (size_t i = 0; sets && sets[i]; i += 2)
        ck_assert_int_eq(tbx_config_set(cfg, sets[i], sets[i + 1], NULL), TBX_OK);
    return cfg;
}

START_TEST(test_suite_shape)
{
    ck_assert_ptr_null(tbx_conformance_suite(NULL, 0));
    tbx_config *cfg = cfg_with(NULL);
    Suite *w = tbx_conformance_suite(cfg, 0), *p = tbx_conformance_suite(cfg, 1);
    tbx_config_free(cfg); /* the suites keep their own copy */
    static const char *const common[] = {
        "default_queue_name", "platform_queue_name", "exchange_type_configured", "chord_unlock_retries_bounded",
        "queue_names_distinct", "broker_reachable", "exchange_exists", "exchange_type", "exchange_flags",
        "queues_exist", "queue_flags", "bindings_readable", "platform_catches_all", "route_to_celery",
        "route_to_msg", "route_to_export", "unknown_prefix_platform_only", "database_reachable",
        "result_table_schema", "result_table_readable"};
    static const char *const worker_only[] = {"task_retries_bounded", "worker_queues", "result_table_writable",
                                              "worker_least_privilege"};
    for (size_t i = 0; i < sizeof common / sizeof common[0]; i++) {
        ck_assert_msg(suite_tcase(w, common[i]), "%s", common[i]);
        ck_assert_msg(suite_tcase(p, common[i]), "%s", common[i]);
    }
    for (size_t i = 0; i < sizeof worker_only / sizeof worker_only[0]; i++) {
        ck_assert_msg(suite_tcase(w, worker_only[i]), "%s", worker_only[i]);
        ck_assert_msg(!suite_tcase(p, worker_only[i]), "%s", worker_only[i]);
    }
    ck_assert(!suite_tcase(w, "route_to_platform.fifo"));
    SRunner *sr = srunner_create(w);
    srunner_add_suite(sr, p);
    srunner_free(sr);
}
END_TEST

/* Run one configuration check of the suite for cfg; the failure message, or NULL when it passes. */
static char *run_check(const char *const *sets, int producer_only, const char *check)
{
    tbx_config *cfg = cfg_with(sets);
    Suite *s = tbx_conformance_suite(cfg, producer_only);
    tbx_config_free(cfg);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run(sr, NULL, check, CK_SILENT);
    ck_assert_int_eq(srunner_ntests_run(sr), 1);
    char *msg = NULL;
    if (srunner_ntests_failed(sr)) {
        TestResult **f = srunner_failures(sr);
        msg = strdup(tr_msg(f[0]));
        free(f);
    }
    srunner_free(sr);
    return msg;
}

START_TEST(test_config_checks)
{
    static const struct {
        const char *check;
        const char *sets[5];
        const char *needle; /* NULL: passes */
    } cases[] = {
        {"default_queue_name", {NULL}, NULL},
        {"default_queue_name", {"task_default_queue", "jobs", NULL}, "found jobs; fix: set task_default_queue"},
        {"platform_queue_name", {"platform_queue", "all", NULL}, "found all"},
        {"exchange_type_configured", {"task_default_exchange_type", "fanout", NULL}, "found 'fanout'"},
        {"chord_unlock_retries_bounded", {"chord_unlock_max_retries", "0", NULL}, "found 0"},
        {"chord_unlock_retries_bounded", {"chord_unlock_max_retries", "1", NULL}, NULL},
        {"task_retries_bounded", {"task_max_retries", "-1", NULL}, "unlimited"},
        {"worker_queues", {"worker.queues", "msg,export", NULL}, NULL},
        {"worker_queues", {"worker.queues", "other", NULL}, "add 'other' to queues"},
        {"worker_queues", {"worker.queues", "platform.fifo", NULL}, "never to consume the platform queue"},
        {"queue_names_distinct", {"queues", "msg,celery", NULL}, "remove 'celery' from queues"},
        {"queue_names_distinct", {"task_default_queue", "platform.fifo", NULL}, "to differ"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *msg = run_check(cases[i].sets, 0, cases[i].check);
        if (!cases[i].needle) {
            ck_assert_msg(msg == NULL, "%s: %s", cases[i].check, msg);
        } else {
            ck_assert_msg(msg && strstr(msg, cases[i].needle), "%s: '%s' lacks '%s'", cases[i].check,
                          msg ? msg : "(passed)", cases[i].needle);
            ck_assert_msg(!strncmp(msg, "expected ", 9) && strstr(msg, "; found ") && strstr(msg, "; fix: ") &&
                              !strchr(msg, '\n'),
                          "not one line: %s", msg);
        }
        free(msg);
    }
}
END_TEST

START_TEST(test_unreachable_is_one_failure)
{
    /* Nothing listens there: broker_reachable and database_reachable fail, every check that needs them holds
     * vacuously. */
    static const char *const sets[] = {"broker_url", "amqp://guest:guest@127.0.0.1:1//", "result_backend",
                                       "postgresql://worker:x@127.0.0.1:1/cadasta", "broker_connect_timeout",
                                       "1", NULL};
    setenv("TOOLBOX_BROKER_MANAGEMENT_URL", "http://127.0.0.1:1", 1);
    tbx_config *cfg = cfg_with(sets);
    unsetenv("TOOLBOX_BROKER_MANAGEMENT_URL");
    Suite *s = tbx_conformance_suite(cfg, 0);
    tbx_config_free(cfg);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_SILENT);
    TestResult **f = srunner_failures(sr);
    int n = srunner_ntests_failed(sr);
    ck_assert_int_eq(n, 2);
    ck_assert_str_eq(tr_tcname(f[0]), "broker_reachable");
    ck_assert_str_eq(tr_tcname(f[1]), "database_reachable");
    free(f);
    srunner_free(sr);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("conformance");
    TCase *tc = tcase_create("offline");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_topic_match);
    tcase_add_test(tc, test_urls);
    tcase_add_test(tc, test_http_get);
    tcase_add_test(tc, test_suite_shape);
    tcase_add_test(tc, test_config_checks);
    tcase_add_test(tc, test_unreachable_is_one_failure);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
