/*
 * guests/lib/paging.c — the guest's physical frame allocator and its own
 * 4-level page tables.
 *
 * Frames: a bump pointer from the first 2 MiB boundary past the image up to
 * the boot protocol's table frames at the top of RAM, plus a LIFO free list
 * of 4 KiB frames (the link lives in the free frame). All tables are reached
 * through the identity map, which covers all RAM below 4 GiB in both the
 * early tables (first 1 GiB) and the guest's own tables.
 *
 * Invariant: every entry these helpers write has A set (D too for leaves);
 * the identity map never maps a frame past the end of RAM.
 */
#include <stdint.h>

#include "guest/guest.h"
#include "guest/paging.h"
#include "guest/ucall.h"
#include "guest/x86.h"

#define BOOT_PT_FRAMES 6 /* VMT_BOOT_PT_FRAMES: top of RAM, not ours */

static uint64_t pmm_next, pmm_limit, pmm_ram;
static uint64_t pmm_free_head, pmm_free_count;
static uint64_t kernel_root;

void pmm_init(uint64_t ram_size)
{
    uint64_t top = ram_size < (1ULL << 32) ? ram_size : (1ULL << 32);
    pmm_ram = ram_size;
    pmm_next = (kva_to_pa(__kernel_end) + SIZE_2M - 1) & ~(SIZE_2M - 1);
    pmm_limit = (top & ~(PAGE_SIZE - 1)) - BOOT_PT_FRAMES * PAGE_SIZE;
    GUEST_ASSERT(pmm_next < pmm_limit);
}

uint64_t pmm_ram_size(void) { return pmm_ram; }
uint64_t pmm_free_frames(void) { return pmm_free_count + (pmm_limit - pmm_next) / PAGE_SIZE; }

uint64_t pmm_alloc_aligned(uint64_t size, uint64_t align)
{
    uint64_t pa = (pmm_next + align - 1) & ~(align - 1);
    GUEST_ASSERT(pa + size <= pmm_limit && pa + size > pa);
    pmm_next = pa + size;
    return pa;
}

uint64_t pmm_alloc(void)
{
    uint64_t pa;
    if (pmm_free_head) {
        pa = pmm_free_head;
        pmm_free_head = *(uint64_t *)phys_ptr(pa);
        pmm_free_count--;
    } else {
        pa = pmm_alloc_aligned(PAGE_SIZE, PAGE_SIZE);
    }
    memset(phys_ptr(pa), 0, PAGE_SIZE);
    return pa;
}

void pmm_free(uint64_t pa)
{
    GUEST_ASSERT((pa & (PAGE_SIZE - 1)) == 0 && pa < pmm_limit);
    *(uint64_t *)phys_ptr(pa) = pmm_free_head;
    pmm_free_head = pa;
    pmm_free_count++;
}

volatile uint64_t *pt_entry(uint64_t root, uint64_t va, unsigned level, int alloc)
{
    uint64_t table = root & PTE_ADDR;
    for (unsigned l = 4; l > level; l--) {
        volatile uint64_t *e = (volatile uint64_t *)phys_ptr(table) + pt_index(va, l);
        uint64_t v = *e;
        if (!(v & PTE_P)) {
            if (!alloc)
                return 0;
            v = pmm_alloc() | PTE_TABLE;
            *e = v;
        } else if (v & PTE_PS) {
            return 0;
        }
        table = v & PTE_ADDR;
    }
    return (volatile uint64_t *)phys_ptr(table) + pt_index(va, level);
}

void pt_map_4k(uint64_t root, uint64_t va, uint64_t pa, uint64_t flags)
{
    volatile uint64_t *e = pt_entry(root, va, 1, 1);
    GUEST_ASSERT(e != 0);
    *e = (pa & PTE_ADDR) | flags;
}

void pt_map_2m(uint64_t root, uint64_t va, uint64_t pa, uint64_t flags)
{
    volatile uint64_t *e = pt_entry(root, va, 2, 1);
    GUEST_ASSERT(e != 0);
    *e = (pa & PTE_ADDR_2M) | flags | PTE_PS;
}

uint64_t pt_translate(uint64_t root, uint64_t va, int *ok)
{
    uint64_t table = root & PTE_ADDR;
    *ok = 0;
    for (unsigned l = 4; l >= 1; l--) {
        uint64_t v = ((volatile uint64_t *)phys_ptr(table))[pt_index(va, l)];
        if (!(v & PTE_P))
            return 0;
        if (l == 1 || (l <= 3 && (v & PTE_PS))) {
            uint64_t span = 1ULL << (12 + 9 * (l - 1));
            *ok = 1;
            return (v & PTE_ADDR & ~(span - 1)) | (va & (span - 1));
        }
        table = v & PTE_ADDR;
    }
    return 0;
}

uint64_t kpt_build(uint64_t ram_size)
{
    uint64_t root = pmm_alloc();
    uint64_t top = ram_size < (1ULL << 32) ? ram_size : (1ULL << 32);
    uint64_t top_2m = top & ~(SIZE_2M - 1);
    for (uint64_t pa = 0; pa < top_2m; pa += SIZE_2M)
        pt_map_2m(root, pa, pa, PTE_LEAF_2M);
    for (uint64_t pa = top_2m; pa + PAGE_SIZE <= top; pa += PAGE_SIZE) /* RAM not 2 MiB-aligned */
        pt_map_4k(root, pa, pa, PTE_LEAF);
    for (uint64_t va = (uint64_t)(uintptr_t)__kernel_start; va < (uint64_t)(uintptr_t)__kernel_end;
         va += PAGE_SIZE)
        pt_map_4k(root, va, va - KERNEL_VMA, PTE_LEAF);
    kernel_root = root;
    return root;
}

uint64_t kpt_root(void) { return kernel_root; }
