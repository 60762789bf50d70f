/* pool_test.c - the prefork pool without any service: frames, outcomes, crashes, soft limits. */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pool.h"
#include "toolbox/pickle.h"

static void h_add(tbx_task *t, const json_t *args, const json_t *kwargs, void *ud)
{
    (void)kwargs;
    (void)ud;
    tbx_task_return(t, json_integer(json_integer_value(json_array_get(args, 0)) +
                                    json_integer_value(json_array_get(args, 1))));
}

static void h_fail(tbx_task *t, const json_t *args, const json_t *kwargs, void *ud)
{
    (void)args;
    (void)kwargs;
    (void)ud;
    tbx_task_raise(t, "ValueError", "builtins", "bad %d", 7);
}

static void h_retry(tbx_task *t, const json_t *args, const json_t *kwargs, void *ud)
{
    (void)args;
    (void)kwargs;
    (void)ud;
    tbx_task_retry(t, 1.5, NULL, NULL, "later");
}

static void h_crash(tbx_task *t, const json_t *args, const json_t *kwargs, void *ud)
{
    (void)t;
    (void)args;
    (void)kwargs;
    (void)ud;
    raise(SIGKILL);
}

static void h_sleep(tbx_task *t, const json_t *args, const json_t *kwargs, void *ud)
{
    (void)args;
    (void)kwargs;
    (void)ud;
    if (tbx_task_sleep(t, 30))
        tbx_task_raise(t, "SoftTimeLimitExceeded", "billiard.exceptions", NULL);
}

static char n_add[] = "t.add", n_fail[] = "t.fail", n_retry[] = "t.retry", n_crash[] = "t.crash",
            n_sleep[] = "t.sleep";
#define HANDLER(n, f) {.name = n, .fn = f, .opts = TBX_TASK_OPTS_INIT}
static tbx_handler handlers[] = {
    HANDLER(n_add, h_add),     HANDLER(n_fail, h_fail), HANDLER(n_retry, h_retry),
    HANDLER(n_crash, h_crash), HANDLER(n_sleep, h_sleep),
};
static const tbx_pool_env env = {handlers, 5, NULL, "test@host"};

/* Send one RUN frame and read one OUTCOME frame (blocking). Returns 0 or -1 on EOF. */
static int run(int fd, uint32_t h, const char *body, unsigned char **frame, tbx_outcome_msg *o)
{
    tbx_buf b = {0};
    ck_assert_int_eq(tbx_pool_encode_run(&b, h, 0, 0, "id-1", body, strlen(body)), 0);
    ck_assert_int_eq(write(fd, b.data, b.len), (ssize_t)b.len);
    tbx_buf_free(&b);
    uint32_t len;
    size_t got = 0;
    struct pollfd p = {fd, POLLIN, 0};
    while (got < 4) {
        poll(&p, 1, 5000);
        ssize_t n = read(fd, (char *)&len + got, 4 - got);
        if (n == 0)
            return -1;
        if (n > 0)
            got += (size_t)n;
    }
    *frame = malloc(len);
    got = 0;
    while (got < len) {
        poll(&p, 1, 5000);
        ssize_t n = read(fd, *frame + got, len - got);
        ck_assert(n > 0 || errno == EAGAIN);
        if (n > 0)
            got += (size_t)n;
    }
    ck_assert_int_eq(tbx_pool_decode_outcome(*frame, len, o), 0);
    return 0;
}

START_TEST(test_outcomes)
{
    int fd;
    pid_t pid = tbx_pool_spawn(&env, &fd);
    ck_assert(pid > 0);
    unsigned char *f;
    tbx_outcome_msg o;

    ck_assert_int_eq(run(fd, 0, "[[2, 3], {}, {}]", &f, &o), 0);
    ck_assert_int_eq(o.outcome, TBX_OUT_SUCCESS);
    json_t *v = NULL;
    ck_assert_int_eq(tbx_pickle_load(o.pickle, o.pickle_len, &v, NULL), TBX_OK);
    ck_assert_int_eq(json_integer_value(v), 5);
    ck_assert(o.json_len == 1 && o.json[0] == '5');
    json_decref(v);
    free(f);

    ck_assert_int_eq(run(fd, 1, "[[], {}, {}]", &f, &o), 0);
    ck_assert_int_eq(o.outcome, TBX_OUT_FAILURE);
    ck_assert_int_eq(tbx_pickle_load(o.pickle, o.pickle_len, &v, NULL), TBX_OK);
    ck_assert_str_eq(json_string_value(json_object_get(v, "exc_type")), "ValueError");
    ck_assert_str_eq(json_string_value(json_array_get(json_object_get(v, "exc_message"), 0)), "bad 7");
    ck_assert_str_eq(json_string_value(json_object_get(v, "exc_module")), "builtins");
    json_decref(v);
    free(f);

    ck_assert_int_eq(run(fd, 2, "[[], {}, {}]", &f, &o), 0);
    ck_assert_int_eq(o.outcome, TBX_OUT_RETRY);
    ck_assert(o.countdown == 1.5);
    free(f);

    /* A body the child cannot parse is a failure, not a crash. */
    ck_assert_int_eq(run(fd, 0, "{", &f, &o), 0);
    ck_assert_int_eq(o.outcome, TBX_OUT_FAILURE);
    free(f);

    /* A crash shows as EOF and a signalled child. */
    ck_assert_int_eq(run(fd, 3, "[[], {}, {}]", &f, &o), -1);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    close(fd);
}
END_TEST

START_TEST(test_soft_limit)
{
    int fd;
    pid_t pid = tbx_pool_spawn(&env, &fd);
    ck_assert(pid > 0);
    tbx_buf b = {0};
    const char *body = "[[], {}, {}]";
    tbx_pool_encode_run(&b, 4, 0, 1, "id-2", body, strlen(body));
    ck_assert_int_eq(write(fd, b.data, b.len), (ssize_t)b.len);
    tbx_buf_free(&b);
    usleep(200000);
    kill(pid, SIGUSR1); /* what the main process sends at the soft limit */
    struct pollfd p = {fd, POLLIN, 0};
    ck_assert_int_eq(poll(&p, 1, 5000), 1);
    unsigned char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf);
    ck_assert(n > 4);
    tbx_outcome_msg o;
    ck_assert_int_eq(tbx_pool_decode_outcome(buf + 4, (size_t)n - 4, &o), 0);
    ck_assert_int_eq(o.outcome, TBX_OUT_FAILURE);
    ck_assert(memmem(o.json, o.json_len, "SoftTimeLimitExceeded", 21) != NULL);
    close(fd); /* EOF: the child leaves */
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}
END_TEST

START_TEST(test_decode_rejects)
{
    unsigned char junk[8] = {9, 0, 0, 0, 0, 0, 0, 0};
    tbx_outcome_msg o;
    ck_assert_int_eq(tbx_pool_decode_outcome(junk, sizeof junk, &o), -1);
    unsigned char bad[21] = {1};
    uint32_t big = 1000;
    memcpy(bad + 17, &big, 4);
    ck_assert_int_eq(tbx_pool_decode_outcome(bad, sizeof bad, &o), -1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("pool");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_outcomes);
    tcase_add_test(tc, test_soft_limit);
    tcase_add_test(tc, test_decode_rejects);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
