/* cmd_send.c - `toolbox send`: publish one task (or N) with confirms, optionally wait for its result. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "toolbox/producer.h"

/* --link TASK or --link '{"task": ...}' -> a signature object (new reference). */
static json_t *parse_sig(const char *opt, const char *text)
{
    if (text[0] == '{') {
        json_error_t je;
        json_t *s = json_loads(text, 0, &je);
        if (!s || !json_is_string(json_object_get(s, "task"))) {
            fprintf(stderr, "toolbox: %s: expected a task name or a signature object with \"task\"%s%s\n",
                    opt, s ? "" : ": ", s ? "" : je.text);
            json_decref(s);
            return NULL;
        }
        const char *defaults[] = {"args", "[]", "kwargs", "{}", "options", "{}",
                                  "subtask_type", "null", "immutable", "false"};
        for (size_t i = 0; i < sizeof defaults / sizeof *defaults; i += 2)
            if (!json_object_get(s, defaults[i]))
                json_object_set_new(s, defaults[i], json_loads(defaults[i + 1], JSON_DECODE_ANY, NULL));
        return s;
    }
    return json_pack("{s:s, s:[], s:{}, s:{}, s:n, s:b}", "task", text, "args", "kwargs", "options",
                     "subtask_type", "immutable", 0);
}

static json_t *parse_json(const char *opt, const char *text, int want_array)
{
    json_error_t je;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &je);
    if (!v) {
        fprintf(stderr, "toolbox: %s: invalid JSON: %s\n", opt, je.text);
        return NULL;
    }
    if (want_array ? !json_is_array(v) : !json_is_object(v)) {
        fprintf(stderr, "toolbox: %s: expected a JSON %s\n", opt, want_array ? "array" : "object");
        json_decref(v);
        return NULL;
    }
    return v;
}

