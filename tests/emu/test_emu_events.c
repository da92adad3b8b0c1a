/*
 * tests/emu/test_emu_events.c — events and response semantics of the
 * emulator driver: INT3 (CONTINUE, REINJECT through the guest IDT), ICEBP
 * (#DB trap through the guest IDT), STEP,
 * the DRAKVUF hidden-breakpoint mechanism (shadow frame with INT3 remapped
 * into an execute-only view, FAST_STEP in view 0 on a hit, EMULATE for
 * reads and writes of the hidden page), DENY and CONTINUE on memory events,
 * 10,000 hidden breakpoints, determinism, software-TLB eviction.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "emu_guest.h"
#include "vmtrap/paging.h"

#define CODE_VA 0x400000ull
#define FUNC_VA 0x500000ull
#define DATA_VA 0x7f0000600000ull
#define STACK_TOP 0x7fff00000000ull
#define IDT_VA 0x7f0000900000ull

static void respond_kind(eg_guest *g, vmt_event_kind kind, vmt_response r, vmt_event *out)
{
    vmt_event ev = eg_next(g);
    if (ev.kind != kind)
        fail_msg("expected %s, got %s at rip 0x%llx%s%s", vmt_event_kind_name(kind), vmt_event_kind_name(ev.kind),
                 (unsigned long long)ev.regs.rip, ev.kind == VMT_EVENT_STOPPED ? ": " : "",
                 ev.kind == VMT_EVENT_STOPPED ? ev.u.stop.message : "");
    if (out)
        *out = ev;
    if (kind != VMT_EVENT_STOPPED)
        eg_respond(g, &ev, r);
}

/* The next event, which must be of `kind` (not answered yet). */
static vmt_event next_of_kind(eg_guest *g, vmt_event_kind kind)
{
    vmt_event ev = eg_next(g);
    assert_int_equal(ev.kind, kind);
    return ev;
}

static void expect_io(eg_guest *g, uint32_t value)
{
    vmt_event ev;
    respond_kind(g, VMT_EVENT_IO, vmt_response_continue(), &ev);
    assert_int_equal(ev.u.io.value, value);
}

static void expect_halt(eg_guest *g)
{
    vmt_event ev;
    respond_kind(g, VMT_EVENT_STOPPED, vmt_response_continue(), &ev);
    if (ev.u.stop.reason != VMT_STOP_HALT)
        fail_msg("expected halt: %s", ev.u.stop.message);
}

static vmt_response resp(uint32_t actions, vmt_view view)
{
    vmt_response r = vmt_response_continue();
    r.actions = actions;
    r.step_view = view;
    r.emulate_view = view;
    r.new_view = view;
    return r;
}

static void int3_continue_and_reinject(void **state)
{
    (void)state;
    eg_guest g;
    assert_int_equal(eg_create(&g, 4 << 20, 0, NULL, NULL), VMT_OK);
    const uint64_t HANDLER = CODE_VA + 0x3000;
    eg_code h = { .n = 0 };
    eg_bytes(&h, "\x59", 1); /* pop rcx: the return RIP */
    eg_out_ucall(&h, EG_RCX);
    eg_hlt(&h);
    eg_place(&g, HANDLER, &h);
    eg_idt(&g, IDT_VA, 3, HANDLER);
    eg_stack(&g, STACK_TOP, 1);
    eg_code c = { .n = 0 };
    eg_nop(&c);
    eg_int3(&c); /* CODE_VA + 1 */
    eg_mov_imm(&c, EG_RCX, 0x42);
    eg_out_ucall(&c, EG_RCX);
    eg_int3(&c);
    eg_hlt(&c);
    size_t second = c.n - 2;
    vmt_gfn code = eg_place(&g, CODE_VA, &c);
    assert_int_equal(eg_start(&g, CODE_VA, STACK_TOP), VMT_OK);

    vmt_event ev = next_of_kind(&g, VMT_EVENT_BREAKPOINT);
    assert_int_equal(ev.regs.rip, CODE_VA + 1);
    assert_int_equal(ev.u.bp.gva, CODE_VA + 1);
    assert_int_equal(ev.u.bp.gpa, (code << 12) + 1);
    assert_int_equal(ev.u.bp.insn_len, 1);
    /* CONTINUE re-executes whatever is there now: replace the INT3 first */
    uint8_t nop = 0x90;
    eg_write(&g, (code << 12) + 1, &nop, 1);
    eg_respond(&g, &ev, vmt_response_continue());
    expect_io(&g, 0x42);
    ev = next_of_kind(&g, VMT_EVENT_BREAKPOINT);
    assert_int_equal(ev.regs.rip, CODE_VA + second);
    eg_respond(&g, &ev, resp(VMT_RESP_REINJECT, 0));
    expect_io(&g, (uint32_t)(CODE_VA + second + 1)); /* the guest's #BP handler saw int3 + 1 */
    expect_halt(&g);
    eg_destroy(&g);
}

static void step_reports_each_instruction(void **state)
{
    (void)state;
    eg_guest g;
    assert_int_equal(eg_create(&g, 4 << 20, 0, NULL, NULL), VMT_OK);
    eg_code c = { .n = 0 };
    eg_int3(&c);
    eg_inc(&c, EG_RCX);
    eg_inc(&c, EG_RCX);
    eg_hlt(&c);
    vmt_gfn code = eg_place(&g, CODE_VA, &c);
    assert_int_equal(eg_start(&g, CODE_VA, 0), VMT_OK);
    vmt_event ev;
    uint8_t nop = 0x90;
    ev = next_of_kind(&g, VMT_EVENT_BREAKPOINT);
    eg_write(&g, code << 12, &nop, 1);
    eg_respond(&g, &ev, resp(VMT_RESP_STEP, 0));
    ev = next_of_kind(&g, VMT_EVENT_SINGLESTEP);
    assert_int_equal(ev.regs.rip, CODE_VA + 1);
    eg_respond(&g, &ev, resp(VMT_RESP_STEP, 0));
    ev = next_of_kind(&g, VMT_EVENT_SINGLESTEP);
    assert_int_equal(ev.regs.rip, CODE_VA + 4);
    assert_int_equal(ev.regs.rcx, 1);
    eg_respond(&g, &ev, vmt_response_continue());
    ev = next_of_kind(&g, VMT_EVENT_STOPPED);
    assert_int_equal(ev.regs.rcx, 2);
    eg_destroy(&g);
}

