/*
 * tests/emu/test_emu_basic.c — the emulator driver runs small long-mode
 * guests correctly: non-identity mappings, a guest that moves a page to a
 * new frame, port I/O events and serial lines, CR3 events, #PF delivery
 * through the guest IDT, memory past RAM, limits, refusal of what Unicorn
 * cannot run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "emu_guest.h"
#include "vmtrap/image.h"
#include "vmtrap/paging.h"

#define CODE_VA 0x400000ull
#define DATA_VA 0x7f0000600000ull
#define STACK_TOP 0x7fff00000000ull

static void expect_io(eg_guest *g, uint32_t value)
{
    vmt_event ev = eg_next(g);
    if (ev.kind != VMT_EVENT_IO)
        fail_msg("expected an IO event (value 0x%x), got %s%s%s", value, vmt_event_kind_name(ev.kind),
                 ev.kind == VMT_EVENT_STOPPED ? ": " : "", ev.kind == VMT_EVENT_STOPPED ? ev.u.stop.message : "");
    assert_int_equal(ev.u.io.port, 0x5e0);
    assert_true(ev.u.io.is_write);
    assert_int_equal(ev.u.io.size, 4);
    assert_int_equal(ev.u.io.value, value);
    eg_respond(g, &ev, vmt_response_continue());
}

static void expect_halt(eg_guest *g)
{
    vmt_event ev = eg_next(g);
    if (ev.kind != VMT_EVENT_STOPPED)
        fail_msg("expected STOPPED, got %s at rip 0x%llx", vmt_event_kind_name(ev.kind),
                 (unsigned long long)ev.regs.rip);
    if (ev.u.stop.reason != VMT_STOP_HALT)
        fail_msg("expected halt, got %s: %s", vmt_stop_reason_name(ev.u.stop.reason), ev.u.stop.message);
}

static void run_store_and_report(void **state)
{
    (void)state;
    eg_guest g;
    assert_int_equal(eg_create(&g, 4 << 20, 0, NULL, NULL), VMT_OK);
    vmt_gfn data = eg_frame(&g);
    eg_map(&g, DATA_VA, data, 0);
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RBX, 0x1234abcd);
    eg_mov_imm(&c, EG_RAX, DATA_VA + 8);
    eg_store(&c, EG_RAX, EG_RBX);
    eg_load(&c, EG_RCX, EG_RAX);
    eg_out_ucall(&c, EG_RCX);
    eg_hlt(&c);
    eg_place(&g, CODE_VA, &c);
    assert_int_equal(eg_start(&g, CODE_VA, 0), VMT_OK);
    expect_io(&g, 0x1234abcd);
    expect_halt(&g);
    uint64_t v = 0;
    assert_int_equal(vmt_drv_read_phys(g.d, (data << 12) + 8, &v, 8), VMT_OK);
    assert_int_equal(v, 0x1234abcd);
    /* the guest's tables now carry A on the data PTE and D after the store */
    uint64_t pte = 0;
    assert_int_equal(vmt_drv_read_phys(g.d, eg_pte_pa(&g, DATA_VA), &pte, 8), VMT_OK);
    assert_true(pte & VMT_PTE_A);
    assert_true(pte & VMT_PTE_D);
    vmt_driver_stats st;
    assert_int_equal(vmt_drv_stats(g.d, &st), VMT_OK);
    assert_true(st.instructions >= 6);
    eg_destroy(&g);
}

/* The guest edits its own PTE (through a mapping of the page table) so that
 * DATA_VA moves from frame A to frame B, and keeps using DATA_VA. */
static void guest_moves_page(void **state)
{
    (void)state;
    eg_guest g;
    assert_int_equal(eg_create(&g, 4 << 20, 0, NULL, NULL), VMT_OK);
    vmt_gfn fa = eg_frame(&g), fb = eg_frame(&g);
    eg_map(&g, DATA_VA, fa, 0);
    vmt_pa pte_pa = eg_pte_pa(&g, DATA_VA);
    const uint64_t PT_VA = 0x7f0000800000ull;
    eg_map(&g, PT_VA, pte_pa >> 12, 0); /* the PT itself, writable by the guest */
    uint64_t new_pte = (fb << 12) | VMT_PTE_P | VMT_PTE_RW;
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RAX, DATA_VA);
    eg_mov_imm(&c, EG_RBX, 0x1111);
    eg_store(&c, EG_RAX, EG_RBX);             /* A <- 0x1111 */
    eg_mov_imm(&c, EG_RSI, PT_VA + (pte_pa & 0xfff));
    eg_mov_imm(&c, EG_RBX, new_pte);
    eg_store(&c, EG_RSI, EG_RBX);             /* PTE -> frame B */
    eg_invlpg(&c, EG_RAX);
    eg_mov_imm(&c, EG_RBX, 0x2222);
    eg_store(&c, EG_RAX, EG_RBX);             /* B <- 0x2222 */
    eg_load(&c, EG_RCX, EG_RAX);
    eg_out_ucall(&c, EG_RCX);                 /* reads back 0x2222 */
    eg_hlt(&c);
    eg_place(&g, CODE_VA, &c);
    assert_int_equal(eg_start(&g, CODE_VA, 0), VMT_OK);
    expect_io(&g, 0x2222);
    expect_halt(&g);
    uint64_t a = 0, b = 0;
    assert_int_equal(vmt_drv_read_phys(g.d, fa << 12, &a, 8), VMT_OK);
    assert_int_equal(vmt_drv_read_phys(g.d, fb << 12, &b, 8), VMT_OK);
    assert_int_equal(a, 0x1111);
    assert_int_equal(b, 0x2222);
    vmt_emu_tlb_stats ts;
    assert_int_equal(vmt_emu_tlb_stats_get(g.d, &ts), VMT_OK);
    assert_true(ts.pt_write_faults >= 1);
    eg_destroy(&g);
}

