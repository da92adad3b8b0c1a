/*
 * bench/bench_qemu.c — what watching a live QEMU costs, measured in one run
 * on the project's Linux snapshot resumed in a QEMU the driver launches
 * (TCG, -icount shift=auto,sleep=off: guest idle time is skipped, so the
 * guest's loop runs as fast as the host lets it and ticks/s is its speed):
 *   - gdbstub round trip: one 8-byte physical read ('m'), one register
 *     read ('g'), one single step (STEP response -> SINGLESTEP event: 's',
 *     stop reply, 'g');
 *   - loop speed without hooks (ticks per wall second) and with a hook on
 *     do_sys_openat2 (each hit: stop, registers, filename read through the
 *     guest page tables, step over the breakpoint, continue), and from the
 *     two the wall-clock cost of one hit;
 *   - how many breakpoints QEMU accepts (up to N_BP);
 *   - the same workload on the emu driver (the snapshot's ELF core resumed
 *     on the emulator + platform, when built): EMU_TICKS loop ticks plain
 *     and hooked through the monitor, in process CPU time. The loop opens
 *     3 files a tick; a few microseconds per hit are far below the noise of
 *     a 0.2 s tick, so the emu hook is on _raw_spin_lock (~860 hits a tick
 *     of the same workload; each hit reads 64 bytes of guest memory through
 *     the page tables, like the QEMU hit reads a filename): per-hit cost =
 *     (hooked - plain CPU) / hits.
 * Usage: bench_qemu [seconds per phase] (default 4). Needs
 * qemu-system-x86_64 and builds the snapshot cache if it is missing.
 * Ends with one RESULT line.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "linux_snap.h"
#include "vmtrap/driver.h"
#include "vmtrap/qemu.h"
#ifdef VMT_BENCH_QEMU_EMU
#include "vmtrap/monitor.h"
#include "vmtrap/os.h"
#include "vmtrap/resume.h"
#include "vmtrap/session.h"
#endif

#define N_ROUND 2000
#define N_BP 20000

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(vmt_driver *d, const char *what, vmt_status st)
{
    fprintf(stderr, "bench_qemu: %s: %s (%s)\n", what, vmt_strerror(st), d ? vmt_driver_error(d) : "");
    exit(1);
}

#ifdef VMT_BENCH_QEMU_EMU
#define EMU_TICKS 6

typedef struct emu_run {
    unsigned ticks;
    uint64_t hits;
} emu_run;

static void emu_on_serial(void *ctx, const char *line)
{
    if (strncmp(line, "tick ", 5) == 0)
        ((emu_run *)ctx)->ticks++;
}

static vmt_status emu_on_hit(const vmt_hit *hit, void *user)
{
    emu_run *e = user;
    uint8_t buf[64];
    size_t done = 0;
    (void)vmt_hit_read(hit, hit->regs.rsp, buf, sizeof buf, &done);
    e->hits++;
    return VMT_OK;
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* EMU_TICKS ticks of the loop on the emu driver (after a warm-up tick),
 * hooked or not: CPU seconds, instructions, hits. 0 on success. */