/* STEP over an instruction that faults reports SINGLESTEP at the first
 * instruction of the guest's #PF handler (monitor-trap-flag semantics). */
static void step_into_exception_handler(void **state)
{
    (void)state;
    eg_guest g;
    assert_int_equal(eg_create(&g, 4 << 20, 0, NULL, NULL), VMT_OK);
    const uint64_t HANDLER = CODE_VA + 0x3000, BAD = 0x7f0000a00000ull;
    eg_code h = { .n = 0 };
    eg_read_cr(&h, EG_RCX, 2);
    eg_out_ucall(&h, EG_RCX);
    eg_hlt(&h);
    eg_place(&g, HANDLER, &h);
    eg_idt(&g, IDT_VA, 14, HANDLER);
    eg_stack(&g, STACK_TOP, 1);
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RAX, BAD);
    size_t store = c.n;
    eg_store(&c, EG_RAX, EG_RBX);
    eg_hlt(&c);
    eg_place(&g, CODE_VA, &c);
    assert_int_equal(eg_start(&g, CODE_VA, STACK_TOP), VMT_OK);
    assert_int_equal(vmt_drv_hw_breakpoint(g.d, 0, 0, CODE_VA + store, 1), VMT_OK);
    vmt_event ev = next_of_kind(&g, VMT_EVENT_HW_BREAKPOINT);
    eg_respond(&g, &ev, resp(VMT_RESP_STEP, 0));
    ev = next_of_kind(&g, VMT_EVENT_SINGLESTEP);
    assert_int_equal(ev.regs.rip, HANDLER);
    assert_int_equal(ev.regs.cr2, BAD);
    eg_respond(&g, &ev, vmt_response_continue());
    expect_io(&g, (uint32_t)BAD);
    expect_halt(&g);
    eg_destroy(&g);
}

/* The seed-000 mechanism: shadow copy with INT3, execute-only view. */
typedef struct hidden {
    vmt_gfn orig, shadow;
    vmt_view view;
} hidden;

static hidden hide_breakpoint(eg_guest *g, vmt_gfn orig, unsigned offset)
{
    hidden h = { orig, 0, 0 };
    uint8_t page[4096];
    assert_int_equal(vmt_drv_frame_alloc(g->d, &h.shadow), VMT_OK);
    assert_int_equal(vmt_drv_read_phys(g->d, orig << 12, page, sizeof page), VMT_OK);
    page[offset] = 0xcc;
    assert_int_equal(vmt_drv_write_phys(g->d, h.shadow << 12, page, sizeof page), VMT_OK);
    return h;
}

static void run_hidden_breakpoint(eg_guest *g, vmt_event *log, size_t *nlog)
{
    vmt_gfn func;
    eg_code f = { .n = 0 };
    eg_mov_imm(&f, EG_RCX, 0x99);
    eg_bytes(&f, "\xc3", 1); /* ret */
    func = eg_place(g, FUNC_VA, &f);
    eg_stack(g, STACK_TOP, 1);
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RAX, FUNC_VA);
    eg_call(&c, EG_RAX);
    eg_out_ucall(&c, EG_RCX);          /* 0x99: the function ran */
    eg_mov_imm(&c, EG_RBX, FUNC_VA);
    eg_load8(&c, EG_RCX, EG_RBX);
    eg_out_ucall(&c, EG_RCX);          /* 0x48: the guest reads the original byte */
    eg_mov_imm(&c, EG_RBX, FUNC_VA + 0x80);
    eg_mov_imm(&c, EG_RCX, 0x55);
    eg_store(&c, EG_RBX, EG_RCX);      /* a write into the hidden page */
    eg_hlt(&c);
    eg_place(g, CODE_VA, &c);
    hidden h = hide_breakpoint(g, func, 0);
    assert_int_equal(vmt_drv_view_create(g->d, VMT_ACCESS_RWX, &h.view), VMT_OK);
    assert_int_equal(vmt_drv_view_remap(g->d, h.view, func, h.shadow), VMT_OK);
    assert_int_equal(vmt_drv_view_set_access(g->d, h.view, func, VMT_ACCESS_X), VMT_OK);
    assert_int_equal(vmt_drv_view_switch(g->d, 0, h.view), VMT_OK);
    assert_int_equal(eg_start(g, CODE_VA, STACK_TOP), VMT_OK);

    *nlog = 0;
    for (;;) {
        vmt_event ev = eg_next(g);
        log[(*nlog)++] = ev;
        if (ev.kind == VMT_EVENT_STOPPED)
            break;
        vmt_response r = vmt_response_continue();
        if (ev.kind == VMT_EVENT_BREAKPOINT)
            r = resp(VMT_RESP_FAST_STEP, VMT_VIEW_DEFAULT);
        else if (ev.kind == VMT_EVENT_MEM_ACCESS)
            r = resp(VMT_RESP_EMULATE, VMT_VIEW_DEFAULT);
        eg_respond(g, &ev, r);
        assert_true(*nlog < 16);
    }
    uint64_t v = 0;
    assert_int_equal(vmt_drv_read_phys(g->d, (func << 12) + 0x80, &v, 8), VMT_OK);
    assert_int_equal(v, 0x55); /* EMULATE in view 0 wrote the original frame */
    assert_int_equal(vmt_drv_read_phys(g->d, (h.shadow << 12) + 0x80, &v, 8), VMT_OK);
    assert_int_equal(v, 0);
    vmt_view cur;
    assert_int_equal(vmt_drv_view_current(g->d, 0, &cur), VMT_OK);
    assert_int_equal(cur, h.view);
}

static void check_hidden_log(const vmt_event *log, size_t n);

/* With the engine (no map change per response) and with internal steps of
 * the main CPU: the same events, the same registers. */
