/*
 * bench/bench_qemu_ptm.c — what a watched page-table page costs on the qemu
 * driver, measured in one run on the project's Linux snapshot resumed in a
 * QEMU the driver launches (TCG, -icount shift=auto,sleep=off: idle time is
 * skipped, so ticks per wall second is the guest loop's speed):
 *   - the loop's speed unwatched (ticks per wall second);
 *   - the loop shell's heap page table (found at its "tick" write: the
 *     buffer is on its heap) write-protected through the driver's write-only
 *     VIEW_PERM (a gdbstub watchpoint on the frame through the direct map),
 *     every watch stop answered CONTINUE: ticks per second, stops per tick,
 *     and from the two speeds the wall cost of one watched-table write;
 *   - write-protecting and releasing a frame (one Z2 / z2 each; QEMU 7.2
 *     flushes its translated code at each).
 * Usage: bench_qemu_ptm [seconds per phase] (default 4). Needs
 * qemu-system-x86_64 and builds the snapshot cache if it is missing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "linux_snap.h"
#include "vmtrap/driver.h"
#include "vmtrap/qemu.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(vmt_driver *d, const char *what, vmt_status st)
{
    fprintf(stderr, "bench_qemu_ptm: %s: %s (%s)\n", what, vmt_strerror(st), d ? vmt_driver_error(d) : "");
    exit(1);
}

/* Run the unwatched guest for `seconds` (nothing armed: wait_event times out). */
static void run_plain(vmt_driver *d, double seconds)
{
    vmt_event ev;
    vmt_status st = vmt_drv_wait_event(d, (int)(seconds * 1000), &ev);
    if (st != VMT_E_TIMEOUT)
        die(d, "plain run", st ? st : VMT_E_INTERNAL);
}

/* Watched table page: returns the wall time of `phase` seconds with the loop
 * shell's heap table page write-protected; *hits, *tick_end (ticks in the
 * phase), *set_us (write-protect or release one frame). */
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
        printf("bench_qemu_ptm: qemu-system-x86_64 is not installed\n");
        printf("RESULT skipped=1\n");
        return 0;
    }
    linux_snap snap;
    char why[512];
    if (snap_open(&snap, VMT_SOURCE_DIR, why, sizeof why)) {
        fprintf(stderr, "bench_qemu_ptm: %s\n", why);
        return 1;
    }
    vmt_driver *d;
    vmt_status st = snap_launch(&snap, 1, 1, &d, why, sizeof why);
    if (st) {
        fprintf(stderr, "bench_qemu_ptm: %s\n", why);
        return 1;
    }
    run_plain(d, 1.0); /* let the resumed guest settle (TCG translates its loop once) */
    int k0 = snap_console_tick(&snap);
    double t0 = now_s();
    run_plain(d, phase);
    double plain_s = now_s() - t0;
    double plain_tps = (snap_console_tick(&snap) - k0) / plain_s;
    unsigned hits;
    int ticks;
    double set_us;
    double watch_s = watched(d, &snap, phase, &hits, &ticks, &set_us);
    double watch_tps = ticks / watch_s;
    double hit_us = plain_tps > 0 && hits ? (watch_s - ticks / plain_tps) / hits * 1e6 : 0;
    vmt_qemu_info info;
    vmt_qemu_get_info(d, &info);
    vmt_driver_destroy(d);
    snap_close(&snap);
    printf("guest loop: %.2f ticks/s unwatched, %.2f ticks/s with the shell's heap page table watched\n", plain_tps,
           watch_tps);
    printf("watch stops: %u (%.1f per tick, %llu changed entries named), %.1f us wall per stop; "
           "write-protect or release a frame: %.1f us\n",
           hits, ticks ? (double)hits / ticks : 0, (unsigned long long)info.watch_words, hit_us, set_us);
    printf("RESULT qemu_watch_hit_us=%.1f watch_hits_per_tick=%.1f ticks_per_s_plain=%.2f ticks_per_s_watched=%.2f "
           "watched_speed_ratio=%.3f qemu_watch_set_us=%.1f\n",
           hit_us, ticks ? (double)hits / ticks : 0, plain_tps, watch_tps, plain_tps > 0 ? watch_tps / plain_tps : 0,
           set_us);
    return 0;
}
