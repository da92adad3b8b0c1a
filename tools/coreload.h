/*
 * tools/coreload.h — a QEMU `dump-guest-memory` ELF core (paging=false)
 * loaded into a mem driver, for commands that read a paused machine.
 *
 * TEMPORARY: to be replaced by the snapshot loader of the snapshot issue
 * when it lands on main (it restores registers and devices too). This one
 * copies RAM only: PT_LOADs by physical address; the ROM window just below
 * 4 GiB (0xfe000000..0xffffffff) is skipped so RAM stays contiguous.
 * Bounds: a segment whose file range is outside the file, or whose memory
 * would make RAM larger than 1 TiB, is a format error; nothing is leaked.
 */
#ifndef VMTRAP_TOOLS_CORELOAD_H
#define VMTRAP_TOOLS_CORELOAD_H

#include <stddef.h>

#include "vmtrap/driver.h"

/* 0 and *out on success; -1 with a one-line reason in err. */
int cli_core_load(const char *path, vmt_driver **out, char *err, size_t err_len);

#endif
