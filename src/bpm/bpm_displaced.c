/*
 * bpm/bpm_displaced.c — which shadowed frames an instruction may store
 * into, when the manager has the driver run it on the guest's behalf in
 * view 0 (the displaced instruction of a hit, an instruction that read a
 * hidden page). In view 0 such a store lands in the original frame without
 * trapping, so the shadow (what the breakpoint view executes) would go
 * stale: the caller steps the instruction instead and rebuilds the shadow
 * before the vCPU runs on (bpm_event.c).
 *
 * Design: the instruction is decoded with Capstone from the guest's
 * unaltered bytes at rip; its stores are the memory operands Capstone marks
 * written (a REP string store covers rcx elements in the direction DF
 * says), plus the stack slot of push / pushf / call. Each page they touch is
 * translated under the event's root; a frame of the view with a shadow is
 * the answer. A store the decoder cannot bound (enter, 32-bit or unknown
 * address registers, a string store over more than 16 pages) answers "may
 * write any": the caller refreshes every shadow. Bytes that do not decode
 * store nothing (the CPU raises #UD).
 *
 * Cost: a hit's instruction is read from the frame the event names (no
 * walk); its decoding is cached per rip (256 slots, checked against the
 * bytes, so code that changes is decoded again); O(pages written)
 * translations. Those walks read the 8-byte entries straight from the
 * driver (direct_walk) instead of through the session's frame cache: the
 * session empties that cache at every event, so each walk would copy four
 * whole table frames to read four entries. The Capstone handle and the
 * cache are made on first use and kept by the manager.
 * Threading: the manager's (one thread).
 */
#include <stdio.h>
#include <stdlib.h>

#include "bpm/bpm_internal.h"

#define DISPLACED_MAX_PAGES 16

/* What an instruction stores, decoded once per instruction bytes: its
 * written memory operands (registers by Capstone id, evaluated per event),
 * and whether it pushes, repeats a string store over rcx elements, or
 * stores somewhere no operand bounds. */
enum { PLAN_STACK = 1, PLAN_UNBOUNDED = 2, PLAN_REP_STRING = 4 };
#define PLAN_MAX_MEM 4

typedef struct store_plan {
    uint8_t bytes[15];
    uint8_t len; /* instruction length; 0: empty slot */
    uint8_t flags;
    uint8_t nmem;
    struct {
        uint16_t base, index, seg, size;
        uint8_t scale;
        int64_t disp;
    } mem[PLAN_MAX_MEM];
} store_plan;


static bool decoder(vmt_bpm *b)
{
    if (b->cs_ready)
        return true;
    if (cs_open(CS_ARCH_X86, CS_MODE_64, &b->cs) != CS_ERR_OK)
        return false;
    if (cs_option(b->cs, CS_OPT_DETAIL, CS_OPT_ON) != CS_ERR_OK || !(b->cs_insn = cs_malloc(b->cs)) ||
        !(b->plans = calloc(BPM_PLAN_SLOTS, sizeof *b->plans))) {
        if (b->cs_insn)
            cs_free(b->cs_insn, 1);
        b->cs_insn = NULL;
        cs_close(&b->cs);
        return false;
    }
    b->cs_ready = true;
    return true;
}

void bpm_displaced_free(vmt_bpm *b)
{
    if (!b->cs_ready)
        return;
    cs_free(b->cs_insn, 1);
    b->cs_insn = NULL;
    cs_close(&b->cs);
    free(b->plans);
    b->plans = NULL;
    b->cs_ready = false;
}

const char *bpm_displaced_problem(const vmt_bpm *b)
{
    if (!b->cs_ready)
        return b->plans || b->cs_insn ? "decoder closed but its buffers are held" : NULL;
    if (!b->plans || !b->cs_insn)
        return "decoder open without its buffers";
    for (unsigned i = 0; i < BPM_PLAN_SLOTS; i++) {
        const store_plan *p = &b->plans[i];
        if (p->len > sizeof p->bytes || p->nmem > PLAN_MAX_MEM || (!p->len && (p->nmem || p->flags)))
            return "a decoded instruction in the cache is malformed";
    }
    return NULL;
}

/* A 64-bit address register's value (rip-relative: the next rip). */
static bool reg_value(const vmt_regs *r, unsigned reg, uint64_t next_rip, uint64_t *v)
{
    static const unsigned ids[16] = { X86_REG_RAX, X86_REG_RBX, X86_REG_RCX, X86_REG_RDX, X86_REG_RSI, X86_REG_RDI,
                                      X86_REG_RBP, X86_REG_RSP, X86_REG_R8,  X86_REG_R9,  X86_REG_R10, X86_REG_R11,
                                      X86_REG_R12, X86_REG_R13, X86_REG_R14, X86_REG_R15 };
    const uint64_t *g = &r->rax; /* vmt_regs: the 16 GPRs in this order */
    if (reg == X86_REG_INVALID) {
        *v = 0;
        return true;
    }
    if (reg == X86_REG_RIP) {
        *v = next_rip;
        return true;
    }
    for (unsigned i = 0; i < 16; i++)
        if (ids[i] == reg) {
            *v = g[i];
            return true;
        }
    return false;
}

