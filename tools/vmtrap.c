/*
 * tools/vmtrap.c — main() of the `vmtrap` command line tool.
 *
 * Sub-commands: run, demo (see cli_usage); ps and symbols (cmd_os.h). Exit codes: 0 success, 1 the run
 * or the guest failed (or the hook counts disagree with the guest's own),
 * 2 a usage error (bad option, missing image, unknown symbol, unsupported
 * driver), always with one line on stderr.
 */
#include <stdio.h>
#include <string.h>

#include <json-c/json_c_version.h>

#include "cli.h"
#include "cmd_os.h"
#ifdef VMT_CLI_HAVE_EMU
#include "vmtrap/emu.h"
#endif

/* `vmtrap --version`: vmtrap's version and the libraries it runs on. */
static int print_version(void)
{
    printf("vmtrap %s\n", VMT_CLI_VERSION);
#ifdef VMT_CLI_HAVE_EMU
    char libs[128];
    vmt_emu_library_versions(libs, sizeof libs);
    printf("  %s\n", libs);
#endif
    printf("  json-c %s\n", json_c_version());
    return CLI_EXIT_OK;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--version") == 0)
        return print_version();
#ifdef VMT_CLI_HAVE_SNAPSHOT
    if (argc > 1 && strcmp(argv[1], "snapshot") == 0)
        return cli_snapshot_main(argc - 1, argv + 1);
#endif
#ifdef VMT_CLI_HAVE_QEMU
    if (cli_is_qemu_run(argc, argv))
        return cli_qemu_main(argc, argv);
#endif
#ifdef VMT_CLI_HAVE_RESUME
    for (int i = 2; argc > 1 && strcmp(argv[1], "run") == 0 && i < argc; i++)
        if (strcmp(argv[i], "--snapshot") == 0)
            return cli_resume_main(argc - 1, argv + 1);
#endif
    vmtrap_options o;
    char err[512];
    /* Commands on a paused Linux machine (tools/cmd_os.h). */
    if (argc > 1 && strcmp(argv[1], "ps") == 0)
        return cli_cmd_ps(argc, argv);
    if (argc > 1 && strcmp(argv[1], "symbols") == 0)
        return cli_cmd_symbols(argc, argv);
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
