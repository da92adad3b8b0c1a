/*
 * vmtrap/resume.h — a whole machine from a snapshot: the PC platform, the
 * emulator driver and the snapshot's RAM and vCPU state, ready to run.
 *
 * Design: vmt_resume_open() loads a snapshot (a QEMU ELF core or a vmtrap
 * snapshot file), fills what the file lacks (a sidecar first, then OS
 * knowledge read from the guest's own memory, then the symbol-free
 * reconstruction of the snapshot module), creates the platform (device
 * state from the snapshot when it has one, else reset + a reconstruction of
 * what the kernel programmed: LAPIC, IOAPIC, PIC, UART, HPET) and the emu
 * driver on the platform's bus with the snapshot's memory map, applies RAM
 * and vCPU state, and remembers the starting point for restores.
 *
 * Reconstructions are never silent: every value not taken from the file is
 * listed (vmt_resume_note_count/at, and the `note` callback as it is made)
 * with what it was derived from.
 *
 * Identity: one vmt_resume owns its snapshot, platform and driver; callers
 * run the driver through the driver contract (set_limit, wait_event) or a
 * session, and never destroy the driver themselves.
 *
 * Failure atomicity: open either returns a complete machine or nothing.
 * restore puts RAM (dirty pages), the vCPU, the platform and the virtual
 * clock back to the starting point; a failure there leaves the machine
 * unusable (the message says so).
 *
 * Limits: one vCPU (the emu driver's). The OS layer (kallsyms, BTF) is used
 * when it is built; without it a bare Linux core lacks LSTAR and the run
 * stops at the first system call (the note says so).
 *
 * Threading: one thread per handle.
 */
#ifndef VMTRAP_RESUME_H
#define VMTRAP_RESUME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtrap/driver.h"
#include "vmtrap/machine.h"
#include "vmtrap/platform.h"
#include "vmtrap/snapshot.h"
#include "vmtrap/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vmt_resume vmt_resume;

typedef void (*vmt_resume_note_fn)(void *ctx, const char *line);

typedef struct vmt_resume_config {
    const char *sidecar;          /* JSON sidecar path, may be NULL */
    vmt_serial_fn serial;         /* console lines (COM1), may be NULL */
    void *serial_ctx;
    vmt_resume_note_fn note;      /* each reconstruction as it is made, may be NULL */
    void *note_ctx;
    uint64_t insns_per_sec;       /* virtual clock; 0: 1e9 (1 instruction = 1 ns) */
    bool quiet;                   /* no load progress on stderr */
} vmt_resume_config;

vmt_status vmt_resume_open(const char *path, const vmt_resume_config *cfg, vmt_resume **out, char *why,
                           size_t why_len);
void vmt_resume_close(vmt_resume *r);
const char *vmt_resume_error(const vmt_resume *r);

vmt_driver *vmt_resume_driver(vmt_resume *r);
/* Hand the driver to a session (vmt_session_create owns what it is given):
 * from then on vmt_resume_close does not destroy it, and the caller
 * destroys the session (and with it the driver) before closing r. */
void vmt_resume_release_driver(vmt_resume *r);
vmt_platform *vmt_resume_platform(vmt_resume *r);
vmt_snapshot *vmt_resume_snapshot(vmt_resume *r);

/* Every reconstruction, in the order made ("vcpu0 lstar=0x...: kallsyms
 * entry_SYSCALL_64", "platform ioapic: pin 4 -> vector 37 ..."). */
size_t vmt_resume_note_count(const vmt_resume *r);
const char *vmt_resume_note_at(const vmt_resume *r, size_t i);

/* Guest virtual time now (ns), as the driver's clock and the platform see it. */
uint64_t vmt_resume_now_ns(const vmt_resume *r);

/* Run until `instructions` more have retired (0: no bound), `seconds` of
 * wall time passed (0: none) or the guest stops. Events other than STOPPED
 * (ports nobody claims, ...) are answered CONTINUE. *stop says why it
 * ended (VMT_STOP_INSN_LIMIT / TIME_LIMIT for the bounds). Instructions
 * retired are added to *retired when not NULL. */
vmt_status vmt_resume_run(vmt_resume *r, uint64_t instructions, double seconds, vmt_stop_info *stop,
                          uint64_t *retired);

/* Run until guest virtual time (vmt_resume_now_ns) reaches target_ns, at
 * most `instructions` more (0: no bound) or `seconds` of wall time (0:
 * none). Guest time, not wall time: the driver's clock (instructions at
 * cfg.insns_per_sec, plus the time idle HLTs skip to the next device
 * deadline). *reached = true when it ended at the first instruction
 * boundary at or after target_ns (past it only when a HLT skipped over
 * it); else *stop says why it ended (a bound, or the guest stopped). */
vmt_status vmt_resume_run_until_time(vmt_resume *r, uint64_t target_ns, uint64_t instructions, double seconds,
                                     bool *reached, vmt_stop_info *stop, uint64_t *retired);

/* Run until the instruction at virtual address va is about to execute for
 * the count-th time (count >= 1; e.g. a kernel function's entry), bounded
 * like vmt_resume_run. Uses the emu driver's debug-register breakpoint 0
 * (guest memory is never modified) and disarms it before returning, so a
 * vmt_resume_save right after holds the guest's own code bytes and DR7,
 * with RIP = va. *reached says whether it got there, *hits how many times
 * va executed; otherwise *stop says why the run ended. */
vmt_status vmt_resume_run_until_address(vmt_resume *r, uint64_t va, uint64_t count, uint64_t instructions,
                                        double seconds, bool *reached, uint64_t *hits, vmt_stop_info *stop,
                                        uint64_t *retired);

/* Save the paused machine (RAM, vCPU, platform, clock, the notes as
 * metadata) as a vmtrap snapshot file. */
vmt_status vmt_resume_save(vmt_resume *r, const char *path);

/* Back to the starting point (dirty pages only, vCPU, platform, clock). */
vmt_status vmt_resume_restore(vmt_resume *r, vmt_snapshot_run_stats *stats);

/* Invariants of the parts (snapshot, platform, driver). */
vmt_status vmt_resume_check(vmt_resume *r);

#ifdef __cplusplus
}
#endif
#endif