static void hidden_breakpoint_drakvuf_style(void **state)
{
    (void)state;
    vmt_event log[2][16];
    size_t n[2];
    for (int mode = 0; mode < 2; mode++) {
        eg_guest g;
        vmt_emu_options o = { .no_engine = mode == 1 };
        assert_int_equal(eg_create_opt(&g, 4 << 20, &o, NULL, NULL), VMT_OK);
        run_hidden_breakpoint(&g, log[mode], &n[mode]);
        vmt_emu_tlb_stats ts;
        assert_int_equal(vmt_emu_tlb_stats_get(g.d, &ts), VMT_OK);
        if (mode == 0)
            assert_int_equal(ts.engine_steps, 3); /* FAST_STEP + 2 x EMULATE */
        else
            assert_int_equal(ts.engine_steps, 0);
        eg_destroy(&g);
        check_hidden_log(log[mode], n[mode]);
    }
    assert_int_equal(n[0], n[1]);
    for (size_t i = 0; i < n[0]; i++) {
        assert_int_equal(log[0][i].kind, log[1][i].kind);
        assert_memory_equal(&log[0][i].regs, &log[1][i].regs, sizeof log[0][i].regs);
        assert_memory_equal(&log[0][i].u, &log[1][i].u, sizeof log[0][i].u);
    }
}

static void check_hidden_log(const vmt_event *log, size_t n)
{
    assert_int_equal(n, 6);
    assert_int_equal(log[0].kind, VMT_EVENT_BREAKPOINT);
    assert_int_equal(log[0].regs.rip, FUNC_VA);
    assert_int_equal(log[0].view, 1);
    assert_int_equal(log[1].kind, VMT_EVENT_IO);
    assert_int_equal(log[1].u.io.value, 0x99);
    assert_int_equal(log[2].kind, VMT_EVENT_MEM_ACCESS);
    assert_int_equal(log[2].u.mem.access, VMT_ACCESS_R);
    assert_int_equal(log[2].u.mem.gva, FUNC_VA);
    assert_int_equal(log[2].u.mem.gpa >> 12, log[0].u.bp.gfn);
    assert_false(log[2].u.mem.in_pt_walk);
    assert_int_equal(log[3].kind, VMT_EVENT_IO);
    assert_int_equal(log[3].u.io.value, 0x48); /* not 0xcc: the breakpoint is hidden */
    assert_int_equal(log[4].kind, VMT_EVENT_MEM_ACCESS);
    assert_int_equal(log[4].u.mem.access, VMT_ACCESS_W);
    assert_int_equal(log[4].u.mem.gva, FUNC_VA + 0x80);
    assert_true(log[4].u.mem.has_data);
    assert_int_equal(log[4].u.mem.size, 8);
    assert_int_equal(log[4].u.mem.value, 0x55);
    assert_int_equal(log[5].kind, VMT_EVENT_STOPPED);
}

static void deterministic_event_sequence(void **state)
{
    (void)state;
    vmt_event a[16], b[16];
    size_t na, nb;
    for (int run = 0; run < 2; run++) {
        eg_guest g;
        assert_int_equal(eg_create(&g, 4 << 20, 0, NULL, NULL), VMT_OK);
        run_hidden_breakpoint(&g, run ? b : a, run ? &nb : &na);
        eg_destroy(&g);
    }
    assert_int_equal(na, nb);
    for (size_t i = 0; i < na; i++) {
        assert_int_equal(a[i].kind, b[i].kind);
        assert_int_equal(a[i].seq, b[i].seq);
        assert_memory_equal(&a[i].regs, &b[i].regs, sizeof a[i].regs);
        assert_memory_equal(&a[i].u, &b[i].u, sizeof a[i].u);
    }
}

/* DENY skips a write (memory unchanged, the instruction completes); CONTINUE
 * performs it once and the next write traps again. */
static void deny_and_continue_writes_mode(bool no_engine)
{
    eg_guest g;
    vmt_emu_options o = { .no_engine = no_engine };
    assert_int_equal(eg_create_opt(&g, 4 << 20, &o, NULL, NULL), VMT_OK);
    vmt_gfn data = eg_frame(&g);
    uint64_t init = 0x11;
    eg_write(&g, data << 12, &init, 8);
    eg_map(&g, DATA_VA, data, 0);
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RAX, DATA_VA);
    eg_mov_imm(&c, EG_RBX, 0x55);
    eg_store(&c, EG_RAX, EG_RBX);  /* denied */
    eg_load(&c, EG_RCX, EG_RAX);
    eg_out_ucall(&c, EG_RCX);
    eg_mov_imm(&c, EG_RAX, DATA_VA);
    eg_mov_imm(&c, EG_RBX, 0x66);
    eg_store(&c, EG_RAX, EG_RBX);  /* continued */
    eg_mov_imm(&c, EG_RBX, 0x77);
    eg_store(&c, EG_RAX, EG_RBX);  /* traps again */
    eg_load(&c, EG_RCX, EG_RAX);
    eg_out_ucall(&c, EG_RCX);
    eg_hlt(&c);
    eg_place(&g, CODE_VA, &c);
    vmt_view v;
    assert_int_equal(vmt_drv_view_create(g.d, VMT_ACCESS_RWX, &v), VMT_OK);
    assert_int_equal(vmt_drv_view_set_access(g.d, v, data, VMT_ACCESS_R), VMT_OK);
    assert_int_equal(vmt_drv_view_switch(g.d, 0, v), VMT_OK);
    assert_int_equal(eg_start(&g, CODE_VA, 0), VMT_OK);
    vmt_event ev;
    respond_kind(&g, VMT_EVENT_MEM_ACCESS, resp(VMT_RESP_DENY, 0), &ev);
    assert_int_equal(ev.u.mem.value, 0x55);
    assert_int_equal(ev.u.mem.gpa, data << 12);
    expect_io(&g, 0x11);
    respond_kind(&g, VMT_EVENT_MEM_ACCESS, vmt_response_continue(), &ev);
    assert_int_equal(ev.u.mem.value, 0x66);
    respond_kind(&g, VMT_EVENT_MEM_ACCESS, vmt_response_continue(), &ev);
    assert_int_equal(ev.u.mem.value, 0x77);
    expect_io(&g, 0x77);
    expect_halt(&g);
    vmt_access acc;
    assert_int_equal(vmt_drv_view_get_access(g.d, v, data, &acc, NULL), VMT_OK);
    assert_int_equal(acc, VMT_ACCESS_R); /* responses never change the view's rights */
    eg_destroy(&g);
}

