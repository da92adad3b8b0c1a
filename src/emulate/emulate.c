/*
 * emulate/emulate.c — the reusable instruction emulator (vmtrap/emulate.h).
 *
 * Design: a private Unicorn instance (paging off, flat 64-bit) runs exactly
 * one instruction per uc_emu_start(count = 1) call, so the translated-code
 * mode never switches (Unicorn flushes all code when count changes). Before
 * each instruction a code hook decodes it with Capstone and stops in front
 * of instructions the engine does not perform (they need the host). Pages
 * are copied in on demand: the unmapped hook records the address and
 * returns false, which aborts the instruction cleanly (a no-op memory hook
 * keeps RIP precise); the page is fetched through mem->read and mapped
 * with the access kinds it allows, and the instruction is retried; an
 * access outside those kinds (a protection hook) is a FAULT. A MEM_WRITE
 * hook logs each store; the log is handed to mem->write once the
 * instruction has completed and dropped if it aborted (the aborted attempt
 * may have stored into the engine's private copy; the retry stores the
 * same bytes again). Map changes are what Unicorn is slow at (~15 us), so
 * the last EMUL_KEEP pages stay mapped between calls and are re-read
 * through mem->read (content, rights) at the start of the next call:
 * repeated emulation at one site costs no map change. Dropping translated
 * code is slow too (~30 us per uc_ctl_remove_cache), so each mapped page
 * has a host copy of what Unicorn holds: a re-read writes only the byte
 * range that differs, and drops translations only over that range and only
 * on pages code was translated from (code[]). Committed stores update the
 * copies; an aborted instruction's stores mark their pages unknown (fully
 * rewritten next time). A caller that shows two versions of one code page
 * alternately should use two engines (the KVM driver does).
 *
 * x87/MMX/SSE: the code hook also marks instructions that use vector state
 * (emulate_vector.c). Without the caller's state (vmt_emulate) they stop
 * the engine like special ones; with it (vmt_emulate_full) the state is
 * loaded into Unicorn once per call, read back after each completed
 * instruction that used it and loaded again after an aborted one.
 *
 * Instructions of the forms a breakpoint usually displaces (and the pop/ret
 * ending a short function) are performed without Unicorn (emulate_fast.c)
 * until one is not such a form or would fault; from there on Unicorn runs
 * them as described above.
 *
 * Invariants: between calls at most EMUL_KEEP regions are mapped, each
 * listed in pages[], and copy[i] equals Unicorn's page i unless unknown[i];
 * the store log is empty.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <capstone/capstone.h>
#include <unicorn/unicorn.h>

#include "core/errbuf.h"
#include "emulate_fast.h"
#include "emulate_vector.h"
#include "vmtrap/emulate.h"

#define EMUL_MAX_PAGES 64
#define EMUL_KEEP 4
#define EMUL_MAX_STORES 256
#define EMUL_UNTIL 0x8000000000000000ull

struct vmt_emulator {
    uc_engine *uc;
    csh cs;
    cs_insn *insn;                   /* Capstone's buffer, allocated once */
    vmt_errbuf err;
    uint64_t pages[EMUL_MAX_PAGES];
    uint32_t perms[EMUL_MAX_PAGES];
    uint8_t *copy[EMUL_MAX_PAGES];   /* what Unicorn's page holds (pool of buffers) */
    bool unknown[EMUL_MAX_PAGES];    /* an aborted instruction may have stored into it */
    bool code[EMUL_MAX_PAGES];       /* code was translated from it (it may hold translations) */
    uint8_t *copy_pool;
    unsigned npages;
    struct {
        uint64_t va;
        uint64_t value;
        uint8_t size;
    } stores[EMUL_MAX_STORES];
    unsigned nstores;
    bool store_overflow;
    bool fault;
    bool fault_prot;          /* an access outside the page's rights */
    uint64_t fault_va;
    vmt_access fault_kind;
    bool special;
    int intr;
    const vmt_fpu_state *fpu_in;     /* this call's x87/SSE state (vmt_emulate_full), NULL: vmt_emulate */
    bool vec_insn;                   /* the instruction being run uses x87/MMX/SSE state */
    emul_fast_cache fast;            /* decodings for the fast path (emulate_fast.c) */
    bool fast_on;                    /* vmt_emulator_use_fast_path */
};


