/*
 * tools/cmd_os.h — the commands that read a paused Linux machine through
 * the OS layer (vmtrap/os.h): `vmtrap ps FILE` and `vmtrap symbols FILE
 * PATTERN`. FILE is a snapshot (a QEMU ELF core or a .vmts file, read with
 * vmtrap/snapshot.h; memory is not copied). Guest text (comms,
 * symbol names) is escaped before it is printed; --json writes one object
 * per line (addresses as "0x..." strings: jq reads numbers as doubles).
 */
#ifndef VMTRAP_TOOLS_CMD_OS_H
#define VMTRAP_TOOLS_CMD_OS_H

#include "vmtrap/os.h"

int cli_cmd_ps(int argc, char **argv);
int cli_cmd_symbols(int argc, char **argv);

/* Shared by both: parse `CMD FILE [ARG] [--json] [--system-map MAP]
 * [--no-btf]`, load FILE and open the OS layer. On failure prints one line
 * and returns the exit code (2 usage, 1 failure); 0 with *os and *drv. */
struct vmt_snapshot;
typedef struct cli_os_args {
    struct vmt_snapshot *snap;
    const char *file;
    const char *arg;      /* PATTERN for symbols */
    int json;
    vmt_os_config cfg;
} cli_os_args;
int cli_os_begin(int argc, char **argv, int want_arg, cli_os_args *a, vmt_driver **drv, vmt_os **os);
/* Close what cli_os_begin opened. */
void cli_os_end(cli_os_args *a, vmt_driver *drv, vmt_os *os);
/* The kernel header line (text: "# ...", JSON: {"event":"kernel",...}). */
void cli_os_print_kernel(const vmt_os *os, int json);

#endif