static void deny_and_continue_writes(void **state)
{
    (void)state;
    deny_and_continue_writes_mode(false);
    deny_and_continue_writes_mode(true);
}

/* More pages than the software TLB holds: every value survives eviction. */
static void tlb_eviction_keeps_memory_right(void **state)
{
    (void)state;
    const unsigned pages = 300;
    eg_guest g;
    assert_int_equal(eg_create(&g, 8 << 20, 16, NULL, NULL), VMT_OK);
    vmt_gfn frames[300];
    for (unsigned i = 0; i < pages; i++) {
        frames[i] = eg_frame(&g);
        eg_map(&g, DATA_VA + 4096ull * i, frames[i], 0);
    }
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RBX, 4096);
    eg_mov_imm(&c, EG_RDX, pages);
    for (int pass = 0; pass < 2; pass++) {
        eg_mov_imm(&c, EG_RAX, DATA_VA);
        eg_mov_imm(&c, EG_RCX, 0);
        size_t top = c.n;
        if (pass == 0) {
            eg_store(&c, EG_RAX, EG_RCX);
        } else {
            eg_load(&c, EG_RDI, EG_RAX);
            eg_add(&c, EG_RSI, EG_RDI);
        }
        eg_add(&c, EG_RAX, EG_RBX);
        eg_inc(&c, EG_RCX);
        eg_loop_below(&c, EG_RCX, EG_RDX, top);
    }
    eg_out_ucall(&c, EG_RSI);
    eg_hlt(&c);
    eg_place(&g, CODE_VA, &c);
    assert_int_equal(eg_start(&g, CODE_VA, 0), VMT_OK);
    expect_io(&g, pages * (pages - 1) / 2);
    expect_halt(&g);
    for (unsigned i = 0; i < pages; i += 37) {
        uint64_t v = 0;
        assert_int_equal(vmt_drv_read_phys(g.d, frames[i] << 12, &v, 8), VMT_OK);
        assert_int_equal(v, i);
    }
    vmt_emu_tlb_stats ts;
    assert_int_equal(vmt_emu_tlb_stats_get(g.d, &ts), VMT_OK);
    assert_true(ts.evictions >= pages);
    assert_true(ts.used <= 16);
    eg_destroy(&g);
}

/* 10,000 hidden breakpoints on 10,000 distinct pages: every call hits. */
static void ten_thousand_hidden_breakpoints(void **state)
{
    (void)state;
    const unsigned n = 10000;
    eg_guest g;
    assert_int_equal(eg_create(&g, 56 << 20, 0, NULL, NULL), VMT_OK);
    const uint64_t BASE = 0x10000000ull;
    vmt_view v;
    assert_int_equal(vmt_drv_view_create(g.d, VMT_ACCESS_RWX, &v), VMT_OK);
    static const uint8_t fn[] = { 0x48, 0xff, 0xc6, 0xc3 }; /* inc rsi; ret */
    vmt_gfn *gfns = calloc(n, sizeof *gfns);
    assert_non_null(gfns);
    for (unsigned i = 0; i < n; i++) {
        vmt_gfn f = eg_frame(&g);
        gfns[i] = f;
        eg_map(&g, BASE + 4096ull * i, f, 0);
        eg_write(&g, f << 12, fn, sizeof fn);
        hidden h = hide_breakpoint(&g, f, 0);
        assert_int_equal(vmt_drv_view_remap(g.d, v, f, h.shadow), VMT_OK);
        assert_int_equal(vmt_drv_view_set_access(g.d, v, f, VMT_ACCESS_X), VMT_OK);
    }
    eg_stack(&g, STACK_TOP, 1);
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RAX, BASE);
    eg_mov_imm(&c, EG_RBX, 4096);
    eg_mov_imm(&c, EG_RCX, 0);
    eg_mov_imm(&c, EG_RDX, n);
    size_t top = c.n;
    eg_call(&c, EG_RAX);
    eg_add(&c, EG_RAX, EG_RBX);
    eg_inc(&c, EG_RCX);
    eg_loop_below(&c, EG_RCX, EG_RDX, top);
    eg_out_ucall(&c, EG_RSI);
    eg_hlt(&c);
    eg_place(&g, CODE_VA, &c);
    assert_int_equal(vmt_drv_view_switch(g.d, 0, v), VMT_OK);
    assert_int_equal(eg_start(&g, CODE_VA, STACK_TOP), VMT_OK);
    unsigned hits = 0;
    for (;;) {
        vmt_event ev;
        assert_int_equal(vmt_drv_wait_event(g.d, 20000, &ev), VMT_OK);
        if (ev.kind != VMT_EVENT_BREAKPOINT) {
            assert_int_equal(ev.kind, VMT_EVENT_IO);
            assert_int_equal(ev.u.io.value, n); /* every function ran once */
            eg_respond(&g, &ev, vmt_response_continue());
            break;
        }
        if (ev.regs.rip != BASE + 4096ull * hits || ev.u.bp.gfn != gfns[hits])
            fail_msg("hit %u at rip 0x%llx gfn 0x%llx", hits, (unsigned long long)ev.regs.rip,
                     (unsigned long long)ev.u.bp.gfn);
        hits++;
        vmt_response r = resp(VMT_RESP_FAST_STEP, VMT_VIEW_DEFAULT);
        assert_int_equal(vmt_drv_respond(g.d, &ev, &r), VMT_OK);
        if (hits % 2500 == 0 && vmt_emu_check(g.d))
            fail_msg("%s", vmt_driver_error(g.d));
    }
    assert_int_equal(hits, n);
    expect_halt(&g);
    free(gfns);
    eg_destroy(&g);
}

