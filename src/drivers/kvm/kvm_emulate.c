/*
 * drivers/kvm/kvm_emulate.c — instructions performed in the monitor with
 * the reusable engine (vmtrap/emulate.h), so that a hidden-breakpoint hit
 * costs one exit instead of an exit plus a single-step exit.
 *
 * Two uses:
 *   - EMULATE on an execution event (breakpoint, hardware breakpoint,
 *     single-step): the instruction at rip runs against emulate_view's
 *     mapping with every right the guest's own page tables give (what a
 *     one-instruction step through that view would do: on KVM, view 0
 *     allows everything), then the vCPU resumes with the new registers.
 *   - code the vCPU cannot fetch natively: a frame without a memslot (its
 *     view denies reads, e.g. a shadowed breakpoint page, execute-only)
 *     gives an internal-error exit on a fetch. The engine runs the code
 *     there in the current view, with that view's rights, up to RUN_AHEAD
 *     instructions and only while the code stays in such frames (the
 *     engine's accessor grants execute on no-slot frames only, and write
 *     only where the view allows it, so every access the view traps still
 *     leaves to the native path and raises its event). The same run-ahead
 *     follows an EMULATE whose next instruction is in such a frame.
 *
 * Whatever the engine refuses (privileged or I/O instructions, INT3, a
 * guest page fault, memory past RAM, CPL3 or non-64-bit code, TF set by the
 * guest, a hardware breakpoint armed) leaves the registers untouched and
 * the caller takes the step path. The engine's stores land only when an
 * instruction completes; the walk sets the guest's A/D bits as the CPU
 * would and written frames are logged dirty.
 *
 * Without the engine (no Unicorn at build time) both functions return
 * false and the driver steps as before.
 */
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "drivers/kvm/kvm_internal.h"

#include "vmtrap/paging.h"
#ifdef VMT_KVM_ENGINE
#include "vmtrap/emulate.h"
#endif

#define RUN_AHEAD 64
#define RFLAGS_TF (1ull << 8)

typedef struct eng_ctx {
    kvm_drv *k;
    const vmt_regs *regs; /* paging state: cr0, cr3, cr4, efer, cs */
    vmt_view view;        /* the mapping the instruction sees */
} eng_ctx;

static uint8_t *frame_ptr(kvm_drv *k, vmt_view v, uint64_t gfn)
{
    return k->direct + (kvm_backing(k, v, gfn) << VMT_PAGE_SHIFT);
}

/* The hardware walker reads the tables through the memslots: map_view. */
static vmt_status walk_read(void *ctx, vmt_pa pa, void *buf, size_t len)
{
    eng_ctx *c = ctx;
    uint64_t gfn = pa >> VMT_PAGE_SHIFT;
    if (gfn >= c->k->ram_frames || vmt_page_offset(pa) + len > VMT_PAGE_SIZE)
        return VMT_E_RANGE;
    memcpy(buf, frame_ptr(c->k, c->k->map_view, gfn) + vmt_page_offset(pa), len);
    return VMT_OK;
}

static vmt_status walk(eng_ctx *c, vmt_va va, vmt_walk *w)
{
    const vmt_regs *r = c->regs;
    vmt_paging_config pc = { (r->cr4 & VMT_CR4_LA57) ? 5 : 4, vmt_driver_caps(c->k->d)->maxphyaddr,
                             (r->efer & VMT_EFER_NXE) ? 1 : 0, 0 };
    vmt_phys_reader rd = { walk_read, c };
    return vmt_paging_walk(&rd, &pc, r->cr3 & VMT_CR3_ADDR_MASK, va & VMT_PAGE_MASK, w, NULL, 0);
}

/* Accessed (and, for a write, dirty) bits, as the CPU sets them. */
static void set_ad(eng_ctx *c, const vmt_walk *w, bool write)
{
    for (unsigned i = 0; i < w->nsteps; i++) {
        uint64_t bits = VMT_PTE_A | (write && i + 1 == w->nsteps ? VMT_PTE_D : 0);
        if ((w->steps[i].value & bits) == bits)
            continue;
        uint64_t v = w->steps[i].value | bits, gfn = w->steps[i].entry_pa >> VMT_PAGE_SHIFT;
        memcpy(frame_ptr(c->k, c->k->map_view, gfn) + vmt_page_offset(w->steps[i].entry_pa), &v, sizeof v);
        kvm_mark_dirty(c->k, gfn);
    }
}

