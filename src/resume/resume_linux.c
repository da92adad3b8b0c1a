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
 * Reading: through a read-only driver over the snapshot's RAM (the OS
 * layer's only need is vmt_drv_read_phys), before any CPU driver exists.
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

#define STAR_LINUX 0x0023001000000000ull
#define FMASK_LINUX 0x257fd5ull
#define HPET_HZ 100000000ull

/* ---- a read-only driver over the snapshot's RAM ---- */

static vmt_status ro_read_phys(vmt_driver *d, vmt_pa pa, void *buf, size_t len)
{
    vmt_snapshot *s = vmt_driver_impl(d);
    vmt_status st = vmt_snapshot_read(s, pa, buf, len);
    if (st)
        return vmt_driver_fail(d, st, "pa 0x%" PRIx64 "+0x%zx is not in the snapshot's RAM", pa, len);
    return VMT_OK;
}

static void ro_destroy(vmt_driver *d) { (void)d; }

static const vmt_driver_ops ro_ops = {
    .name = "snapshot-ram",
    .destroy = ro_destroy,
    .read_phys = ro_read_phys,
};

static vmt_status ro_create(vmt_snapshot *s, vmt_driver **out, char *why, size_t why_len)
{
    size_t n = 0;
    const vmt_ram_range *rr = vmt_snapshot_ram_ranges(s, &n);
    vmt_caps caps;
    memset(&caps, 0, sizeof caps);
    caps.flags = VMT_CAP_READ_PHYS;
    caps.max_views = 1;
    caps.vcpus = 1;
    caps.ram_frames = n ? (rr[n - 1].start + rr[n - 1].size) / 4096 : 0;
    caps.maxphyaddr = 40;
    return vmt_driver_create(&ro_ops, s, &caps, out, why, why_len);
}

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

static void syscall_msrs(vmt_resume *r, vmt_os *os)
{
    vmt_snapshot *s = r->snap;
    const vmt_vcpu_state *v = vmt_snapshot_vcpu(s, 0);
    if (v && (v->known & VMT_VS_SYSCALL))
        return; /* a sidecar gave them */
    uint64_t lstar = 0, cstar = 0;
    if (sym(os, "entry_SYSCALL_64", &lstar)) {
        resume_note(r, "vcpu0 lstar: not reconstructed: kallsyms has no entry_SYSCALL_64");
        return;
    }
    (void)vmt_snapshot_fixup_set(s, 0, "lstar", lstar, "kallsyms: entry_SYSCALL_64 (syscall_init)");
    (void)vmt_snapshot_fixup_set(s, 0, "star", STAR_LINUX, "syscall_init: __USER32_CS 0x23 << 48 | __KERNEL_CS 0x10 << 32");
    (void)vmt_snapshot_fixup_set(s, 0, "fmask", FMASK_LINUX,
                                 "syscall_init: TF|DF|IF|IOPL|AC|NT|RF|ID and the arithmetic flags cleared");
    if (!sym(os, "entry_SYSCALL_compat", &cstar))
        (void)vmt_snapshot_fixup_set(s, 0, "cstar", cstar, "kallsyms: entry_SYSCALL_compat (syscall_init)");
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
    memset(lx, 0, sizeof *lx);
    vmt_driver *ro = NULL;
    vmt_status st = ro_create(r->snap, &ro, why, why_len);
    if (st)
        return st;
    vmt_os *os = NULL;
    vmt_os_config oc;
    memset(&oc, 0, sizeof oc);
    char inner[256] = "";
    if (vmt_os_open(ro, &oc, &os, inner, sizeof inner) != VMT_OK) {
        resume_note(r, "os: no Linux kernel found in RAM (%s): LSTAR, the TSC rate and the kernel's clocks are not "
                       "reconstructed", inner);
        vmt_driver_destroy(ro);
        return VMT_OK;
    }
    vmt_os_info info;
    vmt_os_get_info(os, &info);
    lx->have_os = true;
    resume_note(r, "os: %s (kallsyms %u symbols%s)", info.version, info.nsyms, info.has_btf ? ", BTF" : "");
    syscall_msrs(r, os);
    clock_facts(r, os, lx);
    vmt_os_close(os);
    vmt_driver_destroy(ro);
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
