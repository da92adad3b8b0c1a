/*
 * tests/kvm/test_kvm_memory.c — the KVM driver's memory side: a guest write
 * to a write-protected page table is one event with the exact new value,
 * and the response decides where it lands (CONTINUE: the table, DENY:
 * nowhere, EMULATE: view 0's frame); remapped gfns are what the guest sees
 * (a hidden breakpoint stepped with FAST_STEP through view 0, or performed
 * by the engine with EMULATE while the shadow code's own traps still fire);
 * the dirty
 * log survives memslot rebuilds; capabilities are declared honestly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kvm_guest.h"
#include "util/testutil.h"
#include "vmtrap/kvm.h"

/* Rewrites boot PD0 entry 30 (va 0x3c00000) to map pa 0x200000 (2 MiB,
 * A/D preset), invlpg, reports [0x3c00123] and then the entry's low half:
 *   lea rbx,[rdi-0x4000+30*8]; mov rax,0x2000e3; mov [rbx],rax
 *   mov rdi,0x3c00000; invlpg [rdi]; mov eax,[rdi+0x123]
 *   mov dx,0x5e1; out dx,eax; mov eax,[rbx]; out dx,eax; hlt */
static const uint8_t g_pt[] = {
    0x48, 0x8d, 0x9f, 0xf0, 0xc0, 0xff, 0xff, 0x48, 0xc7, 0xc0, 0xe3, 0x00, 0x20, 0x00, 0x48, 0x89, 0x03,
    0x48, 0xc7, 0xc7, 0x00, 0x00, 0xc0, 0x03, 0x0f, 0x01, 0x3f, 0x8b, 0x87, 0x23, 0x01, 0x00, 0x00, 0x66,
    0xba, 0xe1, 0x05, 0xef, 0x8b, 0x03, 0xef, 0xf4,
};
#define PD0_PA (KG_RAM - 4 * VMT_PAGE_SIZE)
#define PTE_PA (PD0_PA + 30 * 8)
#define NEW_PTE 0x2000e3ull
#define MARK_NEW 0xabcd1234u /* at pa 0x200123: seen through the new entry */
#define MARK_OLD 0x11112222u /* at pa 0x3c00123: seen through the old entry */

/* Same function-call loop as test_kvm_events.c (func at +0x30). */
static const uint8_t g_calls[] = {
    0x31, 0xdb, 0xb9, 0xe8, 0x03, 0x00, 0x00, 0x48, 0x89, 0xdf, 0xe8, 0x21, 0x00, 0x00, 0x00, 0x48, 0x39, 0xd8,
    0x75, 0x0f, 0x48, 0xff, 0xc3, 0xff, 0xc9, 0x75, 0xec, 0x89, 0xd8, 0x66, 0xba, 0xe1, 0x05, 0xef, 0xf4, 0xb8,
    0xad, 0x0b, 0x00, 0x00, 0x66, 0xba, 0xe2, 0x05, 0xef, 0xf4, 0x66, 0x90, 0x55, 0x48, 0x89, 0xf8, 0x5d, 0xc3,
};
#define G_CALLS_FUNC (KG_CODE_PA + 0x30)

static vmt_driver *pt_guest(uint64_t *old_pte, vmt_view *view)
{
    vmt_driver *d = kg_driver(g_pt, sizeof g_pt, KG_RAM);
    uint32_t a = MARK_NEW, b = MARK_OLD;
    assert_int_equal(vmt_drv_write_phys(d, 0x200123, &a, 4), VMT_OK);
    assert_int_equal(vmt_drv_write_phys(d, 0x3c00123, &b, 4), VMT_OK);
    assert_int_equal(vmt_drv_read_phys(d, PTE_PA, old_pte, 8), VMT_OK);
    assert_int_equal(*old_pte & ~0xfffull, 0x3c00000ull); /* the boot identity entry */
    assert_int_equal(vmt_drv_view_create(d, VMT_ACCESS_RWX, view), VMT_OK);
    assert_int_equal(vmt_drv_view_switch(d, VMT_VCPU_ALL, *view), VMT_OK);
    assert_int_equal(vmt_drv_view_set_access(d, *view, PD0_PA >> 12, VMT_ACCESS_RX), VMT_OK);
    kg_check(d);
    return d;
}

/* The PD entry the guest writes holds `want` right now. */
static void assert_pte_is(vmt_driver *d, uint64_t want)
{
    uint64_t now;
    assert_int_equal(vmt_drv_read_phys(d, PTE_PA, &now, 8), VMT_OK);
    assert_int_equal(now, want);
}