typedef struct found {
    uint64_t fk;
    bool any, many;
} found;

static void note_frame(uint64_t fk, found *out)
{
    if (!out->any) {
        out->any = true;
        out->fk = fk;
    } else if (out->fk != fk) {
        out->many = true;
    }
}

static vmt_status entry_read(void *ctx, vmt_pa pa, void *buf, size_t len)
{
    return vmt_drv_read_phys(ctx, pa, buf, len);
}

/* va -> pa under root with the session's paging, each table entry read
 * from the driver (no frame copies). Errors as vmt_session_va_to_pa's
 * (VMT_E_NOT_PRESENT: not mapped), the reason in b->err. */
static vmt_status direct_walk(vmt_bpm *b, vmt_pa root, uint64_t va, vmt_pa *pa)
{
    vmt_phys_reader rd = { entry_read, b->d };
    vmt_walk w;
    char why[160];
    vmt_status st = vmt_paging_walk(&rd, vmt_session_paging(b->s), root, va, &w, why, sizeof why);
    if (st)
        return vmt_errbuf_set(&b->err, st, "bpm: translating 0x%llx, where a stepped instruction stores: %s",
                              (unsigned long long)va, why);
    *pa = w.pa;
    return VMT_OK;
}

/* Up to len instruction bytes at rip under root (fewer when the next page
 * is not mapped): *done of them. */
static vmt_status read_insn(vmt_bpm *b, vmt_pa root, uint64_t rip, uint8_t *buf, size_t len, size_t *done)
{
    *done = 0;
    while (*done < len) {
        uint64_t va = rip + *done;
        size_t chunk = VMT_PAGE_SIZE - (size_t)vmt_page_offset(va);
        if (chunk > len - *done)
            chunk = len - *done;
        vmt_pa pa;
        vmt_status st = direct_walk(b, root, va, &pa);
        if (st == VMT_E_NOT_PRESENT)
            return VMT_OK;
        if (!st && (st = vmt_drv_read_phys(b->d, pa, buf + *done, chunk)))
            vmt_errbuf_set(&b->err, st, "bpm: reading the instruction at rip 0x%llx: %s", (unsigned long long)rip,
                           vmt_driver_error(b->d));
        if (st)
            return st;
        *done += chunk;
    }
    return VMT_OK;
}

/* The shadowed frames of view under [lo, hi) (virtual, root). */
static vmt_status range_frames(vmt_bpm *b, vmt_view view, vmt_pa root, uint64_t lo, uint64_t hi, found *out)
{
    if (hi <= lo)
        return VMT_OK;
    uint64_t first = lo >> 12, last = (hi - 1) >> 12;
    if (last - first >= DISPLACED_MAX_PAGES) {
        out->many = out->any = true;
        return VMT_OK;
    }
    for (uint64_t p = first; p <= last; p++) {
        vmt_pa pa;
        vmt_status st = direct_walk(b, root, p << 12, &pa);
        if (st == VMT_E_NOT_PRESENT)
            continue; /* the store faults, nothing lands */
        if (st)
            return st;
        uint64_t fk = bpm_fkey(view, vmt_pa_to_gfn(pa));
        bpm_frame f;
        if (bpm_frame_get(b, fk, &f) && f.shadow)
            note_frame(fk, out);
    }
    return VMT_OK;
}

static bool is_string_store(unsigned id)
{
    switch (id) {
    case X86_INS_STOSB: case X86_INS_STOSW: case X86_INS_STOSD: case X86_INS_STOSQ:
    case X86_INS_MOVSB: case X86_INS_MOVSW: case X86_INS_MOVSD: case X86_INS_MOVSQ:
        return true;
    default:
        return false;
    }
}

