/*
 * resume/resume_linux.c — what a bare core of a Linux guest lacks and only
 * the kernel's own symbols and types can tell, found with the OS layer
 * (vmtrap/os.h: kallsyms and BTF read from RAM, no profile).
 *
 * Reconstructed (each a fixup on the snapshot or a note):
 *  - LSTAR = entry_SYSCALL_64, CSTAR = entry_SYSCALL_compat (when present),
 *    STAR = __USER32_CS << 48 | __KERNEL_CS << 32 (0x23, 0x10), FMASK =
 *    the flags syscall_init() clears (0x257fd5), as syscall_init() wrote.
 *  - The TSC rate: `tsc_khz` (what the kernel calibrated) * 1000.
 *  - The TSC at the pause: the timekeeper's last TSC read
 *    (tk_core.timekeeper.tkr_mono.cycle_last, offsets from BTF): the guest
 *    resumes as if no time passed since its last clock read, so its clock
 *    never sees the TSC go backwards.
 *  - The HPET counter: the value the clocksource watchdog last read
 *    (clocksource_tsc.wd_last) plus the HPET ticks matching the TSC ticks
 *    since its TSC read (cs_last), so the watchdog's next comparison of the
 *    two clocks agrees and the TSC stays the clocksource.
 *
 * Reading: the OS layer straight over the snapshot's RAM
 * (vmt_os_open_snapshot), before any CPU driver exists; the SYSCALL MSRs
 * are the OS layer's own reconstruction (vmt_os_snapshot_reconstruct).
 *
 * Without the OS layer (module not built), nothing here is found: a note
 * says so, and a kernel that makes system calls will not run far.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "resume/resume_internal.h"

#ifdef VMT_RESUME_HAVE_OS
#include "vmtrap/os.h"

#define HPET_HZ 100000000ull

static vmt_status kread(vmt_os *os, uint64_t va, void *buf, size_t len)
{
    return vmt_os_read_kernel(os, va, buf, len, NULL);
}

static vmt_status sym(vmt_os *os, const char *name, uint64_t *va)
{
    vmt_os_symbol s;
    vmt_status st = vmt_os_symbol_by_name(os, name, &s);
    if (!st)
        *va = s.addr;
    return st;
}

static vmt_status member(vmt_os *os, const char *type, const char *m, uint64_t *off)
{
    return vmt_os_member_offset(os, type, m, off);
}

/* LSTAR & co. as syscall_init wrote them: the OS layer's reconstruction
 * (one place knows Linux's values). A sidecar's values are kept. */
static void syscall_msrs(vmt_resume *r)
{
    const vmt_vcpu_state *v = vmt_snapshot_vcpu(r->snap, 0);
    if (v && (v->known & VMT_VS_SYSCALL))
        return;
    if (vmt_os_snapshot_reconstruct(NULL, r->snap) != VMT_OK)
        resume_note(r, "vcpu0 lstar: not reconstructed: %s", vmt_snapshot_error(r->snap));
}