static bool not_performed(const cs_insn *in)
{
    switch (in->id) {
    case X86_INS_INT3: case X86_INS_INT: case X86_INS_INTO: case X86_INS_INT1:
    case X86_INS_IN: case X86_INS_OUT: case X86_INS_INSB: case X86_INS_INSW: case X86_INS_INSD:
    case X86_INS_OUTSB: case X86_INS_OUTSW: case X86_INS_OUTSD:
    case X86_INS_HLT: case X86_INS_RDMSR: case X86_INS_WRMSR:
    case X86_INS_SYSCALL: case X86_INS_SYSRET: case X86_INS_SYSENTER: case X86_INS_SYSEXIT:
    case X86_INS_IRET: case X86_INS_IRETD: case X86_INS_IRETQ:
    case X86_INS_LGDT: case X86_INS_LIDT: case X86_INS_LLDT: case X86_INS_LTR:
    case X86_INS_INVLPG: case X86_INS_CLI: case X86_INS_STI: case X86_INS_SWAPGS:
        return true;
    default:
        break;
    }
    const cs_x86 *x = &in->detail->x86;
    for (unsigned i = 0; i < x->op_count; i++) {
        int r = x->operands[i].type == X86_OP_REG ? x->operands[i].reg : 0;
        if ((r >= X86_REG_CR0 && r <= X86_REG_CR15) || (r >= X86_REG_DR0 && r <= X86_REG_DR15))
            return true;
    }
    return false;
}

static int page_index(const vmt_emulator *em, uint64_t va);

static void hook_code(uc_engine *uc, uint64_t addr, uint32_t size, void *user)
{
    vmt_emulator *em = user;
    /* the translated block may go on past this instruction, into the next page */
    int here = page_index(em, addr), next = page_index(em, (addr & ~4095ull) + 4096);
    if (here >= 0)
        em->code[here] = true;
    if (next >= 0)
        em->code[next] = true;
    uint8_t bytes[16];
    if (size > sizeof bytes || uc_mem_read(uc, addr, bytes, size) != UC_ERR_OK)
        return;
    const uint8_t *code = bytes;
    size_t left = size;
    uint64_t at = addr;
    if (!cs_disasm_iter(em->cs, &code, &left, &at, em->insn))
        return;
    em->vec_insn = emul_uses_vector_state(em->insn);
    /* without the caller's x87/SSE state (vmt_emulate) such an instruction
     * would run on the engine's own registers: the caller performs it */
    if (not_performed(em->insn) || (em->vec_insn && !em->fpu_in)) {
        em->special = true;
        uc_emu_stop(uc);
    }
}

static bool hook_fault(uc_engine *uc, uc_mem_type type, uint64_t addr, int size, int64_t value, void *user)
{
    (void)uc, (void)size, (void)value;
    vmt_emulator *em = user;
    if (!em->fault) {
        em->fault = true;
        em->fault_va = addr;
        em->fault_prot = type == UC_MEM_READ_PROT || type == UC_MEM_WRITE_PROT || type == UC_MEM_FETCH_PROT;
        em->fault_kind = (type == UC_MEM_WRITE_PROT || type == UC_MEM_WRITE_UNMAPPED) ? VMT_ACCESS_W
                         : (type == UC_MEM_FETCH_PROT || type == UC_MEM_FETCH_UNMAPPED) ? VMT_ACCESS_X
                                                                                         : VMT_ACCESS_R;
    }
    return false;
}

static void hook_noop(uc_engine *uc, uc_mem_type type, uint64_t addr, int size, int64_t value, void *user)
{
    (void)uc, (void)type, (void)addr, (void)size, (void)value, (void)user;
}

static void hook_write(uc_engine *uc, uc_mem_type type, uint64_t addr, int size, int64_t value, void *user)
{
    (void)uc, (void)type;
    vmt_emulator *em = user;
    if (em->nstores == EMUL_MAX_STORES || size < 1 || size > 8) {
        em->store_overflow = true;
        return;
    }
    em->stores[em->nstores].va = addr;
    em->stores[em->nstores].value = (uint64_t)value;
    em->stores[em->nstores].size = (uint8_t)size;
    em->nstores++;
}

