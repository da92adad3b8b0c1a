/*
 * tests/qemu/test_qemu_ticks.c — four hooks on a real Linux over 20 loop
 * ticks through the qemu driver's 4 breakpoint slots (the HW_BREAKPOINTS
 * contract the breakpoint manager's debug controller uses): do_sys_openat2,
 * ksys_write, kernel_clone and do_exit on the project's Linux snapshot
 * resumed in QEMU. Every call is decoded (file names and written buffers
 * read through the guest's page tables) into an ordered list; then, for
 * each of 20 consecutive ticks, the calls between the write of "tick N" and
 * "tick N+1" must be exactly what the loop does: open /dev/null (the
 * shell's redirect for cat), /etc/tickfile (cat), /tmp/tickout (the shell's
 * echo), write "N\n" to it, three forks (cat, /bin/true, sleep) and three exits, and
 * the tick lines name the loop shell's pid. This is the qemu half of the
 * differential test against the emulator driver (same snapshot, same list).
 * Skipped (77) only when qemu-system-x86_64 is not installed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "linux_snap.h"
#include "util/testutil.h"
#include "vmtrap/driver.h"
#include "vmtrap/qemu.h"

enum { F_OPEN, F_WRITE, F_CLONE, F_EXIT, NF };
static const char *const fn_names[NF] = { "do_sys_openat2", "ksys_write", "kernel_clone", "do_exit" };

typedef struct call {
    int fn;
    char text[80]; /* file name or written bytes */
} call;

#define MAX_CALLS 4000
#define TICKS 20

static void ok(vmt_driver *d, vmt_status st, const char *what)
{
    if (st != VMT_OK)
        fail_msg("%s: %s (%s)", what, vmt_strerror(st), vmt_driver_error(d));
}

/* Read len bytes at a guest-virtual address into text (NUL-terminated). */
static void read_buf(vmt_driver *d, const vmt_regs *r, uint64_t va, size_t len, char *text, size_t cap)
{
    size_t n = len < cap - 1 ? len : cap - 1;
    size_t done = 0;
    while (done < n) {
        uint64_t pa;
        ok(d, snap_translate(d, r, va + done, &pa, NULL), "translate buffer");
        size_t in_page = 4096 - (size_t)((va + done) & 4095);
        size_t want = n - done < in_page ? n - done : in_page;
        ok(d, vmt_drv_read_phys(d, pa, text + done, want), "read buffer");
        done += want;
    }
    text[n] = '\0';
}

static void four_hooks_over_twenty_ticks(void **state)
{
    (void)state;
    linux_snap snap;
    char why[512];
    if (snap_open(&snap, VMT_SOURCE_DIR, why, sizeof why))
        fail_msg("snapshot: %s", why);
    vmt_driver *d;
    if (snap_launch(&snap, 1, 1, &d, why, sizeof why) != VMT_OK)
        fail_msg("launch: %s", why);
    assert_true(vmt_driver_has(d, VMT_CAP_HW_BREAKPOINTS));
    assert_int_equal(vmt_driver_caps(d)->hw_breakpoints, 4);
    uint64_t va[NF];
    for (int i = 0; i < NF; i++) {
        va[i] = snap_symbol(&snap, fn_names[i]);
        assert_true(va[i] != 0);
        ok(d, vmt_drv_hw_breakpoint(d, VMT_VCPU_ALL, (unsigned)i, va[i], 1), "hook");
    }
    call *calls = calloc(MAX_CALLS, sizeof *calls);
    size_t n = 0;
    int last_tick = 0, first_tick = 0;
    while (n < MAX_CALLS && (!first_tick || last_tick < first_tick + TICKS + 1)) {
        vmt_event ev;
        ok(d, vmt_drv_wait_event(d, 20000, &ev), "wait_event");
        if (ev.kind != VMT_EVENT_HW_BREAKPOINT)
            fail_msg("unexpected %s event (%s)", vmt_event_kind_name(ev.kind),
                     ev.kind == VMT_EVENT_STOPPED ? ev.u.stop.message : "");
        call *c = &calls[n++];
        c->fn = ev.u.hwbp.index;
        assert_true(ev.regs.rip == va[c->fn]);
        if (c->fn == F_OPEN) {
            ok(d, snap_read_string(d, &ev.regs, ev.regs.rsi, c->text, sizeof c->text), "filename");
        } else if (c->fn == F_WRITE) {
            read_buf(d, &ev.regs, ev.regs.rsi, (size_t)ev.regs.rdx, c->text, sizeof c->text);
            int t, pid;
            if (sscanf(c->text, "tick %d pid %d", &t, &pid) == 2) {
                assert_int_equal(pid, snap.loop_pid);
                if (last_tick)
                    assert_int_equal(t, last_tick + 1); /* no tick missed */
                last_tick = t;
                if (!first_tick)
                    first_tick = t;
            }
        }
        vmt_response r = vmt_response_continue();
        ok(d, vmt_drv_respond(d, &ev, &r), "respond");
    }
    print_message("%zu calls over ticks %d..%d\n", n, first_tick, last_tick);
    assert_true(last_tick >= first_tick + TICKS);
    /* Per tick: the calls after the write of "tick N" up to the write of "tick N+1". */
    size_t i = 0;
    for (int t = first_tick; t < first_tick + TICKS; t++) {
        char want[32];
        snprintf(want, sizeof want, "tick %d pid", t);
        while (i < n && !(calls[i].fn == F_WRITE && !strncmp(calls[i].text, want, strlen(want))))
            i++;
        assert_true(i < n);
        int opens_null = 0, opens_tickfile = 0, opens_tickout = 0, writes_n = 0, clones = 0, exits = 0, other = 0;
        char nline[16];
        snprintf(nline, sizeof nline, "%d\n", t + 1);
        snprintf(want, sizeof want, "tick %d pid", t + 1);
        for (i++; i < n && !(calls[i].fn == F_WRITE && !strncmp(calls[i].text, want, strlen(want))); i++) {
            const call *c = &calls[i];
            if (c->fn == F_OPEN)
                opens_null += !strcmp(c->text, "/dev/null"), opens_tickfile += !strcmp(c->text, "/etc/tickfile"),
                    opens_tickout += !strcmp(c->text, "/tmp/tickout");
            else if (c->fn == F_WRITE)
                writes_n += !strcmp(c->text, nline);
            else if (c->fn == F_CLONE)
                clones++;
            else if (c->fn == F_EXIT)
                exits++;
            if (c->fn == F_OPEN && strcmp(c->text, "/dev/null") && strcmp(c->text, "/etc/tickfile") &&
                strcmp(c->text, "/tmp/tickout"))
                other++;
        }
        if (opens_null != 1 || opens_tickfile != 1 || opens_tickout != 1 || writes_n != 1 || clones != 3 ||
            exits != 3 || other)
            fail_msg("tick %d: opens /dev/null %d /etc/tickfile %d /tmp/tickout %d, writes of \"%d\" %d, forks %d, "
                     "exits %d, other opens %d", t + 1, opens_null, opens_tickfile, opens_tickout, t + 1, writes_n,
                     clones, exits, other);
    }
    free(calls);
    vmt_driver_destroy(d);
    /* The console shows the same ticks (the loop was not harmed). */
    assert_true(snap_console_tick(&snap) >= first_tick + TICKS);
    snap_close(&snap);
}

int main(void)
{
    if (!snap_have_qemu()) {
        printf("SKIP: qemu-system-x86_64 is not installed\n");
        return VMT_TEST_SKIP;
    }
    const struct CMUnitTest tests[] = { cmocka_unit_test(four_hooks_over_twenty_ticks) };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