/* The page-table monitor's setup: the view forbids writes to the frame
 * holding the guest's PT. The guest's own A/D updates never raise events;
 * a view that forbids reading the PT frame raises an in_pt_walk event. */
static void page_walk_and_ad_bits(void **state)
{
    (void)state;
    eg_guest g;
    assert_int_equal(eg_create(&g, 4 << 20, 0, NULL, NULL), VMT_OK);
    vmt_gfn data = eg_frame(&g);
    vmt_gfn pt = eg_map(&g, DATA_VA, data, 0);
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RAX, DATA_VA);
    eg_mov_imm(&c, EG_RBX, 0x99);
    eg_store(&c, EG_RAX, EG_RBX);
    eg_load(&c, EG_RCX, EG_RAX);
    eg_out_ucall(&c, EG_RCX);
    eg_mov_imm(&c, EG_RAX, DATA_VA + 8);
    eg_load(&c, EG_RCX, EG_RAX);
    eg_hlt(&c);
    eg_place(&g, CODE_VA, &c);
    vmt_view v;
    assert_int_equal(vmt_drv_view_create(g.d, VMT_ACCESS_RWX, &v), VMT_OK);
    assert_int_equal(vmt_drv_view_set_access(g.d, v, pt, VMT_ACCESS_R), VMT_OK);
    assert_int_equal(vmt_drv_view_switch(g.d, 0, v), VMT_OK);
    assert_int_equal(eg_start(&g, CODE_VA, 0), VMT_OK);
    expect_io(&g, 0x99); /* no event for the A and D updates in the write-protected PT */
    uint64_t pte = 0;
    assert_int_equal(vmt_drv_read_phys(g.d, eg_pte_pa(&g, DATA_VA), &pte, 8), VMT_OK);
    assert_true((pte & (VMT_PTE_A | VMT_PTE_D)) == (VMT_PTE_A | VMT_PTE_D));
    /* now forbid reading the PT frame: the next translation walk traps */
    assert_int_equal(vmt_drv_view_set_access(g.d, v, pt, VMT_ACCESS_NONE), VMT_OK);
    vmt_event ev;
    respond_kind(&g, VMT_EVENT_MEM_ACCESS, vmt_response_continue(), &ev);
    assert_true(ev.u.mem.in_pt_walk);
    assert_int_equal(ev.u.mem.access, VMT_ACCESS_R);
    assert_int_equal(ev.u.mem.gpa >> 12, pt);
    assert_int_equal(ev.u.mem.gva, DATA_VA + 8);
    expect_halt(&g);
    eg_destroy(&g);
}

/* Rights and backing changed while the page is in the software TLB apply to
 * the very next access. */
static void changes_apply_to_mapped_pages(void **state)
{
    (void)state;
    eg_guest g;
    assert_int_equal(eg_create(&g, 4 << 20, 0, NULL, NULL), VMT_OK);
    vmt_gfn data = eg_frame(&g), other;
    eg_map(&g, DATA_VA, data, 0);
    uint64_t a = 0xa, b = 0xb;
    eg_write(&g, data << 12, &a, 8);
    assert_int_equal(vmt_drv_frame_alloc(g.d, &other), VMT_OK);
    eg_write(&g, other << 12, &b, 8);
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RAX, DATA_VA);
    for (int i = 0; i < 3; i++) {
        eg_load(&c, EG_RCX, EG_RAX);
        eg_out_ucall(&c, EG_RCX);
        eg_mov_imm(&c, EG_RAX, DATA_VA);
    }
    eg_hlt(&c);
    eg_place(&g, CODE_VA, &c);
    vmt_view v;
    assert_int_equal(vmt_drv_view_create(g.d, VMT_ACCESS_RWX, &v), VMT_OK);
    assert_int_equal(vmt_drv_view_switch(g.d, 0, v), VMT_OK);
    assert_int_equal(eg_start(&g, CODE_VA, 0), VMT_OK);
    vmt_event ev = next_of_kind(&g, VMT_EVENT_IO);
    assert_int_equal(ev.u.io.value, 0xa);
    assert_int_equal(vmt_drv_view_remap(g.d, v, data, other), VMT_OK); /* page is mapped now */
    eg_respond(&g, &ev, vmt_response_continue());
    ev = eg_next(&g);
    assert_int_equal(ev.u.io.value, 0xb);
    assert_int_equal(vmt_drv_view_set_access(g.d, v, data, VMT_ACCESS_X), VMT_OK);
    eg_respond(&g, &ev, vmt_response_continue());
    ev = next_of_kind(&g, VMT_EVENT_MEM_ACCESS);
    assert_int_equal(ev.u.mem.access, VMT_ACCESS_R);
    eg_respond(&g, &ev, resp(VMT_RESP_EMULATE, VMT_VIEW_DEFAULT));
    expect_io(&g, 0xa); /* emulated against view 0: the original frame */
    expect_halt(&g);
    eg_destroy(&g);
}

/* Debug-register execute breakpoints: fire before the instruction, and
 * CONTINUE runs it (RF semantics) instead of firing again. */