static void expect_pt_write(vmt_driver *d, vmt_view view, uint64_t old_pte, vmt_event *ev)
{
    kg_expect(d, VMT_EVENT_MEM_ACCESS, ev);
    assert_int_equal(ev->view, view);
    assert_int_equal(ev->u.mem.gpa, PTE_PA);
    assert_int_equal(ev->u.mem.access, VMT_ACCESS_W);
    assert_true(ev->u.mem.has_data);
    assert_int_equal(ev->u.mem.size, 8);
    assert_int_equal(ev->u.mem.value, NEW_PTE);
    assert_pte_is(d, old_pte); /* held back until the response */
}

static void expect_reports(vmt_driver *d, uint32_t through_mapping, uint32_t entry_low)
{
    vmt_event ev;
    kg_expect_io(d, through_mapping, &ev);
    kg_expect_io(d, entry_low, &ev);
    kg_expect(d, VMT_EVENT_STOPPED, &ev);
    vmt_driver_stats s;
    assert_int_equal(vmt_drv_stats(d, &s), VMT_OK);
    assert_int_equal(s.events[VMT_EVENT_MEM_ACCESS], 1); /* one write, one event */
}

static void pt_write_continue_lands(void **state)
{
    (void)state;
    uint64_t old;
    vmt_view v;
    vmt_driver *d = pt_guest(&old, &v);
    vmt_event ev;
    expect_pt_write(d, v, old, &ev);
    kg_continue(d, &ev);
    assert_pte_is(d, NEW_PTE);
    expect_reports(d, MARK_NEW, (uint32_t)NEW_PTE); /* the guest's MMU used the new entry */
    kg_check(d);
    vmt_driver_destroy(d);
}

static void pt_write_deny_drops(void **state)
{
    (void)state;
    uint64_t old;
    vmt_view v;
    vmt_driver *d = pt_guest(&old, &v);
    vmt_event ev;
    expect_pt_write(d, v, old, &ev);
    vmt_response r = { .actions = VMT_RESP_DENY };
    assert_int_equal(vmt_drv_respond(d, &ev, &r), VMT_OK);
    expect_reports(d, MARK_OLD, (uint32_t)old);
    assert_pte_is(d, old);
    vmt_driver_destroy(d);
}

/* STEP on a write event: the store lands and the very next event is the
 * single-step right after the storing instruction (mov [rbx],rax at +0x0e). */
static void pt_write_step(void **state)
{
    (void)state;
    uint64_t old;
    vmt_view v;
    vmt_driver *d = pt_guest(&old, &v);
    vmt_event ev;
    expect_pt_write(d, v, old, &ev);
    vmt_response r = { .actions = VMT_RESP_STEP };
    assert_int_equal(vmt_drv_respond(d, &ev, &r), VMT_OK);
    kg_expect(d, VMT_EVENT_SINGLESTEP, &ev);
    assert_int_equal(ev.regs.rip, KG_CODE_PA + 0x11);
    assert_pte_is(d, NEW_PTE);
    kg_continue(d, &ev);
    expect_reports(d, MARK_NEW, (uint32_t)NEW_PTE);
    kg_check(d);
    vmt_driver_destroy(d);
}

/* The breakpoint manager's dance on KVM: SWITCH_VIEW 0 + STEP, then back.
 * Switching to view 0 in a response keeps the memslots (no rebuild per
 * step); the store lands in view 0's frame; back in view 1 nothing changed. */
static void switch_view_step_dance_keeps_memslots(void **state)
{
    (void)state;
    uint64_t old;
    vmt_view v;
    vmt_driver *d = pt_guest(&old, &v);
    uint32_t slots = vmt_kvm_memslot_count(d);
    assert_int_equal(slots, 3);
    vmt_event ev;
    expect_pt_write(d, v, old, &ev);
    vmt_response r = { .actions = VMT_RESP_SWITCH_VIEW | VMT_RESP_STEP, .new_view = VMT_VIEW_DEFAULT };
    assert_int_equal(vmt_drv_respond(d, &ev, &r), VMT_OK);
    assert_int_equal(vmt_kvm_memslot_count(d), slots);
    kg_check(d);
    kg_expect(d, VMT_EVENT_SINGLESTEP, &ev);
    assert_int_equal(ev.view, VMT_VIEW_DEFAULT);
    assert_int_equal(ev.regs.rip, KG_CODE_PA + 0x11);
    assert_pte_is(d, NEW_PTE);
    vmt_response back = { .actions = VMT_RESP_SWITCH_VIEW, .new_view = v };
    assert_int_equal(vmt_drv_respond(d, &ev, &back), VMT_OK);
    assert_int_equal(vmt_kvm_memslot_count(d), slots);
    kg_check(d);
    expect_reports(d, MARK_NEW, (uint32_t)NEW_PTE);
    vmt_driver_destroy(d);
}

