/*
 * tests/emu/emu_guest.c — see emu_guest.h. Instruction encodings are the
 * fixed forms from the Intel SDM for the registers rax..rdi (no REX.R/B).
 */
#include "emu_guest.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "vmtrap/paging.h"

void eg_bytes(eg_code *c, const void *p, size_t n)
{
    assert_true(c->n + n <= sizeof c->b);
    memcpy(c->b + c->n, p, n);
    c->n += n;
}

static void b1(eg_code *c, uint8_t x) { eg_bytes(c, &x, 1); }

void eg_mov_imm(eg_code *c, int reg, uint64_t imm)
{
    b1(c, 0x48);
    b1(c, (uint8_t)(0xb8 + reg));
    eg_bytes(c, &imm, 8);
}

static void modrm_mem(eg_code *c, int reg, int base)
{
    /* [base] with mod=00; rsp needs a SIB, rbp needs disp8 */
    if (base == EG_RBP) {
        b1(c, (uint8_t)(0x40 | reg << 3 | base));
        b1(c, 0);
    } else if (base == EG_RSP) {
        b1(c, (uint8_t)(reg << 3 | 4));
        b1(c, 0x24);
    } else {
        b1(c, (uint8_t)(reg << 3 | base));
    }
}

/* Two opcode bytes (prefix or 0x0f escape, then the opcode) and a ModRM
 * naming `reg` and the memory operand [base]. */
static void op_mem(eg_code *c, uint8_t first, uint8_t opcode, int reg, int base)
{
    b1(c, first);
    b1(c, opcode);
    modrm_mem(c, reg, base);
}

/* Two opcode bytes and a register-direct ModRM (mod=11) with `reg` and `rm`. */
static void op_reg(eg_code *c, uint8_t first, uint8_t opcode, int reg, int rm)
{
    b1(c, first);
    b1(c, opcode);
    b1(c, (uint8_t)(0xc0 | reg << 3 | rm));
}

void eg_store(eg_code *c, int addr_reg, int src_reg)
{
    op_mem(c, 0x48, 0x89, src_reg, addr_reg);
}

void eg_load(eg_code *c, int dst_reg, int addr_reg)
{
    op_mem(c, 0x48, 0x8b, dst_reg, addr_reg);
}

void eg_load8(eg_code *c, int dst_reg, int addr_reg)
{
    op_mem(c, 0x0f, 0xb6, dst_reg, addr_reg);
}

void eg_add(eg_code *c, int dst_reg, int src_reg)
{
    op_reg(c, 0x48, 0x01, src_reg, dst_reg);
}

void eg_inc(eg_code *c, int reg)
{
    op_reg(c, 0x48, 0xff, 0, reg); /* inc r/m64 is ff /0 */
}

void eg_out_ucall(eg_code *c, int reg)
{
    if (reg != EG_RAX) /* mov rax, reg */
        op_reg(c, 0x48, 0x89, reg, EG_RAX);
    eg_mov_imm(c, EG_RDX, 0x5e0);
    b1(c, 0xef); /* out dx, eax */
}

void eg_mov_cr3(eg_code *c, int reg)
{
    op_reg(c, 0x0f, 0x22, 3, reg);
}

void eg_read_cr(eg_code *c, int reg, int cr)
{
    op_reg(c, 0x0f, 0x20, cr, reg);
}

void eg_invlpg(eg_code *c, int addr_reg)
{
    op_mem(c, 0x0f, 0x01, 7, addr_reg);
}

void eg_call(eg_code *c, int reg)
{
    b1(c, 0xff);
    b1(c, (uint8_t)(0xd0 | reg));
}

void eg_hlt(eg_code *c) { b1(c, 0xf4); }
void eg_int3(eg_code *c) { b1(c, 0xcc); }
void eg_nop(eg_code *c) { b1(c, 0x90); }

void eg_loop_below(eg_code *c, int a, int b, size_t target)
{
    op_reg(c, 0x48, 0x39, b, a); /* cmp a, b */
    long rel = (long)target - (long)(c->n + 6);
    b1(c, 0x0f); /* jb rel32 */
    b1(c, 0x82);
    int32_t r32 = (int32_t)rel;
    eg_bytes(c, &r32, 4);
}

/* ---- guest builder ---- */

vmt_status eg_create(eg_guest *g, uint64_t ram_bytes, uint32_t tlb_entries, vmt_serial_fn serial, void *ctx)
{
    vmt_emu_options o = { .tlb_entries = tlb_entries };
    return eg_create_opt(g, ram_bytes, &o, serial, ctx);
}

vmt_status eg_create_opt(eg_guest *g, uint64_t ram_bytes, const vmt_emu_options *o, vmt_serial_fn serial, void *ctx)
{
    memset(g, 0, sizeof *g);
    vmt_machine_config mc;
    memset(&mc, 0, sizeof mc);
    mc.ram_size = ram_bytes;
    mc.serial = serial;
    mc.serial_ctx = ctx;
    mc.extra_frames = 16384;
    vmt_status st = vmt_emu_driver_create_ex(&mc, o, &g->d, g->why, sizeof g->why);
    if (st)
        return st;
    g->ram_frames = ram_bytes / 4096;
    g->next_frame = 0x10;
    g->pml4 = eg_frame(g);
    assert_int_equal(vmt_drv_get_regs(g->d, 0, &g->regs), VMT_OK);
    return VMT_OK;
}

