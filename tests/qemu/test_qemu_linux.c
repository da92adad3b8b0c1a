/*
 * tests/qemu/test_qemu_linux.c — the qemu driver on a real Debian kernel:
 * the project's Linux snapshot (scripts/make-linux-snapshot.sh) resumed
 * from QEMU's own saved state in a QEMU the driver launches (TCG,
 * -icount shift=auto,sleep=off). The guest's loop opens /etc/tickfile
 * (cat), /tmp/tickout (the shell) and /dev/null, forks /bin/true and prints
 * "tick N" lines.
 *
 * Steps: a breakpoint at do_sys_openat2 (address from the kallsyms sample)
 * hits with rip there and the filename argument (rsi) read through the
 * guest's page tables is one of the loop's files, while the function's
 * bytes read through physical memory stay the original ones (TCG
 * breakpoints are invisible); a STEP moves exactly one instruction; a
 * watch on the shell's page-table page (through Linux's direct map) fires
 * when the kernel writes that table; QEMU takes thousands of breakpoints;
 * with no breakpoints the console goes on ticking; the live VM dumped with
 * the gdbstub's sidecar opens as a snapshot with the same state; a QEMU killed under us
 * is reported as a STOPPED event, not a hang.
 * Skipped (77) only when qemu-system-x86_64 is not installed.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "linux_snap.h"
#include "util/testutil.h"
#include "vmtrap/driver.h"
#include "vmtrap/qemu.h"
#ifdef VMT_TEST_HAVE_SNAPSHOT
#include "vmtrap/snapshot.h"
#endif
#include <unistd.h>

/* nokaslr, 4-level paging: Linux's direct map of all physical memory. */
#define PAGE_OFFSET_BASE 0xffff888000000000ull
/* nokaslr: kernel text VA - __START_KERNEL_map = PA. */
#define KERNEL_MAP 0xffffffff80000000ull

typedef struct fixture {
    linux_snap snap;
    vmt_driver *d;
    uint64_t openat2;
} fixture;

static int setup(void **state)
{
    static fixture f;
    char why[512];
    if (snap_open(&f.snap, VMT_SOURCE_DIR, why, sizeof why)) {
        fprintf(stderr, "snapshot: %s\n", why);
        return -1;
    }
    f.openat2 = snap_symbol(&f.snap, "do_sys_openat2");
    if (!f.openat2) {
        fprintf(stderr, "the kallsyms sample has no do_sys_openat2\n");
        return -1;
    }
    if (snap_launch(&f.snap, 1, 1, &f.d, why, sizeof why) != VMT_OK) {
        fprintf(stderr, "launch: %s\n", why);
        return -1;
    }
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->d)
        vmt_driver_destroy(f->d);
    snap_close(&f->snap);
    return 0;
}

static void ok(vmt_driver *d, vmt_status st, const char *what)
{
    if (st != VMT_OK)
        fail_msg("%s: %s (%s)", what, vmt_strerror(st), vmt_driver_error(d));
}

/* Wait for the next breakpoint event (any other event fails the test). */
static void next_hit(fixture *f, vmt_event *ev)
{
    ok(f->d, vmt_drv_wait_event(f->d, 20000, ev), "wait_event");
    if (ev->kind != VMT_EVENT_HW_BREAKPOINT)
        fail_msg("expected a breakpoint event, got %s (%s)", vmt_event_kind_name(ev->kind),
                 ev->kind == VMT_EVENT_STOPPED ? ev->u.stop.message : "");
}

static void cont(fixture *f, const vmt_event *ev)
{
    vmt_response r = vmt_response_continue();
    ok(f->d, vmt_drv_respond(f->d, ev, &r), "respond");
}

static int is_loop_file(const char *name)
{
    return !strcmp(name, "/etc/tickfile") || !strcmp(name, "/tmp/tickout") || !strcmp(name, "/dev/null");
}

static void breakpoint_hits_and_is_invisible(void **state)
{
    fixture *f = *state;
    uint8_t before[16], now[16];
    ok(f->d, vmt_drv_read_phys(f->d, f->openat2 - KERNEL_MAP, before, sizeof before), "read code");
    ok(f->d, vmt_drv_hw_breakpoint(f->d, VMT_VCPU_ALL, 0, f->openat2, 1), "set breakpoint");
    int tickfile = 0, tickout = 0, hits = 0, others = 0;
    while (hits < 200 && !(tickfile >= 3 && tickout >= 3)) {
        vmt_event ev;
        next_hit(f, &ev);
        hits++;
        assert_true(ev.regs.rip == f->openat2);
        assert_int_equal(ev.u.hwbp.index, 0);
        char name[256];
        ok(f->d, snap_read_string(f->d, &ev.regs, ev.regs.rsi, name, sizeof name), "read filename");
        assert_int_equal(name[0], '/');
        tickfile += !strcmp(name, "/etc/tickfile");
        tickout += !strcmp(name, "/tmp/tickout");
        others += !is_loop_file(name);
        if (!is_loop_file(name))
            print_message("open of an unexpected file: %s\n", name);
        /* Stealth: the code the guest sees is unchanged while the breakpoint is set. */
        ok(f->d, vmt_drv_read_phys(f->d, f->openat2 - KERNEL_MAP, now, sizeof now), "read code");
        assert_memory_equal(before, now, sizeof now);
        cont(f, &ev);
    }
    print_message("%d hits: /etc/tickfile %d, /tmp/tickout %d, other files %d\n", hits, tickfile, tickout, others);
    assert_true(tickfile >= 3 && tickout >= 3);
    assert_int_equal(others, 0);
    assert_int_equal(vmt_qemu_check(f->d), VMT_OK);
    /* do_sys_openat2 starts with the ftrace NOP: hits resume by moving rip, not by a gdbstub step. */
    vmt_qemu_info info;
    ok(f->d, vmt_qemu_get_info(f->d, &info), "info");
    assert_true(info.nop_skips >= (uint64_t)hits - 1);
}