static int emu_ticks(const char *core, int hook, double *cpu, uint64_t *insns, uint64_t *hits)
{
    emu_run e = { 0, 0 };
    vmt_resume_config cfg = { .serial = emu_on_serial, .serial_ctx = &e, .quiet = true };
    vmt_resume *r = NULL;
    char why[512];
    if (vmt_resume_open(core, &cfg, &r, why, sizeof why)) {
        fprintf(stderr, "bench_qemu: emu: %s\n", why);
        return -1;
    }
    static const char *const hooks[] = { "_raw_spin_lock" };
    int rc = -1;
    vmt_os *os = NULL;
    vmt_driver *ro = NULL, *drv = vmt_resume_driver(r);
    vmt_image *img = NULL;
    vmt_session *s = NULL;
    vmt_monitor *m = NULL;
    vmt_os_config oc = { 0 };
    if (vmt_os_open_snapshot(vmt_resume_snapshot(r), &oc, &os, &ro, why, sizeof why) ||
        vmt_os_symbols_image(os, hooks, 1, 256ull << 20, &img, why, sizeof why)) {
        fprintf(stderr, "bench_qemu: emu: %s\n", why);
        goto out;
    }
    vmt_resume_release_driver(r);
    if (vmt_session_create(drv, NULL, &s) || vmt_monitor_create(s, img, &m, why, sizeof why)) {
        fprintf(stderr, "bench_qemu: emu: monitor\n");
        goto out;
    }
    if (hook && vmt_monitor_hook(m, hooks[0], emu_on_hit, &e)) {
        fprintf(stderr, "bench_qemu: emu: hook: %s\n", vmt_monitor_error(m));
        goto out;
    }
    for (int i = 0; i < 100 && e.ticks < 1; i++)
        if (vmt_drv_set_limit(drv, 0, 1000000) || vmt_monitor_run(m))
            goto out;
    vmt_driver_stats d0, d1;
    vmt_drv_stats(drv, &d0);
    unsigned start = e.ticks;
    uint64_t h0 = e.hits;
    double t0 = cpu_s();
    for (int i = 0; i < 4000 && e.ticks < start + EMU_TICKS; i++)
        if (vmt_drv_set_limit(drv, 0, 1000000) || vmt_monitor_run(m))
            goto out;
    *cpu = cpu_s() - t0;
    vmt_drv_stats(drv, &d1);
    *insns = d1.instructions - d0.instructions;
    *hits = e.hits - h0;
    rc = e.ticks == start + EMU_TICKS ? 0 : -1;
out:
    vmt_monitor_destroy(m);
    if (s)
        vmt_session_destroy(s);
    vmt_image_destroy(img);
    vmt_os_close(os);
    vmt_driver_destroy(ro);
    vmt_resume_close(r);
    return rc;
}
#endif

/* Run the unhooked guest for `seconds` (wait_event times out: nothing armed). */
static void run_plain(vmt_driver *d, double seconds)
{
    vmt_event ev;
    vmt_status st = vmt_drv_wait_event(d, (int)(seconds * 1000), &ev);
    if (st != VMT_E_TIMEOUT)
        die(d, "plain run", st ? st : VMT_E_INTERNAL);
}

/* Hook do_sys_openat2 for `phase` seconds; every hit reads the filename.
 * Returns the wall time; *hits and *tick_end (console tick at the end). */
static double hooked(vmt_driver *d, linux_snap *snap, uint64_t openat2, double phase, unsigned *hits, int *tick_end)
{
    vmt_status st;
    vmt_event ev;
    vmt_response cont = vmt_response_continue();
    if ((st = vmt_drv_hw_breakpoint(d, VMT_VCPU_ALL, 0, openat2, 1)))
        die(d, "breakpoint", st);
    *hits = 0;
    double t0 = now_s();
    while (now_s() - t0 < phase) {
        if ((st = vmt_drv_wait_event(d, 5000, &ev)) || ev.kind != VMT_EVENT_HW_BREAKPOINT)
            die(d, "hooked run", st ? st : VMT_E_INTERNAL);
        char name[256];
        if ((st = snap_read_string(d, &ev.regs, ev.regs.rsi, name, sizeof name)))
            die(d, "filename", st);
        (*hits)++;
        if ((st = vmt_drv_respond(d, &ev, &cont)))
            die(d, "respond", st);
    }
    double took = now_s() - t0;
    if ((st = vmt_drv_hw_breakpoint(d, VMT_VCPU_ALL, 0, 0, 0)))
        die(d, "clear", st);
    *tick_end = snap_console_tick(snap);
    return took;
}