/* Switching CR3 to a second set of tables maps the same VA elsewhere; the
 * CR_WRITE event reports old and new values. */
static void cr3_switch_event(void **state)
{
    (void)state;
    eg_guest g;
    assert_int_equal(eg_create(&g, 4 << 20, 0, NULL, NULL), VMT_OK);
    assert_int_equal(vmt_drv_monitor(g.d, VMT_EVENT_CR_WRITE, 1), VMT_OK);
    vmt_gfn fa = eg_frame(&g), fb = eg_frame(&g);
    uint64_t va_val = 0xaaaa, vb_val = 0xbbbb;
    eg_write(&g, fa << 12, &va_val, 8);
    eg_write(&g, fb << 12, &vb_val, 8);
    eg_map(&g, DATA_VA, fa, 0);
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RAX, DATA_VA);
    eg_load(&c, EG_RCX, EG_RAX);
    eg_out_ucall(&c, EG_RCX);
    eg_mov_imm(&c, EG_RBX, 0); /* patched below: second root */
    size_t patch = c.n - 8;
    eg_mov_cr3(&c, EG_RBX);
    eg_mov_imm(&c, EG_RAX, DATA_VA);
    eg_load(&c, EG_RCX, EG_RAX);
    eg_out_ucall(&c, EG_RCX);
    eg_read_cr(&c, EG_RCX, 3);
    eg_out_ucall(&c, EG_RCX);
    eg_hlt(&c);
    vmt_gfn code = eg_frame(&g);
    eg_map(&g, CODE_VA, code, 0);
    /* second tables: same code mapping, DATA_VA -> fb */
    vmt_gfn pml4a = g.pml4;
    g.pml4 = eg_frame(&g);
    vmt_gfn pml4b = g.pml4;
    eg_map(&g, CODE_VA, code, 0);
    eg_map(&g, DATA_VA, fb, 0);
    g.pml4 = pml4a;
    uint64_t root_b = pml4b << 12;
    memcpy(c.b + patch, &root_b, 8);
    eg_write(&g, code << 12, c.b, c.n);
    assert_int_equal(eg_start(&g, CODE_VA, 0), VMT_OK);
    expect_io(&g, 0xaaaa);
    vmt_event ev = eg_next(&g);
    assert_int_equal(ev.kind, VMT_EVENT_CR_WRITE);
    assert_int_equal(ev.u.cr.cr, 3);
    assert_int_equal(ev.u.cr.old_value, pml4a << 12);
    assert_int_equal(ev.u.cr.new_value, root_b);
    assert_int_equal(ev.regs.cr3, root_b);
    eg_respond(&g, &ev, vmt_response_continue());
    expect_io(&g, 0xbbbb);
    expect_io(&g, (uint32_t)root_b);
    expect_halt(&g);
    eg_destroy(&g);
}

static void serial_cb(void *ctx, const char *line)
{
    char *buf = ctx;
    strncat(buf, line, 63 - strlen(buf));
    strncat(buf, "|", 63 - strlen(buf));
}

static void serial_lines(void **state)
{
    (void)state;
    char lines[64] = "";
    eg_guest g;
    assert_int_equal(eg_create(&g, 4 << 20, 0, serial_cb, lines), VMT_OK);
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RDX, 0x3f8);
    const char *msg = "hi\nyo\n";
    for (const char *p = msg; *p; p++) {
        eg_mov_imm(&c, EG_RAX, (uint8_t)*p);
        uint8_t out_dx_al = 0xee;
        eg_bytes(&c, &out_dx_al, 1);
    }
    eg_hlt(&c);
    eg_place(&g, CODE_VA, &c);
    assert_int_equal(eg_start(&g, CODE_VA, 0), VMT_OK);
    expect_halt(&g); /* serial output is not an event */
    assert_string_equal(lines, "hi|yo|");
    eg_destroy(&g);
}

