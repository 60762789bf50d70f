/* cmd_result.c - `toolbox result`: the stored state of a task, as JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "toolbox/result.h"

/* Print the result JSON; exit status 1 for FAILURE/REVOKED, 0 otherwise. */
static int print_result(const char *id, const tbx_result *r)
{
    json_t *j = tbx_result_to_json(id, r);
    char *text = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    if (text)
        puts(text);
    free(text);
    json_decref(j);
    fflush(stdout);
    if (r->found && r->status && (!strcmp(r->status, "FAILURE") || !strcmp(r->status, "REVOKED")))
        return CLI_FAIL;
    return CLI_OK;
}

int cli_show_result(const tbx_config *cfg, const char *id, int wait, double timeout)
{
    tbx_error err = {0};
    tbx_backend *b;
    tbx_status st = tbx_backend_open(&b, tbx_config_str(cfg, "result_backend"), &err);
    if (st)
        return cli_fail(st, &err);
    tbx_result res;
    int rc;
    st = wait ? tbx_backend_wait(b, id, timeout, 0.05, &res, &err) : tbx_backend_get(b, id, &res, &err);
    if (st && st != TBX_ETIMEOUT) {
        rc = cli_fail(st, &err);
    } else {
        rc = print_result(id, &res);
        if (st == TBX_ETIMEOUT)
            rc = cli_fail(st, &err);
    }
    tbx_result_clear(&res);
    tbx_backend_close(b);
    return rc;
}

int cmd_result(cli_args *a)
{
    const char *id = NULL, *v;
    int wait = 0, r;
    double timeout = 0;
    while (a->i < a->argc) {
        if ((r = cli_common(a)) != 0) {
            if (r < 0)
                return CLI_USAGE;
        } else if ((r = cli_opt(a, "--timeout", &v)) != 0) {
            if (r < 0 || cli_parse_double("--timeout", v, &timeout))
                return CLI_USAGE;
        } else if (cli_flag(a, "--wait")) {
            wait = 1;
        } else if (a->argv[a->i][0] == '-') {
            fprintf(stderr, "toolbox: result: unknown option %s\n", a->argv[a->i]);
            return CLI_USAGE;
        } else if (!id) {
            id = a->argv[a->i++];
        } else {
            fprintf(stderr, "toolbox: result: unexpected argument '%s'\n", a->argv[a->i]);
            return CLI_USAGE;
        }
    }
    if (!id) {
        fprintf(stderr, "toolbox: result: missing TASK_ID\n");
        return CLI_USAGE;
    }
    tbx_config *cfg = cli_config();
    if (!cfg)
        return CLI_USAGE;
    int rc = cli_show_result(cfg, id, wait, timeout);
    tbx_config_free(cfg);
    return rc;
}