/* A long stay in view 0 after a response switched there gets view 0's own
 * memslot layout; meanwhile the extra traps are served without events. */
static void lazy_view0_layout_becomes_exact(void **state)
{
    (void)state;
    /* mov dx,0x5e1; 1: out dx,eax; mov [0x5000],eax; jmp 1b */
    static const uint8_t code[] = { 0x66, 0xba, 0xe1, 0x05, 0xef, 0x89, 0x04, 0x25, 0x00, 0x50, 0x00, 0x00, 0xeb, 0xf6 };
    vmt_driver *d = kg_driver(code, sizeof code, KG_RAM);
    vmt_view v;
    assert_int_equal(vmt_drv_view_create(d, VMT_ACCESS_RWX, &v), VMT_OK);
    assert_int_equal(vmt_drv_view_switch(d, 0, v), VMT_OK);
    assert_int_equal(vmt_drv_view_set_access(d, v, 5, VMT_ACCESS_X), VMT_OK); /* no slot for gfn 5 */
    vmt_event ev;
    kg_expect(d, VMT_EVENT_IO, &ev);
    vmt_response r = { .actions = VMT_RESP_SWITCH_VIEW, .new_view = VMT_VIEW_DEFAULT };
    assert_int_equal(vmt_drv_respond(d, &ev, &r), VMT_OK);
    uint32_t lazy = vmt_kvm_memslot_count(d);
    assert_int_equal(lazy, 2);
    for (int i = 0; i < 100; i++) { /* stores to gfn 5 raise no event in view 0 */
        kg_expect(d, VMT_EVENT_IO, &ev);
        kg_continue(d, &ev);
        kg_check(d);
    }
    assert_int_equal(vmt_kvm_memslot_count(d), 1);
    uint32_t x;
    assert_int_equal(vmt_drv_read_phys(d, 0x5000, &x, 4), VMT_OK);
    assert_int_equal(x, 0); /* eax was 0 all along; the store went to the frame */
    vmt_driver_stats s;
    assert_int_equal(vmt_drv_stats(d, &s), VMT_OK);
    assert_int_equal(s.events[VMT_EVENT_MEM_ACCESS], 0);
    vmt_driver_destroy(d);
}

/* View 1 backs the PD with a shadow copy; EMULATE against view 0 puts the
 * write into the real PD while the guest (in view 1) keeps the shadow. */
static void pt_write_emulate_in_view0(void **state)
{
    (void)state;
    uint64_t old;
    vmt_view v;
    vmt_driver *d = pt_guest(&old, &v);
    vmt_gfn shadow;
    uint8_t page[4096];
    assert_int_equal(vmt_drv_frame_alloc(d, &shadow), VMT_OK);
    assert_true(shadow >= vmt_driver_caps(d)->ram_frames);
    assert_int_equal(vmt_drv_read_phys(d, PD0_PA, page, sizeof page), VMT_OK);
    assert_int_equal(vmt_drv_write_phys(d, shadow << 12, page, sizeof page), VMT_OK);
    assert_int_equal(vmt_drv_view_remap(d, v, PD0_PA >> 12, shadow), VMT_OK);
    vmt_access acc;
    vmt_gfn back;
    assert_int_equal(vmt_drv_view_get_access(d, v, PD0_PA >> 12, &acc, &back), VMT_OK);
    assert_int_equal(acc, VMT_ACCESS_RWX); /* remap reset the rights */
    assert_int_equal(back, shadow);
    assert_int_equal(vmt_drv_view_set_access(d, v, PD0_PA >> 12, VMT_ACCESS_RX), VMT_OK);
    assert_int_equal(vmt_drv_frame_free(d, shadow), VMT_E_BUSY); /* still backing a gfn */
    kg_check(d);
    vmt_event ev;
    expect_pt_write(d, v, old, &ev);
    vmt_response r = { .actions = VMT_RESP_EMULATE, .emulate_view = VMT_VIEW_DEFAULT };
    assert_int_equal(vmt_drv_respond(d, &ev, &r), VMT_OK);
    uint64_t real, shadowed;
    assert_int_equal(vmt_drv_read_phys(d, PTE_PA, &real, 8), VMT_OK);
    assert_int_equal(vmt_drv_read_phys(d, (shadow << 12) + 30 * 8, &shadowed, 8), VMT_OK);
    assert_int_equal(real, NEW_PTE);
    assert_int_equal(shadowed, old);
    expect_reports(d, MARK_OLD, (uint32_t)old); /* the guest walks the shadow */
    assert_int_equal(vmt_drv_view_switch(d, 0, VMT_VIEW_DEFAULT), VMT_OK);
    assert_int_equal(vmt_drv_view_destroy(d, v), VMT_OK);
    assert_int_equal(vmt_drv_frame_free(d, shadow), VMT_OK);
    kg_check(d);
    vmt_driver_destroy(d);
}

