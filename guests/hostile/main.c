/*
 * guests/hostile/main.c — a guest that attacks the page-table monitor the
 * way malware would, and counts its own calls so a host can prove that no
 * hook was lost (issue 15).
 *
 * Three hooked functions, each alone in its own page (GUEST_PAGE_FUNC):
 * hooked_fn, healthy_fn and poisoned_fn. In order:
 *  1. half-entry remap: hooked_fn's page is copied and its PTE pointed at
 *     the copy with ONE 4-byte store (the other half never written), then
 *     back the same way; hooked_fn is called after each;
 *  2. rewrites: `hostile_rewrites` times hooked_fn's PTE flips between the
 *     original frame and the copy, by an 8-byte store, by two 4-byte
 *     stores (high half first, then low) and by `lock cmpxchg` in turn
 *     (every 16th cmpxchg fails on purpose: stale expected value), with a
 *     call of hooked_fn after each;
 *  3. loop and self-map on watched tables: a PML4 slot is made to point at
 *     the PML4 itself (the Windows self-map), and the PD entry above
 *     hooked_fn is made to point at its own PD (a loop: the monitor must
 *     treat the path as hostile, not hang) and restored; calls after;
 *  4. poisoned path beside a healthy hook under a NEW root: a copy of the
 *     kernel tables in which poisoned_fn's PTE has a reserved bit (bit 51,
 *     above MAXPHYADDR); the guest switches CR3 to it and calls healthy_fn
 *     (never poisoned_fn there), then switches back and calls both.
 * After each phase it REPORTs its own counts: calls.hooked_fn,
 * calls.healthy_fn, calls.poisoned_fn (the last REPORT of each key wins on
 * the host), and it asserts every result through the ucall port.
 */
#include "guest/guest.h"
#include "guest/paging.h"
#include "guest/ucall.h"
#include "guest/x86.h"

__attribute__((section(".data"))) volatile uint32_t hostile_rewrites = 3000;

/* noipa: the compiler must not see these as pure and fold a repeated call
 * with the same argument (each call is one the host must count). */
#define HOOKED_FUNC(tag) GUEST_PAGE_FUNC(tag) __attribute__((noipa))

HOOKED_FUNC(h1_hooked) uint64_t hooked_fn(uint64_t x);
HOOKED_FUNC(h2_healthy) uint64_t healthy_fn(uint64_t x);
HOOKED_FUNC(h3_poisoned) uint64_t poisoned_fn(uint64_t x);

HOOKED_FUNC(h1_hooked) uint64_t hooked_fn(uint64_t x)
{
    __asm__ volatile("" : : : "memory");
    return x * 3 + 1;
}

HOOKED_FUNC(h2_healthy) uint64_t healthy_fn(uint64_t x)
{
    __asm__ volatile("" : : : "memory");
    return x + 7;
}

HOOKED_FUNC(h3_poisoned) uint64_t poisoned_fn(uint64_t x)
{
    __asm__ volatile("" : : : "memory");
    return x ^ 5;
}

static uint64_t n_hooked, n_healthy, n_poisoned;

static void call_hooked(uint64_t x)
{
    n_hooked++;
    GUEST_ASSERT_EQ(hooked_fn(x), x * 3 + 1);
}

static void call_healthy(uint64_t x)
{
    n_healthy++;
    GUEST_ASSERT_EQ(healthy_fn(x), x + 7);
}

static void call_poisoned(uint64_t x)
{
    n_poisoned++;
    GUEST_ASSERT_EQ(poisoned_fn(x), x ^ 5);
}

static void report_counts(void)
{
    ucall_report("calls.hooked_fn", n_hooked);
    ucall_report("calls.healthy_fn", n_healthy);
    ucall_report("calls.poisoned_fn", n_poisoned);
}

static volatile uint64_t *pte_of(uint64_t root, const void *fn)
{
    volatile uint64_t *e = pt_entry(root, (uint64_t)(uintptr_t)fn, 1, 0);
    GUEST_ASSERT(e != 0);
    return e;
}

enum { BY_STORE, BY_HALVES, BY_CMPXCHG };

static uint64_t cmpxchg_failures;

static void write_pte(volatile uint64_t *e, uint64_t v, int how, uint64_t n)
{
    volatile uint32_t *half = (volatile uint32_t *)e;
    switch (how) {
    case BY_STORE:
        *e = v;
        break;
    case BY_HALVES:
        half[1] = (uint32_t)(v >> 32);
        half[0] = (uint32_t)v;
        break;
    default: {
        uint64_t old = *e;
        if (n % 16 == 15) { /* a stale expected value: nothing changes */
            GUEST_ASSERT_EQ(cmpxchg64(e, old ^ 0x20, v), old);
            cmpxchg_failures++;
        }
        GUEST_ASSERT_EQ(cmpxchg64(e, old, v), old);
        break;
    }
    }
    GUEST_ASSERT_EQ(*e, v);
}

/* 1: one 4-byte store moves hooked_fn to a copy of its page; never the
 * other half. */