/* What the instruction may do on the page of va (its frame in *gfn). */
static vmt_status rights(eng_ctx *c, vmt_va va, vmt_walk *w, uint64_t *gfn, vmt_access *out)
{
    vmt_status st = walk(c, va, w);
    if (st)
        return st;
    *gfn = w->pa >> VMT_PAGE_SHIFT;
    if (*gfn >= c->k->ram_frames)
        return VMT_E_RANGE; /* device memory: the native path handles it */
    vmt_access a = w->rights; /* CPL0 only (checked by the caller) */
    if (!(c->regs->cr0 & VMT_CR0_WP))
        a |= VMT_ACCESS_W;
    /* Data accesses only where the current view allows them natively (what
     * it traps leaves to the native path and raises its event); execute
     * anywhere (run-ahead stops by itself where native fetches work). The
     * rights are the same for EMULATE's view and the run-ahead, so the
     * engine's page protections do not change between the two (a
     * protection change costs Unicorn more than the instruction). */
    kvm_drv *k = c->k;
    vmt_access v = k->cur_view == VMT_VIEW_DEFAULT ? VMT_ACCESS_RWX : k->views[k->cur_view].access[*gfn];
    *out = a & ((v & VMT_ACCESS_RW) | VMT_ACCESS_X);
    return VMT_OK;
}

/* Is the code at rip in a frame the vCPU cannot fetch from natively? */
static bool rip_unfetchable(kvm_drv *k, const vmt_regs *r)
{
    vmt_regs paging = *r;
    eng_ctx c = { k, &paging, k->cur_view };
    vmt_walk w;
    if (walk(&c, r->rip, &w) != VMT_OK)
        return false;
    uint64_t gfn = w.pa >> VMT_PAGE_SHIFT;
    return gfn < k->ram_frames && k->state[gfn] == KVM_SLOT_NONE && !kvm_exec_mapped(k, gfn);
}

/* The registers the engine needs, without the debug-register and MSR reads. */
static vmt_status regs_for_engine(kvm_drv *k, vmt_regs *o)
{
    struct kvm_regs g;
    struct kvm_sregs s;
    if (k->regs_fresh) {
        g = k->run->s.regs.regs;
        s = k->run->s.regs.sregs;
    } else if (ioctl(k->vcpu_fd, KVM_GET_REGS, &g) < 0 || ioctl(k->vcpu_fd, KVM_GET_SREGS, &s) < 0) {
        return VMT_E_DRIVER;
    }
    memset(o, 0, sizeof *o);
    o->rax = g.rax; o->rbx = g.rbx; o->rcx = g.rcx; o->rdx = g.rdx;
    o->rsi = g.rsi; o->rdi = g.rdi; o->rbp = g.rbp; o->rsp = g.rsp;
    o->r8 = g.r8; o->r9 = g.r9; o->r10 = g.r10; o->r11 = g.r11;
    o->r12 = g.r12; o->r13 = g.r13; o->r14 = g.r14; o->r15 = g.r15;
    o->rip = g.rip;
    o->rflags = g.rflags;
    o->cr0 = s.cr0; o->cr3 = s.cr3; o->cr4 = s.cr4; o->efer = s.efer;
    o->fs_base = s.fs.base;
    o->gs_base = s.gs.base;
    o->cs = s.cs.selector;
    return VMT_OK;
}

/* A fetch that failed on an INT3 in a frame without a memslot (a shadow
 * page): KVM never sees the INT3, the driver reports it (rip on it). */
