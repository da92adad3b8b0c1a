/*
 * drivers/emu/emu_pcid.c — process-context identifiers (PCID), INVPCID and
 * INVLPG: what the SDM (vol. 3, 4.10 "Caching translation information")
 * says they invalidate, applied to the driver's record of translations.
 *
 * Design: Unicorn 2.1.1's TCG filters PCID (CPUID.1:ECX[17]) and INVPCID
 * (CPUID.7.0:EBX[10]) out of every x86 model (measured: qemu64, Haswell,
 * Skylake, Cascadelake, Icelake, EPYC all report 0), and its paging is off
 * here anyway, so the driver performs both: vmt_emu_options.offer_pcid /
 * offer_invpcid add the bits to CPUID through a CPUID instruction hook
 * (leaves 1 and 7.0 are read once from a scratch engine of the same model,
 * at every creation: emu_cr4.c derives CR4's reserved bits from them;
 * OSXSAVE is recomputed from CR4 at each CPUID as the CPU does). The hook
 * always answers leaf 7.0 (without PKU/OSPKE: see emu_cr4.c).
 * Unicorn never sees CR4.PCIDE; the driver keeps the PCID in CR3[11:0].
 * Unicorn ends a run at INVPCID as an invalid instruction (its model never
 * has it, and the code hook sees a truncated size): the run loop hands it
 * to emu_do_invpcid, which raises #UD itself when INVPCID is not offered.
 *
 * The record (emu_mmu.c) tags every translation with the PCID it was walked
 * under and marks it global (leaf G with CR4.PGE). Invalidation follows the
 * SDM exactly:
 *   MOV to CR3, PCIDE=1: bit 63 set: nothing; clear: the new PCID's
 *     non-global translations. PCIDE=0: every non-global translation.
 *     Bit 63 is never stored; bits 62:MAXPHYADDR set (and bit 63 with
 *     PCIDE=0) raise #GP.
 *   MOV to CR4: any change flushes everything (PGE or PCIDE cleared must;
 *     the others are rare enough not to be worth telling apart); setting
 *     PCIDE raises #GP without CPUID.PCID or with CR3[11:0] != 0 (the CR4
 *     rules are in emu_cr4.c).
 *   INVLPG: the address in the current PCID and its global translation.
 *     Unicorn performs the instruction itself (its TLB drops the page, CPL
 *     checked natively); the code hook drops the record's side first.
 *   INVPCID type 0: (PCID, address) non-global; 1: the PCID's non-global;
 *     2: everything incl. global; 3: every non-global; #UD without
 *     CPUID.INVPCID or with a register operand, #GP(0) at CPL > 0, type >
 *     3, descriptor bits 63:12 set, PCID != 0 with PCIDE=0 (types 0/1), a
 *     non-canonical address (type 0) or descriptor; #PF reading it.
 * Because the driver also drops every translation whose walk read a
 * page-table entry the guest (or the host) writes, the record never holds a
 * translation the tables no longer give (more than the hardware does: a
 * guest that forgets an invalidation still sees its new mapping). So the
 * fill may answer from the record without walking (emu_mmu.c reusable()):
 * a non-global translation of the current PCID walked from the current CR3
 * root, or a global one (any PCID, any root, as the SDM allows: 4.10.2.4).
 * Unicorn's TLB is keyed by VA only, so it is flushed at every CR3 change
 * (cheap; translated code survives) and refilled from the record: a switch
 * back to a PCID with bit 63 set costs no guest walk.
 *
 * Invariants: emu_tlb_check_tags (below) with emu_mmu_check. Threading:
 * the driver's (one thread). Failure atomicity: every #GP/#UD/#PF is
 * decided before any state changes.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "drivers/emu/emu_priv.h"

#define CPUID1_ECX_PCID (1u << 17)
#define CPUID1_ECX_XSAVE (1u << 26)
#define CPUID1_ECX_OSXSAVE (1u << 27)
#define CPUID7_EBX_INVPCID (1u << 10)
#define CPUID7_ECX_PKU (1u << 3)
#define CPUID7_ECX_OSPKE (1u << 4)
#define CR4_OSXSAVE (1ull << 18)

/* Leaves 1 and 7.0 as Unicorn's model reports them (a scratch engine). */
vmt_status emu_probe_cpuid(int model, uint32_t leaf1[4], uint32_t leaf7[4], uint32_t *max_leaf)
{
    static const uint8_t code[] = {
        0x31, 0xc0, 0x31, 0xc9, 0x0f, 0xa2, 0x41, 0x89, 0xc0,             /* leaf 0: r8d = max */
        0xb8, 1, 0, 0, 0, 0x31, 0xc9, 0x0f, 0xa2,                         /* leaf 1 */
        0x41, 0x89, 0xc1, 0x41, 0x89, 0xda, 0x41, 0x89, 0xcb, 0x41, 0x89, 0xd4, /* r9-r12 */
        0xb8, 7, 0, 0, 0, 0x31, 0xc9, 0x0f, 0xa2,                         /* leaf 7.0: eax..edx */
    };
    uc_engine *uc = NULL;
    if (uc_open(UC_ARCH_X86, UC_MODE_64, &uc) != UC_ERR_OK)
        return VMT_E_DRIVER;
    vmt_status st = VMT_E_DRIVER;
    if (uc_ctl_set_cpu_model(uc, model) == UC_ERR_OK && uc_mem_map(uc, 0x1000, 0x1000, UC_PROT_ALL) == UC_ERR_OK &&
        uc_mem_write(uc, 0x1000, code, sizeof code) == UC_ERR_OK &&
        uc_emu_start(uc, 0x1000, 0x1000 + sizeof code, 0, 0) == UC_ERR_OK) {
        static const int ids[9] = { UC_X86_REG_R8,  UC_X86_REG_R9,  UC_X86_REG_R10, UC_X86_REG_R11, UC_X86_REG_R12,
                                    UC_X86_REG_RAX, UC_X86_REG_RBX, UC_X86_REG_RCX, UC_X86_REG_RDX };
        uint64_t v[9] = { 0 };
        for (int i = 0; i < 9; i++)
            uc_reg_read(uc, ids[i], &v[i]);
        *max_leaf = (uint32_t)v[0];
        for (int i = 0; i < 4; i++) {
            leaf1[i] = (uint32_t)v[1 + i];
            leaf7[i] = (uint32_t)v[5 + i];
        }
        st = VMT_OK;
    }
    uc_close(uc);
    return st;
}