/* A hidden breakpoint: view 1 shows the code page from a shadow frame with
 * INT3 at func; FAST_STEP runs the real instruction in view 0 and comes
 * back, one event per call, guest memory (the frame) never changes. */
static void hidden_breakpoint_fast_step(void **state)
{
    (void)state;
    vmt_driver *d = kg_driver(g_calls, sizeof g_calls, KG_RAM);
    vmt_gfn code_gfn = KG_CODE_PA >> 12, shadow;
    uint8_t page[4096];
    assert_int_equal(vmt_drv_frame_alloc(d, &shadow), VMT_OK);
    assert_int_equal(vmt_drv_read_phys(d, KG_CODE_PA, page, sizeof page), VMT_OK);
    page[G_CALLS_FUNC - KG_CODE_PA] = 0xCC;
    assert_int_equal(vmt_drv_write_phys(d, shadow << 12, page, sizeof page), VMT_OK);
    vmt_view v;
    assert_int_equal(vmt_drv_view_create(d, VMT_ACCESS_RWX, &v), VMT_OK);
    assert_int_equal(vmt_drv_view_remap(d, v, code_gfn, shadow), VMT_OK);
    assert_int_equal(vmt_drv_view_switch(d, 0, v), VMT_OK);
    vmt_event ev;
    for (uint64_t i = 0; i < 200; i++) {
        kg_expect(d, VMT_EVENT_BREAKPOINT, &ev);
        assert_int_equal(ev.regs.rip, G_CALLS_FUNC);
        assert_int_equal(ev.regs.rdi, i);
        assert_int_equal(ev.view, v);
        vmt_response r = { .actions = VMT_RESP_FAST_STEP, .step_view = VMT_VIEW_DEFAULT };
        assert_int_equal(vmt_drv_respond(d, &ev, &r), VMT_OK);
        vmt_view cur;
        assert_int_equal(vmt_drv_view_current(d, 0, &cur), VMT_OK);
        assert_int_equal(cur, v); /* the step runs inside the next wait, then comes back */
        if (i % 50 == 0)
            kg_check(d);
    }
    kg_expect(d, VMT_EVENT_BREAKPOINT, &ev);
    /* unhook: back to view 0 and CONTINUE re-executes the real byte */
    assert_int_equal(vmt_drv_view_switch(d, 0, VMT_VIEW_DEFAULT), VMT_OK);
    kg_continue(d, &ev);
    kg_expect(d, VMT_EVENT_IO, &ev);
    assert_int_equal(ev.u.io.port, KG_PORT_REPORT);
    assert_int_equal(ev.u.io.value, 1000);
    uint8_t b;
    assert_int_equal(vmt_drv_read_phys(d, G_CALLS_FUNC, &b, 1), VMT_OK);
    assert_int_equal(b, 0x55); /* the frame kept its push rbp */
    kg_continue(d, &ev);
    kg_expect(d, VMT_EVENT_STOPPED, &ev);
    kg_check(d);
    vmt_driver_destroy(d);
}

/* mov rbx,0x200000; mov dx,0x5e1; 3x { mov rax,[rbx+8]; out dx,eax };
 * mov qword [rbx+16],0x777; mov rax,[rbx+16]; out dx,eax; hlt */
static const uint8_t g_read[] = {
    0x48, 0xc7, 0xc3, 0x00, 0x00, 0x20, 0x00, 0x66, 0xba, 0xe1, 0x05, 0x48, 0x8b, 0x43, 0x08, 0xef, 0x48, 0x8b, 0x43,
    0x08, 0xef, 0x48, 0x8b, 0x43, 0x08, 0xef, 0x48, 0xc7, 0x43, 0x10, 0x77, 0x07, 0x00, 0x00, 0x48, 0x8b, 0x43, 0x10,
    0xef, 0xf4,
};