int cmd_send(cli_args *a)
{
    tbx_send_opts o = TBX_SEND_OPTS_INIT;
    json_t *args = NULL, *kwargs = NULL, *link = NULL, *link_error = NULL;
    const char *task = NULL, *v;
    int wait = 0, rc = CLI_USAGE, r;
    double timeout = 0;
    long long count = 1, n;
    tbx_config *cfg = NULL;
    tbx_producer *p = NULL;
    while (a->i < a->argc) {
        if ((r = cli_common(a)) != 0) {
            if (r < 0)
                goto out;
        } else if ((r = cli_opt(a, "--args", &v)) != 0) {
            if (r < 0 || args || !(args = parse_json("--args", v, 1)))
                goto out;
        } else if ((r = cli_opt(a, "--kwargs", &v)) != 0) {
            if (r < 0 || kwargs || !(kwargs = parse_json("--kwargs", v, 0)))
                goto out;
        } else if ((r = cli_opt(a, "--countdown", &v)) != 0) {
            if (r < 0 || cli_parse_double("--countdown", v, &o.countdown))
                goto out;
        } else if ((r = cli_opt(a, "--eta", &v)) != 0) {
            if (r < 0)
                goto out;
            o.eta = v;
        } else if ((r = cli_opt(a, "--expires", &v)) != 0) {
            if (r < 0 || cli_parse_double("--expires", v, &o.expires_in))
                goto out;
        } else if ((r = cli_opt(a, "--expires-at", &v)) != 0) {
            if (r < 0)
                goto out;
            o.expires = v;
        } else if ((r = cli_opt(a, "--priority", &v)) != 0) {
            if (r < 0 || cli_parse_int("--priority", v, 0, 255, &n))
                goto out;
            o.priority = (int)n;
        } else if ((r = cli_opt(a, "--time-limit", &v)) != 0) {
            if (r < 0 || cli_parse_double("--time-limit", v, &o.time_limit))
                goto out;
        } else if ((r = cli_opt(a, "--soft-time-limit", &v)) != 0) {
            if (r < 0 || cli_parse_double("--soft-time-limit", v, &o.soft_time_limit))
                goto out;
        } else if ((r = cli_opt(a, "--id", &v)) != 0) {
            if (r < 0)
                goto out;
            o.task_id = v;
        } else if ((r = cli_opt(a, "--parent-id", &v)) != 0) {
            if (r < 0)
                goto out;
            o.parent_id = v;
        } else if ((r = cli_opt(a, "--root-id", &v)) != 0) {
            if (r < 0)
                goto out;
            o.root_id = v;
        } else if ((r = cli_opt(a, "--creator-id", &v)) != 0) {
            if (r < 0)
                goto out;
            o.creator_id = v;
        } else if ((r = cli_opt(a, "--related-content-type-id", &v)) != 0) {
            if (r < 0 || cli_parse_int("--related-content-type-id", v, 1, 0x7fffffffffffffffLL, &n))
                goto out;
            o.related_content_type_id = n;
        } else if ((r = cli_opt(a, "--related-object-id", &v)) != 0) {
            if (r < 0)
                goto out;
            o.related_object_id = v;
        } else if ((r = cli_opt(a, "--link", &v)) != 0) {
            if (r < 0 || link || !(link = parse_sig("--link", v)))
                goto out;
        } else if ((r = cli_opt(a, "--link-error", &v)) != 0) {
            if (r < 0 || link_error || !(link_error = parse_sig("--link-error", v)))
                goto out;
        } else if ((r = cli_opt(a, "--timeout", &v)) != 0) {
            if (r < 0 || cli_parse_double("--timeout", v, &timeout))
                goto out;
        } else if ((r = cli_opt(a, "--count", &v)) != 0) {
            if (r < 0 || cli_parse_int("--count", v, 1, 100000000, &count))
                goto out;
        } else if (cli_flag(a, "--wait")) {
            wait = 1;
        } else if (cli_flag(a, "--is-result")) {
            o.is_result = 1;
        } else if (cli_flag(a, "--ignore-result")) {
            o.ignore_result = 1;
        } else if (a->argv[a->i][0] == '-') {
            fprintf(stderr, "toolbox: send: unknown option %s\n", a->argv[a->i]);
            goto out;
        } else if (!task) {
            task = a->argv[a->i++];
        } else {
            fprintf(stderr, "toolbox: send: unexpected argument '%s'\n", a->argv[a->i]);
            goto out;
        }
    }
    if (!task) {
        fprintf(stderr, "toolbox: send: missing TASK (e.g. toolbox send msg.add --args '[2, 3]')\n");
        goto out;
    }
    if (o.expires && o.expires_in > 0) {
        fprintf(stderr, "toolbox: send: --expires and --expires-at are exclusive\n");
        goto out;
    }
    if (o.eta && o.countdown > 0) {
        fprintf(stderr, "toolbox: send: --countdown and --eta are exclusive\n");
        goto out;
    }
    if (count > 1 && (wait || o.task_id)) {
        fprintf(stderr, "toolbox: send: --count cannot be combined with --wait or --id\n");
        goto out;
    }
    o.link = link;
    o.link_error = link_error;
    if (!(cfg = cli_config()))
        goto out;
    tbx_error err = {0};
    tbx_status st = tbx_producer_open(&p, cfg, 0, &err);
    if (st) {
        rc = cli_fail(st, &err);
        goto out;
    }
    char id[TBX_TASK_ID_LEN + 1];
    for (long long i = 0; i < count; i++) {
        st = count == 1 ? tbx_producer_send(p, task, args, kwargs, &o, id, &err)
                        : tbx_producer_publish(p, task, args, kwargs, &o, id, &err);
        if (st) {
            rc = cli_fail(st, &err);
            goto out;
        }
        puts(id);
    }
    if (count > 1 && (st = tbx_producer_flush(p, 120, &err))) {
        rc = cli_fail(st, &err);
        goto out;
    }
    fflush(stdout);
    rc = CLI_OK;
    if (wait)
        rc = cli_show_result(cfg, id, 1, timeout);
out:
    tbx_producer_close(p);
    tbx_config_free(cfg);
    json_decref(args);
    json_decref(kwargs);
    json_decref(link);
    json_decref(link_error);
    return rc;
}
