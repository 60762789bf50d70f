/* tasks.h - the msg service's task handlers. */
#ifndef MSG_TASKS_H
#define MSG_TASKS_H

#include "toolbox/worker.h"

void msg_add(tbx_task *t, const json_t *args, const json_t *kwargs, void *ud);
void msg_echo(tbx_task *t, const json_t *args, const json_t *kwargs, void *ud);
void msg_fail(tbx_task *t, const json_t *args, const json_t *kwargs, void *ud);
void msg_sleep(tbx_task *t, const json_t *args, const json_t *kwargs, void *ud);
void msg_crash(tbx_task *t, const json_t *args, const json_t *kwargs, void *ud);
void msg_flaky(tbx_task *t, const json_t *args, const json_t *kwargs, void *ud);
void msg_noop(tbx_task *t, const json_t *args, const json_t *kwargs, void *ud);

#endif