/* An access to an unmapped VA raises #PF in the guest: the handler sees CR2
 * and the error code. */
static void page_fault_delivered(void **state)
{
    (void)state;
    eg_guest g;
    assert_int_equal(eg_create(&g, 4 << 20, 0, NULL, NULL), VMT_OK);
    const uint64_t HANDLER = CODE_VA + 0x2000, IDT = 0x7f0000900000ull, BAD = 0x7f0000a00010ull;
    eg_code h = { .n = 0 };
    eg_read_cr(&h, EG_RCX, 2);
    eg_out_ucall(&h, EG_RCX);          /* CR2 */
    eg_bytes(&h, "\x59", 1);           /* pop rcx: the error code */
    eg_out_ucall(&h, EG_RCX);
    eg_hlt(&h);
    eg_place(&g, HANDLER, &h);
    eg_idt(&g, IDT, 14, HANDLER);
    eg_stack(&g, STACK_TOP, 2);
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RAX, BAD);
    eg_mov_imm(&c, EG_RBX, 7);
    eg_store(&c, EG_RAX, EG_RBX);
    eg_hlt(&c);
    eg_place(&g, CODE_VA, &c);
    assert_int_equal(eg_start(&g, CODE_VA, STACK_TOP), VMT_OK);
    expect_io(&g, (uint32_t)BAD);
    expect_io(&g, 2); /* not present, write, supervisor */
    expect_halt(&g);
    vmt_emu_tlb_stats ts;
    assert_int_equal(vmt_emu_tlb_stats_get(g.d, &ts), VMT_OK);
    assert_int_equal(ts.pf_injected, 1);
    eg_destroy(&g);
}

/* EFER.NXE works even though Unicorn 2.0.1 drops it: the driver's MMU
 * enforces NX and delivers #PF with the instruction-fetch bit. */
static void nx_enforced_by_the_mmu(void **state)
{
    (void)state;
    eg_guest g;
    assert_int_equal(eg_create(&g, 4 << 20, 0, NULL, NULL), VMT_OK);
    const uint64_t HANDLER = CODE_VA + 0x2000, IDT = 0x7f0000900000ull, NXPAGE = 0x7f0000b00000ull;
    eg_code h = { .n = 0 };
    eg_bytes(&h, "\x59", 1); /* pop rcx: error code */
    eg_out_ucall(&h, EG_RCX);
    eg_read_cr(&h, EG_RCX, 2);
    eg_out_ucall(&h, EG_RCX);
    eg_hlt(&h);
    eg_place(&g, HANDLER, &h);
    eg_idt(&g, IDT, 14, HANDLER);
    eg_stack(&g, STACK_TOP, 1);
    vmt_gfn nx = eg_frame(&g);
    uint8_t ret = 0xc3;
    eg_write(&g, nx << 12, &ret, 1);
    eg_map(&g, NXPAGE, nx, VMT_PTE_NX);
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RBX, NXPAGE);
    eg_load(&c, EG_RCX, EG_RBX); /* reading an NX page is fine */
    eg_call(&c, EG_RBX);         /* executing it is not */
    eg_hlt(&c);
    eg_place(&g, CODE_VA, &c);
    g.regs.efer |= VMT_EFER_NXE;
    assert_int_equal(eg_start(&g, CODE_VA, STACK_TOP), VMT_OK);
    expect_io(&g, 0x11); /* present, instruction fetch */
    expect_io(&g, (uint32_t)NXPAGE);
    expect_halt(&g);
    eg_destroy(&g);
}

/* ud2 is #UD for the guest, through its IDT (Unicorn reports it as an
 * invalid instruction, not as an exception). */
static void invalid_opcode_delivered(void **state)
{
    (void)state;
    eg_guest g;
    assert_int_equal(eg_create(&g, 4 << 20, 0, NULL, NULL), VMT_OK);
    const uint64_t HANDLER = CODE_VA + 0x2000, IDT = 0x7f0000900000ull;
    eg_code h = { .n = 0 };
    eg_bytes(&h, "\x59", 1); /* pop rcx: the faulting rip (no error code) */
    eg_out_ucall(&h, EG_RCX);
    eg_hlt(&h);
    eg_place(&g, HANDLER, &h);
    eg_idt(&g, IDT, 6, HANDLER);
    eg_stack(&g, STACK_TOP, 1);
    eg_code c = { .n = 0 };
    eg_nop(&c);
    eg_bytes(&c, "\x0f\x0b", 2); /* ud2 at CODE_VA + 1 */
    eg_hlt(&c);
    eg_place(&g, CODE_VA, &c);
    assert_int_equal(eg_start(&g, CODE_VA, STACK_TOP), VMT_OK);
    expect_io(&g, (uint32_t)(CODE_VA + 1));
    expect_halt(&g);
    eg_destroy(&g);
}