static void clock_facts(vmt_resume *r, vmt_os *os, resume_linux *lx)
{
    uint64_t va = 0;
    uint32_t khz = 0;
    if (!sym(os, "tsc_khz", &va) && !kread(os, va, &khz, sizeof khz) && khz) {
        lx->tsc_hz = (uint64_t)khz * 1000;
        resume_note(r, "clock tsc_hz=%" PRIu64 ": the kernel's calibrated tsc_khz %u", lx->tsc_hz, khz);
    } else {
        resume_note(r, "clock tsc_hz: tsc_khz not readable through kallsyms; the driver's default rate is used");
    }
    /* tk_core = { seqcount_raw_spinlock_t seq; struct timekeeper timekeeper; } */
    uint64_t tk = 0, seq_size = 0, tkr = 0, cyc = 0, cycle_last = 0;
    if (!sym(os, "tk_core", &tk) && !vmt_os_type_size(os, "seqcount_raw_spinlock", &seq_size) &&
        !member(os, "timekeeper", "tkr_mono", &tkr) && !member(os, "tk_read_base", "cycle_last", &cyc)) {
        uint64_t tk_off = (seq_size + 7) & ~7ull;
        if (!kread(os, tk + tk_off + tkr + cyc, &cycle_last, sizeof cycle_last) && cycle_last) {
            lx->tsc = cycle_last;
            snprintf(lx->how_tsc, sizeof lx->how_tsc,
                     "tk_core.timekeeper.tkr_mono.cycle_last (BTF offsets): the kernel's last TSC read");
        }
    }
    if (!lx->tsc)
        resume_note(r, "vcpu0 tsc: tk_core.timekeeper.tkr_mono.cycle_last not found: the TSC starts at 0 and the "
                       "kernel's clock may jump");
    /* The watchdog's last pair of reads of the TSC clocksource. */
    uint64_t cs = 0, wd_off = 0, csl_off = 0, wd_last = 0, cs_last = 0;
    const char *miss = NULL;
    if (!lx->tsc || !lx->tsc_hz)
        miss = "the TSC or its rate";
    else if (sym(os, "clocksource_tsc", &cs))
        miss = "kallsyms clocksource_tsc";
    else if (member(os, "clocksource", "wd_last", &wd_off) || member(os, "clocksource", "cs_last", &csl_off))
        miss = "BTF clocksource.wd_last/cs_last";
    else if (kread(os, cs + wd_off, &wd_last, 8) || kread(os, cs + csl_off, &cs_last, 8))
        miss = "clocksource_tsc in memory";
    else if (!cs_last)
        miss = "watchdog read of the TSC yet (cs_last 0)";
    if (miss) {
        snprintf(lx->how_hpet, sizeof lx->how_hpet, "no %s", miss);
        return;
    }
    if (cs_last > lx->tsc) {
        /* The watchdog read the TSC after the timekeeper did (NOHZ idle
         * stops the tick): that is the latest TSC the kernel saw. */
        lx->tsc = cs_last;
        snprintf(lx->how_tsc, sizeof lx->how_tsc,
                 "clocksource_tsc.cs_last (BTF offsets): the clocksource watchdog's TSC read, the latest the kernel "
                 "made (after tk_core's cycle_last)");
    }
    unsigned __int128 ticks = (unsigned __int128)(lx->tsc - cs_last) * HPET_HZ / lx->tsc_hz;
    lx->hpet_counter = wd_last + (uint64_t)ticks;
    lx->have_hpet = true;
    snprintf(lx->how_hpet, sizeof lx->how_hpet,
             "clocksource_tsc.wd_last 0x%" PRIx64 " + the HPET ticks of the %" PRIu64 " TSC ticks since its cs_last",
             wd_last, lx->tsc - cs_last);
}

vmt_status resume_linux_reconstruct(vmt_resume *r, resume_linux *lx, char *why, size_t why_len)
{
    (void)why;
    (void)why_len;
    memset(lx, 0, sizeof *lx);
    vmt_driver *ro = NULL;
    vmt_os *os = NULL;
    vmt_os_config oc;
    memset(&oc, 0, sizeof oc);
    char inner[256] = "";
    if (vmt_os_open_snapshot(r->snap, &oc, &os, &ro, inner, sizeof inner) != VMT_OK) {
        resume_note(r, "os: no Linux kernel found in RAM (%s): LSTAR, the TSC rate and the kernel's clocks are not "
                       "reconstructed", inner);
        return VMT_OK;
    }
    vmt_os_info info;
    vmt_os_get_info(os, &info);
    lx->have_os = true;
    resume_note(r, "os: %s (kallsyms %u symbols%s)", info.version, info.nsyms, info.has_btf ? ", BTF" : "");
    clock_facts(r, os, lx);
    vmt_os_close(os);
    vmt_driver_destroy(ro);
    syscall_msrs(r);
    return VMT_OK;
}

#else

vmt_status resume_linux_reconstruct(vmt_resume *r, resume_linux *lx, char *why, size_t why_len)
{
    (void)why;
    (void)why_len;
    memset(lx, 0, sizeof *lx);
    resume_note(r, "os: the OS layer is not built into this vmtrap: LSTAR, the TSC rate and the kernel's clocks "
                   "are not reconstructed (a Linux guest stops at its first system call)");
    return VMT_OK;
}

#endif
