/*
 * tests/kvm/test_kvm_events.c — the KVM driver runs guests and reports what
 * a monitor needs: breakpoints (1,000 hits in a row, right rip and
 * arguments, the guest's own count agrees), INT3 reflected to the guest's
 * IDT, single-step (including across an I/O instruction), hardware
 * breakpoints, port I/O and serial output.
 *
 * Guests are hand-assembled (assembly in comments); they run at CPL0, which
 * kvm_pvm interprets (~1 us per instruction), so they stay short.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "kvm_guest.h"
#include "util/testutil.h"
#include "vmtrap/kvm.h"

/* Calls func(i) 1000 times, checks it returns i, counts calls in rbx and
 * reports the count on port 0x5e1 (0xbad on 0x5e2 if a return was wrong).
 *   xor ebx,ebx; mov ecx,1000
 * 1: mov rdi,rbx; call func; cmp rax,rbx; jne bad; inc rbx; dec ecx; jnz 1b
 *   mov eax,ebx; mov dx,0x5e1; out dx,eax; hlt
 * bad: mov eax,0xbad; mov dx,0x5e2; out dx,eax; hlt
 * .p2align 4
 * func (+0x30): push rbp; mov rax,rdi; pop rbp; ret */
static const uint8_t g_calls[] = {
    0x31, 0xdb, 0xb9, 0xe8, 0x03, 0x00, 0x00, 0x48, 0x89, 0xdf, 0xe8, 0x21, 0x00, 0x00, 0x00, 0x48, 0x39, 0xd8,
    0x75, 0x0f, 0x48, 0xff, 0xc3, 0xff, 0xc9, 0x75, 0xec, 0x89, 0xd8, 0x66, 0xba, 0xe1, 0x05, 0xef, 0xf4, 0xb8,
    0xad, 0x0b, 0x00, 0x00, 0x66, 0xba, 0xe2, 0x05, 0xef, 0xf4, 0x66, 0x90, 0x55, 0x48, 0x89, 0xf8, 0x5d, 0xc3,
};
#define G_CALLS_FUNC (KG_CODE_PA + 0x30)
#define G_CALLS_N 1000

/* Installs an IDT with a #BP handler that reports its return rip on 0x5e1,
 * executes int3 at +0x4b, then reports 0x600d on 0x5e2 and halts. */
static const uint8_t g_reinject[] = {
    0x48, 0x8d, 0x05, 0x50, 0x00, 0x00, 0x00, 0x48, 0xc7, 0xc3, 0x00, 0x30, 0x00, 0x00, 0x66, 0x89, 0x43, 0x30,
    0x66, 0xc7, 0x43, 0x32, 0x08, 0x00, 0x66, 0xc7, 0x43, 0x34, 0x00, 0x8e, 0x48, 0xc1, 0xe8, 0x10, 0x66, 0x89,
    0x43, 0x36, 0x48, 0xc1, 0xe8, 0x10, 0x89, 0x43, 0x38, 0xc7, 0x43, 0x3c, 0x00, 0x00, 0x00, 0x00, 0x48, 0x83,
    0xec, 0x10, 0x66, 0xc7, 0x04, 0x24, 0xff, 0x0f, 0x48, 0x89, 0x5c, 0x24, 0x02, 0x0f, 0x01, 0x1c, 0x24, 0x48,
    0x83, 0xc4, 0x10, 0xcc, 0xb8, 0x0d, 0x60, 0x00, 0x00, 0x66, 0xba, 0xe2, 0x05, 0xef, 0xf4, 0x48, 0x8b, 0x04,
    0x24, 0x66, 0xba, 0xe1, 0x05, 0xef, 0x48, 0xcf,
};
#define G_REINJECT_INT3 (KG_CODE_PA + 0x4b)

/* int3; s1: mov eax,1; s2: mov ebx,2; s3: add eax,ebx; s4: mov dx,0x5e1;
 * s5: out dx,eax; s6: hlt */