static void hw_breakpoints(void **state)
{
    (void)state;
    eg_guest g;
    assert_int_equal(eg_create(&g, 4 << 20, 0, NULL, NULL), VMT_OK);
    eg_code c = { .n = 0 };
    size_t loop = c.n;
    eg_nop(&c);
    eg_inc(&c, EG_RCX); /* CODE_VA + 1: breakpoint 2 */
    eg_mov_imm(&c, EG_RDX, 3);
    eg_loop_below(&c, EG_RCX, EG_RDX, loop);
    eg_hlt(&c);
    eg_place(&g, CODE_VA, &c);
    assert_int_equal(eg_start(&g, CODE_VA, 0), VMT_OK);
    assert_int_equal(vmt_drv_hw_breakpoint(g.d, 0, 2, CODE_VA + 1, 1), VMT_OK);
    vmt_regs r;
    assert_int_equal(vmt_drv_get_regs(g.d, 0, &r), VMT_OK);
    assert_int_equal(r.dr2, CODE_VA + 1);
    assert_int_equal(r.dr7 & 0xff, 1u << 4);
    assert_int_equal(vmt_drv_set_regs(g.d, 0, &r), VMT_OK); /* same DRs: accepted */
    r.dr7 |= 1;
    assert_int_equal(vmt_drv_set_regs(g.d, 0, &r), VMT_E_NOTSUP);
    for (uint64_t i = 0; i < 3; i++) {
        vmt_event ev = next_of_kind(&g, VMT_EVENT_HW_BREAKPOINT);
        assert_int_equal(ev.u.hwbp.index, 2);
        assert_int_equal(ev.u.hwbp.address, CODE_VA + 1);
        assert_int_equal(ev.regs.rip, CODE_VA + 1);
        assert_int_equal(ev.regs.rcx, i); /* before the instruction */
        eg_respond(&g, &ev, vmt_response_continue());
    }
    expect_halt(&g);
    assert_int_equal(vmt_drv_hw_breakpoint(g.d, 0, 2, 0, 0), VMT_OK);
    assert_int_equal(vmt_drv_hw_breakpoint(g.d, 0, 4, CODE_VA, 1), VMT_E_RANGE);
    eg_destroy(&g);
}

/* A port read is an IO event; IO_VALUE is what the guest reads. inject()
 * delivers a #PF through the guest IDT with CR2 and the error code. */
static void port_read_and_injection(void **state)
{
    (void)state;
    eg_guest g;
    assert_int_equal(eg_create(&g, 4 << 20, 0, NULL, NULL), VMT_OK);
    const uint64_t HANDLER = CODE_VA + 0x3000;
    eg_code h = { .n = 0 };
    eg_bytes(&h, "\x5f", 1); /* pop rdi: error code */
    eg_read_cr(&h, EG_RCX, 2);
    eg_out_ucall(&h, EG_RCX);
    eg_out_ucall(&h, EG_RDI);
    eg_hlt(&h);
    eg_place(&g, HANDLER, &h);
    eg_idt(&g, IDT_VA, 14, HANDLER);
    eg_stack(&g, STACK_TOP, 1);
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RAX, 0xffffffffffffffffull);
    eg_mov_imm(&c, EG_RDX, 0x5e0);
    eg_bytes(&c, "\xed", 1); /* in eax, dx */
    eg_out_ucall(&c, EG_RAX);
    eg_nop(&c);
    eg_hlt(&c);
    eg_place(&g, CODE_VA, &c);
    assert_int_equal(eg_start(&g, CODE_VA, STACK_TOP), VMT_OK);
    vmt_event ev = next_of_kind(&g, VMT_EVENT_IO);
    assert_false(ev.u.io.is_write);
    assert_int_equal(ev.u.io.port, 0x5e0);
    assert_int_equal(ev.u.io.size, 4);
    vmt_response r = vmt_response_continue();
    r.actions = VMT_RESP_IO_VALUE;
    r.io_value = 0xabcd1234;
    eg_respond(&g, &ev, r);
    ev = next_of_kind(&g, VMT_EVENT_IO);
    assert_int_equal(ev.u.io.value, 0xabcd1234);
    assert_int_equal(ev.regs.rax, 0xabcd1234); /* a 32-bit in zero-extends */
    vmt_injection inj = { .vector = 14, .has_error_code = true, .error_code = 2, .cr2 = 0xdead000 };
    assert_int_equal(vmt_drv_inject(g.d, 0, &inj), VMT_OK);
    eg_respond(&g, &ev, vmt_response_continue());
    expect_io(&g, 0xdead000);
    expect_io(&g, 2);
    expect_halt(&g);
    eg_destroy(&g);
}

/* INT1 / ICEBP (F1): a trap-class #DB through the guest's IDT (vector 1,
 * the pushed rip is the byte after F1, DR6 left as the guest had it) —
 * on a plain run and under a STEP, which reports SINGLESTEP at the #DB
 * handler's first instruction. */
static void icebp_delivers_db_trap(void **state)
{
    (void)state;
    for (int stepped = 0; stepped < 2; stepped++) {
        eg_guest g;
        assert_int_equal(eg_create(&g, 4 << 20, 0, NULL, NULL), VMT_OK);
        const uint64_t HANDLER = CODE_VA + 0x3000;
        eg_code h = { .n = 0 };
        eg_bytes(&h, "\x59", 1);              /* pop rcx: the return RIP */
        eg_out_ucall(&h, EG_RCX);
        eg_bytes(&h, "\x48\x83\xc4\x20", 4); /* add rsp, 32: the rest of the frame */
        eg_bytes(&h, "\xff\xe1", 2);          /* jmp rcx (no GDT here for an iretq) */
        eg_place(&g, HANDLER, &h);
        eg_idt(&g, IDT_VA, 1, HANDLER);
        eg_stack(&g, STACK_TOP, 1);
        eg_code c = { .n = 0 };
        eg_int3(&c);                   /* CODE_VA: where the STEP starts */
        eg_bytes(&c, "\xf1", 1);       /* CODE_VA + 1: icebp */
        eg_mov_imm(&c, EG_RCX, 0x42);  /* CODE_VA + 2: the handler returns here */
        eg_out_ucall(&c, EG_RCX);
        eg_hlt(&c);
        vmt_gfn code = eg_place(&g, CODE_VA, &c);
        const uint64_t dr6 = 0xffff0ff1ull; /* B0 left over from an earlier #DB */
        g.regs.dr6 = dr6;
        assert_int_equal(eg_start(&g, CODE_VA, STACK_TOP), VMT_OK);

        vmt_event ev = next_of_kind(&g, VMT_EVENT_BREAKPOINT);
        uint8_t nop = 0x90;
        eg_write(&g, code << 12, &nop, 1);
        if (stepped) {
            eg_respond(&g, &ev, resp(VMT_RESP_STEP, 0));
            ev = next_of_kind(&g, VMT_EVENT_SINGLESTEP);
            assert_int_equal(ev.regs.rip, CODE_VA + 1);
            eg_respond(&g, &ev, resp(VMT_RESP_STEP, 0));
            ev = next_of_kind(&g, VMT_EVENT_SINGLESTEP); /* the delivery completed the step */
            assert_int_equal(ev.regs.rip, HANDLER);
            assert_int_equal(ev.regs.dr6, dr6);
        }
        eg_respond(&g, &ev, vmt_response_continue());
        expect_io(&g, (uint32_t)(CODE_VA + 2)); /* a trap: rip after F1 */
        expect_io(&g, 0x42);                    /* the handler resumed after it */
        respond_kind(&g, VMT_EVENT_STOPPED, vmt_response_continue(), &ev);
        if (ev.u.stop.reason != VMT_STOP_HALT)
            fail_msg("expected halt: %s", ev.u.stop.message);
        assert_int_equal(ev.regs.dr6, dr6); /* ICEBP sets no DR6 bit */
        eg_destroy(&g);
    }
}

