/*
 * guests/workload/mm.c — the workload's memory manager: it does to the
 * service pages what an OS does to pageable kernel or user code, and reports
 * every step (STEP ucall: va, old frame, new frame, all as physical
 * addresses) so a host can compare what a monitor saw with what happened.
 *
 * State: each service page has a home frame (its load address), a current
 * frame, a swap frame (its content while paged out) and a present flag. The
 * 2 MiB region holding the service pages is mapped either by a page table
 * (4 KiB mode) or by one 2 MiB leaf (2 MiB mode, only when every page is
 * present at home). Operations:
 *   pageout    copy to swap, clear P, invlpg, scrub the frame
 *   pagein     new frame (never the previous one), copy from swap, set P
 *              (explicitly, or from the #PF handler when a paged-out service
 *              is called: demand paging)
 *   move       new frame, copy, repoint the PTE, scrub the old frame
 *   replace-pt new page table with the same entries, repoint the PDE
 *   merge-2m   every page home, PDE becomes a 2 MiB leaf, PT freed
 *   split-2m   new PT of 512 4 KiB entries for the same frames
 * The data page holding the strings the workload passes to services
 * (workload_user_page) is paged out the same way and reported as
 * pageout-data / pagein-data (it is outside the 2 MiB region).
 * PTEs are written by a plain store, as two 4-byte halves (high half first
 * when making present, low first when clearing, like a PAE OS) or with
 * `lock cmpxchg`; one cmpxchg per round fails on purpose (stale expected
 * value) and must leave the entry unchanged. Every entry written carries A
 * (and D for leaves). TLB: invlpg per page, CR3 reload for PD-level changes.
 */
#include "guest/guest.h"
#include "guest/paging.h"
#include "guest/ucall.h"
#include "guest/x86.h"
#include "workload.h"

enum pte_method { WRITE_STORE, WRITE_HALVES, WRITE_CMPXCHG };
static const char *const method_names[] = { "store", "halves", "cmpxchg" };

struct svc_page {
    uint64_t va, home, frame, swap, prev_frame;
    int present;
};

/* pages[0..SVC_COUNT-1]: the service pages (in the 2 MiB region);
 * pages[USER_PAGE]: the data page holding strings passed to the services. */
#define USER_PAGE SVC_COUNT
static struct svc_page pages[SVC_COUNT + 1];
static uint64_t region_va, region_pa;
static int region_2m;
static uint64_t n_pageout, n_pagein, n_faults, n_moves, n_replace, n_merge, n_split, n_cmpxchg_fail;
static uint64_t n_steps, n_data_pageout, n_data_pagein;

static void step(const char *name, const char *text, uint64_t va, uint64_t old, uint64_t new_)
{
    n_steps++;
    ucall_step(name, text, 3, va, old, new_);
}

static volatile uint64_t *region_pde(void)
{
    volatile uint64_t *e = pt_entry(kpt_root(), region_va, 2, 0);
    GUEST_ASSERT(e != 0);
    return e;
}

static int in_region(const struct svc_page *p)
{
    return p != &pages[USER_PAGE];
}

static volatile uint64_t *page_pte(const struct svc_page *p)
{
    GUEST_ASSERT(!region_2m || !in_region(p));
    volatile uint64_t *e = pt_entry(kpt_root(), p->va, 1, 0);
    GUEST_ASSERT(e != 0);
    return e;
}

static void pte_write(volatile uint64_t *e, uint64_t v, enum pte_method m)
{
    volatile uint32_t *half = (volatile uint32_t *)e;
    switch (m) {
    case WRITE_STORE:
        *e = v;
        break;
    case WRITE_HALVES:
        if (v & PTE_P) {
            half[1] = (uint32_t)(v >> 32);
            half[0] = (uint32_t)v;
        } else {
            half[0] = (uint32_t)v;
            half[1] = (uint32_t)(v >> 32);
        }
        break;
    case WRITE_CMPXCHG: {
        uint64_t old = *e;
        uint64_t seen = cmpxchg64(e, old, v);
        GUEST_ASSERT_EQ(seen, old);
        break;
    }
    }
    GUEST_ASSERT_EQ(*e, v);
}

/* A cmpxchg that must fail: expected value is stale. */
static void pte_cmpxchg_fail(volatile uint64_t *e, uint64_t va)
{
    uint64_t cur = *e;
    uint64_t stale = cur ^ PTE_D;
    uint64_t seen = cmpxchg64(e, stale, cur & ~PTE_P);
    GUEST_ASSERT_EQ(seen, cur);
    GUEST_ASSERT_EQ(*e, cur);
    n_cmpxchg_fail++;
    step("cmpxchg-fail", "lock cmpxchg with a stale expected value: entry unchanged", va, cur & PTE_ADDR,
         cur & PTE_ADDR);
}

