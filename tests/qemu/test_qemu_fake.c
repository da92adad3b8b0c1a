/*
 * tests/qemu/test_qemu_fake.c — the GDB client and the qemu driver against a
 * fake gdbstub (fake_stub.c): the normal protocol, then a stub that goes
 * silent, closes the socket, sends garbage or bad checksums, short replies,
 * a non-stop reply, an exit, or a hostile target description. Each must end
 * in a clear error within the configured timeout, never a hang.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "drivers/qemu/gdb_client.h"
#include "fake_stub.h"
#include "vmtrap/driver.h"
#include "vmtrap/qemu.h"

#define TIMEOUT_MS 300

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static vmt_status attach(fake_stub *s, vmt_driver **d, char *why, size_t why_len)
{
    vmt_qemu_config cfg = { .gdb_socket = s->path, .ram_bytes = FAKE_MEM, .timeout_ms = TIMEOUT_MS };
    return vmt_qemu_driver_create(&cfg, d, why, why_len);
}

/* ---- the client alone ---- */

static void client_exchanges_and_times_out(void **state)
{
    (void)state;
    fake_stub s;
    assert_int_equal(fake_stub_start(&s, FAKE_SILENT_AFTER, 1), 0);
    int fd;
    char why[200];
    assert_int_equal(gdb_connect_unix(s.path, 1000, &fd, why, sizeof why), VMT_OK);
    gdb_client g;
    assert_int_equal(gdb_client_init(&g, fd, TIMEOUT_MS), VMT_OK);
    const char *r;
    size_t n;
    assert_int_equal(gdb_exchange(&g, "?", &r, &n), VMT_OK);
    assert_string_equal(r, "T05thread:p01.01;");
    double t0 = now_s();
    assert_int_equal(gdb_exchange(&g, "g", &r, &n), VMT_E_TIMEOUT);
    double took = now_s() - t0;
    assert_true(took < 3.0 * TIMEOUT_MS / 1000 + 0.5);
    assert_true(strstr(gdb_client_error(&g), "hung") != NULL);
    /* Dead: the next call fails at once with the same kind of error. */
    assert_int_equal(gdb_exchange(&g, "?", &r, &n), VMT_E_TIMEOUT);
    assert_int_equal(gdb_client_check(&g, why, sizeof why), VMT_OK);
    gdb_client_fini(&g);
    fake_stub_stop(&s);
}

static void client_connect_to_nothing_fails(void **state)
{
    (void)state;
    int fd;
    char why[200];
    double t0 = now_s();
    assert_int_not_equal(gdb_connect_unix("/nonexistent/vmt/gdb.sock", 200, &fd, why, sizeof why), VMT_OK);
    assert_true(now_s() - t0 < 2.0);
    assert_true(strstr(why, "/nonexistent/vmt/gdb.sock") != NULL);
}

/* ---- the driver ---- */

static void driver_reads_writes_and_regs(void **state)
{
    (void)state;
    fake_stub s;
    assert_int_equal(fake_stub_start(&s, FAKE_OK, 0), 0);
    vmt_driver *d;
    char why[256];
    assert_int_equal(attach(&s, &d, why, sizeof why), VMT_OK);
    assert_true(vmt_qemu_is_qemu(d));
    assert_int_equal(vmt_qemu_check(d), VMT_OK);
    const vmt_caps *c = vmt_driver_caps(d);
    assert_true(c->flags & VMT_CAP_READ_PHYS);
    assert_false(c->flags & VMT_CAP_VIEWS);
    assert_false(c->flags & VMT_CAP_BREAKPOINT_EVENTS);
    assert_int_equal(c->ram_frames, FAKE_MEM / 4096);
    /* A read bigger than one packet is split and reassembled. */
    uint8_t buf[5000];
    assert_int_equal(vmt_drv_read_phys(d, 0x100, buf, sizeof buf), VMT_OK);
    for (size_t i = 0; i < sizeof buf; i++)
        assert_int_equal(buf[i], (uint8_t)((0x100 + i) * 7 + 3));
    assert_true(fake_stub_count(&s, "m") >= 3);
    static const uint8_t pat[3000] = { [0] = 0xde, [1] = 0xad, [2999] = 0x77 };
    assert_int_equal(vmt_drv_write_phys(d, 0x2000, pat, sizeof pat), VMT_OK);
    assert_int_equal(vmt_drv_read_phys(d, 0x2000, buf, sizeof pat), VMT_OK);
    assert_memory_equal(buf, pat, sizeof pat);
    /* Past RAM: refused before anything is sent. */
    unsigned before = fake_stub_count(&s, "m");
    assert_int_equal(vmt_drv_read_phys(d, FAKE_MEM - 4, buf, 8), VMT_E_RANGE);
    assert_int_equal(vmt_drv_read_phys(d, UINT64_MAX - 2, buf, 8), VMT_E_RANGE);
    assert_int_equal(fake_stub_count(&s, "m"), before);
    vmt_regs r;
    assert_int_equal(vmt_drv_get_regs(d, 0, &r), VMT_OK);
    assert_true(r.rip == 0x1000);
    assert_true(r.cr3 == 0x2000);
    assert_true(r.efer == 0xd01);
    assert_int_equal(r.cs, 0x10);
    assert_int_equal(r.rflags, 0x202);
    r.rax = 0x1122334455667788ull;
    assert_int_equal(vmt_drv_set_regs(d, 0, &r), VMT_OK);
    assert_true(s.gpr[0] == 0x1122334455667788ull);
    assert_int_equal(fake_stub_count(&s, "P"), 1); /* only the changed register */
    r.dr7 = 0x400 | 1;
    assert_int_equal(vmt_drv_set_regs(d, 0, &r), VMT_E_NOTSUP);
    assert_true(strstr(vmt_driver_error(d), "dr7") != NULL);
    vmt_qemu_info info;
    assert_int_equal(vmt_qemu_get_info(d, &info), VMT_OK);
    assert_true(strstr(info.regs_missing, "gdtr_base") != NULL);
    vmt_driver_destroy(d);
    assert_int_equal(fake_stub_count(&s, "D;1"), 1); /* detached (multiprocess form) */
    fake_stub_stop(&s);
}