/* Self-modifying code: the guest patches the immediate of an instruction it
 * runs next (same page, then another page) and the new bytes execute. */
static void self_modifying_code(void **state)
{
    (void)state;
    eg_guest g;
    assert_int_equal(eg_create(&g, 4 << 20, 0, NULL, NULL), VMT_OK);
    const uint64_t OTHER = CODE_VA + 0x3000;
    eg_code o = { .n = 0 };
    eg_mov_imm(&o, EG_RCX, 0x1111); /* imm at OTHER + 2 */
    eg_out_ucall(&o, EG_RCX);
    eg_bytes(&o, "\xc3", 1);
    eg_place(&g, OTHER, &o);
    eg_stack(&g, STACK_TOP, 1);
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RSI, OTHER);
    eg_call(&c, EG_RSI);                /* runs 0x1111 */
    eg_mov_imm(&c, EG_RBX, OTHER + 2);
    eg_mov_imm(&c, EG_RCX, 0x2222);
    eg_store(&c, EG_RBX, EG_RCX);       /* patch the other page */
    eg_call(&c, EG_RSI);                /* runs 0x2222 */
    eg_mov_imm(&c, EG_RBX, 0);          /* patched below: address of the imm of the next mov */
    size_t patch = c.n - 8;
    eg_mov_imm(&c, EG_RCX, 0x4444);
    eg_store(&c, EG_RBX, EG_RCX);       /* patch the code just ahead */
    size_t target = c.n;
    eg_mov_imm(&c, EG_RCX, 0x3333);     /* becomes 0x4444 */
    eg_out_ucall(&c, EG_RCX);
    eg_hlt(&c);
    uint64_t imm_va = CODE_VA + target + 2;
    memcpy(c.b + patch, &imm_va, 8);
    eg_place(&g, CODE_VA, &c);
    assert_int_equal(eg_start(&g, CODE_VA, STACK_TOP), VMT_OK);
    expect_io(&g, 0x1111);
    expect_io(&g, 0x2222);
    expect_io(&g, 0x4444);
    expect_halt(&g);
    eg_destroy(&g);
}

/* Self-modifying code through an alias: the function's frame is mapped at
 * a second, writable virtual page, and the guest patches it there between
 * calls. Unicorn re-protects only the writes of the page code runs from,
 * so each patch must still reach the code the next call runs (the driver
 * never keeps a frame executable at one page and writable at another). */
static void self_modifying_code_through_an_alias(void **state)
{
    (void)state;
    eg_guest g;
    assert_int_equal(eg_create(&g, 4 << 20, 0, NULL, NULL), VMT_OK);
    const uint64_t FUNC = CODE_VA + 0x3000, ALIAS = CODE_VA + 0x8000;
    eg_code o = { .n = 0 };
    eg_mov_imm(&o, EG_RCX, 0x1111); /* imm at FUNC + 2 */
    eg_out_ucall(&o, EG_RCX);
    eg_bytes(&o, "\xc3", 1);
    vmt_gfn f = eg_place(&g, FUNC, &o);
    eg_map(&g, ALIAS, f, 0);
    eg_stack(&g, STACK_TOP, 1);
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RSI, FUNC);
    eg_mov_imm(&c, EG_RBX, ALIAS + 2);
    eg_call(&c, EG_RSI); /* 0x1111 */
    for (uint64_t v = 0x2222; v <= 0x5555; v += 0x1111) {
        eg_mov_imm(&c, EG_RCX, v);
        eg_store(&c, EG_RBX, EG_RCX); /* through the alias */
        eg_call(&c, EG_RSI);          /* runs v */
    }
    eg_hlt(&c);
    eg_place(&g, CODE_VA, &c);
    assert_int_equal(eg_start(&g, CODE_VA, STACK_TOP), VMT_OK);
    for (uint32_t v = 0x1111; v <= 0x5555; v += 0x1111)
        expect_io(&g, v);
    expect_halt(&g);
    eg_destroy(&g);
}

/* A translation that reaches a gfn past RAM sees no memory: reads give
 * 0xff bytes and writes are dropped; execution there stops the guest. */