static bool decode_plan(vmt_bpm *b, const uint8_t *bytes, size_t n, uint64_t rip, store_plan *p)
{
    const uint8_t *code = bytes;
    size_t left = n;
    uint64_t at = rip;
    if (!cs_disasm_iter(b->cs, &code, &left, &at, b->cs_insn))
        return false;
    const cs_insn *in = b->cs_insn;
    const cs_x86 *x = &in->detail->x86;
    memset(p, 0, sizeof *p);
    p->len = (uint8_t)in->size;
    memcpy(p->bytes, bytes, in->size);
    bool call = false;
    for (unsigned i = 0; i < in->detail->groups_count; i++)
        call |= in->detail->groups[i] == X86_GRP_CALL;
    if (call || in->id == X86_INS_PUSH || in->id == X86_INS_PUSHFQ || in->id == X86_INS_PUSHF)
        p->flags |= PLAN_STACK;
    if (in->id == X86_INS_ENTER)
        p->flags |= PLAN_UNBOUNDED;
    if (is_string_store(in->id) && x->prefix[0] != 0)
        p->flags |= PLAN_REP_STRING;
    for (unsigned i = 0; i < x->op_count; i++) {
        const cs_x86_op *op = &x->operands[i];
        if (op->type != X86_OP_MEM || !(op->access & CS_AC_WRITE))
            continue;
        if (p->nmem == PLAN_MAX_MEM) {
            p->flags |= PLAN_UNBOUNDED;
            break;
        }
        p->mem[p->nmem].base = (uint16_t)op->mem.base;
        p->mem[p->nmem].index = (uint16_t)op->mem.index;
        p->mem[p->nmem].seg = (uint16_t)op->mem.segment;
        p->mem[p->nmem].scale = (uint8_t)op->mem.scale;
        p->mem[p->nmem].disp = op->mem.disp;
        p->mem[p->nmem].size = op->size ? op->size : 512; /* fxsave and the like: their area */
        p->nmem++;
    }
    return true;
}

/* The plan for the bytes at rip: from the cache when the same instruction
 * was decoded there before, else decoded (and cached). NULL: no instruction. */
static const store_plan *plan_for(vmt_bpm *b, const uint8_t *bytes, size_t n, uint64_t rip)
{
    store_plan *slot = &b->plans[(rip ^ (rip >> 12)) & (BPM_PLAN_SLOTS - 1)];
    if (slot->len && slot->len <= n && memcmp(slot->bytes, bytes, slot->len) == 0)
        return slot;
    store_plan p;
    if (!decode_plan(b, bytes, n, rip, &p))
        return NULL;
    *slot = p;
    return slot;
}

vmt_status bpm_displaced_writes(vmt_bpm *b, const vmt_event *ev, vmt_view view, vmt_pa code_pa, bool *writes,
                                uint64_t *fk, bool *many)
{
    *writes = false;
    *fk = 0;
    *many = false;
    if (b->ctl != VMT_BPM_CTL_SHADOW || b->nsites == 0)
        return VMT_OK;
    const vmt_regs *r = &ev->regs;
    vmt_pa root = r->cr3 & VMT_CR3_ADDR_MASK;
    uint8_t bytes[16];
    size_t done = 0;
    vmt_status st;
    if (code_pa != VMT_PA_UNKNOWN && vmt_page_offset(code_pa) + 15 <= VMT_PAGE_SIZE) {
        /* the frame the event names: no walk */
        if ((st = vmt_drv_read_phys(b->d, code_pa, bytes, 15)))
            return vmt_errbuf_set(&b->err, st, "bpm: reading the instruction at pa 0x%llx: %s",
                                  (unsigned long long)code_pa, vmt_driver_error(b->d));
        done = 15;
    } else if ((st = read_insn(b, root, r->rip, bytes, 15, &done))) {
        return st;
    }
    if (!decoder(b))
        return vmt_errbuf_set(&b->err, VMT_E_NOMEM, "bpm: cannot open the instruction decoder");
    const store_plan *p = done ? plan_for(b, bytes, done, r->rip) : NULL;
    if (!p)
        return VMT_OK; /* unreadable or no instruction: it cannot run, so it stores nothing */
    found out = { 0, false, false };
    uint64_t next_rip = r->rip + p->len;
    if (p->flags & PLAN_UNBOUNDED)
        out.any = out.many = true;
    if ((p->flags & PLAN_STACK) && (st = range_frames(b, view, root, r->rsp - 8, r->rsp, &out)))
        return st;
    for (unsigned i = 0; i < p->nmem && !out.many; i++) {
        uint64_t base, index;
        if (!reg_value(r, p->mem[i].base, next_rip, &base) || !reg_value(r, p->mem[i].index, next_rip, &index)) {
            out.any = out.many = true;
            break;
        }
        uint64_t ea = base + index * (uint64_t)p->mem[i].scale + (uint64_t)p->mem[i].disp;
        if (p->mem[i].seg == X86_REG_FS)
            ea += r->fs_base;
        else if (p->mem[i].seg == X86_REG_GS)
            ea += r->gs_base;
        uint64_t size = p->mem[i].size;
        uint64_t lo = ea, hi = ea + size;
        if (p->flags & PLAN_REP_STRING) { /* rcx elements */
            uint64_t span = r->rcx * size;
            if (r->rcx > (64u << 10) || span > (64u << 10)) {
                out.any = out.many = true;
                break;
            }
            if (r->rflags & (1u << 10)) /* DF: downwards */
                lo = ea + size - span;
            else
                hi = ea + span;
        }
        if ((st = range_frames(b, view, root, lo, hi, &out)))
            return st;
    }
    *writes = out.any;
    *fk = out.any ? (out.fk ? out.fk : bpm_fkey(view, 0)) : 0;
    *many = out.many;
    return VMT_OK;
}