static void step_moves_one_instruction(void **state)
{
    fixture *f = *state;
    vmt_event ev;
    next_hit(f, &ev);
    uint8_t code[5];
    ok(f->d, vmt_drv_read_phys(f->d, f->openat2 - KERNEL_MAP, code, 5), "read code");
    vmt_response r = { .actions = VMT_RESP_STEP };
    ok(f->d, vmt_drv_respond(f->d, &ev, &r), "respond STEP");
    vmt_event st;
    ok(f->d, vmt_drv_wait_event(f->d, 5000, &st), "wait for the step");
    assert_int_equal(st.kind, VMT_EVENT_SINGLESTEP);
    static const uint8_t nop5[5] = { 0x0f, 0x1f, 0x44, 0x00, 0x00 }; /* the ftrace NOP at the entry */
    if (!memcmp(code, nop5, 5))
        assert_true(st.regs.rip == f->openat2 + 5);
    else
        assert_true(st.regs.rip != f->openat2);
    cont(f, &st);
}

static void page_table_write_is_watched(void **state)
{
    fixture *f = *state;
    vmt_event ev;
    char name[256] = "";
    /* The shell itself opens /tmp/tickout: its page tables are the current ones then. */
    for (int i = 0; i < 100 && strcmp(name, "/tmp/tickout"); i++) {
        next_hit(f, &ev);
        ok(f->d, snap_read_string(f->d, &ev.regs, ev.regs.rsi, name, sizeof name), "read filename");
        if (strcmp(name, "/tmp/tickout"))
            cont(f, &ev);
    }
    assert_string_equal(name, "/tmp/tickout");
    uint64_t pa, table;
    ok(f->d, snap_translate(f->d, &ev.regs, ev.regs.rsi, &pa, &table), "translate the filename");
    assert_true(table != 0); /* a 4 KiB user page: its level-1 table */
    ok(f->d, vmt_drv_hw_breakpoint(f->d, VMT_VCPU_ALL, 0, 0, 0), "clear breakpoint");
    ok(f->d, vmt_qemu_watch_phys(f->d, table, 4096, PAGE_OFFSET_BASE, 1), "watch the table page");
    cont(f, &ev);
    /* The shell forks next (cat, /bin/true): fork write-protects its PTEs for copy-on-write. */
    vmt_event w;
    ok(f->d, vmt_drv_wait_event(f->d, 20000, &w), "wait for a table write");
    assert_int_equal(w.kind, VMT_EVENT_MEM_ACCESS);
    assert_int_equal(w.u.mem.access, VMT_ACCESS_W);
    assert_true(w.u.mem.gva_valid);
    assert_true(w.u.mem.gva >= PAGE_OFFSET_BASE + table && w.u.mem.gva < PAGE_OFFSET_BASE + table + 4096);
    assert_true(w.u.mem.gpa >= table && w.u.mem.gpa < table + 4096);
    /* The driver names the entry written and its new value (read back through physical memory). */
    assert_true(w.u.mem.has_data);
    assert_int_equal(w.u.mem.size, 8);
    assert_int_equal(w.u.mem.gpa % 8, 0);
    uint64_t entry;
    ok(f->d, vmt_drv_read_phys(f->d, w.u.mem.gpa, &entry, 8), "read the entry");
    assert_true(entry == w.u.mem.value);
    print_message("table page 0x%llx: entry at pa 0x%llx became 0x%llx (rip 0x%llx)\n", (unsigned long long)table,
                  (unsigned long long)w.u.mem.gpa, (unsigned long long)w.u.mem.value, (unsigned long long)w.regs.rip);
    cont(f, &w);
    ok(f->d, vmt_qemu_watch_phys(f->d, table, 4096, PAGE_OFFSET_BASE, 0), "unwatch");
}

