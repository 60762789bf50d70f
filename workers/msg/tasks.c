/*
 * tasks.c - msg-worker's tasks: the ones the architecture names (add, echo,
 * fail, sleep) and a few that exercise the runner (crash, flaky, noop).
 */
#include "tasks.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

/* Positional argument i, or keyword `name`. */
static const json_t *arg(const json_t *args, const json_t *kwargs, size_t i, const char *name)
{
    const json_t *v = json_array_get(args, i);
    return v ? v : json_object_get(kwargs, name);
}

void msg_add(tbx_task *t, const json_t *args, const json_t *kwargs, void *ud)
{
    (void)ud;
    const json_t *a = arg(args, kwargs, 0, "a"), *b = arg(args, kwargs, 1, "b");
    if (!json_is_number(a) || !json_is_number(b)) {
        tbx_task_raise(t, "TypeError", "builtins", "add() takes two numbers (a, b)");
        return;
    }
    if (json_is_integer(a) && json_is_integer(b)) {
        json_int_t x = json_integer_value(a), y = json_integer_value(b), r;
        if (__builtin_add_overflow(x, y, &r)) {
            tbx_task_raise(t, "OverflowError", "builtins", "integer addition overflows 64 bits");
            return;
        }
        tbx_task_return(t, json_integer(r));
    } else {
        tbx_task_return(t, json_real(json_number_value(a) + json_number_value(b)));
    }
}

void msg_echo(tbx_task *t, const json_t *args, const json_t *kwargs, void *ud)
{
    (void)ud;
    const json_t *x = arg(args, kwargs, 0, "x");
    tbx_task_return(t, x ? json_deep_copy(x) : NULL);
}

void msg_fail(tbx_task *t, const json_t *args, const json_t *kwargs, void *ud)
{
    (void)ud;
    const json_t *text = arg(args, kwargs, 0, "text");
    tbx_task_raise(t, "ValueError", "builtins", "%s",
                   json_is_string(text) ? json_string_value(text) : "msg.fail called");
}

void msg_sleep(tbx_task *t, const json_t *args, const json_t *kwargs, void *ud)
{
    (void)ud;
    const json_t *s = arg(args, kwargs, 0, "seconds");
    if (!json_is_number(s) || json_number_value(s) < 0) {
        tbx_task_raise(t, "TypeError", "builtins", "sleep() takes a non-negative number of seconds");
        return;
    }
    if (tbx_task_sleep(t, json_number_value(s))) {
        tbx_task_raise(t, "SoftTimeLimitExceeded", "billiard.exceptions", NULL);
        return;
    }
    tbx_task_return(t, json_deep_copy(s));
}

void msg_crash(tbx_task *t, const json_t *args, const json_t *kwargs, void *ud)
{
    (void)t;
    (void)ud;
    const json_t *how = arg(args, kwargs, 0, "how");
    if (json_is_string(how) && !strcmp(json_string_value(how), "abort"))
        abort();
    raise(SIGSEGV);
}

void msg_flaky(tbx_task *t, const json_t *args, const json_t *kwargs, void *ud)
{
    (void)ud;
    /* Fails with a retry until it has been retried `times` times, then returns the count. */
    const json_t *times = arg(args, kwargs, 0, "times");
    json_int_t n = json_is_integer(times) ? json_integer_value(times) : 1;
    if (tbx_task_retries(t) < n) {
        tbx_task_retry(t, 0.2, "RuntimeError", "builtins", "try again (%d of %lld)", tbx_task_retries(t) + 1,
                       (long long)n);
        return;
    }
    tbx_task_return(t, json_integer(tbx_task_retries(t)));
}

void msg_noop(tbx_task *t, const json_t *args, const json_t *kwargs, void *ud)
{
    (void)ud;
    (void)kwargs;
    const json_t *x = json_array_get(args, 0);
    tbx_task_return(t, x ? json_deep_copy(x) : NULL);
}
