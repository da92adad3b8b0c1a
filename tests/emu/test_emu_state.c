/*
 * tests/emu/test_emu_state.c — the emulator driver's full vCPU state
 * (VMT_CAP_VCPU_STATE) and dirty log (VMT_CAP_DIRTY_LOG):
 *  - a state read, changed (MSRs, TR, FPU/SSE, TSC) and written back reads
 *    back the same, and the guest sees it (it stores XMM0 and reads STAR);
 *  - groups not in `known` keep the driver's values;
 *  - a vCPU restored in HLT sleeps until an interrupt: without a bus and
 *    with IF = 0 it stops as a halt at once;
 *  - the dirty log lists exactly the frames written since the last clear
 *    (data and the tables whose A/D bits the walk set), not the ones only
 *    read, and a clear starts over.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "emu_guest.h"
#include "vmtrap/vcpu_state.h"

#include <unicorn/x86.h>

#define CODE_VA 0x400000ull
#define DATA_VA 0x7f0000600000ull

static void state_round_trip_reaches_the_guest(void **state)
{
    (void)state;
    eg_guest g;
    assert_int_equal(eg_create(&g, 4 << 20, 0, NULL, NULL), VMT_OK);
    assert_true(vmt_driver_has(g.d, VMT_CAP_VCPU_STATE));
    vmt_gfn data = eg_frame(&g);
    eg_map(&g, DATA_VA, data, 0);
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RAX, DATA_VA);
    eg_bytes(&c, "\x0f\x11\x00", 3); /* movups [rax], xmm0 */
    eg_mov_imm(&c, EG_RCX, 0xc0000081);
    eg_bytes(&c, "\x0f\x32", 2); /* rdmsr STAR */
    eg_out_ucall(&c, EG_RDX);
    eg_hlt(&c);
    eg_place(&g, CODE_VA, &c);
    g.regs.cr4 |= 1ull << 9; /* OSFXSR */
    assert_int_equal(eg_start(&g, CODE_VA, 0), VMT_OK);

    vmt_vcpu_state s;
    assert_int_equal(vmt_drv_get_vcpu_state(g.d, 0, &s), VMT_OK);
    assert_int_equal(s.regs.rip, CODE_VA);
    s.star = 0x0023001000000000ull;
    s.lstar = 0xffffffff81000000ull;
    s.sysenter_eip = 0xffffffff81000100ull;
    s.pat = 0x0007040600070406ull;
    s.tsc_aux = 7;
    s.tr.selector = 0x40;
    s.tr.base = 0xfffffe0000003000ull;
    s.tr.limit = 0x4087;
    s.tr.attrib = 0x8b;
    s.tsc = 123456789;
    for (int i = 0; i < 16; i++)
        s.fpu.fxsave[160 + i] = (uint8_t)(0x10 + i); /* xmm0 */
    s.fpu.fxsave[32] = 0x11; /* st0 mantissa byte */
    s.known = VMT_VS_REGS | VMT_VS_SEGMENTS | VMT_VS_SYSCALL | VMT_VS_SYSENTER | VMT_VS_MSRS | VMT_VS_FPU |
              VMT_VS_TSC;
    if (vmt_drv_set_vcpu_state(g.d, 0, &s) != VMT_OK)
        fail_msg("set_vcpu_state: %s", vmt_driver_error(g.d));

    vmt_vcpu_state t;
    assert_int_equal(vmt_drv_get_vcpu_state(g.d, 0, &t), VMT_OK);
    assert_int_equal(t.star, s.star);
    assert_int_equal(t.lstar, s.lstar);
    assert_int_equal(t.sysenter_eip, s.sysenter_eip);
    assert_int_equal(t.tsc_aux, 7);
    assert_int_equal(t.tr.selector, 0x40);
    assert_int_equal(t.tr.base, s.tr.base);
    assert_int_equal(t.tr.limit, s.tr.limit);
    assert_int_equal(t.tr.attrib, 0x8b);
    assert_true(t.tsc >= s.tsc && t.tsc < s.tsc + 1000);
    assert_memory_equal(t.fpu.fxsave + 160, s.fpu.fxsave + 160, 16);
    assert_memory_equal(t.fpu.fxsave + 32, s.fpu.fxsave + 32, 10);

    /* the guest sees the state */
    vmt_event ev = eg_next(&g);
    assert_int_equal(ev.kind, VMT_EVENT_IO);
    assert_int_equal(ev.u.io.value, 0x00230010);
    eg_respond(&g, &ev, vmt_response_continue());
    ev = eg_next(&g);
    assert_int_equal(ev.kind, VMT_EVENT_STOPPED);
    uint8_t x[16];
    assert_int_equal(vmt_drv_read_phys(g.d, data << 12, x, 16), VMT_OK);
    assert_memory_equal(x, s.fpu.fxsave + 160, 16);

    /* an unknown group keeps the driver's value */
    vmt_vcpu_state u;
    assert_int_equal(vmt_drv_get_vcpu_state(g.d, 0, &u), VMT_OK);
    u.lstar = 0xffffffff82000000ull;
    u.known = VMT_VS_REGS;
    assert_int_equal(vmt_drv_set_vcpu_state(g.d, 0, &u), VMT_OK);
    assert_int_equal(vmt_drv_get_vcpu_state(g.d, 0, &t), VMT_OK);
    assert_int_equal(t.lstar, s.lstar);
    /* a non-canonical LSTAR is refused like the CPU would */
    u.lstar = 0x8000000000000000ull;
    u.known = VMT_VS_SYSCALL;
    assert_int_equal(vmt_drv_set_vcpu_state(g.d, 0, &u), VMT_E_INVAL);
    assert_int_equal(vmt_emu_check(g.d), VMT_OK);
    eg_destroy(&g);
}

