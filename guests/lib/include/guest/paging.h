/*
 * guest/paging.h — physical frames and 4-level page tables, built by the
 * guest itself (guests/lib/paging.c).
 *
 * Frames come from a bump allocator over RAM past the image (below the boot
 * protocol's table frames) plus a free list of 4 KiB frames. Tables are
 * accessed through the identity map (phys_ptr). Every entry written by these
 * helpers has A set (and D for leaves): drivers that back tables with
 * read-only memory never set them.
 */
#ifndef GUEST_PAGING_H
#define GUEST_PAGING_H

#include <stdint.h>

#define PTE_P   (1ULL << 0)
#define PTE_RW  (1ULL << 1)
#define PTE_US  (1ULL << 2)
#define PTE_A   (1ULL << 5)
#define PTE_D   (1ULL << 6)
#define PTE_PS  (1ULL << 7)
#define PTE_G   (1ULL << 8)
#define PTE_ADDR 0x000ffffffffff000ULL
#define PTE_ADDR_2M 0x000fffffffe00000ULL

#define PTE_TABLE (PTE_P | PTE_RW | PTE_A)          /* non-leaf */
#define PTE_LEAF  (PTE_P | PTE_RW | PTE_A | PTE_D)  /* 4 KiB leaf */
#define PTE_LEAF_2M (PTE_LEAF | PTE_PS)

static inline unsigned pt_index(uint64_t va, unsigned level)
{
    return (unsigned)((va >> (12 + 9 * (level - 1))) & 511);
}

void pmm_init(uint64_t ram_size);
uint64_t pmm_ram_size(void);
/* A zeroed 4 KiB frame (halts through GUEST_ASSERT when RAM runs out). */
uint64_t pmm_alloc(void);
/* size bytes aligned to align (power of two >= 4 KiB), not zeroed, never freed. */
uint64_t pmm_alloc_aligned(uint64_t size, uint64_t align);
void pmm_free(uint64_t pa);
uint64_t pmm_free_frames(void);

/* The entry for va at `level` (1 = PT .. 4 = PML4) under root, or NULL when
 * an upper level is not present or is a large page. With alloc, missing
 * tables are created. */
volatile uint64_t *pt_entry(uint64_t root, uint64_t va, unsigned level, int alloc);
void pt_map_4k(uint64_t root, uint64_t va, uint64_t pa, uint64_t flags);
void pt_map_2m(uint64_t root, uint64_t va, uint64_t pa, uint64_t flags);
/* Translate va under root by software walk; 0 with *ok = 0 when not present. */
uint64_t pt_translate(uint64_t root, uint64_t va, int *ok);

/* The guest's own tables, built by guest_start: identity 2 MiB map of RAM
 * (up to 4 GiB) + the image at KERNEL_VMA with 4 KiB pages. */
uint64_t kpt_build(uint64_t ram_size);
uint64_t kpt_root(void);

#endif