/* Read traps (a frame without a memslot): each read is an event before it
 * happens; CONTINUE reads the current view's frame, EMULATE view 0's,
 * DENY gives zeros; a write the view allows lands silently. */
static void read_trap_responses(void **state)
{
    (void)state;
    vmt_driver *d = kg_driver(g_read, sizeof g_read, KG_RAM);
    const uint64_t real = 0x1111111111ull, other = 0x2222222222ull;
    vmt_gfn shadow;
    vmt_view v;
    assert_int_equal(vmt_drv_write_phys(d, 0x200008, &real, 8), VMT_OK);
    assert_int_equal(vmt_drv_frame_alloc(d, &shadow), VMT_OK);
    assert_int_equal(vmt_drv_write_phys(d, (shadow << 12) + 8, &other, 8), VMT_OK);
    assert_int_equal(vmt_drv_view_create(d, VMT_ACCESS_RWX, &v), VMT_OK);
    assert_int_equal(vmt_drv_view_remap(d, v, 0x200, shadow), VMT_OK);
    assert_int_equal(vmt_drv_view_set_access(d, v, 0x200, VMT_ACCESS_WX), VMT_OK);
    assert_int_equal(vmt_drv_view_switch(d, 0, v), VMT_OK);
    kg_check(d);
    static const uint32_t actions[] = { VMT_RESP_CONTINUE, VMT_RESP_EMULATE, VMT_RESP_DENY };
    static const uint32_t seen[] = { 0x22222222u, 0x11111111u, 0 };
    vmt_event ev;
    for (int i = 0; i < 3; i++) {
        kg_expect(d, VMT_EVENT_MEM_ACCESS, &ev);
        assert_int_equal(ev.u.mem.access, VMT_ACCESS_R);
        assert_int_equal(ev.u.mem.gpa, 0x200008);
        assert_int_equal(ev.u.mem.size, 8);
        assert_false(ev.u.mem.has_data);
        vmt_response r = { .actions = actions[i], .emulate_view = VMT_VIEW_DEFAULT };
        assert_int_equal(vmt_drv_respond(d, &ev, &r), VMT_OK);
        kg_expect_io(d, seen[i], &ev);
    }
    /* the write is allowed: no event, it lands in the shadow frame */
    kg_expect(d, VMT_EVENT_MEM_ACCESS, &ev); /* the read back is not */
    assert_int_equal(ev.u.mem.gpa, 0x200010);
    kg_continue(d, &ev);
    kg_expect_io(d, 0x777, &ev);
    kg_expect(d, VMT_EVENT_STOPPED, &ev);
    uint64_t x;
    assert_int_equal(vmt_drv_read_phys(d, (shadow << 12) + 16, &x, 8), VMT_OK);
    assert_int_equal(x, 0x777);
    assert_int_equal(vmt_drv_read_phys(d, 0x200010, &x, 8), VMT_OK);
    assert_int_equal(x, 0);
    kg_check(d);
    vmt_driver_destroy(d);
}

/* A driver running `main_code` at KG_CODE_PA with `func` at 0x2000, and a
 * view `*v` (not switched to) that shows frame 2 from a shadow frame with
 * INT3 at func's first byte, execute-only: a hidden breakpoint at 0x2000. */
static vmt_driver *hidden_func_guest(const uint8_t *main_code, size_t main_len, const uint8_t *func,
                                     size_t func_len, vmt_view *v)
{
    assert_true(main_len <= 0x1000);
    uint8_t *image = calloc(1, 0x1000 + func_len);
    assert_non_null(image);
    memcpy(image, main_code, main_len);
    memcpy(image + 0x1000, func, func_len);
    vmt_driver *d = kg_driver(image, 0x1000 + func_len, KG_RAM);
    free(image);
    uint8_t page[4096];
    vmt_gfn shadow;
    assert_int_equal(vmt_drv_frame_alloc(d, &shadow), VMT_OK);
    assert_int_equal(vmt_drv_read_phys(d, 0x2000, page, sizeof page), VMT_OK);
    page[0] = 0xCC;
    assert_int_equal(vmt_drv_write_phys(d, shadow << 12, page, sizeof page), VMT_OK);
    assert_int_equal(vmt_drv_view_create(d, VMT_ACCESS_RWX, v), VMT_OK);
    assert_int_equal(vmt_drv_view_remap(d, *v, 2, shadow), VMT_OK);
    assert_int_equal(vmt_drv_view_set_access(d, *v, 2, VMT_ACCESS_X), VMT_OK);
    return d;
}