static const uint8_t g_step[] = {
    0xcc, 0xb8, 0x01, 0x00, 0x00, 0x00, 0xbb, 0x02, 0x00, 0x00, 0x00, 0x01, 0xd8, 0x66, 0xba, 0xe1, 0x05, 0xef, 0xf4,
};

/* Installs a #PF handler (IDT at 0x3000) that reports cr2, the error code
 * and the faulting rip on 0x5e1, then executes int3 at +0x5d; hlt. */
static const uint8_t g_pf[] = {
    0x48, 0x8d, 0x05, 0x58, 0x00, 0x00, 0x00, 0x48, 0xc7, 0xc3, 0x00, 0x30, 0x00, 0x00, 0x66, 0x89, 0x83, 0xe0,
    0x00, 0x00, 0x00, 0x66, 0xc7, 0x83, 0xe2, 0x00, 0x00, 0x00, 0x08, 0x00, 0x66, 0xc7, 0x83, 0xe4, 0x00, 0x00,
    0x00, 0x00, 0x8e, 0x48, 0xc1, 0xe8, 0x10, 0x66, 0x89, 0x83, 0xe6, 0x00, 0x00, 0x00, 0x48, 0xc1, 0xe8, 0x10,
    0x89, 0x83, 0xe8, 0x00, 0x00, 0x00, 0xc7, 0x83, 0xec, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x48, 0x83,
    0xec, 0x10, 0x66, 0xc7, 0x04, 0x24, 0xff, 0x0f, 0x48, 0x89, 0x5c, 0x24, 0x02, 0x0f, 0x01, 0x1c, 0x24, 0x48,
    0x83, 0xc4, 0x10, 0xcc, 0xf4, 0x0f, 0x20, 0xd0, 0x66, 0xba, 0xe1, 0x05, 0xef, 0x58, 0xef, 0x48, 0x8b, 0x04,
    0x24, 0xef, 0xf4,
};
#define G_PF_INT3 (KG_CODE_PA + 0x5d)

static int setup(void **state)
{
    (void)state;
    return 0;
}

/* Breakpoint on func: each hit reports rip == func and rdi == the call's
 * index; the classic restore-step-rearm dance continues the guest, and the
 * guest's own count and return checks agree at the end. */
static void breakpoint_1000_hits(void **state)
{
    (void)state;
    vmt_driver *d = kg_driver(g_calls, sizeof g_calls, KG_RAM);
    const uint8_t int3 = 0xCC, orig = g_calls[G_CALLS_FUNC - KG_CODE_PA];
    assert_int_equal(vmt_drv_write_phys(d, G_CALLS_FUNC, &int3, 1), VMT_OK);
    vmt_event ev;
    for (uint64_t i = 0; i < G_CALLS_N; i++) {
        kg_expect(d, VMT_EVENT_BREAKPOINT, &ev);
        assert_int_equal(ev.regs.rip, G_CALLS_FUNC);
        assert_int_equal(ev.u.bp.gva, G_CALLS_FUNC);
        assert_int_equal(ev.u.bp.gpa, G_CALLS_FUNC); /* identity-mapped */
        assert_int_equal(ev.regs.rdi, i);
        assert_int_equal(ev.regs.rbx, i);
        assert_int_equal(ev.regs.rcx, G_CALLS_N - i);
        /* restore the byte, step over it, re-arm */
        assert_int_equal(vmt_drv_write_phys(d, G_CALLS_FUNC, &orig, 1), VMT_OK);
        vmt_response r = { .actions = VMT_RESP_STEP };
        assert_int_equal(vmt_drv_respond(d, &ev, &r), VMT_OK);
        kg_expect(d, VMT_EVENT_SINGLESTEP, &ev);
        assert_int_equal(ev.regs.rip, G_CALLS_FUNC + 1);
        assert_int_equal(vmt_drv_write_phys(d, G_CALLS_FUNC, &int3, 1), VMT_OK);
        kg_continue(d, &ev);
        if (i % 100 == 0)
            kg_check(d);
    }
    kg_expect_io_on(d, KG_PORT_REPORT, G_CALLS_N, &ev);
    kg_expect(d, VMT_EVENT_STOPPED, &ev);
    assert_int_equal(ev.u.stop.reason, VMT_STOP_HALT);
    vmt_driver_stats s;
    assert_int_equal(vmt_drv_stats(d, &s), VMT_OK);
    assert_int_equal(s.events[VMT_EVENT_BREAKPOINT], G_CALLS_N);
    assert_int_equal(s.events[VMT_EVENT_SINGLESTEP], G_CALLS_N);
    assert_true(s.exits >= 2 * G_CALLS_N);
    assert_true(s.ns_guest > 0 && s.ns_monitor > 0);
    /* per-reason counters add up to the exits */
    uint64_t sum = 0;
    for (uint32_t r = 0; r < 64; r++)
        sum += vmt_kvm_exit_count(d, r);
    assert_int_equal(sum, s.exits);
    /* after the stop the driver refuses to run */
    assert_int_equal(vmt_drv_wait_event(d, 10, &ev), VMT_E_STOPPED);
    assert_non_null(strstr(vmt_driver_error(d), "halt"));
    kg_check(d);
    vmt_driver_destroy(d);
}