static void hook_intr(uc_engine *uc, uint32_t intno, void *user)
{
    vmt_emulator *em = user;
    if (em->intr < 0)
        em->intr = (int)intno;
    uc_emu_stop(uc);
}

vmt_status vmt_emulator_create(vmt_emulator **out, char *why, size_t why_len)
{
    *out = NULL;
    vmt_emulator *em = calloc(1, sizeof *em);
    if (!em) {
        vmt_why(why, why_len, "emulate: out of memory");
        return VMT_E_NOMEM;
    }
    uc_hook h;
    em->copy_pool = malloc((size_t)EMUL_MAX_PAGES * 4096);
    if (!em->copy_pool) {
        free(em);
        vmt_why(why, why_len, "emulate: out of memory");
        return VMT_E_NOMEM;
    }
    for (unsigned i = 0; i < EMUL_MAX_PAGES; i++)
        em->copy[i] = em->copy_pool + (size_t)i * 4096;
    if (uc_open(UC_ARCH_X86, UC_MODE_64, &em->uc) != UC_ERR_OK) {
        free(em->copy_pool);
        free(em);
        vmt_why(why, why_len, "emulate: uc_open failed");
        return VMT_E_DRIVER;
    }
    if (cs_open(CS_ARCH_X86, CS_MODE_64, &em->cs) != CS_ERR_OK ||
        cs_option(em->cs, CS_OPT_DETAIL, CS_OPT_ON) != CS_ERR_OK || !(em->insn = cs_malloc(em->cs)) ||
        uc_hook_add(em->uc, &h, UC_HOOK_CODE, (void *)hook_code, em, 1, 0) != UC_ERR_OK ||
        uc_hook_add(em->uc, &h, UC_HOOK_MEM_UNMAPPED | UC_HOOK_MEM_PROT, (void *)hook_fault, em, 1, 0) != UC_ERR_OK ||
        uc_hook_add(em->uc, &h, UC_HOOK_MEM_READ, (void *)hook_noop, em, 0xfffffffffffff000ull,
                    0xffffffffffffffffull) != UC_ERR_OK ||
        uc_hook_add(em->uc, &h, UC_HOOK_MEM_WRITE, (void *)hook_write, em, 1, 0) != UC_ERR_OK ||
        uc_hook_add(em->uc, &h, UC_HOOK_INTR, (void *)hook_intr, em, 1, 0) != UC_ERR_OK) {
        vmt_emulator_destroy(em);
        vmt_why(why, why_len, "emulate: cannot set up capstone / unicorn hooks");
        return VMT_E_DRIVER;
    }
    em->fast_on = true;
    *out = em;
    return VMT_OK;
}

void vmt_emulator_use_fast_path(vmt_emulator *em, bool on)
{
    if (em)
        em->fast_on = on;
}

static void unmap_at(vmt_emulator *em, unsigned i)
{
    if (em->code[i])
        uc_ctl_remove_cache(em->uc, em->pages[i], em->pages[i] + 4096); /* before the unmap */
    uc_mem_unmap(em->uc, em->pages[i], 4096);
    uint8_t *buf = em->copy[i];
    memmove(&em->pages[i], &em->pages[i + 1], (em->npages - i - 1) * sizeof em->pages[0]);
    memmove(&em->perms[i], &em->perms[i + 1], (em->npages - i - 1) * sizeof em->perms[0]);
    memmove(&em->copy[i], &em->copy[i + 1], (em->npages - i - 1) * sizeof em->copy[0]);
    memmove(&em->unknown[i], &em->unknown[i + 1], (em->npages - i - 1) * sizeof em->unknown[0]);
    memmove(&em->code[i], &em->code[i + 1], (em->npages - i - 1) * sizeof em->code[0]);
    em->npages--;
    em->copy[em->npages] = buf; /* back to the free end of the pool */
}

static void unmap_all(vmt_emulator *em)
{
    while (em->npages)
        unmap_at(em, em->npages - 1);
}

