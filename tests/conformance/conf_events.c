/*
 * tests/conformance/conf_events.c — conformance group "events" (CPU
 * drivers): INT3 -> BREAKPOINT with rip on the INT3 and CONTINUE re-running
 * the byte there now; STEP -> SINGLESTEP after exactly one instruction;
 * memory-access events raised before the access with write data, and the
 * CONTINUE / EMULATE / DENY semantics; the seed-000 hidden breakpoint
 * (shadow frame with INT3, execute-only view, FAST_STEP in view 0, EMULATE
 * of a read of the hidden page); REINJECT through the guest's IDT; CR3
 * write events; halt and instruction-limit stops; determinism.
 *
 * Guests are a few hand-encoded instructions placed at 0x1000 under the
 * vmtrap boot protocol (identity paging of the 2 MiB RAM); results are
 * stored to guest memory and read back with read_phys.
 */
#include <string.h>

#include "conformance.h"

#define CODE 0x1000
#define FUNC 0x2000
#define DATA 0x3000

static vmt_event next(vmt_conf *c)
{
    vmt_event ev;
    memset(&ev, 0, sizeof ev);
    VMT_CONF_OK(c, vmt_drv_wait_event(c->d, 10000, &ev));
    return ev;
}

static void answer(vmt_conf *c, const vmt_event *ev, uint32_t actions, vmt_view view)
{
    vmt_response r = vmt_response_continue();
    r.actions = actions;
    r.step_view = view;
    r.emulate_view = view;
    r.new_view = view;
    VMT_CONF_OK(c, vmt_drv_respond(c->d, ev, &r));
}

static vmt_event expect(vmt_conf *c, vmt_event_kind kind)
{
    vmt_event ev = next(c);
    if (ev.kind != kind)
        fail_msg("driver '%s': expected a %s event, got %s at rip 0x%llx%s%s", c->driver_name,
                 vmt_event_kind_name(kind), vmt_event_kind_name(ev.kind), (unsigned long long)ev.regs.rip,
                 ev.kind == VMT_EVENT_STOPPED ? ": " : "", ev.kind == VMT_EVENT_STOPPED ? ev.u.stop.message : "");
    return ev;
}

static void expect_halt(vmt_conf *c)
{
    vmt_event ev = expect(c, VMT_EVENT_STOPPED);
    if (ev.u.stop.reason != VMT_STOP_HALT)
        fail_msg("driver '%s': expected a halt, got %s: %s", c->driver_name, vmt_stop_reason_name(ev.u.stop.reason),
                 ev.u.stop.message);
}

static uint64_t peek(vmt_conf *c, vmt_pa pa)
{
    uint64_t v = 0;
    VMT_CONF_OK(c, vmt_drv_read_phys(c->d, pa, &v, sizeof v));
    return v;
}

static void load(vmt_conf *c, const uint8_t *code, size_t n)
{
    VMT_CONF_OK(c, vmt_conf_reopen_code(c, NULL, CODE, code, n));
}

static void int3_breakpoint(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, VMT_CAP_BREAKPOINT_EVENTS | VMT_CAP_WRITE_PHYS);
    static const uint8_t code[] = { 0x90, 0xcc, 0xf4 }; /* nop; int3; hlt */
    load(c, code, sizeof code);
    vmt_event ev = expect(c, VMT_EVENT_BREAKPOINT);
    assert_int_equal(ev.regs.rip, CODE + 1);
    assert_int_equal(ev.u.bp.gva, CODE + 1);
    assert_int_equal(ev.u.bp.gpa, CODE + 1);
    assert_int_equal(ev.u.bp.insn_len, 1);
    assert_true(ev.seq >= 1);
    /* CONTINUE re-executes the byte there now: still INT3 -> again */
    answer(c, &ev, VMT_RESP_CONTINUE, 0);
    vmt_event again = expect(c, VMT_EVENT_BREAKPOINT);
    assert_int_equal(again.regs.rip, CODE + 1);
    assert_true(again.seq > ev.seq);
    const uint8_t nop = 0x90;
    VMT_CONF_OK(c, vmt_drv_write_phys(c->d, CODE + 1, &nop, 1));
    answer(c, &again, VMT_RESP_CONTINUE, 0);
    expect_halt(c);
}