static void memory_past_ram(void **state)
{
    (void)state;
    eg_guest g;
    assert_int_equal(eg_create(&g, 4 << 20, 0, NULL, NULL), VMT_OK);
    vmt_gfn beyond = g.ram_frames + 3; /* an extra frame number: unreachable */
    vmt_gfn shadow;
    assert_int_equal(vmt_drv_frame_alloc(g.d, &shadow), VMT_OK);
    uint64_t secret = 0x5ec2e7;
    eg_write(&g, shadow << 12, &secret, 8);
    eg_map(&g, DATA_VA, shadow, 0);
    eg_map(&g, DATA_VA + 0x1000, beyond, 0);
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RAX, DATA_VA);
    eg_mov_imm(&c, EG_RBX, 0x77);
    eg_store(&c, EG_RAX, EG_RBX);
    eg_load(&c, EG_RCX, EG_RAX);
    eg_out_ucall(&c, EG_RCX);
    eg_mov_imm(&c, EG_RAX, DATA_VA + 0x1000);
    eg_load(&c, EG_RCX, EG_RAX);
    eg_out_ucall(&c, EG_RCX);
    eg_mov_imm(&c, EG_RBX, DATA_VA + 0x1000);
    eg_call(&c, EG_RBX);
    eg_hlt(&c);
    eg_place(&g, CODE_VA, &c);
    eg_stack(&g, STACK_TOP, 1);
    assert_int_equal(eg_start(&g, CODE_VA, STACK_TOP), VMT_OK);
    expect_io(&g, 0xffffffff);
    expect_io(&g, 0xffffffff);
    vmt_event ev = eg_next(&g);
    assert_int_equal(ev.kind, VMT_EVENT_STOPPED);
    if (ev.u.stop.reason != VMT_STOP_GUEST_ERROR || !strstr(ev.u.stop.message, "outside guest RAM"))
        fail_msg("expected a stop naming the frame outside RAM, got %s: %s", vmt_stop_reason_name(ev.u.stop.reason),
                 ev.u.stop.message);
    uint64_t v = 0;
    assert_int_equal(vmt_drv_read_phys(g.d, shadow << 12, &v, 8), VMT_OK);
    assert_int_equal(v, secret); /* the guest's write did not reach the extra frame */
    eg_destroy(&g);
}

static void instruction_limit(void **state)
{
    (void)state;
    eg_guest g;
    assert_int_equal(eg_create(&g, 4 << 20, 0, NULL, NULL), VMT_OK);
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RCX, 0);
    size_t top = c.n;
    eg_inc(&c, EG_RCX);
    uint8_t jmp[2] = { 0xeb, (uint8_t)(int8_t)(top - (c.n + 2)) };
    eg_bytes(&c, jmp, 2);
    eg_place(&g, CODE_VA, &c);
    assert_int_equal(eg_start(&g, CODE_VA, 0), VMT_OK);
    assert_int_equal(vmt_drv_set_limit(g.d, 0, 1001), VMT_OK);
    vmt_event ev = eg_next(&g);
    assert_int_equal(ev.kind, VMT_EVENT_STOPPED);
    assert_int_equal(ev.u.stop.reason, VMT_STOP_INSN_LIMIT);
    assert_int_equal(ev.regs.rcx, 500); /* 1 mov + 500 x (inc, jmp) */
    assert_int_equal(vmt_drv_set_limit(g.d, 0.05, 0), VMT_OK);
    ev = eg_next(&g);
    assert_int_equal(ev.kind, VMT_EVENT_STOPPED);
    assert_int_equal(ev.u.stop.reason, VMT_STOP_TIME_LIMIT);
    assert_non_null(strstr(ev.u.stop.message, "time limit"));
    eg_destroy(&g);
}

static void refuses_what_unicorn_cannot_run(void **state)
{
    (void)state;
    char why[256] = "";
    vmt_regs r;
    memset(&r, 0, sizeof r);
    r.cr0 = VMT_CR0_PG | VMT_CR0_PE;
    r.cr4 = VMT_CR4_PAE;
    r.efer = VMT_EFER_LME | VMT_EFER_LMA | VMT_EFER_SCE;
    r.rip = 0x1000;
    static const uint8_t code[] = { 0xf4 };
    vmt_image_segment seg = { 0x1000, code, 1, 1 };
    vmt_image *img = NULL;
    assert_int_equal(vmt_image_from_segments(&seg, 1, &r, 1 << 20, &img, why, sizeof why), VMT_OK);
    vmt_machine_config mc;
    memset(&mc, 0, sizeof mc);
    mc.ram_size = 1 << 20;
    mc.image = img;
    vmt_driver *d = NULL;
    /* EFER.SCE is fine now: the driver performs SYSCALL itself */
    assert_int_equal(vmt_emu_driver_create(&mc, &d, why, sizeof why), VMT_OK);
    vmt_driver_destroy(d);
    d = NULL;
    vmt_image_destroy(img);

    mc.image = NULL;
    mc.vcpus = 2;
    assert_int_equal(vmt_emu_driver_create(&mc, &d, why, sizeof why), VMT_E_NOTSUP);
    assert_non_null(strstr(why, "one vCPU"));
    mc.vcpus = 1;
    mc.ram_size = 12345;
    assert_int_equal(vmt_emu_driver_create(&mc, &d, why, sizeof why), VMT_E_INVAL);
    assert_non_null(strstr(why, "multiple of 4 KiB"));

    /* a guest that turns SYSCALL on at run time goes on */
    eg_guest g;
    assert_int_equal(eg_create(&g, 4 << 20, 0, NULL, NULL), VMT_OK);
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RCX, 0xc0000080);
    eg_mov_imm(&c, EG_RAX, VMT_EFER_LME | VMT_EFER_LMA | VMT_EFER_SCE);
    eg_mov_imm(&c, EG_RDX, 0);
    eg_bytes(&c, "\x0f\x30", 2); /* wrmsr */
    eg_bytes(&c, "\x0f\x32", 2); /* rdmsr */
    eg_out_ucall(&c, EG_RAX);
    eg_hlt(&c);
    eg_place(&g, CODE_VA, &c);
    assert_int_equal(eg_start(&g, CODE_VA, 0), VMT_OK);
    expect_io(&g, VMT_EFER_LME | VMT_EFER_LMA | VMT_EFER_SCE);
    expect_halt(&g);
    eg_destroy(&g);
}