static uint32_t uc_perms(vmt_access a)
{
    return ((a & VMT_ACCESS_R) ? UC_PROT_READ : 0) | ((a & VMT_ACCESS_W) ? UC_PROT_WRITE : 0) |
           ((a & VMT_ACCESS_X) ? UC_PROT_EXEC : 0);
}

/* [*lo, *hi): the bytes where two pages differ, compared 64 bytes at a
 * time (memcmp) and narrowed bytewise inside the first and last block that
 * differ; empty when equal. */
static void changed_range(const uint8_t *a, const uint8_t *b, size_t *lo, size_t *hi)
{
    enum { BLK = 64 };
    size_t l = 0, h = 4096;
    while (l < h && memcmp(a + l, b + l, BLK) == 0)
        l += BLK;
    if (l == h) {
        *lo = *hi = 0;
        return;
    }
    while (memcmp(a + h - BLK, b + h - BLK, BLK) == 0)
        h -= BLK;
    while (a[l] == b[l])
        l++;
    while (a[h - 1] == b[h - 1])
        h--;
    *lo = l;
    *hi = h;
}

/* Re-read the pages kept from the last call: content and rights. Only the
 * bytes that changed are written into Unicorn and only the translated code
 * over them is dropped, so code that did not change is not translated again
 * (a translation costs far more than the instruction). */
static void refresh_kept(vmt_emulator *em, const vmt_emulate_mem *mem)
{
    uint8_t buf[4096];
    for (unsigned i = 0; i < em->npages;) {
        vmt_access allowed = VMT_ACCESS_RWX;
        if (mem->read(mem->ctx, em->pages[i], buf, sizeof buf, &allowed) != VMT_OK) {
            unmap_at(em, i);
            continue;
        }
        uint32_t p = uc_perms(allowed);
        size_t lo = 0, hi = sizeof buf;
        if (!em->unknown[i])
            changed_range(buf, em->copy[i], &lo, &hi);
        if (lo < hi) {
            if (em->code[i]) /* dropping translations is slow (~30 us): only where code ran */
                uc_ctl_remove_cache(em->uc, em->pages[i] + lo, em->pages[i] + hi);
            uc_mem_write(em->uc, em->pages[i] + lo, buf + lo, hi - lo);
            memcpy(em->copy[i] + lo, buf + lo, hi - lo);
        }
        em->unknown[i] = false;
        if (p != em->perms[i]) {
            uc_mem_protect(em->uc, em->pages[i], 4096, p);
            em->perms[i] = p;
        }
        i++;
    }
}

void vmt_emulator_destroy(vmt_emulator *em)
{
    if (!em)
        return;
    if (em->uc) {
        unmap_all(em);
        uc_close(em->uc);
    }
    if (em->insn)
        cs_free(em->insn, 1);
    if (em->cs)
        cs_close(&em->cs);
    free(em->copy_pool);
    free(em);
}

const char *vmt_emulator_error(const vmt_emulator *em) { return em ? em->err.msg : ""; }

vmt_status vmt_emulator_check(vmt_emulator *em)
{
    if (!em)
        return VMT_E_INVAL;
    if (em->npages > EMUL_KEEP || em->nstores)
        return vmt_errbuf_set(&em->err, VMT_E_INTERNAL, "emulate: %u pages mapped, %u stores pending between calls",
                              em->npages, em->nstores);
    const char *fast_problem = emul_fast_cache_problem(&em->fast);
    if (fast_problem)
        return vmt_errbuf_set(&em->err, VMT_E_INTERNAL, "emulate: %s", fast_problem);
    uint8_t buf[4096];
    for (unsigned i = 0; i < em->npages; i++) {
        if (em->pages[i] & 4095)
            return vmt_errbuf_set(&em->err, VMT_E_INTERNAL, "emulate: page 0x%" PRIx64 " not aligned", em->pages[i]);
        for (unsigned j = 0; j < i; j++)
            if (em->pages[j] == em->pages[i] || em->copy[j] == em->copy[i])
                return vmt_errbuf_set(&em->err, VMT_E_INTERNAL, "emulate: page 0x%" PRIx64 " listed twice",
                                      em->pages[i]);
        if (em->unknown[i])
            continue;
        if (uc_mem_read(em->uc, em->pages[i], buf, sizeof buf) != UC_ERR_OK)
            return vmt_errbuf_set(&em->err, VMT_E_INTERNAL, "emulate: page 0x%" PRIx64 " listed but not mapped",
                                  em->pages[i]);
        if (memcmp(buf, em->copy[i], sizeof buf) != 0)
            return vmt_errbuf_set(&em->err, VMT_E_INTERNAL, "emulate: copy of page 0x%" PRIx64 " differs from "
                                  "what the engine holds", em->pages[i]);
    }
    return VMT_OK;
}