/* Hidden reads by x87/SSE code: a view without R on a data page, the
 * guest reads it N times with movdqu and fild (+ fstp), each read answered
 * EMULATE. With the engine (vmt_emulate_full on the vCPU's FXSAVE state)
 * each read is one exit and no internal exit; without it (Unicorn steps
 * the instruction) the results are the same. */
typedef struct sse_run {
    uint64_t lo, hi, x87;     /* what the guest read: xmm0 halves, fild -> fistp */
    uint64_t events, exits, internal, fpu_steps;
    vmt_regs end;
} sse_run;

static sse_run run_sse_reads(bool no_engine, unsigned n)
{
    eg_guest g;
    vmt_emu_options o = { .no_engine = no_engine };
    assert_int_equal(eg_create_opt(&g, 4 << 20, &o, NULL, NULL), VMT_OK);
    vmt_gfn data = eg_frame(&g);
    const uint64_t pattern[2] = { 0x1122334455667788ull, 0x99aabbccddeeff00ull };
    const int64_t integer = -123456789012345ll;
    eg_write(&g, data << 12, pattern, sizeof pattern);
    eg_write(&g, (data << 12) + 16, &integer, sizeof integer);
    eg_map(&g, DATA_VA, data, 0);
    eg_stack(&g, STACK_TOP, 1);
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RAX, DATA_VA);
    eg_mov_imm(&c, EG_RBX, n);
    eg_mov_imm(&c, EG_RDX, 0);
    size_t top = c.n;
    eg_bytes(&c, "\xf3\x0f\x6f\x00", 4);     /* movdqu xmm0, [rax]   (hidden read) */
    eg_bytes(&c, "\xdf\x68\x10", 3);         /* fild qword [rax+16]  (hidden read) */
    eg_bytes(&c, "\xdd\xd8", 2);             /* fstp st(0) */
    eg_inc(&c, EG_RDX);
    eg_loop_below(&c, EG_RDX, EG_RBX, top);
    eg_bytes(&c, "\x66\x48\x0f\x7e\xc1", 5); /* movq rcx, xmm0 */
    eg_out_ucall(&c, EG_RCX);
    eg_bytes(&c, "\x66\x0f\x73\xd8\x08", 5); /* psrldq xmm0, 8 */
    eg_bytes(&c, "\x66\x48\x0f\x7e\xc1", 5); /* movq rcx, xmm0 */
    eg_out_ucall(&c, EG_RCX);
    eg_mov_imm(&c, EG_RAX, DATA_VA);          /* (the ucall took rax) */
    eg_bytes(&c, "\xdf\x68\x10", 3);         /* fild qword [rax+16]  (hidden read) */
    eg_bytes(&c, "\xdf\x3c\x24", 3);         /* fistp qword [rsp] */
    eg_bytes(&c, "\x48\x8b\x0c\x24", 4);     /* mov rcx, [rsp] */
    eg_out_ucall(&c, EG_RCX);
    eg_hlt(&c);
    eg_place(&g, CODE_VA, &c);
    g.regs.cr4 |= 1ull << 9; /* OSFXSR */
    vmt_view v;
    assert_int_equal(vmt_drv_view_create(g.d, VMT_ACCESS_RWX, &v), VMT_OK);
    assert_int_equal(vmt_drv_view_set_access(g.d, v, data, VMT_ACCESS_X), VMT_OK);
    assert_int_equal(vmt_drv_view_switch(g.d, 0, v), VMT_OK);
    assert_int_equal(eg_start(&g, CODE_VA, STACK_TOP - 64), VMT_OK);

    sse_run r;
    memset(&r, 0, sizeof r);
    vmt_driver_stats s0, s1;
    uint64_t *out[3] = { &r.lo, &r.hi, &r.x87 };
    unsigned nout = 0;
    for (;;) {
        vmt_event ev = eg_next(&g);
        if (ev.kind == VMT_EVENT_STOPPED) {
            if (ev.u.stop.reason != VMT_STOP_HALT)
                fail_msg("expected halt: %s", ev.u.stop.message);
            r.end = ev.regs;
            break;
        }
        if (ev.kind == VMT_EVENT_IO) {
            assert_true(nout < 3);
            *out[nout++] = ev.regs.rcx; /* the port carries 32 bits: the whole of rcx */
            eg_respond(&g, &ev, vmt_response_continue());
            continue;
        }
        assert_int_equal(ev.kind, VMT_EVENT_MEM_ACCESS);
        assert_int_equal(ev.u.mem.access, VMT_ACCESS_R);
        assert_int_equal(ev.u.mem.gpa >> 12, data);
        if (r.events == 0)
            assert_int_equal(vmt_drv_stats(g.d, &s0), VMT_OK);
        if (r.events == 2ull * n - 1)
            assert_int_equal(vmt_drv_stats(g.d, &s1), VMT_OK); /* the last read in the loop */
        r.events++;
        eg_respond(&g, &ev, resp(VMT_RESP_EMULATE, 0));
    }
    assert_int_equal(nout, 3);
    r.exits = s1.exits - s0.exits;
    r.internal = s1.internal_exits - s0.internal_exits;
    vmt_emu_tlb_stats ts;
    assert_int_equal(vmt_emu_tlb_stats_get(g.d, &ts), VMT_OK);
    r.fpu_steps = ts.engine_fpu_steps;
    eg_destroy(&g);
    return r;
}