/* A guest's own INT3, answered with REINJECT, reaches the guest's #BP
 * handler with the return address the CPU would push (int3 + 1). */
static void reinject_reaches_guest_idt(void **state)
{
    (void)state;
    vmt_driver *d = kg_driver(g_reinject, sizeof g_reinject, KG_RAM);
    vmt_event ev;
    kg_expect(d, VMT_EVENT_BREAKPOINT, &ev);
    assert_int_equal(ev.regs.rip, G_REINJECT_INT3);
    vmt_response r = { .actions = VMT_RESP_REINJECT };
    assert_int_equal(vmt_drv_respond(d, &ev, &r), VMT_OK);
    kg_expect_io_on(d, KG_PORT_REPORT, G_REINJECT_INT3 + 1, &ev); /* the handler reports its return rip */
    kg_expect_io_on(d, KG_PORT_OTHER, 0x600d, &ev); /* iretq went back after the int3 */
    kg_expect(d, VMT_EVENT_STOPPED, &ev);
    kg_check(d);
    vmt_driver_destroy(d);
}

/* STEP executes exactly one instruction; stepping over an `out` reports the
 * I/O event and then the step (the instruction completed through an exit). */
static void single_step(void **state)
{
    (void)state;
    vmt_driver *d = kg_driver(g_step, sizeof g_step, KG_RAM);
    vmt_event ev;
    kg_expect(d, VMT_EVENT_BREAKPOINT, &ev);
    assert_int_equal(ev.regs.rip, KG_CODE_PA);
    vmt_response r = { .actions = VMT_RESP_STEP | VMT_RESP_SET_REGS, .regs = ev.regs };
    r.regs.rip += 1; /* skip the int3 */
    assert_int_equal(vmt_drv_respond(d, &ev, &r), VMT_OK);
    static const struct {
        uint64_t rip, rax, rbx;
    } after[] = {
        { KG_CODE_PA + 0x06, 1, 0 }, /* mov eax,1 */
        { KG_CODE_PA + 0x0b, 1, 2 }, /* mov ebx,2 */
        { KG_CODE_PA + 0x0d, 3, 2 }, /* add eax,ebx */
        { KG_CODE_PA + 0x11, 3, 2 }, /* mov dx,0x5e1 */
    };
    for (size_t i = 0; i < sizeof after / sizeof after[0]; i++) {
        kg_expect(d, VMT_EVENT_SINGLESTEP, &ev);
        assert_int_equal(ev.regs.rip, after[i].rip);
        assert_int_equal(ev.regs.rax & 0xffffffff, after[i].rax);
        assert_int_equal(ev.regs.rbx & 0xffffffff, after[i].rbx);
        assert_int_equal(ev.regs.rflags & VMT_RFLAGS_TF, 0); /* TF is not the guest's */
        vmt_response s = { .actions = VMT_RESP_STEP };
        assert_int_equal(vmt_drv_respond(d, &ev, &s), VMT_OK);
    }
    kg_expect_io(d, 3, &ev); /* the stepped `out` */
    kg_expect(d, VMT_EVENT_SINGLESTEP, &ev);
    assert_int_equal(ev.regs.rip, KG_CODE_PA + 0x12); /* at the hlt */
    kg_continue(d, &ev);
    kg_expect(d, VMT_EVENT_STOPPED, &ev);
    assert_int_equal(ev.u.stop.reason, VMT_STOP_HALT);
    vmt_driver_destroy(d);
}

