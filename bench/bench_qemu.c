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
 *   - a watched page-table page (the driver's write-only VIEW_PERM, a
 *     gdbstub watchpoint on the frame through the direct map): the loop
 *     shell's heap table page (found at its "tick" write), the loop speed
 *     with it watched, every hit answered CONTINUE, and from that the wall
 *     cost of one watched-table write; and the cost of write-protecting and
 *     releasing a frame (QEMU flushes its translated code at each).
 * Usage: bench_qemu [seconds per phase] (default 4). Needs
 * qemu-system-x86_64 and builds the snapshot cache if it is missing.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "linux_snap.h"
#include "vmtrap/driver.h"
#include "vmtrap/qemu.h"

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

/* Watched table page: returns the wall time of `phase` seconds with the loop
 * shell's heap table page write-protected; *hits, *tick_end, *set_us. */
static double watched(vmt_driver *d, linux_snap *snap, double phase, unsigned *hits, int *tick_end, double *set_us)
{
    vmt_status st;
    vmt_event ev;
    vmt_response cont = vmt_response_continue();
    uint64_t ksys_write = snap_symbol(snap, "ksys_write");
    if (!ksys_write)
        die(d, "ksys_write is not in the kallsyms sample", VMT_E_NOTFOUND);
    if ((st = vmt_drv_hw_breakpoint(d, VMT_VCPU_ALL, 0, ksys_write, 1)))
        die(d, "breakpoint", st);
    /* The shell writes "tick N pid P" from a heap buffer (rsi). */
    uint64_t table_pa = 0, buf_pa;
    for (int i = 0; i < 200 && !table_pa; i++) {
        if ((st = vmt_drv_wait_event(d, 10000, &ev)) || ev.kind != VMT_EVENT_HW_BREAKPOINT)
            die(d, "waiting for a tick write", st ? st : VMT_E_INTERNAL);
        char head[5] = "";
        if (snap_translate(d, &ev.regs, ev.regs.rsi, &buf_pa, &table_pa) == VMT_OK &&
            (vmt_drv_read_phys(d, buf_pa, head, 4) != VMT_OK || strncmp(head, "tick", 4) != 0))
            table_pa = 0;
        if ((st = vmt_drv_respond(d, &ev, &cont)))
            die(d, "respond", st);
    }
    if ((st = vmt_drv_hw_breakpoint(d, VMT_VCPU_ALL, 0, 0, 0)))
        die(d, "clear", st);
    if (!table_pa)
        die(d, "no tick write from a 4 KiB heap page", VMT_E_NOTFOUND);
    /* nokaslr snapshot: the direct map at its default base (the driver checks it maps the frame). */
    if ((st = vmt_qemu_set_map_base(d, 0xffff888000000000ull)))
        die(d, "map base", st);
    vmt_gfn gfn = table_pa >> 12;
    double t0 = now_s();
    for (int i = 0; i < 10; i++)
        if ((st = vmt_drv_view_set_access(d, 0, gfn, VMT_ACCESS_RX)) ||
            (st = vmt_drv_view_set_access(d, 0, gfn, VMT_ACCESS_RWX)))
            die(d, "write-protect a frame", st);
    *set_us = (now_s() - t0) / 20 * 1e6;
    if ((st = vmt_drv_view_set_access(d, 0, gfn, VMT_ACCESS_RX)))
        die(d, "write-protect a frame", st);
    int k0 = snap_console_tick(snap);
    *hits = 0;
    t0 = now_s();
    while (now_s() - t0 < phase) {
        st = vmt_drv_wait_event(d, 500, &ev);
        if (st == VMT_E_TIMEOUT)
            continue;
        if (st || ev.kind != VMT_EVENT_MEM_ACCESS)
            die(d, "watched run", st ? st : VMT_E_INTERNAL);
        (*hits)++;
        if ((st = vmt_drv_respond(d, &ev, &cont)))
            die(d, "respond", st);
    }
    double took = now_s() - t0;
    if ((st = vmt_drv_view_set_access(d, 0, gfn, VMT_ACCESS_RWX)))
        die(d, "release the frame", st);
    *tick_end = snap_console_tick(snap) - k0;
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

    /* A watched page-table page. */
    if ((st = snap_launch(&snap, 1, 1, &d, why, sizeof why))) {
        fprintf(stderr, "bench_qemu: %s\n", why);
        return 1;
    }
    run_plain(d, 1.0);
    unsigned watch_hits;
    int watch_ticks;
    double watch_set_us;
    double watch_s = watched(d, &snap, phase, &watch_hits, &watch_ticks, &watch_set_us);
    double watch_tps = watch_ticks / watch_s;
    double watch_hit_us = plain_tps > 0 && watch_hits ? (watch_s - watch_ticks / plain_tps) / watch_hits * 1e6 : 0;
    vmt_driver_destroy(d);
    printf("gdbstub round trip: phys read (8 B) %.1f us, register read %.1f us, single step %.1f us\n", m_us, g_us,
           step_us);
    printf("guest loop: %.2f ticks/s plain, %.2f ticks/s with every open hooked (%u hits, %.1f hits/s)\n", plain_tps,
           hooked_tps, hits, hits / hooked_s);
    printf("cost of one hit (stop, regs, filename through the page tables, resume): %.1f us wall resuming past "
           "the entry NOP (%llu of %u hits), %.1f us wall with a gdbstub step-over (%u hits)\n",
           hit_us, (unsigned long long)skips, hits, hit_step_us, hits_step);
    printf("breakpoints accepted: %u of %u tried (%.1f us each to set)\n", accepted, N_BP, bp_set_us);
    printf("driver: %llu exits (%llu internal)\n", (unsigned long long)stats.exits,
           (unsigned long long)stats.internal_exits);
    printf("watched table page (the shell's heap page table): %.2f ticks/s, %u watch hits (%.1f per tick), "
           "%.1f us wall per hit; write-protect or release a frame %.1f us\n",
           watch_tps, watch_hits, watch_ticks ? (double)watch_hits / watch_ticks : 0, watch_hit_us, watch_set_us);
    printf("RESULT qemu_read_us=%.1f qemu_regs_us=%.1f qemu_step_us=%.1f qemu_hit_us=%.1f qemu_hit_stepover_us=%.1f "
           "stepover_vs_nopskip=%.2f ticks_per_s_plain=%.2f ticks_per_s_hooked=%.2f hooked_speed_ratio=%.3f "
           "hits_per_s=%.1f breakpoints_accepted=%u qemu_watch_hit_us=%.1f watch_hits_per_tick=%.1f "
           "ticks_per_s_watched=%.2f qemu_watch_set_us=%.1f\n",
           m_us, g_us, step_us, hit_us, hit_step_us, hit_us > 0 ? hit_step_us / hit_us : 0, plain_tps, hooked_tps,
           plain_tps > 0 ? hooked_tps / plain_tps : 0, hits / hooked_s, accepted, watch_hit_us,
           watch_ticks ? (double)watch_hits / watch_ticks : 0, watch_tps, watch_set_us);
    snap_close(&snap);
    return 0;
}