static void sse_hidden_reads_one_exit(void **state)
{
    (void)state;
    enum { N = 16 };
    sse_run eng = run_sse_reads(false, N), uc = run_sse_reads(true, N);
    /* the values the guest read are the page's */
    assert_int_equal(eng.lo, 0x1122334455667788ull);
    assert_int_equal(eng.hi, 0x99aabbccddeeff00ull);
    assert_int_equal(eng.x87, (uint64_t)-123456789012345ll);
    assert_int_equal(eng.events, 2 * N + 1);
    /* engine: every read (movdqu, fild) performed with the FXSAVE state,
     * one exit each between the first and the last read of the loop */
    assert_int_equal(eng.fpu_steps, 2 * N + 1);
    assert_int_equal(eng.exits, 2 * N - 1);
    assert_int_equal(eng.internal, 0);
    /* Unicorn stepping them: same results, more exits */
    assert_int_equal(uc.fpu_steps, 0);
    assert_int_equal(uc.events, eng.events);
    assert_int_equal(uc.lo, eng.lo);
    assert_int_equal(uc.hi, eng.hi);
    assert_int_equal(uc.x87, eng.x87);
    assert_memory_equal(&uc.end, &eng.end, sizeof eng.end);
    assert_true(uc.exits > eng.exits);
    print_message("SSE/x87 hidden reads: %llu exits (%llu internal) with the engine, %llu (%llu internal) "
                  "stepped on Unicorn, for %d reads\n",
                  (unsigned long long)eng.exits, (unsigned long long)eng.internal, (unsigned long long)uc.exits,
                  (unsigned long long)uc.internal, 2 * N - 1);
}

/* STEP over an instruction that stores into its own (translated) code page:
 * Unicorn drops the page's translations and runs the instruction again, so
 * the code hook sees it twice. The step must still end after it retired:
 * SINGLESTEP at the next instruction with the store done. Also a STEP over
 * a jump to itself (state unchanged) still ends. */
static void step_over_store_into_own_page(void **state)
{
    (void)state;
    eg_guest g;
    assert_int_equal(eg_create(&g, 4 << 20, 0, NULL, NULL), VMT_OK);
    const uint64_t nops = 0x9090909090909090ull;
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RAX, CODE_VA + 10 + 10 + 1 + 3); /* the 8 nops after the store */
    eg_mov_imm(&c, EG_RBX, nops);
    eg_int3(&c);
    size_t store = c.n;
    eg_store(&c, EG_RAX, EG_RBX); /* over the next 8 bytes of its own translation */
    size_t after = c.n;
    assert_int_equal(CODE_VA + after, CODE_VA + 10 + 10 + 1 + 3);
    eg_bytes(&c, &nops, 8);
    eg_inc(&c, EG_RCX);
    size_t self = c.n;
    eg_bytes(&c, "\x75\xfe", 2);  /* jnz $ (rcx = 1: taken, nothing changes) */
    eg_hlt(&c);
    vmt_gfn code = eg_place(&g, CODE_VA, &c);
    assert_int_equal(eg_start(&g, CODE_VA, 0), VMT_OK);

    vmt_event ev = next_of_kind(&g, VMT_EVENT_BREAKPOINT);
    assert_int_equal(ev.regs.rip, CODE_VA + store - 1);
    uint8_t nop = 0x90;
    eg_write(&g, (code << 12) + store - 1, &nop, 1);
    eg_respond(&g, &ev, resp(VMT_RESP_STEP, 0));
    ev = next_of_kind(&g, VMT_EVENT_SINGLESTEP); /* after the nop */
    assert_int_equal(ev.regs.rip, CODE_VA + store);
    eg_respond(&g, &ev, resp(VMT_RESP_STEP, 0));
    ev = next_of_kind(&g, VMT_EVENT_SINGLESTEP); /* after the store: it completed */
    assert_int_equal(ev.regs.rip, CODE_VA + after);
    for (int i = 0; i < 8; i++) { /* the nops it rewrote, one step each */
        eg_respond(&g, &ev, resp(VMT_RESP_STEP, 0));
        ev = next_of_kind(&g, VMT_EVENT_SINGLESTEP);
        assert_int_equal(ev.regs.rip, CODE_VA + after + 1 + (uint64_t)i);
    }
    eg_respond(&g, &ev, resp(VMT_RESP_STEP, 0));
    ev = next_of_kind(&g, VMT_EVENT_SINGLESTEP);
    assert_int_equal(ev.regs.rip, CODE_VA + self);
    assert_int_equal(ev.regs.rcx, 1);
    eg_respond(&g, &ev, resp(VMT_RESP_STEP, 0));
    ev = next_of_kind(&g, VMT_EVENT_SINGLESTEP); /* the jump retired (to itself) */
    assert_int_equal(ev.regs.rip, CODE_VA + self);
    eg_destroy(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(int3_continue_and_reinject),
        cmocka_unit_test(step_reports_each_instruction),
        cmocka_unit_test(step_into_exception_handler),
        cmocka_unit_test(icebp_delivers_db_trap),
        cmocka_unit_test(step_over_store_into_own_page),
        cmocka_unit_test(sse_hidden_reads_one_exit),
        cmocka_unit_test(hidden_breakpoint_drakvuf_style),
        cmocka_unit_test(deterministic_event_sequence),
        cmocka_unit_test(deny_and_continue_writes),
        cmocka_unit_test(tlb_eviction_keeps_memory_right),
        cmocka_unit_test(page_walk_and_ad_bits),
        cmocka_unit_test(hw_breakpoints),
        cmocka_unit_test(port_read_and_injection),
        cmocka_unit_test(changes_apply_to_mapped_pages),
        cmocka_unit_test(ten_thousand_hidden_breakpoints),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