static uint64_t alloc_frame_not(uint64_t avoid)
{
    uint64_t f = pmm_alloc();
    if (f == avoid) {
        uint64_t g = pmm_alloc();
        pmm_free(f);
        f = g;
    }
    return f;
}

/* Scrub a frame we no longer use; free it unless it is a home frame. */
static void release_frame(const struct svc_page *p, uint64_t frame)
{
    memset(phys_ptr(frame), 0, PAGE_SIZE);
    if (frame != p->home)
        pmm_free(frame);
}

static void page_out(unsigned i, enum pte_method m)
{
    struct svc_page *p = &pages[i];
    if ((region_2m && in_region(p)) || !p->present)
        return;
    volatile uint64_t *e = page_pte(p);
    memcpy(phys_ptr(p->swap), phys_ptr(p->frame), PAGE_SIZE);
    pte_write(e, (*e & ~PTE_P), m);
    invlpg(p->va);
    release_frame(p, p->frame);
    p->prev_frame = p->frame;
    p->present = 0;
    if (in_region(p)) {
        n_pageout++;
        step("pageout", method_names[m], p->va, p->frame, 0);
    } else {
        n_data_pageout++;
        step("pageout-data", method_names[m], p->va, p->frame, 0);
    }
}

static void page_in(unsigned i, enum pte_method m, const char *why)
{
    struct svc_page *p = &pages[i];
    if ((region_2m && in_region(p)) || p->present)
        return;
    volatile uint64_t *e = page_pte(p);
    uint64_t f = alloc_frame_not(p->prev_frame);
    memcpy(phys_ptr(f), phys_ptr(p->swap), PAGE_SIZE);
    pte_write(e, f | PTE_LEAF, m);
    invlpg(p->va);
    p->frame = f;
    p->present = 1;
    if (in_region(p)) {
        n_pagein++;
        step("pagein", why, p->va, p->prev_frame, f);
    } else {
        n_data_pagein++;
        step("pagein-data", why, p->va, p->prev_frame, f);
    }
}

static void move(unsigned i, enum pte_method m)
{
    struct svc_page *p = &pages[i];
    if (region_2m || !p->present)
        return;
    volatile uint64_t *e = page_pte(p);
    uint64_t old = p->frame;
    uint64_t f = alloc_frame_not(old);
    memcpy(phys_ptr(f), phys_ptr(old), PAGE_SIZE);
    pte_write(e, f | PTE_LEAF, m);
    invlpg(p->va);
    release_frame(p, old);
    p->frame = f;
    n_moves++;
    step("move", method_names[m], p->va, old, f);
}

static void replace_pt(void)
{
    if (region_2m)
        return;
    volatile uint64_t *pde = region_pde();
    uint64_t old_pt = *pde & PTE_ADDR;
    uint64_t new_pt = alloc_frame_not(old_pt);
    memcpy(phys_ptr(new_pt), phys_ptr(old_pt), PAGE_SIZE);
    pte_write(pde, new_pt | PTE_TABLE, WRITE_CMPXCHG);
    reload_cr3();
    memset(phys_ptr(old_pt), 0, PAGE_SIZE);
    pmm_free(old_pt);
    n_replace++;
    step("replace-pt", "new page table with the same entries", region_va, old_pt, new_pt);
}

static void merge_2m(void)
{
    if (region_2m)
        return;
    for (unsigned i = 0; i < SVC_COUNT; i++) {
        struct svc_page *p = &pages[i];
        uint64_t from = p->present ? p->frame : p->swap;
        if (from != p->home) {
            memcpy(phys_ptr(p->home), phys_ptr(from), PAGE_SIZE);
            if (p->present)
                release_frame(p, from);
        }
        p->frame = p->home;
        p->present = 1;
    }
    volatile uint64_t *pde = region_pde();
    uint64_t old_pt = *pde & PTE_ADDR;
    pte_write(pde, region_pa | PTE_LEAF_2M, WRITE_HALVES);
    reload_cr3();
    memset(phys_ptr(old_pt), 0, PAGE_SIZE);
    pmm_free(old_pt);
    region_2m = 1;
    n_merge++;
    step("merge-2m", "every service page home, one 2 MiB page", region_va, old_pt, region_pa);
}

