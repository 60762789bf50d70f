/*
 * cli.h - the `toolbox` command: shared option handling for its subcommands.
 */
#ifndef TOOLBOX_CLI_H
#define TOOLBOX_CLI_H

#include "toolbox/config.h"
#include "toolbox/error.h"

/* Exit codes. */
enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2, CLI_TIMEOUT = 3 };

typedef struct cli_args {
    int argc;
    char **argv;
    int i; /* next unread argument */
} cli_args;

/* If argv[i] is --name (with a value as the next word or after '='), store the
 * value, advance and return 1; 0 if argv[i] is something else; -1 when the
 * value is missing (a message was printed). */
int cli_opt(cli_args *a, const char *name, const char **value);
/* Flag without value. */
int cli_flag(cli_args *a, const char *name);
/* Common options --config FILE, --env NAME, --set KEY=VALUE (repeatable): 1 if consumed. */
int cli_common(cli_args *a);
/* Load the configuration from the common options; on error print it and return NULL. */
tbx_config *cli_config(void);
/* Print "toolbox: <msg>" to stderr; returns the exit code to use for st. */
int cli_fail(tbx_status st, const tbx_error *err);
/* Print the stored result of id as JSON (waiting up to timeout when wait is set);
 * returns the exit code (1 for FAILURE/REVOKED, 3 on timeout). */
int cli_show_result(const tbx_config *cfg, const char *id, int wait, double timeout);
int cli_parse_double(const char *opt, const char *text, double *out);
int cli_parse_int(const char *opt, const char *text, long long min, long long max, long long *out);

int cmd_setup(cli_args *a);
int cmd_send(cli_args *a);
int cmd_result(cli_args *a);
int cmd_inspect(cli_args *a);
int cmd_config(cli_args *a);
int cmd_tasks(cli_args *a); /* cmd_tasks.c: what the platform monitor recorded */
int cmd_control(cli_args *a, const char *method); /* ping, revoke, interrupt */

#endif