static void restored_in_hlt_without_interrupts_stops(void **state)
{
    (void)state;
    eg_guest g;
    assert_int_equal(eg_create(&g, 4 << 20, 0, NULL, NULL), VMT_OK);
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RAX, 1);
    eg_out_ucall(&c, EG_RAX); /* must never run */
    eg_place(&g, CODE_VA, &c);
    assert_int_equal(eg_start(&g, CODE_VA, 0), VMT_OK);
    vmt_vcpu_state s;
    assert_int_equal(vmt_drv_get_vcpu_state(g.d, 0, &s), VMT_OK);
    s.halted = true;
    s.known = VMT_VS_EVENTS;
    assert_int_equal(vmt_drv_set_vcpu_state(g.d, 0, &s), VMT_OK);
    vmt_event ev = eg_next(&g);
    assert_int_equal(ev.kind, VMT_EVENT_STOPPED);
    assert_int_equal(ev.u.stop.reason, VMT_STOP_HALT);
    eg_destroy(&g);
}

typedef struct frames {
    vmt_gfn g[64];
    size_t n;
} frames;

static int collect(void *ctx, vmt_gfn gfn)
{
    frames *f = ctx;
    if (f->n < 64)
        f->g[f->n++] = gfn;
    return 0;
}

static bool has(const frames *f, vmt_gfn g)
{
    for (size_t i = 0; i < f->n; i++)
        if (f->g[i] == g)
            return true;
    return false;
}