static void single_step(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, VMT_CAP_BREAKPOINT_EVENTS | VMT_CAP_SINGLESTEP | VMT_CAP_WRITE_PHYS);
    /* int3; inc rax; inc rax; hlt */
    static const uint8_t code[] = { 0xcc, 0x48, 0xff, 0xc0, 0x48, 0xff, 0xc0, 0xf4 };
    load(c, code, sizeof code);
    vmt_event ev = expect(c, VMT_EVENT_BREAKPOINT);
    const uint8_t nop = 0x90;
    VMT_CONF_OK(c, vmt_drv_write_phys(c->d, CODE, &nop, 1));
    uint64_t rax0 = ev.regs.rax;
    answer(c, &ev, VMT_RESP_STEP, 0);
    ev = expect(c, VMT_EVENT_SINGLESTEP);
    assert_int_equal(ev.regs.rip, CODE + 1);
    answer(c, &ev, VMT_RESP_STEP, 0);
    ev = expect(c, VMT_EVENT_SINGLESTEP);
    assert_int_equal(ev.regs.rip, CODE + 4);
    assert_int_equal(ev.regs.rax, rax0 + 1);
    answer(c, &ev, VMT_RESP_CONTINUE, 0);
    expect_halt(c);
}

/* mov rax, DATA+8; mov rbx, 0x1234; mov [rax], rbx; mov rcx, [rax]; mov [rax+8]... ; hlt */
static const uint8_t store_code[] = {
    0x48, 0xc7, 0xc0, 0x08, 0x30, 0x00, 0x00, /* mov rax, 0x3008 */
    0x48, 0xc7, 0xc3, 0x34, 0x12, 0x00, 0x00, /* mov rbx, 0x1234 */
    0x48, 0x89, 0x18,                         /* mov [rax], rbx */
    0xf4,
};

static vmt_event trapped_store(vmt_conf *c)
{
    load(c, store_code, sizeof store_code);
    vmt_view v;
    VMT_CONF_OK(c, vmt_drv_view_create(c->d, VMT_ACCESS_RWX, &v));
    VMT_CONF_OK(c, vmt_drv_view_set_access(c->d, v, DATA >> 12, VMT_ACCESS_RX));
    VMT_CONF_OK(c, vmt_drv_view_switch(c->d, 0, v));
    vmt_event ev = expect(c, VMT_EVENT_MEM_ACCESS);
    assert_int_equal(ev.u.mem.access, VMT_ACCESS_W);
    assert_int_equal(ev.u.mem.gpa, DATA + 8);
    if (ev.u.mem.gva_valid)
        assert_int_equal(ev.u.mem.gva, DATA + 8);
    assert_false(ev.u.mem.in_pt_walk);
    assert_int_equal(ev.view, v);
    if (c->caps->flags & VMT_CAP_WRITE_DATA) {
        assert_true(ev.u.mem.has_data);
        assert_int_equal(ev.u.mem.size, 8);
        assert_int_equal(ev.u.mem.value, 0x1234);
    }
    assert_int_equal(peek(c, DATA + 8), 0); /* raised before the access */
    return ev;
}

static void mem_write_emulate(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, VMT_CAP_VIEWS | VMT_CAP_VIEW_PERM | VMT_CAP_EMULATE | VMT_CAP_READ_PHYS);
    if (!(c->caps->trap_access & VMT_ACCESS_W))
        skip();
    vmt_event ev = trapped_store(c);
    answer(c, &ev, VMT_RESP_EMULATE, VMT_VIEW_DEFAULT);
    expect_halt(c);
    assert_int_equal(peek(c, DATA + 8), 0x1234);
    vmt_access a;
    VMT_CONF_OK(c, vmt_drv_view_get_access(c->d, ev.view, DATA >> 12, &a, NULL));
    assert_int_equal(a, VMT_ACCESS_RX); /* responses never change rights */
}

static void mem_write_continue_and_deny(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, VMT_CAP_VIEWS | VMT_CAP_VIEW_PERM | VMT_CAP_EMULATE | VMT_CAP_READ_PHYS);
    if (!(c->caps->trap_access & VMT_ACCESS_W))
        skip();
    vmt_event ev = trapped_store(c);
    answer(c, &ev, VMT_RESP_CONTINUE, 0);
    expect_halt(c);
    assert_int_equal(peek(c, DATA + 8), 0x1234);
    ev = trapped_store(c); /* fresh driver */
    answer(c, &ev, VMT_RESP_DENY, 0);
    expect_halt(c);
    assert_int_equal(peek(c, DATA + 8), 0); /* skipped */
}

