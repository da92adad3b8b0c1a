/*
 * resume/resume_internal.h — the vmt_resume object (internal).
 *
 * Parts: resume.c (open, save, restore, notes), resume_platform.c (device
 * state a kernel programmed, rebuilt through the bus like the kernel's own
 * accesses), resume_linux.c (what only symbols tell: LSTAR, the TSC rate,
 * the TSC and HPET counter the kernel's timekeeping expects).
 *
 * Invariants: drv, plat and snap are all set on a live handle; platform0 is
 * the platform blob of the starting point; clock0 the virtual time there.
 */
#ifndef VMT_RESUME_INTERNAL_H
#define VMT_RESUME_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/errbuf.h"
#include "vmtrap/resume.h"

/* What the OS layer found (0 = not found). */
typedef struct resume_linux {
    bool have_os;
    uint64_t tsc_hz;          /* tsc_khz * 1000 */
    uint64_t tsc;             /* TSC at the pause (timekeeper's last read) */
    bool have_hpet;
    uint64_t hpet_counter;    /* HPET main counter consistent with tsc */
    char how_tsc[200];
    char how_hpet[200];
} resume_linux;

struct vmt_resume {
    vmt_errbuf err;
    vmt_resume_config cfg;
    vmt_snapshot *snap;
    vmt_platform *plat;
    vmt_driver *drv;
    bool drv_released;        /* a session owns drv now */
    uint8_t *platform0;
    size_t platform0_len;
    vmt_clock_config clock;
    char **notes;             /* every reconstruction, in order */
    size_t nnotes, notecap;
    bool notes_oom;           /* a note could not be kept (the callback still saw it) */
};

/* Record (and report through cfg.note) one reconstruction. */
void resume_note(vmt_resume *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Program the platform as the kernel left it (bus accesses); notes each. */
vmt_status resume_platform_reconstruct(vmt_resume *r, const resume_linux *lx, char *why, size_t why_len);

/* Symbols: LSTAR & co. as fixups on the snapshot, the clock facts in *lx.
 * Without the OS layer: a note saying what is missing. */
vmt_status resume_linux_reconstruct(vmt_resume *r, resume_linux *lx, char *why, size_t why_len);

#endif