/* CPUID: leaves 1 and 7.0 as the driver presents them (PCID / INVPCID
 * added when offered, PKU taken away: the driver's walk has no protection
 * keys, so CR4.PKE is reserved, see emu_cr4.c); the rest is Unicorn's. */
static int hook_cpuid(uc_engine *uc, void *user)
{
    (void)uc;
    emu *e = user;
    uint32_t leaf = (uint32_t)emu_rd(e, UC_X86_REG_RAX), sub = (uint32_t)emu_rd(e, UC_X86_REG_RCX);
    uint32_t r[4];
    if (leaf == 1 && e->offer_pcid) {
        memcpy(r, e->cpuid1, sizeof r);
        r[2] &= ~CPUID1_ECX_OSXSAVE;
        if ((r[2] & CPUID1_ECX_XSAVE) && (emu_rd(e, UC_X86_REG_CR4) & CR4_OSXSAVE))
            r[2] |= CPUID1_ECX_OSXSAVE;
    } else if (leaf == 7 && sub == 0 && e->cpuid_max >= 7) {
        memcpy(r, e->cpuid7, sizeof r); /* PKU and OSPKE already cleared */
    } else {
        return 0; /* Unicorn answers */
    }
    emu_wr(e, UC_X86_REG_RAX, r[0]);
    emu_wr(e, UC_X86_REG_RBX, r[1]);
    emu_wr(e, UC_X86_REG_RCX, r[2]);
    emu_wr(e, UC_X86_REG_RDX, r[3]);
    return 1; /* answered: Unicorn skips its own CPUID */
}