static void dirty_log_lists_written_frames(void **state)
{
    (void)state;
    eg_guest g;
    assert_int_equal(eg_create(&g, 4 << 20, 0, NULL, NULL), VMT_OK);
    assert_true(vmt_driver_has(g.d, VMT_CAP_DIRTY_LOG));
    vmt_gfn a = eg_frame(&g), b = eg_frame(&g), r = eg_frame(&g);
    eg_map(&g, DATA_VA, a, 0);
    eg_map(&g, DATA_VA + 0x1000, b, 0);
    eg_map(&g, DATA_VA + 0x2000, r, 0);
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RAX, DATA_VA + 0x2000);
    eg_load(&c, EG_RBX, EG_RAX); /* read r */
    eg_mov_imm(&c, EG_RAX, DATA_VA);
    eg_store(&c, EG_RAX, EG_RBX); /* write a */
    eg_out_ucall(&c, EG_RBX);
    eg_mov_imm(&c, EG_RAX, DATA_VA + 0x1000);
    eg_store(&c, EG_RAX, EG_RBX); /* write b */
    eg_hlt(&c);
    eg_place(&g, CODE_VA, &c);
    assert_int_equal(eg_start(&g, CODE_VA, 0), VMT_OK);
    frames f = { .n = 0 };
    assert_int_equal(vmt_drv_dirty_log(g.d, NULL, NULL, 1), VMT_OK); /* setup writes: forgotten */
    vmt_event ev = eg_next(&g);
    assert_int_equal(ev.kind, VMT_EVENT_IO);
    assert_int_equal(vmt_drv_dirty_log(g.d, collect, &f, 1), VMT_OK);
    assert_true(has(&f, a));
    assert_false(has(&f, b));
    assert_false(has(&f, r));
    eg_respond(&g, &ev, vmt_response_continue());
    ev = eg_next(&g);
    assert_int_equal(ev.kind, VMT_EVENT_STOPPED);
    f.n = 0;
    assert_int_equal(vmt_drv_dirty_log(g.d, collect, &f, 0), VMT_OK);
    assert_true(has(&f, b));
    assert_false(has(&f, a)); /* cleared, and not written again */
    assert_false(has(&f, r));
    for (size_t i = 1; i < f.n; i++)
        assert_true(f.g[i] > f.g[i - 1]); /* increasing gfn order */
    assert_int_equal(vmt_emu_check(g.d), VMT_OK);
    eg_destroy(&g);
}

/* CPUID: qemu64 by default, another model on request (leaf 1 EAX, the
 * family/model/stepping signature, differs). */
static uint32_t leaf1_eax(const vmt_emu_options *o)
{
    eg_guest g;
    assert_int_equal(eg_create_opt(&g, 4 << 20, o, NULL, NULL), VMT_OK);
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RAX, 1);
    eg_mov_imm(&c, EG_RCX, 0);
    eg_bytes(&c, "\x0f\xa2", 2); /* cpuid */
    eg_out_ucall(&c, EG_RAX);
    eg_hlt(&c);
    eg_place(&g, CODE_VA, &c);
    assert_int_equal(eg_start(&g, CODE_VA, 0), VMT_OK);
    vmt_event ev = eg_next(&g);
    assert_int_equal(ev.kind, VMT_EVENT_IO);
    uint32_t v = ev.u.io.value;
    eg_respond(&g, &ev, vmt_response_continue());
    eg_destroy(&g);
    return v;
}

static void cpuid_model_is_configurable(void **state)
{
    (void)state;
    vmt_emu_options def = { 0 };
    vmt_emu_options q64 = { .set_cpu_model = true, .cpu_model = UC_CPU_X86_QEMU64 };
    vmt_emu_options hsw = { .set_cpu_model = true, .cpu_model = UC_CPU_X86_HASWELL };
    uint32_t d = leaf1_eax(&def), q = leaf1_eax(&q64), h = leaf1_eax(&hsw);
    assert_int_equal(d, q);
    assert_int_not_equal(h, d);
    assert_int_equal((h >> 4 & 0xf) | (h >> 12 & 0xf0), 60); /* Haswell: model 0x3c */
    vmt_emu_options bad = { .set_cpu_model = true, .cpu_model = 9999 };
    eg_guest g;
    assert_int_equal(eg_create_opt(&g, 4 << 20, &bad, NULL, NULL), VMT_E_INVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(state_round_trip_reaches_the_guest),
        cmocka_unit_test(restored_in_hlt_without_interrupts_stops),
        cmocka_unit_test(dirty_log_lists_written_frames),
        cmocka_unit_test(cpuid_model_is_configurable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