/* An ELF-less image through vmt_image_from_segments with the boot protocol:
 * identity tables built by the image loader, entry = first segment. */
static void boots_boot_protocol_image(void **state)
{
    (void)state;
    char why[256] = "";
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RCX, 0x77);
    eg_out_ucall(&c, EG_RCX);
    eg_out_ucall(&c, EG_RDI); /* rdi = RAM size by the boot protocol */
    eg_hlt(&c);
    vmt_image_segment seg = { 0x100000, c.b, c.n, c.n };
    vmt_image *img = NULL;
    assert_int_equal(vmt_image_from_segments(&seg, 1, NULL, 8 << 20, &img, why, sizeof why), VMT_OK);
    vmt_machine_config mc;
    memset(&mc, 0, sizeof mc);
    mc.ram_size = 8 << 20;
    mc.image = img;
    eg_guest g;
    memset(&g, 0, sizeof g);
    if (vmt_emu_driver_create(&mc, &g.d, why, sizeof why))
        fail_msg("%s", why);
    vmt_image_destroy(img);
    expect_io(&g, 0x77);
    expect_io(&g, 8 << 20);
    expect_halt(&g);
    eg_destroy(&g);
}

/* Hostile tables: a table entry with reserved bits is #PF with RSVD for
 * the guest; a CR3 outside RAM cannot even deliver that and stops the
 * guest as a triple fault with a message. Nothing crashes. */
static void hostile_tables(void **state)
{
    (void)state;
    eg_guest g;
    assert_int_equal(eg_create(&g, 4 << 20, 0, NULL, NULL), VMT_OK);
    const uint64_t HANDLER = CODE_VA + 0x2000, IDT = 0x7f0000900000ull, EVIL = 0x7f0000c00000ull;
    eg_code h = { .n = 0 };
    eg_bytes(&h, "\x59", 1);
    eg_out_ucall(&h, EG_RCX);
    eg_hlt(&h);
    eg_place(&g, HANDLER, &h);
    eg_idt(&g, IDT, 14, HANDLER);
    eg_stack(&g, STACK_TOP, 1);
    eg_map(&g, EVIL, eg_frame(&g), 0);
    uint64_t bad = (0xfffffull << 40) | (0x10ull << 12) | VMT_PTE_P; /* physical bits past maxphyaddr */
    eg_write(&g, eg_pte_pa(&g, EVIL), &bad, 8);
    eg_code c = { .n = 0 };
    eg_mov_imm(&c, EG_RAX, EVIL);
    eg_load(&c, EG_RCX, EG_RAX);
    eg_hlt(&c);
    eg_place(&g, CODE_VA, &c);
    assert_int_equal(eg_start(&g, CODE_VA, STACK_TOP), VMT_OK);
    expect_io(&g, 1 | 8); /* present + reserved bit, read */
    expect_halt(&g);
    /* CR3 far outside RAM */
    g.regs.cr3 = 0x7000000000ull;
    assert_int_equal(vmt_drv_set_regs(g.d, 0, &g.regs), VMT_OK);
    vmt_event ev = eg_next(&g);
    assert_int_equal(ev.kind, VMT_EVENT_STOPPED);
    assert_int_equal(ev.u.stop.reason, VMT_STOP_TRIPLE_FAULT);
    assert_true(ev.u.stop.message[0] != 0);
    eg_destroy(&g);
}