/* A debug-register breakpoint on func fires on every call without changing
 * guest memory, and CONTINUE gets past it (RF is not relied on). */
static void hw_breakpoint(void **state)
{
    (void)state;
    vmt_driver *d = kg_driver(g_calls, sizeof g_calls, KG_RAM);
    assert_true(vmt_driver_has(d, VMT_CAP_HW_BREAKPOINTS));
    assert_int_equal(vmt_driver_caps(d)->hw_breakpoints, 4);
    assert_int_equal(vmt_drv_hw_breakpoint(d, 0, 2, G_CALLS_FUNC, 1), VMT_OK);
    vmt_event ev;
    for (uint64_t i = 0; i < G_CALLS_N; i++) {
        kg_expect(d, VMT_EVENT_HW_BREAKPOINT, &ev);
        assert_int_equal(ev.u.hwbp.index, 2);
        assert_int_equal(ev.u.hwbp.address, G_CALLS_FUNC);
        assert_int_equal(ev.regs.rip, G_CALLS_FUNC);
        assert_int_equal(ev.regs.rdi, i);
        if (i == 500) { /* clearing it lets the guest run free */
            assert_int_equal(vmt_drv_hw_breakpoint(d, 0, 2, 0, 0), VMT_OK);
            kg_continue(d, &ev);
            break;
        }
        kg_continue(d, &ev);
    }
    kg_expect_io_on(d, KG_PORT_REPORT, G_CALLS_N, &ev);
    kg_expect(d, VMT_EVENT_STOPPED, &ev);
    kg_check(d);
    vmt_driver_destroy(d);
}

/* An injected #PF reaches the guest's handler with cr2 and error code. */
static void inject_page_fault(void **state)
{
    (void)state;
    vmt_driver *d = kg_driver(g_pf, sizeof g_pf, KG_RAM);
    assert_true(vmt_driver_has(d, VMT_CAP_INJECT_PF));
    vmt_event ev;
    kg_expect(d, VMT_EVENT_BREAKPOINT, &ev);
    assert_int_equal(ev.regs.rip, G_PF_INT3);
    vmt_injection inj = { .vector = 14, .has_error_code = true, .error_code = 2, .cr2 = 0xdead000 };
    assert_int_equal(vmt_drv_inject(d, 0, &inj), VMT_OK);
    assert_int_equal(vmt_drv_inject(d, 0, &inj), VMT_E_BUSY); /* one at a time */
    kg_continue(d, &ev);
    static const uint32_t want[] = { 0xdead000, 2, (uint32_t)G_PF_INT3 };
    for (int i = 0; i < 3; i++) {
        kg_expect_io(d, want[i], &ev);
    }
    kg_expect(d, VMT_EVENT_STOPPED, &ev);
    vmt_driver_destroy(d);
}