vmt_status emu_pcid_init(emu *e, const vmt_emu_options *opt, char *why, size_t why_len)
{
    e->offer_pcid = opt && opt->offer_pcid;
    e->offer_invpcid = opt && opt->offer_invpcid;
    int model = opt && opt->set_cpu_model ? opt->cpu_model : UC_CPU_X86_QEMU64;
    e->cpu_model = model;
    uint32_t max_leaf = 0;
    if (emu_probe_cpuid(model, e->cpuid1, e->cpuid7, &max_leaf) != VMT_OK) {
        snprintf(why, why_len, "cannot read CPUID of unicorn's model %d", model);
        return VMT_E_DRIVER;
    }
    if (max_leaf < 7)
        memset(e->cpuid7, 0, sizeof e->cpuid7); /* the model has no leaf 7: nothing from it */
    e->cpuid_max = max_leaf;
    if (e->offer_invpcid && max_leaf < 7) {
        snprintf(why, why_len, "INVPCID needs CPUID leaf 7, the model's last leaf is %u", max_leaf);
        return VMT_E_NOTSUP;
    }
    if (e->offer_pcid)
        e->cpuid1[2] |= CPUID1_ECX_PCID;
    if (e->offer_invpcid)
        e->cpuid7[1] |= CPUID7_EBX_INVPCID;
    e->cpuid7[2] &= ~(CPUID7_ECX_PKU | CPUID7_ECX_OSPKE);
    emu_cr4_init(e);
    if (e->nhooks == sizeof e->hooks / sizeof e->hooks[0] ||
        uc_hook_add(e->uc, &e->hooks[e->nhooks], UC_HOOK_INSN, (void *)hook_cpuid, e, 1, 0, UC_X86_INS_CPUID) !=
            UC_ERR_OK) {
        snprintf(why, why_len, "cannot install the CPUID hook");
        return VMT_E_DRIVER;
    }
    e->nhooks++;
    return VMT_OK;
}

static uint32_t slot_of(const emu *e, uint64_t key)
{
    const uint32_t *s = vmt_hmap_get(&e->tlb_index, &key);
    return s ? *s : EMU_NO_SLOT;
}

uint32_t emu_tlb_invalidate(emu *e, emu_inval what, uint16_t pcid, uint64_t va_page, bool flush_unicorn)
{
    uint32_t dropped = 0;
    if (what == EMU_INVAL_ADDR || what == EMU_INVAL_ADDR_GLOBAL) {
        uint64_t keys[2] = { emu_tlb_key(va_page, false, pcid), emu_tlb_key(va_page, true, 0) };
        for (unsigned i = 0; i < (what == EMU_INVAL_ADDR ? 1u : 2u); i++) {
            uint32_t s = slot_of(e, keys[i]);
            if (s != EMU_NO_SLOT) {
                emu_tlb_drop_slot(e, s);
                dropped++;
            }
        }
        if (e->code_va == va_page)
            emu_code_cache_reset(e);
    } else {
        for (uint32_t i = e->tlb_used; i-- > 0;) {
            const emu_tlb_entry *t = &e->tlb[i];
            if (!t->global && (what == EMU_INVAL_NON_GLOBAL || t->pcid == pcid)) {
                emu_tlb_drop_slot(e, i);
                dropped++;
            }
        }
        if (dropped)
            emu_code_cache_reset(e);
    }
    if (dropped && flush_unicorn)
        e->uc_flush_pending = true;
    return dropped;
}

void emu_tlb_cr3_switched(emu *e)
{
    e->uc_flush_pending = true;
    emu_code_cache_reset(e);
}

bool emu_cr3_write(emu *e, uint64_t v, uint64_t *stored)
{
    bool pcide = (e->cr4 & EMU_CR4_PCIDE) != 0;
    bool noflush = pcide && (v & EMU_CR3_NOFLUSH);
    if (pcide)
        v &= ~EMU_CR3_NOFLUSH;
    if (v & ~((1ull << e->maxphyaddr) - 1))
        return false;
    uint64_t old = e->cr3;
    e->cr3 = v;
    *stored = v;
    e->tstats.cr3_writes++;
    e->tstats.cr3_noflush += noflush;
    if (!noflush) {
        (void)emu_tlb_invalidate(e, pcide ? EMU_INVAL_PCID : EMU_INVAL_NON_GLOBAL, emu_pcid(e), 0, true);
    }
    if (old != v)
        emu_tlb_cr3_switched(e);
    return true;
}

/* The effective (linear) address of a memory operand; false when it uses
 * an addressing form this driver does not compute (32-bit registers). */