/* User mode is not supported: entering CPL3 (iretq to a user segment)
 * stops the guest with a message instead of running it with CPL0 rights. */
/* iretq to CPL3 (native), a user-mode store, SYSCALL back to the kernel
 * (performed by the driver per the SDM: RCX = return rip, R11 = rflags,
 * CS/SS from STAR, FMASK applied, CPL0), sysretq to CPL3 again and a
 * privileged instruction there: #GP delivered on TSS.RSP0. */
static void cpl3_round_trip(void **state)
{
    (void)state;
    eg_guest g;
    assert_int_equal(eg_create(&g, 4 << 20, 0, NULL, NULL), VMT_OK);
    const uint64_t GDT = 0x7f0000d00000ull, TSS = 0x7f0000d01000ull, IDT = 0x7f0000e00000ull;
    const uint64_t USER = 0x500000ull, USTACK = 0x600000ull, KSTACK = 0x7fff00000000ull;
    const uint64_t LSTAR = CODE_VA + 0x100, GP = CODE_VA + 0x200;
    vmt_gfn gdt = eg_frame(&g), tss = eg_frame(&g);
    eg_map(&g, GDT, gdt, 0);
    eg_map(&g, TSS, tss, 0);
    /* null, kernel code 0x08, kernel data 0x10, user data 0x1b, user code 0x23 (STAR layout),
     * 64-bit TSS 0x28 (16 bytes) */
    const uint64_t descs[7] = { 0,
                                0x00209a0000000000ull,
                                0x0000920000000000ull,
                                0x0000f20000000000ull,
                                0x0020fa0000000000ull,
                                0x67 | (TSS & 0xffffff) << 16 | 0x89ull << 40 | (TSS >> 24 & 0xff) << 56,
                                TSS >> 32 };
    eg_write(&g, gdt << 12, descs, sizeof descs);
    uint64_t rsp0 = KSTACK;
    eg_write(&g, (tss << 12) + 4, &rsp0, 8);
    g.regs.gdtr_base = GDT;
    g.regs.gdtr_limit = sizeof descs - 1;
    eg_stack(&g, KSTACK, 2);
    vmt_gfn us = eg_frame(&g);
    eg_map(&g, USTACK - 0x1000, us, VMT_PTE_US);
    /* kernel: STAR, LSTAR, FMASK, ltr, then iretq to user */
    eg_code c = { .n = 0 };
    const struct { uint32_t msr; uint64_t v; } msrs[3] = {
        { 0xc0000081, 0x0010000800000000ull }, { 0xc0000082, LSTAR }, { 0xc0000084, 0x200 } };
    for (int i = 0; i < 3; i++) {
        eg_mov_imm(&c, EG_RCX, msrs[i].msr);
        eg_mov_imm(&c, EG_RAX, (uint32_t)msrs[i].v);
        eg_mov_imm(&c, EG_RDX, msrs[i].v >> 32);
        eg_bytes(&c, "\x0f\x30", 2); /* wrmsr */
    }
    eg_mov_imm(&c, EG_RAX, 0x28);
    eg_bytes(&c, "\x0f\x00\xd8", 3); /* ltr ax */
    eg_mov_imm(&c, EG_RAX, 0x1b);
    eg_bytes(&c, "\x50", 1); /* push ss */
    eg_mov_imm(&c, EG_RAX, USTACK);
    eg_bytes(&c, "\x50", 1); /* push rsp */
    eg_mov_imm(&c, EG_RAX, 0x202);
    eg_bytes(&c, "\x50", 1); /* push rflags */
    eg_mov_imm(&c, EG_RAX, 0x23);
    eg_bytes(&c, "\x50", 1); /* push cs */
    eg_mov_imm(&c, EG_RAX, USER);
    eg_bytes(&c, "\x50", 1); /* push rip */
    eg_bytes(&c, "\x48\xcf", 2); /* iretq */
    while (c.n < 0x100)
        eg_bytes(&c, "\x90", 1);
    /* LSTAR: report rcx (return rip), r11 (rflags), cs, then sysretq */
    eg_out_ucall(&c, EG_RCX);
    eg_bytes(&c, "\x4c\x89\xdb", 3); /* mov rbx, r11 */
    eg_out_ucall(&c, EG_RBX);
    eg_bytes(&c, "\x8c\xc8", 2); /* mov eax, cs */
    eg_bytes(&c, "\x89\xc0", 2); /* mov eax, eax: upper half clear */
    eg_out_ucall(&c, EG_RAX);
    eg_bytes(&c, "\x48\x0f\x07", 3); /* sysretq */
    while (c.n < 0x200)
        eg_bytes(&c, "\x90", 1);
    /* #GP handler: report the error code, the saved CS and the stack */
    eg_bytes(&c, "\x58", 1); /* pop rax: error code */
    eg_out_ucall(&c, EG_RAX);
    eg_bytes(&c, "\x48\x8b\x44\x24\x08", 5); /* mov rax, [rsp+8]: saved cs */
    eg_out_ucall(&c, EG_RAX);
    eg_bytes(&c, "\x48\x89\xe0", 3); /* mov rax, rsp */
    eg_out_ucall(&c, EG_RAX);
    eg_hlt(&c);
    eg_place(&g, CODE_VA, &c);
    /* user: a store to its stack, syscall, then a privileged instruction */
    eg_code u = { .n = 0 };
    eg_mov_imm(&u, EG_RBX, 0x5555);
    eg_bytes(&u, "\x53", 1); /* push rbx */
    eg_bytes(&u, "\x0f\x05", 2); /* syscall */
    const size_t after_syscall = u.n;
    eg_bytes(&u, "\xfa", 1); /* cli: #GP at CPL3 */
    vmt_gfn uf = eg_frame(&g);
    eg_map(&g, USER, uf, VMT_PTE_US);
    eg_write(&g, uf << 12, u.b, u.n);
    eg_idt(&g, IDT, 13, GP);
    g.regs.cs = 0x08;
    g.regs.ss = 0x10;
    g.regs.efer |= VMT_EFER_SCE;
    assert_int_equal(eg_start(&g, CODE_VA, KSTACK), VMT_OK);
    expect_io(&g, (uint32_t)(USER + after_syscall)); /* rcx: the return rip */
    expect_io(&g, 0x202);                     /* r11: the user rflags */
    expect_io(&g, 0x08);                      /* cs in the kernel */
    expect_io(&g, 0);                         /* #GP error code */
    expect_io(&g, 0x23);                      /* saved cs: user */
    expect_io(&g, (uint32_t)(KSTACK - 5 * 8)); /* frame on TSS.RSP0 */
    expect_halt(&g);
    uint64_t pushed = 0;
    assert_int_equal(vmt_drv_read_phys(g.d, (us << 12) + 0xff8, &pushed, 8), VMT_OK);
    assert_int_equal(pushed, 0x5555);
    eg_destroy(&g);
}