/* The registers the engine uses, in one batch: the 16 GPRs (vmt_regs
 * order), rip, rflags, fs_base, gs_base. */
enum { NREGS = 20 };
static const int reg_ids[NREGS] = { UC_X86_REG_RAX, UC_X86_REG_RBX, UC_X86_REG_RCX, UC_X86_REG_RDX,
                                    UC_X86_REG_RSI, UC_X86_REG_RDI, UC_X86_REG_RBP, UC_X86_REG_RSP,
                                    UC_X86_REG_R8,  UC_X86_REG_R9,  UC_X86_REG_R10, UC_X86_REG_R11,
                                    UC_X86_REG_R12, UC_X86_REG_R13, UC_X86_REG_R14, UC_X86_REG_R15,
                                    UC_X86_REG_RIP, UC_X86_REG_RFLAGS, UC_X86_REG_FS_BASE, UC_X86_REG_GS_BASE };

static void load_regs(vmt_emulator *em, const vmt_regs *r)
{
    uint64_t v[NREGS];
    memcpy(v, &r->rax, 16 * sizeof v[0]);
    v[16] = r->rip;
    v[17] = r->rflags | 2;
    v[18] = r->fs_base;
    v[19] = r->gs_base;
    void *p[NREGS];
    for (int i = 0; i < NREGS; i++)
        p[i] = &v[i];
    uc_reg_write_batch(em->uc, (int *)reg_ids, p, NREGS);
}

static void save_regs(vmt_emulator *em, vmt_regs *r)
{
    uint64_t v[NREGS];
    void *p[NREGS];
    for (int i = 0; i < NREGS; i++)
        p[i] = &v[i];
    uc_reg_read_batch(em->uc, (int *)reg_ids, p, NREGS);
    memcpy(&r->rax, v, 16 * sizeof v[0]);
    r->rip = v[16];
    r->rflags = v[17];
    r->fs_base = v[18];
    r->gs_base = v[19];
}


static int page_index(const vmt_emulator *em, uint64_t va)
{
    for (unsigned i = 0; i < em->npages; i++)
        if (em->pages[i] == (va & ~4095ull))
            return (int)i;
    return -1;
}

/* The logged stores reached Unicorn's pages: keep the copies equal. */
static void copies_commit(vmt_emulator *em)
{
    for (unsigned s = 0; s < em->nstores; s++) {
        const uint8_t *b = (const uint8_t *)&em->stores[s].value;
        for (unsigned j = 0; j < em->stores[s].size; j++) {
            uint64_t va = em->stores[s].va + j;
            int i = page_index(em, va);
            if (i >= 0)
                em->copy[i][va & 4095] = b[j];
        }
    }
}

/* An aborted instruction may have stored into Unicorn's pages: those pages
 * are rewritten whole at the next refresh. */
static void copies_abort(vmt_emulator *em)
{
    for (unsigned s = 0; s < em->nstores; s++) {
        int i = page_index(em, em->stores[s].va), j = page_index(em, em->stores[s].va + em->stores[s].size - 1);
        if (i >= 0)
            em->unknown[i] = true;
        if (j >= 0)
            em->unknown[j] = true;
    }
    if (em->store_overflow)
        for (unsigned i = 0; i < em->npages; i++)
            em->unknown[i] = true;
}