static bool operand_address(emu *e, const cs_insn *in, const cs_x86_op *op, uint64_t *ea)
{
    uint64_t a = (uint64_t)op->mem.disp;
    if (op->mem.base == X86_REG_RIP) {
        a += in->address + in->size;
    } else if (op->mem.base != X86_REG_INVALID) {
        int r = emu_uc_gpr(op->mem.base);
        if (r < 0)
            return false;
        a += emu_rd(e, r);
    }
    if (op->mem.index != X86_REG_INVALID) {
        int r = emu_uc_gpr(op->mem.index);
        if (r < 0)
            return false;
        a += emu_rd(e, r) * (uint64_t)op->mem.scale;
    }
    if (op->mem.segment == X86_REG_FS)
        a += emu_rd(e, UC_X86_REG_FS_BASE);
    else if (op->mem.segment == X86_REG_GS)
        a += emu_rd(e, UC_X86_REG_GS_BASE);
    *ea = a;
    return true;
}

void emu_invlpg_seen(emu *e, uint64_t rip, const uint8_t *p, uint32_t size)
{
    cs_insn *in = NULL;
    uint64_t ea = 0;
    if (cs_disasm(e->cs, p, size, rip, 1, &in) != 1)
        return;
    const cs_x86 *x = &in->detail->x86;
    bool ok = in->id == X86_INS_INVLPG && x->op_count == 1 && x->operands[0].type == X86_OP_MEM &&
              operand_address(e, in, &x->operands[0], &ea);
    cs_free(in, 1);
    if (!ok) {
        emu_tlb_flush(e); /* an address form not computed here: drop everything */
        e->flush_asap = true;
        return;
    }
    e->tstats.invlpg++;
    if (vmt_va_is_canonical(ea, (e->cr4 & VMT_CR4_LA57) ? 5 : 4))
        (void)emu_tlb_invalidate(e, EMU_INVAL_ADDR_GLOBAL, emu_pcid(e), ea & ~(uint64_t)(EMU_PAGE - 1), false);
}

bool emu_insn_is_invpcid(emu *e, uint64_t rip)
{
    uint8_t b[15];
    size_t got = 0;
    while (got < sizeof b && emu_va_read(e, rip + got, b + got, 1) == VMT_OK)
        got++;
    cs_insn *in = NULL;
    if (!got || cs_disasm(e->cs, b, got, rip, 1, &in) != 1)
        return false;
    bool is = in->id == X86_INS_INVPCID;
    cs_free(in, 1);
    return is;
}

static emu_insn_result fault(emu *e, uint8_t vector, bool has_err, uint32_t err, uint64_t rip)
{
    return emu_deliver_exception(e, vector, has_err, err, rip) ? EMU_IR_DONE : EMU_IR_STOP;
}

emu_insn_result emu_do_invpcid(emu *e, cs_insn *in)
{
    uint64_t rip = in->address;
    const cs_x86 *x = &in->detail->x86;
    if (!e->offer_invpcid || x->op_count != 2 || x->operands[0].type != X86_OP_REG ||
        x->operands[1].type != X86_OP_MEM)
        return fault(e, 6, false, 0, rip);
    if (e->sel[0] & 3)
        return fault(e, 13, true, 0, rip);
    int treg = emu_uc_gpr(x->operands[0].reg);
    uint64_t ea = 0;
    if (treg < 0 || !operand_address(e, in, &x->operands[1], &ea)) {
        e->stop.reason = VMT_STOP_GUEST_ERROR;
        snprintf(e->stop.message, sizeof e->stop.message, "invpcid at rip 0x%" PRIx64 ": operand form not supported (%.80s)",
                 rip, in->op_str);
        return EMU_IR_STOP;
    }
    uint64_t type = emu_rd(e, treg);
    unsigned levels = (e->cr4 & VMT_CR4_LA57) ? 5 : 4;
    if (type > 3 || !vmt_va_is_canonical(ea, levels) || !vmt_va_is_canonical(ea + 15, levels))
        return fault(e, 13, true, 0, rip);
    uint64_t desc[2];
    for (unsigned i = 0; i < 16; i++) {
        vmt_status st = emu_va_read_data(e, ea + i, (uint8_t *)desc + i, 1, emu_smap_explicit(e, 0));
        if (st == VMT_E_NOT_PRESENT || st == VMT_E_FORMAT || st == VMT_E_INVAL || st == VMT_E_CONFLICT) {
            e->cr2 = ea + i;
            e->tstats.pf_injected++;
            return fault(e, 14, true, st == VMT_E_NOT_PRESENT ? 0u : st == VMT_E_CONFLICT ? 1u : 9u, rip);
        }
        if (st) {
            e->stop.reason = VMT_STOP_GUEST_ERROR;
            snprintf(e->stop.message, sizeof e->stop.message,
                     "invpcid at rip 0x%" PRIx64 ": descriptor at 0x%" PRIx64 " is not in RAM", rip, ea);
            return EMU_IR_STOP;
        }
    }
    uint16_t pcid = (uint16_t)(desc[0] & 0xfff);
    bool pcide = (e->cr4 & EMU_CR4_PCIDE) != 0;
    if ((desc[0] >> 12) || (type <= 1 && !pcide && pcid) || (type == 0 && !vmt_va_is_canonical(desc[1], levels)))
        return fault(e, 13, true, 0, rip);
    bool current = pcid == emu_pcid(e); /* Unicorn's TLB holds the current PCID's only */
    switch (type) {
    case 0:
        (void)emu_tlb_invalidate(e, EMU_INVAL_ADDR, pcid, desc[1] & ~(uint64_t)(EMU_PAGE - 1), current);
        break;
    case 1:
        (void)emu_tlb_invalidate(e, EMU_INVAL_PCID, pcid, 0, current);
        break;
    case 2:
        emu_tlb_flush(e);
        break;
    default:
        (void)emu_tlb_invalidate(e, EMU_INVAL_NON_GLOBAL, 0, 0, true);
        break;
    }
    e->tstats.invpcid++;
    emu_set_rip(e, rip + in->size);
    e->icount++;
    return EMU_IR_DONE;
}