/* Bad images never reach the CPU: each step names the problem. */
static void bad_images_refused_with_a_reason(void **state)
{
    (void)state;
    char why[256] = "";
    vmt_image *img = NULL;
    /* a truncated ELF: the first 100 bytes of the smoke guest */
    FILE *f = fopen(VMT_GUEST_DIR "/smoke.elf", "rb");
    assert_non_null(f);
    uint8_t head[100];
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    assert_int_equal(n, sizeof head);
    assert_int_equal(vmt_image_load_elf_mem(head, n, 64 << 20, &img, why, sizeof why), VMT_E_FORMAT);
    assert_non_null(strstr(why, "truncated"));
    /* a CPU state with an unknown field */
    vmt_regs r;
    memset(&r, 0, sizeof r);
    assert_int_equal(vmt_cpu_state_parse("{\"rip\": \"0x1000\", \"rpi\": 1}", &r, why, sizeof why), VMT_E_FORMAT);
    assert_non_null(strstr(why, "rpi"));
    /* a segment that fits the image's RAM but not the machine's */
    static const uint8_t code[] = { 0xf4 };
    vmt_image_segment seg = { 6 << 20, code, 1, 1 };
    assert_int_equal(vmt_image_from_segments(&seg, 1, NULL, 8 << 20, &img, why, sizeof why), VMT_OK);
    vmt_machine_config mc;
    memset(&mc, 0, sizeof mc);
    mc.ram_size = 4 << 20;
    mc.image = img;
    vmt_driver *d = NULL;
    assert_int_not_equal(vmt_emu_driver_create(&mc, &d, why, sizeof why), VMT_OK);
    assert_null(d);
    assert_non_null(strstr(why, "outside RAM"));
    vmt_image_destroy(img);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(run_store_and_report),
        cmocka_unit_test(guest_moves_page),
        cmocka_unit_test(cr3_switch_event),
        cmocka_unit_test(serial_lines),
        cmocka_unit_test(page_fault_delivered),
        cmocka_unit_test(nx_enforced_by_the_mmu),
        cmocka_unit_test(invalid_opcode_delivered),
        cmocka_unit_test(self_modifying_code),
        cmocka_unit_test(self_modifying_code_through_an_alias),
        cmocka_unit_test(memory_past_ram),
        cmocka_unit_test(instruction_limit),
        cmocka_unit_test(refuses_what_unicorn_cannot_run),
        cmocka_unit_test(bad_images_refused_with_a_reason),
        cmocka_unit_test(hostile_tables),
        cmocka_unit_test(cpl3_round_trip),
        cmocka_unit_test(boots_boot_protocol_image),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