int main(int argc, char **argv)
{
    double phase = argc > 1 ? atof(argv[1]) : 4.0;
    if (phase <= 0)
        phase = 4.0;
    if (!snap_have_qemu()) {
        printf("bench_qemu: qemu-system-x86_64 is not installed\n");
        return 0;
    }
    linux_snap snap;
    char why[512];
    if (snap_open(&snap, VMT_SOURCE_DIR, why, sizeof why)) {
        fprintf(stderr, "bench_qemu: %s\n", why);
        return 1;
    }
    uint64_t openat2 = snap_symbol(&snap, "do_sys_openat2");
    uint64_t btf = snap_symbol(&snap, "__start_BTF");
    vmt_driver *d;
    vmt_status st = snap_launch(&snap, 1, 1, &d, why, sizeof why);
    if (st) {
        fprintf(stderr, "bench_qemu: %s\n", why);
        return 1;
    }
    /* Warm up: let the resumed guest settle (TCG translates its loop once). */
    run_plain(d, 1.0);

    /* Round trips. */
    uint8_t buf[8];
    double t0 = now_s();
    for (int i = 0; i < N_ROUND; i++)
        if ((st = vmt_drv_read_phys(d, 0x1000000 + 8 * (uint64_t)(i % 64), buf, 8)))
            die(d, "read_phys", st);
    double m_us = (now_s() - t0) / N_ROUND * 1e6;
    vmt_regs r;
    t0 = now_s();
    for (int i = 0; i < N_ROUND; i++) {
        if ((st = vmt_drv_set_regs(d, 0, (vmt_drv_get_regs(d, 0, &r), &r))))
            die(d, "get_regs", st);
    }
    double g_us = (now_s() - t0) / N_ROUND * 1e6;
    /* Steps: arm a breakpoint to get an event, then STEP N times. */
    if ((st = vmt_drv_hw_breakpoint(d, VMT_VCPU_ALL, 0, openat2, 1)))
        die(d, "breakpoint", st);
    vmt_event ev;
    if ((st = vmt_drv_wait_event(d, 20000, &ev)) || ev.kind != VMT_EVENT_HW_BREAKPOINT)
        die(d, "first hit", st ? st : VMT_E_INTERNAL);
    if ((st = vmt_drv_hw_breakpoint(d, VMT_VCPU_ALL, 0, 0, 0)))
        die(d, "clear", st);
    t0 = now_s();
    for (int i = 0; i < N_ROUND; i++) {
        vmt_response resp = { .actions = VMT_RESP_STEP };
        if ((st = vmt_drv_respond(d, &ev, &resp)) || (st = vmt_drv_wait_event(d, 5000, &ev)) ||
            ev.kind != VMT_EVENT_SINGLESTEP)
            die(d, "step", st ? st : VMT_E_INTERNAL);
    }
    double step_us = (now_s() - t0) / N_ROUND * 1e6;
    vmt_response cont = vmt_response_continue();
    if ((st = vmt_drv_respond(d, &ev, &cont)))
        die(d, "respond", st);

    /* Loop speed, plain. */
    int k0 = snap_console_tick(&snap);
    t0 = now_s();
    run_plain(d, phase);
    double plain_s = now_s() - t0;
    int k1 = snap_console_tick(&snap);
    double plain_tps = (k1 - k0) / plain_s;

    /* Loop speed, hooked: every open decoded. */
    unsigned hits;
    int k2;
    double hooked_s = hooked(d, &snap, openat2, phase, &hits, &k2);
    double hooked_tps = (k2 - k1) / hooked_s;
    /* Wall time per hit beyond what the guest work itself took. */
    double hit_us = plain_tps > 0 && hits ? (hooked_s - (k2 - k1) / plain_tps) / hits * 1e6 : 0;
    vmt_qemu_info info;
    vmt_qemu_get_info(d, &info);
    uint64_t skips = info.nop_skips;

    /* Breakpoint capacity. */
    unsigned accepted = 0;
    t0 = now_s();
    for (unsigned i = 0; i < N_BP; i++) {
        if (vmt_qemu_breakpoint(d, btf + 16 * (uint64_t)i, 1))
            break;
        accepted++;
    }
    double bp_set_us = accepted ? (now_s() - t0) / accepted * 1e6 : 0;
    for (unsigned i = 0; i < accepted; i++)
        if ((st = vmt_qemu_breakpoint(d, btf + 16 * (uint64_t)i, 0)))
            die(d, "clear extra", st);

    vmt_driver_stats stats;
    vmt_drv_stats(d, &stats);
    vmt_driver_destroy(d);

    /* The same hooked run resuming every hit by a gdbstub step-over (remove,
     * step, re-insert: more translation-cache flushes per hit). */
    if ((st = snap_launch(&snap, 1, 0, &d, why, sizeof why))) {
        fprintf(stderr, "bench_qemu: %s\n", why);
        return 1;
    }
    run_plain(d, 1.0);
    int s0 = snap_console_tick(&snap), s1;
    unsigned hits_step;
    double step_s = hooked(d, &snap, openat2, phase, &hits_step, &s1);
    double hit_step_us = plain_tps > 0 && hits_step ? (step_s - (s1 - s0) / plain_tps) / hits_step * 1e6 : 0;
    vmt_driver_destroy(d);

    /* The same workload on the emu driver. */
    double emu_hit_us = 0, emu_plain_mips = 0, emu_hooked_mips = 0, emu_hits_per_tick = 0;
#ifdef VMT_BENCH_QEMU_EMU
    {
        char core[600];
        snprintf(core, sizeof core, "%s/core.elf", snap.dir);
        double pw = 0, hw = 0;
        uint64_t pi = 0, hi = 0, ph = 0, hh = 0;
        if (emu_ticks(core, 0, &pw, &pi, &ph) == 0 && emu_ticks(core, 1, &hw, &hi, &hh) == 0 && hh) {
            /* the guest does the same work in both (deterministic): the
             * hooked run's extra CPU time spread over its hits */
            emu_hit_us = (hw - pw) / hh * 1e6;
            emu_plain_mips = (double)pi / pw / 1e6;
            emu_hooked_mips = (double)hi / hw / 1e6;
            emu_hits_per_tick = (double)hh / EMU_TICKS;
        }
    }
#endif
    printf("gdbstub round trip: phys read (8 B) %.1f us, register read %.1f us, single step %.1f us\n", m_us, g_us,
           step_us);
    printf("guest loop: %.2f ticks/s plain, %.2f ticks/s with every open hooked (%u hits, %.1f hits/s)\n", plain_tps,
           hooked_tps, hits, hits / hooked_s);
    printf("cost of one hit (stop, regs, filename through the page tables, resume): %.1f us wall resuming past "
           "the entry NOP (%llu of %u hits), %.1f us wall with a gdbstub step-over (%u hits)\n",
           hit_us, (unsigned long long)skips, hits, hit_step_us, hits_step);
    if (emu_plain_mips > 0)
        printf("emu driver, same snapshot (6 ticks, hook on _raw_spin_lock): %.2f us CPU per hit (%.0f hits/tick), "
               "%.1f M instructions/s plain, %.1f hooked; a hit costs %.0f x more on qemu\n", emu_hit_us, emu_hits_per_tick, emu_plain_mips, emu_hooked_mips,
               emu_hit_us > 0 ? hit_us / emu_hit_us : 0);
    else
        printf("emu driver: not measured (not built, or the run failed)\n");
    printf("breakpoints accepted: %u of %u tried (%.1f us each to set)\n", accepted, N_BP, bp_set_us);
    printf("driver: %llu exits (%llu internal)\n", (unsigned long long)stats.exits,
           (unsigned long long)stats.internal_exits);
    printf("RESULT qemu_read_us=%.1f qemu_regs_us=%.1f qemu_step_us=%.1f qemu_hit_us=%.1f qemu_hit_stepover_us=%.1f "
           "stepover_vs_nopskip=%.2f ticks_per_s_plain=%.2f ticks_per_s_hooked=%.2f hooked_speed_ratio=%.3f "
           "hits_per_s=%.1f breakpoints_accepted=%u emu_hit_us=%.1f qemu_over_emu_hit=%.0f emu_mips_plain=%.1f "
           "emu_mips_hooked=%.1f\n",
           m_us, g_us, step_us, hit_us, hit_step_us, hit_us > 0 ? hit_step_us / hit_us : 0, plain_tps, hooked_tps,
           plain_tps > 0 ? hooked_tps / plain_tps : 0, hits / hooked_s, accepted, emu_hit_us,
           emu_hit_us > 0 ? hit_us / emu_hit_us : 0, emu_plain_mips, emu_hooked_mips);
    snap_close(&snap);
    return 0;
}