static void half_entry_remap(uint64_t orig, uint64_t copy)
{
    volatile uint64_t *e = pte_of(kpt_root(), (const void *)hooked_fn);
    uint64_t va = (uint64_t)(uintptr_t)hooked_fn;
    GUEST_ASSERT((orig >> 32) == 0 && (copy >> 32) == 0); /* only the low half differs */
    volatile uint32_t *low = (volatile uint32_t *)e;
    *low = (uint32_t)(copy | PTE_LEAF);
    invlpg(va);
    int ok = 0;
    GUEST_ASSERT_EQ(pt_translate(kpt_root(), va, &ok) & PTE_ADDR, copy);
    for (uint64_t i = 0; i < 10; i++)
        call_hooked(i);
    *low = (uint32_t)(orig | PTE_LEAF);
    invlpg(va);
    for (uint64_t i = 0; i < 6; i++)
        call_hooked(100 + i);
    report_counts();
}

/* 2: thousands of rewrites by each kind of store. */
static void rewrites(uint64_t orig, uint64_t copy)
{
    volatile uint64_t *e = pte_of(kpt_root(), (const void *)hooked_fn);
    uint64_t va = (uint64_t)(uintptr_t)hooked_fn;
    uint32_t n = hostile_rewrites;
    if (n > 100000)
        n = 100000;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t frame = (i & 1) ? copy : orig;
        write_pte(e, frame | PTE_LEAF, (int)(i % 3), i / 3);
        invlpg(va);
        call_hooked(i);
    }
    write_pte(e, orig | PTE_LEAF, BY_STORE, 0);
    invlpg(va);
    call_hooked(7);
    ucall_report("rewrites", n);
    ucall_report("cmpxchg_failures", cmpxchg_failures);
    report_counts();
}

/* 3: a self-map in the PML4 and a loop in the PD above hooked_fn. */
static void loops(void)
{
    uint64_t root = kpt_root();
    uint64_t va = (uint64_t)(uintptr_t)hooked_fn;
    volatile uint64_t *pml4 = phys_ptr(root);
    unsigned slot = 256; /* unused: the kernel half starts at 511, RAM is identity-mapped at 0 */
    GUEST_ASSERT_EQ(pml4[slot], 0);
    pml4[slot] = root | PTE_TABLE; /* self-map: the PML4 is its own PDPT, PD, PT */
    call_hooked(1);
    volatile uint64_t *pde = pt_entry(root, va, 2, 0);
    GUEST_ASSERT(pde != 0 && !(*pde & PTE_PS));
    uint64_t pd = (uint64_t)(uintptr_t)pde & ~0xfffULL;
    uint64_t saved = *pde;
    /* The PD entry points at its own PD: a loop. Nothing mapped through it
     * runs until it is restored (this code and its data are elsewhere). */
    *pde = pd | PTE_TABLE;
    reload_cr3();
    *pde = saved;
    reload_cr3();
    for (uint64_t i = 0; i < 5; i++)
        call_hooked(200 + i);
    pml4[slot] = 0;
    reload_cr3();
    call_hooked(2);
    report_counts();
}

/* A copy of the table at `table` (one 4 KiB frame). */
static uint64_t copy_table(uint64_t table)
{
    uint64_t t = pmm_alloc();
    memcpy(phys_ptr(t), phys_ptr(table), PAGE_SIZE);
    return t;
}

/* 4: a new address space where poisoned_fn's PTE has a reserved bit. */
static void poisoned_root(void)
{
    uint64_t root = kpt_root();
    uint64_t va = (uint64_t)(uintptr_t)poisoned_fn;
    uint64_t new_root = copy_table(root);
    /* Private copies of the path down to poisoned_fn's page table. */
    uint64_t table = new_root;
    for (unsigned level = 4; level > 1; level--) {
        volatile uint64_t *t = phys_ptr(table);
        unsigned i = pt_index(va, level);
        GUEST_ASSERT(t[i] & PTE_P);
        uint64_t next = copy_table(t[i] & PTE_ADDR);
        t[i] = next | (t[i] & ~PTE_ADDR);
        table = next;
    }
    volatile uint64_t *pt = phys_ptr(table);
    pt[pt_index(va, 1)] |= 1ULL << 51; /* reserved above MAXPHYADDR */
    write_cr3(new_root);
    for (uint64_t i = 0; i < 20; i++)
        call_healthy(i);
    report_counts();
    write_cr3(root);
    for (uint64_t i = 0; i < 3; i++) {
        call_healthy(50 + i);
        call_poisoned(i);
    }
    report_counts();
}

int guest_main(uint64_t ram_size)
{
    (void)ram_size;
    ucall_report("rewrites.planned", hostile_rewrites);
    call_hooked(0);
    call_healthy(0);
    call_poisoned(0);
    uint64_t va = (uint64_t)(uintptr_t)hooked_fn;
    int ok = 0;
    uint64_t orig = pt_translate(kpt_root(), va, &ok) & PTE_ADDR;
    GUEST_ASSERT(ok);
    uint64_t copy = pmm_alloc();
    memcpy(phys_ptr(copy), phys_ptr(orig), PAGE_SIZE);

    half_entry_remap(orig, copy);
    rewrites(orig, copy);
    loops();
    poisoned_root();
    return 0;
}