void eg_destroy(eg_guest *g)
{
    vmt_driver_destroy(g->d);
    g->d = NULL;
}

vmt_gfn eg_frame(eg_guest *g)
{
    assert_true(g->next_frame < g->ram_frames);
    static const uint8_t zero[4096];
    vmt_gfn f = g->next_frame++;
    assert_int_equal(vmt_drv_write_phys(g->d, f << 12, zero, sizeof zero), VMT_OK);
    return f;
}

void eg_write(eg_guest *g, vmt_pa pa, const void *p, size_t n)
{
    assert_int_equal(vmt_drv_write_phys(g->d, pa, p, n), VMT_OK);
}

static uint64_t rd64(eg_guest *g, vmt_pa pa)
{
    uint64_t v = 0;
    assert_int_equal(vmt_drv_read_phys(g->d, pa, &v, 8), VMT_OK);
    return v;
}

vmt_pa eg_pte_pa(eg_guest *g, uint64_t va)
{
    vmt_gfn table = g->pml4;
    for (unsigned level = 4; level > 1; level--) {
        vmt_pa e = (table << 12) + 8ull * vmt_pt_index(va, level);
        uint64_t v = rd64(g, e);
        if (!(v & VMT_PTE_P)) {
            vmt_gfn t = eg_frame(g);
            v = (t << 12) | VMT_PTE_P | VMT_PTE_RW | VMT_PTE_US; /* the leaf decides U/S */
            eg_write(g, e, &v, 8);
        }
        table = (v & VMT_PTE_ADDR_MASK) >> 12;
    }
    return (table << 12) + 8ull * vmt_pt_index(va, 1);
}

vmt_gfn eg_map(eg_guest *g, uint64_t va, vmt_gfn gfn, uint64_t extra_bits)
{
    vmt_pa e = eg_pte_pa(g, va);
    uint64_t v = (gfn << 12) | VMT_PTE_P | VMT_PTE_RW | extra_bits;
    eg_write(g, e, &v, 8);
    return e >> 12;
}

vmt_gfn eg_place(eg_guest *g, uint64_t va, const eg_code *c)
{
    vmt_gfn first = 0;
    for (size_t off = 0; off < c->n || off == 0; off += 4096) {
        vmt_gfn f = eg_frame(g);
        if (!off)
            first = f;
        eg_map(g, va + off, f, 0);
        size_t n = c->n - off < 4096 ? c->n - off : 4096;
        eg_write(g, f << 12, c->b + off, n);
        if (c->n == 0)
            break;
    }
    return first;
}

void eg_idt(eg_guest *g, uint64_t idt_va, unsigned vector, uint64_t handler)
{
    vmt_gfn f = eg_frame(g);
    eg_map(g, idt_va, f, 0);
    uint8_t gate[16] = { 0 };
    gate[0] = (uint8_t)handler;
    gate[1] = (uint8_t)(handler >> 8);
    gate[2] = 0x08; /* selector */
    gate[5] = 0x8e; /* present, interrupt gate */
    gate[6] = (uint8_t)(handler >> 16);
    gate[7] = (uint8_t)(handler >> 24);
    for (int i = 0; i < 4; i++)
        gate[8 + i] = (uint8_t)(handler >> (32 + 8 * i));
    eg_write(g, (f << 12) + 16ull * vector, gate, sizeof gate);
    g->regs.idtr_base = idt_va;
    g->regs.idtr_limit = 4095;
}

void eg_stack(eg_guest *g, uint64_t top_va, unsigned pages)
{
    for (unsigned i = 1; i <= pages; i++)
        eg_map(g, top_va - 4096ull * i, eg_frame(g), 0);
}

vmt_status eg_start(eg_guest *g, uint64_t rip, uint64_t rsp)
{
    g->regs.rip = rip;
    g->regs.rsp = rsp;
    g->regs.cr3 = g->pml4 << 12;
    return vmt_drv_set_regs(g->d, 0, &g->regs);
}

vmt_event eg_next(eg_guest *g)
{
    vmt_event ev;
    memset(&ev, 0, sizeof ev);
    vmt_status st = vmt_drv_wait_event(g->d, 20000, &ev);
    if (st)
        fail_msg("wait_event: %s: %s", vmt_strerror(st), vmt_driver_error(g->d));
    if (vmt_emu_check(g->d))
        fail_msg("%s", vmt_driver_error(g->d));
    return ev;
}

void eg_respond(eg_guest *g, const vmt_event *ev, vmt_response r)
{
    vmt_status st = vmt_drv_respond(g->d, ev, &r);
    if (st)
        fail_msg("respond: %s: %s", vmt_strerror(st), vmt_driver_error(g->d));
    if (vmt_emu_check(g->d))
        fail_msg("%s", vmt_driver_error(g->d));
}