/* The seed-000 mechanism on the driver. */
static void hidden_breakpoint(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, VMT_CAP_VIEWS | VMT_CAP_VIEW_REMAP | VMT_CAP_VIEW_PERM | VMT_CAP_FRAMES |
                                            VMT_CAP_FAST_STEP | VMT_CAP_EMULATE | VMT_CAP_BREAKPOINT_EVENTS |
                                            VMT_CAP_READ_PHYS | VMT_CAP_WRITE_PHYS);
    if ((c->caps->trap_access & VMT_ACCESS_RW) != VMT_ACCESS_RW)
        skip();
    uint8_t img[0x1100];
    memset(img, 0x90, sizeof img);
    static const uint8_t main_code[] = {
        0x48, 0xc7, 0xc0, 0x00, 0x20, 0x00, 0x00, /* mov rax, FUNC */
        0xff, 0xd0,                               /* call rax */
        0x48, 0xc7, 0xc3, 0x00, 0x20, 0x00, 0x00, /* mov rbx, FUNC */
        0x0f, 0xb6, 0x0b,                         /* movzx ecx, byte [rbx] */
        0x48, 0xc7, 0xc0, 0x00, 0x30, 0x00, 0x00, /* mov rax, DATA */
        0x48, 0x89, 0x08,                         /* mov [rax], rcx */
        0xf4,
    };
    static const uint8_t func[] = { 0x48, 0xc7, 0xc2, 0x77, 0x00, 0x00, 0x00, 0xc3 }; /* mov rdx, 0x77; ret */
    memcpy(img, main_code, sizeof main_code);
    memcpy(img + (FUNC - CODE), func, sizeof func);
    VMT_CONF_OK(c, vmt_conf_reopen_code(c, NULL, CODE, img, (FUNC - CODE) + sizeof func));
    vmt_gfn shadow;
    uint8_t page[4096];
    VMT_CONF_OK(c, vmt_drv_frame_alloc(c->d, &shadow));
    VMT_CONF_OK(c, vmt_drv_read_phys(c->d, FUNC, page, sizeof page));
    page[0] = 0xcc;
    VMT_CONF_OK(c, vmt_drv_write_phys(c->d, shadow << 12, page, sizeof page));
    vmt_view v;
    VMT_CONF_OK(c, vmt_drv_view_create(c->d, VMT_ACCESS_RWX, &v));
    VMT_CONF_OK(c, vmt_drv_view_remap(c->d, v, FUNC >> 12, shadow));
    VMT_CONF_OK(c, vmt_drv_view_set_access(c->d, v, FUNC >> 12, VMT_ACCESS_X));
    VMT_CONF_OK(c, vmt_drv_view_switch(c->d, 0, v));
    vmt_event ev = expect(c, VMT_EVENT_BREAKPOINT);
    assert_int_equal(ev.regs.rip, FUNC);
    assert_int_equal(ev.u.bp.gfn, FUNC >> 12);
    answer(c, &ev, VMT_RESP_FAST_STEP, VMT_VIEW_DEFAULT);
    ev = expect(c, VMT_EVENT_MEM_ACCESS); /* the guest reads its own code */
    assert_int_equal(ev.u.mem.access, VMT_ACCESS_R);
    assert_int_equal(ev.u.mem.gpa, FUNC);
    answer(c, &ev, VMT_RESP_EMULATE, VMT_VIEW_DEFAULT);
    ev = expect(c, VMT_EVENT_STOPPED);
    assert_int_equal(ev.regs.rdx, 0x77);         /* the function ran */
    assert_int_equal(peek(c, DATA) & 0xff, 0x48); /* the read saw the original byte, not 0xcc */
    vmt_view cur;
    VMT_CONF_OK(c, vmt_drv_view_current(c->d, 0, &cur));
    assert_int_equal(cur, v);                    /* FAST_STEP / EMULATE came back */
}

static void reinject_through_idt(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, VMT_CAP_BREAKPOINT_EVENTS | VMT_CAP_INJECT_BP | VMT_CAP_READ_PHYS);
    /* lidt [rax] with a 10-byte descriptor at DATA+0x100 -> IDT at DATA+0x200;
     * vector 3 -> handler at CODE+0x80: pop rcx; mov [DATA], rcx; hlt */
    uint8_t img[0x2400];
    memset(img, 0, sizeof img);
    static const uint8_t main_code[] = {
        0x48, 0xc7, 0xc0, 0x00, 0x31, 0x00, 0x00, /* mov rax, DATA+0x100 */
        0x0f, 0x01, 0x18,                         /* lidt [rax] */
        0xcc,                                     /* int3 at CODE+10 */
        0xf4,
    };
    static const uint8_t handler[] = {
        0x59,                                     /* pop rcx: return rip */
        0x48, 0xc7, 0xc0, 0x00, 0x30, 0x00, 0x00, /* mov rax, DATA */
        0x48, 0x89, 0x08,                         /* mov [rax], rcx */
        0xf4,
    };
    memcpy(img, main_code, sizeof main_code);
    memcpy(img + 0x80, handler, sizeof handler);
    uint8_t *desc = img + (DATA + 0x100 - CODE);
    desc[0] = 0xff; /* limit 0xfff */
    desc[1] = 0x0f;
    uint64_t idt = DATA + 0x200;
    memcpy(desc + 2, &idt, 8);
    uint8_t *gate = img + (DATA + 0x200 - CODE) + 3 * 16;
    uint64_t h = CODE + 0x80;
    gate[0] = (uint8_t)h;
    gate[1] = (uint8_t)(h >> 8);
    gate[2] = 0x08;
    gate[5] = 0x8e;
    VMT_CONF_OK(c, vmt_conf_reopen_code(c, NULL, CODE, img, sizeof img));
    vmt_event ev = expect(c, VMT_EVENT_BREAKPOINT);
    assert_int_equal(ev.regs.rip, CODE + 10);
    answer(c, &ev, VMT_RESP_REINJECT, 0);
    expect_halt(c);
    assert_int_equal(peek(c, DATA), CODE + 11); /* the guest's handler got int3 + 1 */
}