/* A fully hidden breakpoint: func's page in view 1 is a shadow with INT3
 * and no read right. The guest calls func 20 times (each call one
 * breakpoint event, FAST_STEP through view 0 runs the real push rbp; the
 * rest of func runs from the no-slot page one step at a time), and when the
 * guest reads func's first byte it sees the original 0x55, not 0xCC. */
static void hidden_breakpoint_invisible_to_reads(void **state)
{
    (void)state;
    /* at 0x1000: xor ebx,ebx; mov ecx,20; 1: mov rdi,rbx; mov rax,0x2000;
     * call rax; cmp rax,rbx; jne bad; inc rbx; dec ecx; jnz 1b;
     * movzx eax,byte [0x2000]; mov dx,0x5e1; out dx,eax; mov eax,ebx;
     * out dx,eax; hlt; bad: mov eax,0xbad; mov dx,0x5e2; out dx,eax; hlt
     * at 0x2000: push rbp; mov rax,rdi; pop rbp; ret */
    static const uint8_t main_code[] = {
        0x31, 0xdb, 0xb9, 0x14, 0x00, 0x00, 0x00, 0x48, 0x89, 0xdf, 0x48, 0xc7, 0xc0, 0x00, 0x20, 0x00,
        0x00, 0xff, 0xd0, 0x48, 0x39, 0xd8, 0x75, 0x18, 0x48, 0xff, 0xc3, 0xff, 0xc9, 0x75, 0xe8, 0x0f,
        0xb6, 0x04, 0x25, 0x00, 0x20, 0x00, 0x00, 0x66, 0xba, 0xe1, 0x05, 0xef, 0x89, 0xd8, 0xef, 0xf4,
        0xb8, 0xad, 0x0b, 0x00, 0x00, 0x66, 0xba, 0xe2, 0x05, 0xef, 0xf4,
    };
    static const uint8_t func[] = { 0x55, 0x48, 0x89, 0xf8, 0x5d, 0xc3 };
    vmt_view v;
    vmt_driver *d = hidden_func_guest(main_code, sizeof main_code, func, sizeof func, &v);
    assert_int_equal(vmt_drv_view_switch(d, 0, v), VMT_OK);
    vmt_event ev;
    for (uint64_t i = 0; i < 20; i++) {
        kg_expect(d, VMT_EVENT_BREAKPOINT, &ev);
        assert_int_equal(ev.regs.rip, 0x2000);
        assert_int_equal(ev.regs.rdi, i);
        /* EMULATE and FAST_STEP through view 0 do the same here */
        vmt_response r = { .actions = i % 2 ? VMT_RESP_FAST_STEP : VMT_RESP_EMULATE,
                           .step_view = VMT_VIEW_DEFAULT, .emulate_view = VMT_VIEW_DEFAULT };
        assert_int_equal(vmt_drv_respond(d, &ev, &r), VMT_OK);
        kg_check(d);
    }
    kg_expect(d, VMT_EVENT_MEM_ACCESS, &ev); /* the guest reads func's first byte */
    assert_int_equal(ev.u.mem.access, VMT_ACCESS_R);
    assert_int_equal(ev.u.mem.gpa, 0x2000);
    vmt_response r = { .actions = VMT_RESP_EMULATE, .emulate_view = VMT_VIEW_DEFAULT };
    assert_int_equal(vmt_drv_respond(d, &ev, &r), VMT_OK);
    kg_expect_io(d, 0x55, &ev); /* not 0xCC */
    kg_expect_io(d, 20, &ev); /* every call returned its argument */
    kg_expect(d, VMT_EVENT_STOPPED, &ev);
    assert_int_equal(ev.u.stop.reason, VMT_STOP_HALT);
    kg_check(d);
    vmt_driver_destroy(d);
}

/* A hidden breakpoint answered with EMULATE: the engine performs the
 * displaced instruction and runs the rest of the shadow code in the
 * monitor, but every access the view traps still raises its event from the
 * right instruction: a store to a write-protected page (with its value), an
 * I/O port, a read of a read-protected page (served from view 0).
 * (A read of the shadow page itself from code inside it is not trapped:
 * the instruction is single-stepped with the frame mapped read-only.) */