/* QEMU announces the stop of a running VM when a debugger connects, even
 * before acking the first packet: the handshake must go through. */
static void unsolicited_stop_on_connect(void **state)
{
    (void)state;
    fake_stub s;
    assert_int_equal(fake_stub_start(&s, FAKE_STOP_ON_CONNECT, 0), 0);
    vmt_driver *d;
    char why[256];
    vmt_status st = attach(&s, &d, why, sizeof why);
    if (st)
        fail_msg("attach: %s", why);
    vmt_regs r;
    assert_int_equal(vmt_drv_get_regs(d, 0, &r), VMT_OK);
    assert_true(r.rip == 0x1000);
    vmt_driver_destroy(d);
    fake_stub_stop(&s);
}

static void driver_breakpoints_step_over(void **state)
{
    (void)state;
    fake_stub s;
    assert_int_equal(fake_stub_start(&s, FAKE_OK, 0), 0);
    vmt_driver *d;
    char why[256];
    assert_int_equal(attach(&s, &d, why, sizeof why), VMT_OK);
    assert_int_equal(vmt_drv_hw_breakpoint(d, VMT_VCPU_ALL, 1, 0x4000, 1), VMT_OK);
    vmt_event ev;
    assert_int_equal(vmt_drv_wait_event(d, 1000, &ev), VMT_OK);
    assert_int_equal(ev.kind, VMT_EVENT_HW_BREAKPOINT);
    assert_int_equal(ev.u.hwbp.index, 1);
    assert_true(ev.regs.rip == 0x4000);
    /* A second wait without a response is refused. */
    vmt_event ev2;
    assert_int_equal(vmt_drv_wait_event(d, 100, &ev2), VMT_E_BUSY);
    vmt_response resp = vmt_response_continue();
    assert_int_equal(vmt_drv_respond(d, &ev, &resp), VMT_OK);
    /* Continuing from the breakpoint steps over it with it removed. */
    unsigned z_before = fake_stub_count(&s, "z0,4000"), s_before = fake_stub_count(&s, "s");
    assert_int_equal(vmt_drv_wait_event(d, 1000, &ev), VMT_OK);
    assert_int_equal(ev.kind, VMT_EVENT_HW_BREAKPOINT);
    assert_int_equal(fake_stub_count(&s, "z0,4000"), z_before + 1);
    assert_int_equal(fake_stub_count(&s, "s"), s_before + 1);
    /* STEP: one instruction, then a SINGLESTEP event. */
    resp.actions = VMT_RESP_STEP;
    assert_int_equal(vmt_drv_respond(d, &ev, &resp), VMT_OK);
    assert_int_equal(vmt_drv_wait_event(d, 1000, &ev), VMT_OK);
    assert_int_equal(ev.kind, VMT_EVENT_SINGLESTEP);
    assert_true(ev.regs.rip == 0x4001);
    resp = vmt_response_continue();
    assert_int_equal(vmt_drv_respond(d, &ev, &resp), VMT_OK);
    /* Extra breakpoints beyond the 4 slots; unknown ones are NOTFOUND. */
    assert_int_equal(vmt_qemu_breakpoint(d, 0x5000, 1), VMT_OK);
    assert_int_equal(vmt_qemu_breakpoint(d, 0x5000, 1), VMT_E_EXISTS);
    assert_int_equal(vmt_qemu_breakpoint(d, 0x6000, 0), VMT_E_NOTFOUND);
    assert_int_equal(vmt_qemu_check(d), VMT_OK);
    /* Clearing the slot removes it from the stub too. */
    assert_int_equal(vmt_drv_hw_breakpoint(d, VMT_VCPU_ALL, 1, 0, 0), VMT_OK);
    assert_int_equal(vmt_qemu_breakpoint(d, 0x5000, 0), VMT_OK);
    /* No breakpoints: the guest "runs" until the timeout; the driver interrupts it. */
    double t0 = now_s();
    assert_int_equal(vmt_drv_wait_event(d, 200, &ev), VMT_E_TIMEOUT);
    assert_true(now_s() - t0 < 2.0);
    /* Paused: wait_event answers at once. */
    assert_int_equal(vmt_drv_pause(d), VMT_OK);
    assert_int_equal(vmt_drv_wait_event(d, 50, &ev), VMT_E_TIMEOUT);
    assert_int_equal(vmt_drv_wait_event(d, -1, &ev), VMT_E_BUSY);
    assert_int_equal(vmt_drv_resume(d), VMT_OK);
    vmt_driver_stats st;
    assert_int_equal(vmt_drv_stats(d, &st), VMT_OK);
    assert_int_equal(st.events[VMT_EVENT_HW_BREAKPOINT], 2);
    assert_int_equal(st.events[VMT_EVENT_SINGLESTEP], 1);
    vmt_driver_destroy(d);
    fake_stub_stop(&s);
}

