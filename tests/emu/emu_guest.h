/*
 * tests/emu/emu_guest.h — building small long-mode guests for the emulator
 * driver tests without an assembler: a byte emitter for the handful of
 * instructions the tests use, and a page-table builder that writes 4-level
 * tables into guest RAM through write_phys. Test helpers only.
 */
#ifndef VMT_TESTS_EMU_GUEST_H
#define VMT_TESTS_EMU_GUEST_H

#include <stddef.h>
#include <stdint.h>

#include "vmtrap/driver.h"
#include "vmtrap/emu.h"

/* ---- code emitter ---- */
typedef struct eg_code {
    uint8_t b[4096];
    size_t n;
} eg_code;

enum { EG_RAX = 0, EG_RCX = 1, EG_RDX = 2, EG_RBX = 3, EG_RSP = 4, EG_RBP = 5, EG_RSI = 6, EG_RDI = 7 };

void eg_bytes(eg_code *c, const void *p, size_t n);
void eg_mov_imm(eg_code *c, int reg, uint64_t imm);        /* mov r64, imm64 */
void eg_store(eg_code *c, int addr_reg, int src_reg);      /* mov [addr], src (64-bit) */
void eg_load(eg_code *c, int dst_reg, int addr_reg);       /* mov dst, [addr] (64-bit) */
void eg_load8(eg_code *c, int dst_reg, int addr_reg);      /* movzx dst32, byte [addr] */
void eg_add(eg_code *c, int dst_reg, int src_reg);         /* add dst, src */
void eg_inc(eg_code *c, int reg);
void eg_out_ucall(eg_code *c, int reg);                    /* mov eax<-reg; out 0x5e0(dx), eax */
void eg_mov_cr3(eg_code *c, int reg);                      /* mov cr3, reg */
void eg_read_cr(eg_code *c, int reg, int cr);              /* mov reg, crN */
void eg_invlpg(eg_code *c, int addr_reg);
void eg_call(eg_code *c, int reg);                         /* call reg */
void eg_hlt(eg_code *c);
void eg_int3(eg_code *c);
void eg_nop(eg_code *c);
/* cmp a, b; jb back to `target` (offset in c) */
void eg_loop_below(eg_code *c, int a, int b, size_t target);

/* ---- guest builder ---- */
typedef struct eg_guest {
    vmt_driver *d;
    uint64_t ram_frames;
    vmt_gfn next_frame;      /* bump allocator for tables and pages */
    vmt_gfn pml4;
    vmt_regs regs;
    char why[256];
} eg_guest;

/* Create an emu driver with blank RAM (tlb 0: default) and an empty PML4. */
vmt_status eg_create(eg_guest *g, uint64_t ram_bytes, uint32_t tlb_entries, vmt_serial_fn serial, void *ctx);
/* Same with every emu option. */
vmt_status eg_create_opt(eg_guest *g, uint64_t ram_bytes, const vmt_emu_options *o, vmt_serial_fn serial, void *ctx);
void eg_destroy(eg_guest *g);
vmt_gfn eg_frame(eg_guest *g);                       /* a fresh zeroed RAM frame */
/* Map va -> gfn (4 KiB) with P|RW (plus extra bits); tables allocated as needed.
 * Returns the gfn of the PT holding the entry. */
vmt_gfn eg_map(eg_guest *g, uint64_t va, vmt_gfn gfn, uint64_t extra_bits);
/* Frame of the PT entry for va (for tests that edit PTEs). */
vmt_pa eg_pte_pa(eg_guest *g, uint64_t va);
void eg_write(eg_guest *g, vmt_pa pa, const void *p, size_t n);
/* Place code at va (fresh frame(s) mapped there); returns the first gfn. */
vmt_gfn eg_place(eg_guest *g, uint64_t va, const eg_code *c);
/* IDT with one gate for vector -> handler, mapped at idt_va. */
void eg_idt(eg_guest *g, uint64_t idt_va, unsigned vector, uint64_t handler);
/* A stack of `pages` pages ending at top_va. */
void eg_stack(eg_guest *g, uint64_t top_va, unsigned pages);
/* Load the registers: rip, rsp, cr3 = the tables. */
vmt_status eg_start(eg_guest *g, uint64_t rip, uint64_t rsp);

/* Next event (fails the test on a driver error). */
vmt_event eg_next(eg_guest *g);
void eg_respond(eg_guest *g, const vmt_event *ev, vmt_response r);

#endif
