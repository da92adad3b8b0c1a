/*
 * tools/vmtrap.c — main() of the `vmtrap` command line tool.
 *
 * Sub-commands: run, demo (see cli_usage). Exit codes: 0 success, 1 the run
 * or the guest failed (or the hook counts disagree with the guest's own),
 * 2 a usage error (bad option, missing image, unknown symbol, unsupported
 * driver), always with one line on stderr.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

int main(int argc, char **argv)
{
#ifdef VMT_CLI_HAVE_SNAPSHOT
    if (argc > 1 && strcmp(argv[1], "snapshot") == 0)
        return cli_snapshot_main(argc - 1, argv + 1);
#endif
    vmtrap_options o;
    char err[512];
    int rc = cli_parse_options(argc, argv, &o, err, sizeof err);
    if (rc != CLI_EXIT_OK) {
        fprintf(stderr, "vmtrap: %s\n", err);
        return rc;
    }
    if (o.command == CLI_CMD_HELP) {
        cli_usage(stdout);
        cli_free_options(&o);
        return CLI_EXIT_OK;
    }
    rc = cli_run(&o, argv[0]);
    cli_free_options(&o);
    return rc;
}