static void thousands_of_breakpoints(void **state)
{
    fixture *f = *state;
    /* BTF data: never executed, so these never hit. */
    uint64_t base = snap_symbol(&f->snap, "__start_BTF");
    assert_true(base != 0);
    enum { N = 2000 };
    for (unsigned i = 0; i < N; i++)
        ok(f->d, vmt_qemu_breakpoint(f->d, base + 16 * i, 1), "extra breakpoint");
    vmt_qemu_info info;
    ok(f->d, vmt_qemu_get_info(f->d, &info), "info");
    assert_int_equal(info.breakpoints, N);
    assert_int_equal(info.kvm, 0);
    assert_int_equal(vmt_qemu_check(f->d), VMT_OK);
    for (unsigned i = 0; i < N; i++)
        ok(f->d, vmt_qemu_breakpoint(f->d, base + 16 * i, 0), "clear extra breakpoint");
}

static void console_keeps_ticking(void **state)
{
    fixture *f = *state;
    int t0 = snap_console_tick(&f->snap);
    assert_true(t0 > f->snap.tick_at_pause); /* the hooked run ticked too */
    vmt_event ev;
    assert_int_equal(vmt_drv_wait_event(f->d, 2000, &ev), VMT_E_TIMEOUT); /* nothing armed: the guest just runs */
    int t1 = snap_console_tick(&f->snap);
    print_message("ticks: %d at the pause, %d after the hooks, %d after 2 s unhooked\n", f->snap.tick_at_pause, t0, t1);
    assert_true(t1 > t0);
    /* Memory is readable after the timeout (QEMU was stopped again). */
    uint8_t b[4];
    ok(f->d, vmt_drv_read_phys(f->d, 0x1000000, b, sizeof b), "read after timeout");
}

#ifdef VMT_TEST_HAVE_SNAPSHOT
/* The live VM becomes a snapshot: QEMU's core plus the sidecar of what only
 * the gdbstub knows; the snapshot module reads it back with the same RIP,
 * EFER and code bytes. */
static void live_vm_to_snapshot(void **state)
{
    fixture *f = *state;
    char core[128], side[160], why[256];
    snprintf(core, sizeof core, "/tmp/vmt-qemu-core-%d.elf", (int)getpid());
    snprintf(side, sizeof side, "%s.state.json", core);
    vmt_regs r;
    ok(f->d, vmt_drv_get_regs(f->d, 0, &r), "regs");
    uint8_t code[16], snapcode[16];
    ok(f->d, vmt_drv_read_phys(f->d, f->openat2 - KERNEL_MAP, code, sizeof code), "read code");
    ok(f->d, vmt_qemu_dump(f->d, core), "dump");
    ok(f->d, vmt_qemu_write_state(f->d, side), "state sidecar");
    vmt_snapshot *s = NULL;
    vmt_status st = vmt_snapshot_open(core, NULL, &s, why, sizeof why);
    if (st)
        fail_msg("snapshot open: %s", why);
    st = vmt_snapshot_apply_sidecar_file(s, side);
    assert_int_equal(st, VMT_OK);
    const vmt_vcpu_state *vs = vmt_snapshot_vcpu(s, 0);
    assert_non_null(vs);
    assert_true(vs->regs.rip == r.rip);
    assert_true(vs->regs.cr3 == r.cr3);
    assert_true(vs->regs.efer == r.efer && (r.efer & VMT_EFER_LMA));
    assert_int_equal(vmt_snapshot_read(s, f->openat2 - KERNEL_MAP, snapcode, sizeof snapcode), VMT_OK);
    assert_memory_equal(code, snapcode, sizeof code);
    vmt_snapshot_destroy(s);
    unlink(core);
    unlink(side);
}
#endif

static void killed_qemu_is_reported(void **state)
{
    fixture *f = *state;
    vmt_qemu_info info;
    ok(f->d, vmt_qemu_get_info(f->d, &info), "info");
    assert_true(info.launched && info.pid > 0);
    kill(info.pid, SIGKILL);
    vmt_event ev;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    vmt_status st = vmt_drv_wait_event(f->d, 20000, &ev);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_int_equal(st, VMT_OK);
    assert_int_equal(ev.kind, VMT_EVENT_STOPPED);
    print_message("after kill: %s\n", ev.u.stop.message);
    assert_non_null(strstr(ev.u.stop.message, "QEMU"));
    assert_true(t1.tv_sec - t0.tv_sec < 15);
    uint8_t b[4];
    assert_int_equal(vmt_drv_read_phys(f->d, 0x1000000, b, sizeof b), VMT_E_STOPPED);
}

int main(void)
{
    if (!snap_have_qemu()) {
        printf("SKIP: qemu-system-x86_64 is not installed\n");
        return VMT_TEST_SKIP;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(breakpoint_hits_and_is_invisible),
        cmocka_unit_test(step_moves_one_instruction),
        cmocka_unit_test(page_table_write_is_watched),
        cmocka_unit_test(thousands_of_breakpoints),
        cmocka_unit_test(console_keeps_ticking),
#ifdef VMT_TEST_HAVE_SNAPSHOT
        cmocka_unit_test(live_vm_to_snapshot),
#endif
        cmocka_unit_test(killed_qemu_is_reported),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
