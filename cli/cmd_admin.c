/* cmd_admin.c - `toolbox setup`, `toolbox inspect`, `toolbox config show`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "cli.h"
#include "toolbox/setup.h"

static int no_more_args(cli_args *a, const char *cmd)
{
    int r;
    while (a->i < a->argc) {
        if ((r = cli_common(a)) < 0)
            return -1;
        if (r == 0) {
            fprintf(stderr, "toolbox: %s: unexpected argument '%s'\n", cmd, a->argv[a->i]);
            return -1;
        }
    }
    return 0;
}

int cmd_setup(cli_args *a)
{
    unsigned flags = TBX_SETUP_BROKER | TBX_SETUP_DATABASE;
    int r;
    while (a->i < a->argc) {
        if ((r = cli_common(a)) != 0) {
            if (r < 0)
                return CLI_USAGE;
        } else if (cli_flag(a, "--broker-only")) {
            flags = TBX_SETUP_BROKER;
        } else if (cli_flag(a, "--database-only")) {
            flags = TBX_SETUP_DATABASE;
        } else {
            fprintf(stderr, "toolbox: setup: unexpected argument '%s'\n", a->argv[a->i]);
            return CLI_USAGE;
        }
    }
    tbx_config *cfg = cli_config();
    if (!cfg)
        return CLI_USAGE;
    tbx_error err = {0};
    tbx_status st = tbx_setup(cfg, flags, &err);
    int rc = st ? cli_fail(st, &err) : CLI_OK;
    if (!st)
        printf("setup done: %s%s%s\n", (flags & TBX_SETUP_BROKER) ? "topology declared" : "",
               flags == (TBX_SETUP_BROKER | TBX_SETUP_DATABASE) ? ", " : "",
               (flags & TBX_SETUP_DATABASE) ? "result tables ready" : "");
    tbx_config_free(cfg);
    return rc;
}

static int inspect_queue(tbx_broker *b, const char *q, const char *key)
{
    uint32_t msgs = 0, cons = 0;
    tbx_error err = {0};
    tbx_status st = tbx_broker_queue_info(b, q, &msgs, &cons, &err);
    if (st == TBX_ENOTFOUND) {
        printf("%-24s %-10s %10s %10s\n", q, key, "missing", "-");
        return 0;
    }
    if (st) {
        fprintf(stderr, "toolbox: %s\n", err.msg);
        return -1;
    }
    printf("%-24s %-10s %10u %10u\n", q, key, msgs, cons);
    return 0;
}

int cmd_inspect(cli_args *a)
{
    if (no_more_args(a, "inspect"))
        return CLI_USAGE;
    tbx_config *cfg = cli_config();
    if (!cfg)
        return CLI_USAGE;
    tbx_error err = {0};
    tbx_broker *b;
    tbx_status st = tbx_broker_open_cfg(&b, cfg, "toolbox inspect", &err);
    if (st) {
        int rc = cli_fail(st, &err);
        tbx_config_free(cfg);
        return rc;
    }
    printf("exchange %s (%s) on %s\n", tbx_config_str(cfg, "task_default_exchange"),
           tbx_config_str(cfg, "task_default_exchange_type"), b->masked_url);
    printf("%-24s %-10s %10s %10s\n", "QUEUE", "KEY", "MESSAGES", "CONSUMERS");
    int bad = inspect_queue(b, tbx_config_str(cfg, "task_default_queue"),
                            tbx_config_str(cfg, "task_default_queue"));
    bad |= inspect_queue(b, tbx_config_str(cfg, "platform_queue"), "#");
    for (size_t i = 0; i < tbx_config_list_len(cfg, "queues"); i++) {
        const char *q = tbx_config_list_at(cfg, "queues", i);
        bad |= inspect_queue(b, q, q);
    }
    tbx_broker_close(b);
    tbx_config_free(cfg);
    return bad ? CLI_FAIL : CLI_OK;
}

int cmd_config(cli_args *a)
{
    if (a->i >= a->argc || strcmp(a->argv[a->i], "show") != 0) {
        fprintf(stderr, "toolbox: config: expected 'config show'\n");
        return CLI_USAGE;
    }
    a->i++;
    if (no_more_args(a, "config show"))
        return CLI_USAGE;
    tbx_config *cfg = cli_config();
    if (!cfg)
        return CLI_USAGE;
    static const char *const sources[] = {"default", "file", "env", "command line"};
    const char *file = tbx_config_file(cfg);
    printf("# configuration file: %s\n", file ? file : "(none: built-in defaults)");
    for (size_t i = 0; i < tbx_config_key_count(); i++) {
        const char *key = tbx_config_key_name(i);
        char *text = tbx_config_value_text(cfg, key, 1);
        tbx_config_source src = tbx_config_source_of(cfg, key);
        printf("%-28s = %-50s # %s\n", key, text ? text : "?",
               (unsigned)src < 4 ? sources[src] : "?");
        free(text);
    }
    tbx_config_free(cfg);
    return CLI_OK;
}
