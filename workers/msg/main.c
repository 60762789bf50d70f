/*
 * msg-worker - the example service worker: consumes the `msg` queue and runs
 * msg.* tasks. Everything else (flags, consuming, results) is the runner's.
 */
#include "tasks.h"

int main(int argc, char **argv)
{
    tbx_worker *w = tbx_worker_new("msg");
    tbx_task_opts sleepy = TBX_TASK_OPTS_INIT;
    tbx_task_opts flaky = TBX_TASK_OPTS_INIT;
    flaky.max_retries = 5;
    tbx_worker_register(w, "msg.add", msg_add, NULL, NULL);
    tbx_worker_register(w, "msg.echo", msg_echo, NULL, NULL);
    tbx_worker_register(w, "msg.fail", msg_fail, NULL, NULL);
    tbx_worker_register(w, "msg.sleep", msg_sleep, NULL, &sleepy);
    tbx_worker_register(w, "msg.crash", msg_crash, NULL, NULL);
    tbx_worker_register(w, "msg.flaky", msg_flaky, NULL, &flaky);
    tbx_worker_register(w, "msg.noop", msg_noop, NULL, NULL);
    return tbx_worker_main(w, argc, argv);
}
