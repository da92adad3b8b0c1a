/*
 * tests/qemu/linux_snap.h — the shared Linux snapshot for qemu driver tests
 * and benchmarks (scripts/make-linux-snapshot.sh makes it; see the script
 * for what is in it). Finds or builds the cache, reads info.json (json-c)
 * and the kallsyms sample and tick lines from serial.txt, starts the qemu
 * driver on it (launch mode, QEMU's own saved state via -incoming), and
 * reads guest-virtual memory through the guest's page tables with the
 * project's walker over physical reads.
 */
#ifndef VMT_TESTS_QEMU_LINUX_SNAP_H
#define VMT_TESTS_QEMU_LINUX_SNAP_H

#include <stddef.h>
#include <stdint.h>

#include "vmtrap/driver.h"
#include "vmtrap/qemu.h"

#define SNAP_MAX_ARGS 64

typedef struct linux_snap {
    char dir[512];
    char serial_out[256];        /* the console file of the running copy */
    char *args[SNAP_MAX_ARGS];   /* qemu_resume_args (owned) */
    size_t nargs;
    int loop_pid;
    int tick_at_pause;
    char kernel_release[64];
} linux_snap;

/* 1 when qemu-system-x86_64 is on PATH. */
int snap_have_qemu(void);
/* Find the cache (building it with the script under source_dir if absent).
 * 0 on success; else -1 and a message in why. */
int snap_open(linux_snap *s, const char *source_dir, char *why, size_t why_len);
void snap_close(linux_snap *s);
/* Address of a symbol from the kallsyms sample (0 if absent). */
uint64_t snap_symbol(const linux_snap *s, const char *name);
/* Start QEMU on the snapshot through the driver (console -> s->serial_out). */
vmt_status snap_launch(linux_snap *s, int icount, int nop_skip, vmt_driver **out, char *why, size_t why_len);
/* Highest "tick N" in the running copy's console (0 if none yet). */
int snap_console_tick(const linux_snap *s);
/* Read a NUL-terminated string at a guest-virtual address (cr3 from regs). */
vmt_status snap_read_string(vmt_driver *d, const vmt_regs *r, uint64_t va, char *out, size_t cap);
/* Translate a guest-virtual address; *table_pa gets the level-1 table (0 for a large page). */
vmt_status snap_translate(vmt_driver *d, const vmt_regs *r, uint64_t va, uint64_t *pa, uint64_t *table_pa);

#endif