static void shadow_code_traps_still_fire(void **state)
{
    (void)state;
    /* at 0x1000: mov rax,0x2000; call rax; mov eax,ecx; mov dx,0x5e1; out dx,eax; hlt
     * at 0x2000: push rbp; mov rbx,0x200000; mov rax,0x77; mov [rbx],rax;
     *            mov dx,0x5e2; out dx,eax; mov rsi,0x201000; movzx ecx,byte [rsi];
     *            pop rbp; ret */
    static const uint8_t main_code[] = { 0x48, 0xc7, 0xc0, 0x00, 0x20, 0x00, 0x00, 0xff, 0xd0, 0x89,
                                         0xc8, 0x66, 0xba, 0xe1, 0x05, 0xef, 0xf4 };
    static const uint8_t func[] = { 0x55, 0x48, 0xc7, 0xc3, 0x00, 0x00, 0x20, 0x00, 0x48, 0xc7, 0xc0, 0x77,
                                    0x00, 0x00, 0x00, 0x48, 0x89, 0x03, 0x66, 0xba, 0xe2, 0x05, 0xef, 0x48,
                                    0xc7, 0xc6, 0x00, 0x10, 0x20, 0x00, 0x0f, 0xb6, 0x0e, 0x5d, 0xc3 };
    vmt_view v;
    vmt_driver *d = hidden_func_guest(main_code, sizeof main_code, func, sizeof func, &v);
    assert_int_equal(vmt_drv_view_set_access(d, v, 0x200, VMT_ACCESS_RX), VMT_OK);
    const uint8_t secret = 0x5a;
    assert_int_equal(vmt_drv_write_phys(d, 0x201000, &secret, 1), VMT_OK);
    assert_int_equal(vmt_drv_view_set_access(d, v, 0x201, VMT_ACCESS_X), VMT_OK);
    assert_int_equal(vmt_drv_view_switch(d, 0, v), VMT_OK);
    vmt_event ev;
    kg_expect(d, VMT_EVENT_BREAKPOINT, &ev);
    assert_int_equal(ev.regs.rip, 0x2000);
    assert_int_equal(ev.u.bp.gpa, 0x2000);
    vmt_response emulate0 = { .actions = VMT_RESP_EMULATE, .emulate_view = VMT_VIEW_DEFAULT };
    assert_int_equal(vmt_drv_respond(d, &ev, &emulate0), VMT_OK);
    kg_check(d);
    kg_expect(d, VMT_EVENT_MEM_ACCESS, &ev); /* mov [rbx],rax into the protected page */
    assert_int_equal(ev.u.mem.access, VMT_ACCESS_W);
    assert_int_equal(ev.u.mem.gpa, 0x200000);
    assert_true(ev.u.mem.has_data);
    assert_int_equal(ev.u.mem.value, 0x77);
    assert_int_equal(ev.regs.rbx, 0x200000); /* the instructions before it ran */
    kg_continue(d, &ev);
    kg_expect_io_on(d, KG_PORT_OTHER, 0x77, &ev);
    kg_expect(d, VMT_EVENT_MEM_ACCESS, &ev); /* movzx ecx, byte [0x201000] */
    assert_int_equal(ev.u.mem.access, VMT_ACCESS_R);
    assert_int_equal(ev.u.mem.gpa, 0x201000);
    assert_int_equal(vmt_drv_respond(d, &ev, &emulate0), VMT_OK);
    kg_expect_io_on(d, KG_PORT_REPORT, 0x5a, &ev); /* the read was served */
    kg_expect(d, VMT_EVENT_STOPPED, &ev);
    assert_int_equal(ev.u.stop.reason, VMT_STOP_HALT);
    uint64_t x = 0;
    assert_int_equal(vmt_drv_read_phys(d, 0x200000, &x, 8), VMT_OK);
    assert_int_equal(x, 0x77); /* CONTINUE let the store land */
    assert_int_equal(ev.regs.rsp, vmt_boot_pt_base(KG_RAM)); /* push/pop and call/ret balanced */
    kg_check(d);
    vmt_driver_destroy(d);
}