static void cr3_write_event(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, VMT_CAP_CR3_EVENTS);
    static const uint8_t code[] = { 0x0f, 0x20, 0xd8, 0x0f, 0x22, 0xd8, 0xf4 }; /* mov rax,cr3; mov cr3,rax; hlt */
    load(c, code, sizeof code);
    VMT_CONF_OK(c, vmt_drv_monitor(c->d, VMT_EVENT_CR_WRITE, 1));
    vmt_event ev = expect(c, VMT_EVENT_CR_WRITE);
    assert_int_equal(ev.u.cr.cr, 3);
    assert_int_equal(ev.u.cr.new_value, ev.regs.rax);
    assert_int_equal(ev.u.cr.old_value, ev.regs.cr3);
    answer(c, &ev, VMT_RESP_CONTINUE, 0);
    expect_halt(c);
}

static void instruction_limit(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, VMT_CAP_INSN_LIMIT);
    static const uint8_t code[] = { 0x48, 0xff, 0xc0, 0xeb, 0xfb }; /* inc rax; jmp back */
    load(c, code, sizeof code);
    VMT_CONF_OK(c, vmt_drv_set_limit(c->d, 0, 1000));
    vmt_event ev = expect(c, VMT_EVENT_STOPPED);
    assert_int_equal(ev.u.stop.reason, VMT_STOP_INSN_LIMIT);
    assert_true(ev.u.stop.message[0] != '\0');
}

static void deterministic(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, VMT_CAP_DETERMINISTIC | VMT_CAP_BREAKPOINT_EVENTS | VMT_CAP_SINGLESTEP |
                                            VMT_CAP_REGS_SET);
    static const uint8_t code[] = { 0x48, 0xff, 0xc0, 0xcc, 0x48, 0xff, 0xc3, 0xcc, 0xf4 };
    vmt_event a[8], b[8];
    for (int run = 0; run < 2; run++) {
        vmt_event *log = run ? b : a;
        load(c, code, sizeof code);
        for (int i = 0; i < 8; i++) {
            log[i] = next(c);
            if (log[i].kind == VMT_EVENT_STOPPED)
                break;
            vmt_response r = vmt_response_continue();
            if (log[i].kind == VMT_EVENT_BREAKPOINT) { /* skip the INT3, step one instruction */
                r.actions = VMT_RESP_SET_REGS | VMT_RESP_STEP;
                r.regs = log[i].regs;
                r.regs.rip += log[i].u.bp.insn_len;
            }
            VMT_CONF_OK(c, vmt_drv_respond(c->d, &log[i], &r));
            if (i == 7)
                fail_msg("too many events");
        }
    }
    for (int i = 0; i < 8; i++) {
        assert_int_equal(a[i].kind, b[i].kind);
        assert_int_equal(a[i].seq, b[i].seq);
        assert_int_equal(a[i].regs.rip, b[i].regs.rip);
        assert_int_equal(a[i].regs.rax, b[i].regs.rax);
        assert_int_equal(a[i].regs.rbx, b[i].regs.rbx);
        if (a[i].kind == VMT_EVENT_STOPPED)
            break;
    }
}

static const struct CMUnitTest events_tests[] = {
    VMT_CONF_TEST(int3_breakpoint),
    VMT_CONF_TEST(single_step),
    VMT_CONF_TEST(mem_write_emulate),
    VMT_CONF_TEST(mem_write_continue_and_deny),
    VMT_CONF_TEST(hidden_breakpoint),
    VMT_CONF_TEST(reinject_through_idt),
    VMT_CONF_TEST(cr3_write_event),
    VMT_CONF_TEST(instruction_limit),
    VMT_CONF_TEST(deterministic),
};

const vmt_conformance_group vmt_conf_group_events = {
    .name = "events",
    .needs = VMT_CAP_EVENTS,
    .needs_cpu = true,
    .tests = events_tests,
    .count = sizeof events_tests / sizeof events_tests[0],
};