/* A hostile or dead stub: attach or the next operation fails with a message, quickly. */
static void expect_failure(enum fake_mode mode, unsigned after, vmt_status want, const char *needle)
{
    fake_stub s;
    assert_int_equal(fake_stub_start(&s, mode, after), 0);
    vmt_driver *d = NULL;
    char why[256] = "";
    vmt_event ev; /* its stop message may be the one checked */
    double t0 = now_s();
    vmt_status st = attach(&s, &d, why, sizeof why);
    const char *msg = why;
    if (st == VMT_OK) {
        /* attach takes 6 packets; then g, m, Z0, c. */
        uint8_t buf[16];
        vmt_regs r;
        st = vmt_drv_get_regs(d, 0, &r);
        if (!st)
            st = vmt_drv_read_phys(d, 0, buf, sizeof buf);
        if (!st) {
            st = vmt_drv_hw_breakpoint(d, 0, 0, 0x4000, 1);
            if (!st) {
                st = vmt_drv_wait_event(d, 500, &ev);
                if (!st && ev.kind == VMT_EVENT_STOPPED) {
                    msg = ev.u.stop.message;
                    st = VMT_E_STOPPED;
                }
            }
        }
        if (msg == why)
            msg = vmt_driver_error(d);
    }
    print_message("mode %d: status %d: %s\n", (int)mode, (int)st, msg);
    assert_int_equal(st, want);
    assert_non_null(strstr(msg, needle));
    assert_true(now_s() - t0 < 4.0);
    if (d) {
        assert_int_equal(vmt_qemu_check(d), VMT_OK);
        vmt_driver_destroy(d);
    }
    fake_stub_stop(&s);
}

static void hostile_stubs_give_clear_errors(void **state)
{
    (void)state;
    expect_failure(FAKE_SILENT_AFTER, 0, VMT_E_TIMEOUT, "no ack");
    expect_failure(FAKE_SILENT_AFTER, 6, VMT_E_TIMEOUT, "hung");   /* at 'g' */
    expect_failure(FAKE_SILENT_AFTER, 9, VMT_E_STOPPED, "hung");   /* at 'c': a STOPPED event */
    expect_failure(FAKE_CLOSE_AFTER, 2, VMT_E_IO, "closed");
    expect_failure(FAKE_CLOSE_AFTER, 6, VMT_E_IO, "closed");
    expect_failure(FAKE_CLOSE_AFTER, 9, VMT_E_STOPPED, "closed");
    expect_failure(FAKE_GARBAGE_AFTER, 6, VMT_E_FORMAT, "unexpected byte");
    expect_failure(FAKE_BADSUM_AFTER, 6, VMT_E_FORMAT, "checksum");
    expect_failure(FAKE_SHORT_G, 0, VMT_E_FORMAT, "register reply");
    expect_failure(FAKE_SHORT_M, 0, VMT_E_FORMAT, "hex");
    expect_failure(FAKE_BAD_STOP, 0, VMT_E_FORMAT, "stop reply");
    expect_failure(FAKE_EXIT_ON_CONT, 0, VMT_E_STOPPED, "ended");
    expect_failure(FAKE_NO_PHYS, 0, VMT_E_NOTSUP, "physical");
    expect_failure(FAKE_HOSTILE_XML, 0, VMT_E_FORMAT, "plain file name");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(client_exchanges_and_times_out),
        cmocka_unit_test(client_connect_to_nothing_fails),
        cmocka_unit_test(driver_reads_writes_and_regs),
        cmocka_unit_test(unsolicited_stop_on_connect),
        cmocka_unit_test(driver_breakpoints_step_over),
        cmocka_unit_test(hostile_stubs_give_clear_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