/* Caps say what KVM can do: write traps only, VM-wide views. */
static void caps_are_honest(void **state)
{
    (void)state;
    vmt_driver *d = kg_driver(g_pt, sizeof g_pt, KG_RAM);
    const vmt_caps *c = vmt_driver_caps(d);
    assert_true(vmt_kvm_is_kvm(d));
    assert_int_equal(c->trap_access, VMT_ACCESS_RW); /* no execute traps */
    assert_false(c->flags & VMT_CAP_VIEW_PER_VCPU);
    assert_false(c->flags & VMT_CAP_PT_AD_BITS);
    assert_false(c->flags & VMT_CAP_INSN_LIMIT);
    assert_true(vmt_driver_has(d, VMT_CAP_WRITE_DATA | VMT_CAP_VIEW_PERM | VMT_CAP_BREAKPOINT_EVENTS));
    vmt_view v;
    assert_int_equal(vmt_drv_view_create(d, VMT_ACCESS_RWX, &v), VMT_OK);
    assert_int_equal(vmt_drv_view_set_access(d, v, 5, VMT_ACCESS_RW), VMT_E_NOTSUP);
    assert_int_equal(vmt_drv_view_set_access(d, v, 5, VMT_ACCESS_R), VMT_E_NOTSUP);
    vmt_view bad;
    assert_int_equal(vmt_drv_view_create(d, VMT_ACCESS_RW, &bad), VMT_E_NOTSUP);
    assert_int_equal(vmt_drv_view_set_access(d, VMT_VIEW_DEFAULT, 5, VMT_ACCESS_RX), VMT_E_INVAL);
    /* memslots split around protected frames and merge back */
    assert_int_equal(vmt_kvm_memslot_count(d), 1);
    assert_int_equal(vmt_drv_view_switch(d, 0, v), VMT_OK);
    assert_int_equal(vmt_drv_view_set_access(d, v, 5, VMT_ACCESS_RX), VMT_OK);
    assert_int_equal(vmt_kvm_memslot_count(d), 3);
    assert_int_equal(vmt_drv_view_set_access(d, v, 6, VMT_ACCESS_RX), VMT_OK);
    assert_int_equal(vmt_kvm_memslot_count(d), 3);
    kg_check(d);
    assert_int_equal(vmt_drv_view_switch(d, 0, VMT_VIEW_DEFAULT), VMT_OK);
    assert_int_equal(vmt_kvm_memslot_count(d), 1);
    assert_int_equal(vmt_drv_view_switch(d, 0, v), VMT_OK);
    assert_int_equal(vmt_kvm_memslot_count(d), 3);
    /* a frame without read right has no memslot at all */
    assert_int_equal(vmt_drv_view_set_access(d, v, 7, VMT_ACCESS_X), VMT_OK);
    assert_int_equal(vmt_kvm_memslot_count(d), 3); /* [0,5) rw, [5,7) ro, hole, [8,..) rw */
    kg_check(d);
    assert_int_equal(vmt_drv_view_set_access(d, v, 7, VMT_ACCESS_WX), VMT_OK);
    assert_int_equal(vmt_kvm_memslot_count(d), 3);
    assert_int_equal(vmt_drv_view_set_access(d, v, 9, VMT_ACCESS_RX), VMT_OK);
    assert_int_equal(vmt_kvm_memslot_count(d), 5); /* ..., [8,9) rw, [9,10) ro, [10,..) rw */
    kg_check(d);
    assert_int_equal(vmt_drv_view_set_access(d, v, 9, VMT_ACCESS_RWX), VMT_OK);
    assert_int_equal(vmt_kvm_memslot_count(d), 3);
    assert_int_equal(vmt_drv_view_set_access(d, v, 5, VMT_ACCESS_RWX), VMT_OK);
    assert_int_equal(vmt_drv_view_set_access(d, v, 6, VMT_ACCESS_RWX), VMT_OK);
    assert_int_equal(vmt_drv_view_set_access(d, v, 7, VMT_ACCESS_RWX), VMT_OK);
    assert_int_equal(vmt_kvm_memslot_count(d), 1);
    assert_int_equal(vmt_drv_view_destroy(d, v), VMT_E_BUSY);
    kg_check(d);
    vmt_driver_destroy(d);
}

int main(void)
{
    vmt_test_require_kvm();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pt_write_continue_lands),
        cmocka_unit_test(pt_write_deny_drops),
        cmocka_unit_test(pt_write_step),
        cmocka_unit_test(switch_view_step_dance_keeps_memslots),
        cmocka_unit_test(lazy_view0_layout_becomes_exact),
        cmocka_unit_test(pt_write_emulate_in_view0),
        cmocka_unit_test(hidden_breakpoint_fast_step),
        cmocka_unit_test(read_trap_responses),
        cmocka_unit_test(hidden_breakpoint_invisible_to_reads),
        cmocka_unit_test(shadow_code_traps_still_fire),
        cmocka_unit_test(caps_are_honest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