static vmt_status map_page(vmt_emulator *em, const vmt_emulate_mem *mem, uint64_t va, vmt_access kind,
                           bool *faulted)
{
    uint64_t page = va & ~4095ull;
    *faulted = false;
    if (em->npages == EMUL_MAX_PAGES)
        return vmt_errbuf_set(&em->err, VMT_E_RANGE, "emulate: more than %d pages touched", EMUL_MAX_PAGES);
    uint8_t buf[4096];
    vmt_access allowed = VMT_ACCESS_RWX;
    if (mem->read(mem->ctx, page, buf, sizeof buf, &allowed) != VMT_OK || !(allowed & kind)) {
        *faulted = true;
        return VMT_OK;
    }
    uint32_t p = uc_perms(allowed);
    if (uc_mem_map(em->uc, page, 4096, p) != UC_ERR_OK)
        return vmt_errbuf_set(&em->err, VMT_E_DRIVER, "emulate: cannot map page 0x%" PRIx64, page);
    uc_mem_write(em->uc, page, buf, sizeof buf); /* host writes ignore protections */
    memcpy(em->copy[em->npages], buf, sizeof buf);
    em->unknown[em->npages] = false;
    em->code[em->npages] = false;
    em->pages[em->npages] = page;
    em->perms[em->npages++] = p;
    return VMT_OK;
}

static vmt_status emulate(vmt_emulator *em, vmt_regs *regs, vmt_fpu_state *fpu, const vmt_emulate_mem *mem,
                          uint64_t max_insns, vmt_emulate_result *res);

/* A store that crosses a page boundary reaches mem->write as two stores,
 * one per page: the two pages may be different frames. */
static vmt_status write_split(const vmt_emulate_mem *mem, uint64_t va, const void *buf, size_t len)
{
    size_t first = 4096 - (size_t)(va & 4095);
    if (len <= first)
        return mem->write(mem->ctx, va, buf, len);
    vmt_status st = mem->write(mem->ctx, va, buf, first);
    return st ? st : mem->write(mem->ctx, va + first, (const uint8_t *)buf + first, len - first);
}

vmt_status vmt_emulate(vmt_emulator *em, vmt_regs *regs, const vmt_emulate_mem *mem, uint64_t max_insns,
                       vmt_emulate_result *res)
{
    return emulate(em, regs, NULL, mem, max_insns, res);
}

vmt_status vmt_emulate_full(vmt_emulator *em, vmt_regs *regs, vmt_fpu_state *fpu, const vmt_emulate_mem *mem,
                            uint64_t max_insns, vmt_emulate_result *res)
{
    if (!fpu) {
        memset(res, 0, sizeof *res);
        return vmt_errbuf_set(&em->err, VMT_E_INVAL, "emulate: vmt_emulate_full needs the x87/SSE state");
    }
    return emulate(em, regs, fpu, mem, max_insns, res);
}

/* The caller's x87/SSE state: loaded into Unicorn once per call, read back
 * after each completed instruction that used it (cur_fpu) and loaded again
 * after an aborted one, so a faulting instruction changes none of it. */
