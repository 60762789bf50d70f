/*
 * main.c - `toolbox-conformance`: build the conformance suite from a configuration and run it against the
 * live broker and database (see include/toolbox/conformance.h for the checks and why they are harmless).
 *
 * Exit status: 0 when every check holds, 1 when one fails, 2 on a usage or configuration error.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "toolbox/conformance.h"

static const char USAGE[] =
    "usage: toolbox-conformance [--config FILE | --env NAME] [--set KEY=VALUE ...] [--producer-only]\n"
    "                           [--check NAME] [--tap FILE] [--xml FILE] [--verbose] [--no-fork]\n"
    "\n"
    "Checks that the configuration, and the broker and result database it names, fit the platform.\n"
    "  --producer-only   leave out what only a worker needs (writing results, least privilege, ...)\n"
    "  --check NAME      run one check only (e.g. route_to_msg)\n"
    "  --tap FILE        also write TAP to FILE ('-' for standard output)\n"
    "  --xml FILE        also write Check's XML report to FILE\n"
    "  --verbose         list every check, passed or not\n"
    "  --no-fork         run the checks in this process (for debuggers)\n"
    "The file is --config FILE, or config/NAME.yaml for --env NAME or $TOOLBOX_ENV; TOOLBOX_<KEY>\n"
    "variables and --set override it. The management API (for the bindings) is found through\n"
    "$TOOLBOX_BROKER_MANAGEMENT_URL, else derived from broker_url (port 15672, or 15671 for amqps).\n";

static int usage_error(const char *arg, const char *what)
{
    fprintf(stderr, "toolbox-conformance: %s: %s\n%s", arg, what, USAGE);
    return 2;
}

int main(int argc, char **argv)
{
    const char *config = NULL, *env = NULL, *tap = NULL, *xml = NULL, *only = NULL;
    const char *sets[65];
    int nsets = 0, producer_only = 0, verbose = 0, nofork = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = !strcmp(a, "--config") ? &config
                            : !strcmp(a, "--env")  ? &env
                            : !strcmp(a, "--tap")  ? &tap
                            : !strcmp(a, "--xml")  ? &xml
                            : !strcmp(a, "--check") ? &only
                                                   : NULL;
        if (slot || !strcmp(a, "--set")) {
            if (i + 1 >= argc)
                return usage_error(a, "needs a value");
            if (slot)
                *slot = argv[++i];
            else if (nsets < 64)
                sets[nsets++] = argv[++i];
            else
                return usage_error(a, "given too many times");
        } else if (!strcmp(a, "--producer-only")) {
            producer_only = 1;
        } else if (!strcmp(a, "--verbose")) {
            verbose = 1;
        } else if (!strcmp(a, "--no-fork")) {
            nofork = 1;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(USAGE, stdout);
            return 0;
        } else {
            return usage_error(a, "unknown argument");
        }
    }
    sets[nsets] = NULL;

    tbx_config *cfg = NULL;
    tbx_error err = {0};
    tbx_status st = tbx_config_load(&cfg, config, env, sets, &err);
    if (st) {
        fprintf(stderr, "toolbox-conformance: %s\n", err.msg[0] ? err.msg : tbx_strerror(st));
        return 2;
    }
    Suite *s = tbx_conformance_suite(cfg, producer_only);
    tbx_config_free(cfg); /* the suite keeps its own copy */
    if (!s) {
        fprintf(stderr, "toolbox-conformance: out of memory\n");
        return 2;
    }
    SRunner *sr = srunner_create(s);
    if (tap)
        srunner_set_tap(sr, tap);
    if (xml)
        srunner_set_xml(sr, xml);
    if (nofork)
        srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run(sr, NULL, only, verbose ? CK_VERBOSE : CK_ENV);
    int run = srunner_ntests_run(sr), failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    if (run == 0) {
        fprintf(stderr, "toolbox-conformance: no check ran%s%s%s\n", only ? " (no check named '" : "",
                only ? only : "", only ? "')" : "");
        return 2;
    }
    return failed == 0 ? 0 : 1;
}