bool kvm_unfetchable_int3(kvm_drv *k, uint64_t *gpa)
{
    vmt_regs r;
    if (regs_for_engine(k, &r) != VMT_OK || !(r.cr0 & VMT_CR0_PG) || !rip_unfetchable(k, &r))
        return false;
    vmt_regs paging = r;
    eng_ctx c = { k, &paging, k->map_view };
    vmt_walk w;
    if (walk(&c, r.rip, &w) != VMT_OK)
        return false;
    *gpa = w.pa | vmt_page_offset(r.rip); /* w.pa: the page */
    return frame_ptr(k, k->map_view, w.pa >> VMT_PAGE_SHIFT)[vmt_page_offset(r.rip)] == 0xCC;
}

#ifdef VMT_KVM_ENGINE
static vmt_status eng_read(void *ctx, vmt_va va, void *buf, size_t len, vmt_access *allowed)
{
    eng_ctx *c = ctx;
    if (len > VMT_PAGE_SIZE || vmt_page_offset(va) + len > VMT_PAGE_SIZE)
        return VMT_E_INVAL;
    vmt_walk w;
    uint64_t gfn;
    vmt_status st = rights(c, va, &w, &gfn, allowed);
    if (st)
        return st;
    set_ad(c, &w, false);
    memcpy(buf, frame_ptr(c->k, c->view, gfn) + vmt_page_offset(va), len);
    return VMT_OK;
}

static vmt_status eng_write(void *ctx, vmt_va va, const void *buf, size_t len)
{
    eng_ctx *c = ctx;
    const uint8_t *in = buf;
    while (len) {
        vmt_walk w;
        uint64_t gfn;
        vmt_access a;
        vmt_status st = rights(c, va, &w, &gfn, &a);
        if (st)
            return st;
        if (!(a & VMT_ACCESS_W))
            return VMT_E_RANGE;
        set_ad(c, &w, true);
        size_t n = VMT_PAGE_SIZE - vmt_page_offset(va);
        if (n > len)
            n = len;
        memcpy(frame_ptr(c->k, c->view, gfn) + vmt_page_offset(va), in, n);
        kvm_mark_dirty(c->k, gfn);
        in += n;
        va += n;
        len -= n;
    }
    return VMT_OK;
}

static bool engine_ready(kvm_drv *k, const vmt_regs *r)
{
    if (k->no_engine)
        return false;
    for (int i = 0; i < 2; i++) {
        if (!k->engine[i] && vmt_emulator_create(&k->engine[i], NULL, 0) != VMT_OK) {
            k->no_engine = true; /* Unicorn cannot start here: always step */
            return false;
        }
    }
    /* 64-bit CPL0 code, no guest single-stepping, no hardware breakpoint
     * that an emulated instruction would slip past */
    return (r->efer & VMT_EFER_LMA) && (r->cr0 & VMT_CR0_PG) && (r->cs & 3) == 0 && !(r->rflags & RFLAGS_TF) &&
           !k->hwbp_on;
}

static bool stop_where_fetchable(void *ctx, vmt_va rip)
{
    eng_ctx *c = ctx;
    vmt_regs at = *c->regs;
    at.rip = rip;
    return !rip_unfetchable(c->k, &at);
}

/* Up to max instructions through view's mapping (run-ahead: only while the
 * code stays where the vCPU cannot fetch); the number completed (*r is the
 * state after them, their stores have landed). */
static uint64_t engine_run(kvm_drv *k, vmt_regs *r, vmt_view view, bool ahead, uint64_t max)
{
    vmt_regs paging = *r;
    eng_ctx c = { k, &paging, view };
    vmt_emulate_mem mem = { eng_read, eng_write, &c, ahead ? stop_where_fetchable : NULL };
    vmt_emulate_result res;
    vmt_regs out = *r;
    if (vmt_emulate(k->engine[view == k->cur_view], &out, &mem, max, &res) != VMT_OK || res.instructions == 0)
        return 0;
    *r = out;
    k->engine_insns += res.instructions;
    return res.instructions;
}

/* Go on in the current view while the code stays where the vCPU cannot
 * fetch (the engine asks before each instruction: stop_where_fetchable). */
static uint64_t run_ahead(kvm_drv *k, vmt_regs *r)
{
    return rip_unfetchable(k, r) ? engine_run(k, r, k->cur_view, true, RUN_AHEAD) : 0;
}