/* The leaf's guest frame for va as entry value `v` at table index k of t. */
static vmt_gfn leaf_gfn(const emu_tlb_entry *t, unsigned levels, uint64_t v)
{
    unsigned leaf_level = levels - (t->ntables - 1u); /* 1 = PT, 2 = PD, 3 = PDPT */
    uint64_t size = 1ull << (12 + 9 * (leaf_level - 1));
    return (((v & VMT_PTE_ADDR_MASK) & ~(size - 1)) | (t->va & (size - 1) & ~0xfffull)) >> 12;
}

vmt_status emu_tlb_check_tags(const emu *e, char *why, size_t why_len)
{
    unsigned levels = (e->cr4 & VMT_CR4_LA57) ? 5 : 4;
    for (uint32_t i = 0; i < e->tlb_used; i++) {
        const emu_tlb_entry *t = &e->tlb[i];
        if (t->pcid > 0xfff || (!t->global && !(e->cr4 & EMU_CR4_PCIDE) && t->pcid)) {
            snprintf(why, why_len, "tlb va 0x%" PRIx64 " has PCID %u (CR4.PCIDE %d)", t->va, t->pcid,
                     (e->cr4 & EMU_CR4_PCIDE) != 0);
            return VMT_E_INTERNAL;
        }
        if (t->global && !(e->cr4 & EMU_CR4_PGE)) {
            snprintf(why, why_len, "tlb va 0x%" PRIx64 " is global with CR4.PGE clear", t->va);
            return VMT_E_INTERNAL;
        }
        if (!t->ntables || t->ntables > levels) {
            snprintf(why, why_len, "tlb va 0x%" PRIx64 " walked %u tables", t->va, t->ntables);
            return VMT_E_INTERNAL;
        }
        /* coherent with the tables: the walk would read the same path */
        for (unsigned k = 0; k < t->ntables; k++) {
            uint64_t v;
            memcpy(&v, emu_frame_ptr(e, t->tables[k]) + t->entry_off[k], 8);
            bool leaf = k + 1 == t->ntables;
            vmt_gfn next = leaf ? leaf_gfn(t, levels, v) : (v & VMT_PTE_ADDR_MASK) >> 12;
            bool bad = !(v & VMT_PTE_P) || !(v & VMT_PTE_A) || next != (leaf ? t->gfn : t->table_gfns[k + 1]);
            if (leaf)
                bad = bad || (t->dirty && !(v & VMT_PTE_D)) ||
                      t->global != ((e->cr4 & EMU_CR4_PGE) && (v & VMT_PTE_G));
            if (bad) {
                snprintf(why, why_len,
                         "tlb va 0x%" PRIx64 " (PCID %u%s) is stale: level-%u entry 0x%" PRIx64 " in frame 0x%" PRIx64
                         " no longer gives it",
                         t->va, t->pcid, t->global ? ", global" : "", levels - k, v, t->tables[k]);
                return VMT_E_INTERNAL;
            }
        }
    }
    return VMT_OK;
}