static void split_2m(void)
{
    if (!region_2m)
        return;
    uint64_t pt = pmm_alloc();
    volatile uint64_t *ent = phys_ptr(pt);
    for (unsigned k = 0; k < 512; k++)
        ent[k] = (region_pa + k * PAGE_SIZE) | PTE_LEAF;
    volatile uint64_t *pde = region_pde();
    pte_write(pde, pt | PTE_TABLE, WRITE_STORE);
    reload_cr3();
    region_2m = 0;
    n_split++;
    step("split-2m", "2 MiB page split into 512 4 KiB pages", region_va, region_pa, pt);
}

/* Demand paging: a call into a paged-out service faults here. */
int mm_page_fault(struct trap_frame *f)
{
    uint64_t cr2 = read_cr2();
    if (f->error & 1) /* protection fault, not a missing page */
        return 0;
    for (unsigned i = 0; i <= USER_PAGE; i++) {
        if (!pages[i].present && (cr2 & ~(PAGE_SIZE - 1)) == pages[i].va) {
            n_faults++;
            page_in(i, (enum pte_method)(n_faults % 3), "demand fault");
            return 1;
        }
    }
    return 0;
}

void mm_init(void)
{
    region_va = (uint64_t)(uintptr_t)__pages_start;
    region_pa = kva_to_pa(__pages_start);
    GUEST_ASSERT((region_va & (SIZE_2M - 1)) == 0);
    for (unsigned i = 0; i < SVC_COUNT; i++) {
        struct svc_page *p = &pages[i];
        p->va = svc_va(i) & ~(PAGE_SIZE - 1);
        GUEST_ASSERT_EQ(p->va, svc_va(i)); /* each service starts its page */
        GUEST_ASSERT(p->va >= region_va && p->va < (uint64_t)(uintptr_t)__pages_end);
        p->home = p->frame = kva_to_pa((void *)(uintptr_t)p->va);
        p->swap = pmm_alloc();
        p->present = 1;
    }
    struct svc_page *u = &pages[USER_PAGE];
    u->va = (uint64_t)(uintptr_t)workload_user_page;
    GUEST_ASSERT_EQ(u->va & (PAGE_SIZE - 1), 0);
    u->home = u->frame = kva_to_pa(workload_user_page);
    u->swap = pmm_alloc();
    u->present = 1;
    trap_set_handler(14, mm_page_fault);
}

void mm_page_out_user(void)
{
    page_out(USER_PAGE, WRITE_HALVES);
}

void mm_step(uint32_t it)
{
    unsigned round = it / 8;
    unsigned svc = (it / 8) % SVC_COUNT;
    switch (it % 8) {
    case 0: /* paged out; the next call faults it back in elsewhere */
        page_out(svc, WRITE_STORE);
        break;
    case 1:
        move((svc + 1) % SVC_COUNT, WRITE_HALVES);
        break;
    case 2: {
        unsigned i = (svc + 2) % SVC_COUNT;
        if (!region_2m && pages[i].present)
            pte_cmpxchg_fail(page_pte(&pages[i]), pages[i].va);
        move(i, WRITE_CMPXCHG);
        break;
    }
    case 3: { /* out and straight back in at another frame */
        unsigned i = (svc + 3) % SVC_COUNT;
        page_out(i, WRITE_HALVES);
        page_in(i, WRITE_CMPXCHG, "explicit");
        break;
    }
    case 4:
        replace_pt();
        break;
    case 5:
        merge_2m();
        break;
    case 6:
        split_2m();
        break;
    default:
        page_out((svc + 1) % SVC_COUNT, round % 2 ? WRITE_HALVES : WRITE_CMPXCHG);
        page_out((svc + 2) % SVC_COUNT, WRITE_STORE);
        break;
    }
}

void mm_settle(void)
{
    if (!region_2m) {
        merge_2m();
    }
    split_2m();
}

void mm_report(void)
{
    ucall_report("mm.steps", n_steps);
    ucall_report("mm.pageouts", n_pageout);
    ucall_report("mm.pageins", n_pagein);
    ucall_report("mm.faults", n_faults);
    ucall_report("mm.moves", n_moves);
    ucall_report("mm.pt_replacements", n_replace);
    ucall_report("mm.merges", n_merge);
    ucall_report("mm.splits", n_split);
    ucall_report("mm.cmpxchg_failures", n_cmpxchg_fail);
    ucall_report("mm.data_pageouts", n_data_pageout);
    ucall_report("mm.data_pageins", n_data_pagein);
}