static vmt_status set_gprs(kvm_drv *k, const vmt_regs *o, const vmt_regs *before)
{
    if (o->fs_base != before->fs_base || o->gs_base != before->gs_base) {
        /* rare (wrfsbase and the like): go through the full register set */
        vmt_regs full;
        vmt_status st = kvm_get_regs(k, &full);
        if (st)
            return st;
        full.rax = o->rax; full.rbx = o->rbx; full.rcx = o->rcx; full.rdx = o->rdx;
        full.rsi = o->rsi; full.rdi = o->rdi; full.rbp = o->rbp; full.rsp = o->rsp;
        full.r8 = o->r8; full.r9 = o->r9; full.r10 = o->r10; full.r11 = o->r11;
        full.r12 = o->r12; full.r13 = o->r13; full.r14 = o->r14; full.r15 = o->r15;
        full.rip = o->rip; full.rflags = o->rflags;
        full.fs_base = o->fs_base; full.gs_base = o->gs_base;
        return kvm_set_regs(k, &full);
    }
    struct kvm_regs g = {
        .rax = o->rax, .rbx = o->rbx, .rcx = o->rcx, .rdx = o->rdx,
        .rsi = o->rsi, .rdi = o->rdi, .rbp = o->rbp, .rsp = o->rsp,
        .r8 = o->r8, .r9 = o->r9, .r10 = o->r10, .r11 = o->r11,
        .r12 = o->r12, .r13 = o->r13, .r14 = o->r14, .r15 = o->r15,
        .rip = o->rip, .rflags = o->rflags | 2,
    };
    if (k->sync_regs && k->regs_fresh) {
        /* KVM loads them on the next KVM_RUN (one ioctl less per hit); the
         * sync copy stays the current state for kvm_get_regs */
        k->run->s.regs.regs = g;
        k->run->kvm_dirty_regs |= KVM_SYNC_X86_REGS;
        return VMT_OK;
    }
    k->regs_fresh = false;
    if (ioctl(k->vcpu_fd, KVM_SET_REGS, &g) < 0)
        return vmt_driver_fail(k->d, VMT_E_DRIVER, "KVM_SET_REGS after emulation failed");
    return VMT_OK;
}

bool kvm_engine_emulate(kvm_drv *k, vmt_view v)
{
    vmt_regs r = k->ev.regs, before = r;
    if (!engine_ready(k, &r) || !engine_run(k, &r, v, false, 1))
        return false;
    run_ahead(k, &r);
    if (set_gprs(k, &r, &before) != VMT_OK) {
        /* nothing sensible to resume with: the next wait reports it */
        k->stopped = true;
        k->stop.reason = VMT_STOP_DRIVER_ERROR;
        snprintf(k->stop.message, sizeof k->stop.message, "%s", vmt_driver_error(k->d));
    }
    return true;
}

bool kvm_engine_run_unfetchable(kvm_drv *k)
{
    vmt_regs r;
    if (regs_for_engine(k, &r) != VMT_OK || !engine_ready(k, &r) || !rip_unfetchable(k, &r))
        return false;
    vmt_regs before = r;
    if (!run_ahead(k, &r))
        return false;
    return set_gprs(k, &r, &before) == VMT_OK;
}

vmt_status kvm_engine_check(kvm_drv *k)
{
    for (int i = 0; i < 2; i++)
        if (k->engine[i] && vmt_emulator_check(k->engine[i]) != VMT_OK)
            return vmt_driver_fail(k->d, VMT_E_INTERNAL, "engine %d: %s", i, vmt_emulator_error(k->engine[i]));
    return VMT_OK;
}

void kvm_engine_fini(kvm_drv *k)
{
    for (int i = 0; i < 2; i++) {
        vmt_emulator_destroy(k->engine[i]);
        k->engine[i] = NULL;
    }
}

#else

bool kvm_engine_emulate(kvm_drv *k, vmt_view v)
{
    (void)k;
    (void)v;
    return false;
}

bool kvm_engine_run_unfetchable(kvm_drv *k)
{
    (void)k;
    return false;
}

void kvm_engine_fini(kvm_drv *k) { (void)k; }

vmt_status kvm_engine_check(kvm_drv *k)
{
    (void)k;
    return VMT_OK;
}

#endif