/* Port reads are answered by the response (IO_VALUE); protocol checks. */
static void io_read_and_protocol(void **state)
{
    (void)state;
    /* mov dx,0x5e1; in eax,dx; mov dx,0x5e2; out dx,eax; mov eax,ebx; out dx,eax; hlt */
    static const uint8_t code[] = { 0x66, 0xba, 0xe1, 0x05, 0xed, 0x66, 0xba, 0xe2, 0x05, 0xef, 0x89, 0xd8, 0xef, 0xf4 };
    vmt_driver *d = kg_driver(code, sizeof code, KG_RAM);
    vmt_event ev, ev2;
    kg_expect(d, VMT_EVENT_IO, &ev);
    assert_false(ev.u.io.is_write);
    assert_int_equal(ev.u.io.port, KG_PORT_REPORT);
    assert_int_equal(ev.u.io.size, 4);
    /* no second wait before the response, no DENY on I/O */
    assert_int_equal(vmt_drv_wait_event(d, 10, &ev2), VMT_E_BUSY);
    vmt_response bad = { .actions = VMT_RESP_DENY };
    assert_int_equal(vmt_drv_respond(d, &ev, &bad), VMT_E_INVAL);
    /* set_regs outside the response would race the pending instruction */
    assert_int_equal(vmt_drv_set_regs(d, 0, &ev.regs), VMT_E_BUSY);
    /* the value for the read plus a changed rbx: the IN completes once (no
     * second read event), rax gets the value, rbx the handler's number */
    vmt_response r = { .actions = VMT_RESP_IO_VALUE | VMT_RESP_SET_REGS, .io_value = 0xfeedf00d, .regs = ev.regs };
    r.regs.rbx = 0x5eed;
    assert_int_equal(vmt_drv_respond(d, &ev, &r), VMT_OK);
    kg_expect(d, VMT_EVENT_IO, &ev);
    assert_true(ev.u.io.is_write);
    assert_int_equal(ev.u.io.port, KG_PORT_OTHER);
    assert_int_equal(ev.u.io.value, 0xfeedf00d);
    kg_continue(d, &ev);
    kg_expect_io(d, 0x5eed, &ev);
    kg_expect(d, VMT_EVENT_STOPPED, &ev);
    vmt_driver_destroy(d);
}

typedef struct serial_log {
    char text[256];
    int lines;
} serial_log;

static void on_serial(void *ctx, const char *line)
{
    serial_log *l = ctx;
    l->lines++;
    strncat(l->text, line, sizeof l->text - strlen(l->text) - 2);
    strcat(l->text, "|");
}

/* Serial port output becomes lines for cfg->serial; no events. */
static void serial_lines(void **state)
{
    (void)state;
    /* mov dx,0x3fd; in al,dx (LSR); mov dx,0x3f8; then out 'h','i','\n','o','k','\n'; hlt */
    static const uint8_t code[] = {
        0x66, 0xba, 0xfd, 0x03, 0xec, 0x66, 0xba, 0xf8, 0x03, 0xb0, 'h', 0xee, 0xb0, 'i', 0xee, 0xb0, '\n', 0xee,
        0xb0, 'o', 0xee, 0xb0, 'k', 0xee, 0xb0, '\n', 0xee, 0xf4,
    };
    char why[256];
    vmt_image_segment seg = { .pa = KG_CODE_PA, .data = code, .filesz = sizeof code, .memsz = sizeof code };
    vmt_image *img;
    assert_int_equal(vmt_image_from_segments(&seg, 1, NULL, KG_RAM, &img, why, sizeof why), VMT_OK);
    serial_log log = { "", 0 };
    vmt_machine_config cfg = { .ram_size = KG_RAM, .image = img, .serial = on_serial, .serial_ctx = &log };
    vmt_driver *d;
    assert_int_equal(vmt_kvm_driver_create(&cfg, &d, why, sizeof why), VMT_OK);
    vmt_image_destroy(img);
    vmt_event ev;
    kg_expect(d, VMT_EVENT_STOPPED, &ev);
    assert_string_equal(log.text, "hi|ok|");
    assert_int_equal(log.lines, 2);
    vmt_driver_destroy(d);
}

int main(void)
{
    vmt_test_require_kvm();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(breakpoint_1000_hits),
        cmocka_unit_test(reinject_reaches_guest_idt),
        cmocka_unit_test(single_step),
        cmocka_unit_test(hw_breakpoint),
        cmocka_unit_test(inject_page_fault),
        cmocka_unit_test(io_read_and_protocol),
        cmocka_unit_test(serial_lines),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