static vmt_status emulate(vmt_emulator *em, vmt_regs *regs, vmt_fpu_state *fpu, const vmt_emulate_mem *mem,
                          uint64_t max_insns, vmt_emulate_result *res)
{
    memset(res, 0, sizeof *res);
    vmt_errbuf_clear(&em->err);
    if (!mem || !mem->read || !mem->write || max_insns < 1 || max_insns > 1000)
        return vmt_errbuf_set(&em->err, VMT_E_INVAL, "emulate: need read/write accessors and 1..1000 instructions");
    vmt_regs cur = *regs;
    vmt_status st = VMT_OK;
    /* displaced push/mov/nop, short functions' pop/ret: no Unicorn while
     * the instructions are fast forms (emulate_fast.c) */
    bool asked = false; /* stop_before already said no for cur.rip */
    while (em->fast_on && res->instructions < max_insns) {
        if (res->instructions > 0 && mem->stop_before) {
            if (mem->stop_before(mem->ctx, cur.rip)) {
                res->stop = VMT_EMULATE_STOP_REQUESTED;
                *regs = cur;
                return VMT_OK;
            }
            asked = true;
        }
        uint64_t fail_va = 0, written = 0;
        emul_fast_outcome fo = emul_fast_try(&em->fast, em->cs, em->insn, &cur, mem, &fail_va, &written);
        if (fo == EMUL_FAST_WRITE_FAILED)
            return vmt_errbuf_set(&em->err, VMT_E_IO, "emulate: writing at 0x%" PRIx64 " failed", fail_va);
        if (fo != EMUL_FAST_DONE)
            break;
        asked = false;
        res->instructions++;
        res->fast_instructions++;
        res->bytes_written += written;
    }
    if (res->instructions == max_insns) {
        res->stop = VMT_EMULATE_DONE;
        *regs = cur;
        return VMT_OK;
    }
    refresh_kept(em, mem);
    load_regs(em, &cur);
    em->fpu_in = fpu;
    vmt_fpu_state cur_fpu;
    if (fpu) {
        cur_fpu = *fpu;
        emul_fpu_load(em->uc, &cur_fpu);
    } else {
        memset(&cur_fpu, 0, sizeof cur_fpu);
    }
    unsigned retries = 0;
    while (res->instructions < max_insns) {
        if (res->instructions > 0 && mem->stop_before && !asked && mem->stop_before(mem->ctx, cur.rip)) {
            res->stop = VMT_EMULATE_STOP_REQUESTED;
            break;
        }
        em->nstores = 0;
        em->store_overflow = false;
        em->fault = false;
        em->special = false;
        em->vec_insn = false;
        em->intr = -1;
        uint64_t rip;
        uc_reg_read(em->uc, UC_X86_REG_RIP, &rip);
        uc_err err = uc_emu_start(em->uc, rip, EMUL_UNTIL, 0, 1);
        if (em->fault || em->special || em->intr >= 0 || err != UC_ERR_OK || em->store_overflow) {
            copies_abort(em);
            if (fpu && em->vec_insn)
                emul_fpu_load(em->uc, &cur_fpu); /* nothing of the aborted instruction stays */
        }
        if (em->fault) {
            bool faulted = em->fault_prot;
            load_regs(em, &cur); /* nothing of the aborted instruction stays */
            if (++retries > 8) {
                st = vmt_errbuf_set(&em->err, VMT_E_INTERNAL, "emulate: page 0x%" PRIx64 " keeps faulting", em->fault_va);
                break;
            }
            if (!faulted) {
                st = map_page(em, mem, em->fault_va, em->fault_kind, &faulted);
                if (st)
                    break;
            }
            if (faulted) {
                res->stop = VMT_EMULATE_FAULT;
                res->fault_va = em->fault_va;
                res->fault_access = em->fault_kind;
                break;
            }
            continue;
        }
        retries = 0;
        if (em->special) {
            res->stop = VMT_EMULATE_SPECIAL;
            break;
        }
        if (em->intr >= 0) {
            load_regs(em, &cur);
            res->stop = VMT_EMULATE_EXCEPTION;
            res->vector = (uint8_t)em->intr;
            break;
        }
        if (err != UC_ERR_OK) {
            load_regs(em, &cur);
            st = vmt_errbuf_set(&em->err, VMT_E_DRIVER, "emulate: unicorn failed at rip 0x%" PRIx64 ": %s", rip,
                                uc_strerror(err));
            break;
        }
        if (em->store_overflow) {
            load_regs(em, &cur);
            st = vmt_errbuf_set(&em->err, VMT_E_NOTSUP, "emulate: instruction at rip 0x%" PRIx64 " stores too much",
                                rip);
            break;
        }
        for (unsigned i = 0; i < em->nstores; i++) {
            if (write_split(mem, em->stores[i].va, &em->stores[i].value, em->stores[i].size) != VMT_OK) {
                st = vmt_errbuf_set(&em->err, VMT_E_IO, "emulate: writing %u bytes at 0x%" PRIx64 " failed",
                                    em->stores[i].size, em->stores[i].va);
                break;
            }
            res->bytes_written += em->stores[i].size;
        }
        copies_commit(em);
        if (st)
            break;
        save_regs(em, &cur);
        if (fpu && em->vec_insn)
            emul_fpu_save(em->uc, &cur_fpu);
        res->instructions++;
        asked = false;
    }
    em->fpu_in = NULL;
    while (em->npages > EMUL_KEEP)
        unmap_at(em, 0); /* keep the most recently mapped pages */
    if (st)
        unmap_all(em);
    em->nstores = 0;
    if (!st) {
        *regs = cur;
        if (fpu)
            *fpu = cur_fpu;
    }
    return st;
}
