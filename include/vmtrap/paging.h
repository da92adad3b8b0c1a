/*
 * vmtrap/paging.h — the amd64 page-table walker.
 *
 * Design: a pure function over a physical-memory reader, so the same walker
 * serves the session (through its frame cache), the page-table monitor, the
 * emulator driver's MMU and the tests (over hand-built tables). It walks
 * 4-level or 5-level (LA57) tables with 4 KiB, 2 MiB and 1 GiB pages and
 * returns the physical address AND every step of the walk; when the
 * translation is not present it returns VMT_E_NOT_PRESENT with the steps up
 * to and including the not-present entry, so callers know the level and
 * entry where it stopped (that is what the page-table monitor watches).
 *
 * Hostile tables: every entry is checked for reserved bits (physical bits
 * above maxphyaddr, PS in PML5/PML4 entries, the reserved low bits of large
 * page entries, NX when EFER.NXE is clear) -> VMT_E_BAD_PT; a table frame
 * past the end of guest memory -> VMT_E_RANGE (from the reader); a table that
 * appears twice on one walk (an entry pointing back at its own table or an
 * ancestor) -> VMT_E_BAD_PT unless VMT_WALK_ALLOW_RECURSIVE is set (Windows
 * self-map). A walk is at most 5 reads: it can never hang.
 */
#ifndef VMTRAP_PAGING_H
#define VMTRAP_PAGING_H

#include <stddef.h>
#include <stdint.h>

#include "vmtrap/access.h"
#include "vmtrap/addr.h"
#include "vmtrap/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Page-table entry bits. */
#define VMT_PTE_P    (1ULL << 0)
#define VMT_PTE_RW   (1ULL << 1)
#define VMT_PTE_US   (1ULL << 2)
#define VMT_PTE_PWT  (1ULL << 3)
#define VMT_PTE_PCD  (1ULL << 4)
#define VMT_PTE_A    (1ULL << 5)
#define VMT_PTE_D    (1ULL << 6)
#define VMT_PTE_PS   (1ULL << 7)
#define VMT_PTE_G    (1ULL << 8)
#define VMT_PTE_NX   (1ULL << 63)
#define VMT_PTE_ADDR_MASK 0x000ffffffffff000ULL

/* Levels, numbered as the hardware does: 1 = PT (4 KiB leaves), 2 = PD,
 * 3 = PDPT, 4 = PML4, 5 = PML5. */
enum {
    VMT_PT_LEVEL_PT = 1,
    VMT_PT_LEVEL_PD = 2,
    VMT_PT_LEVEL_PDPT = 3,
    VMT_PT_LEVEL_PML4 = 4,
    VMT_PT_LEVEL_PML5 = 5,
};

/* Reads guest-physical memory for the walker. Returns VMT_E_RANGE for an
 * address outside guest memory. */
typedef struct vmt_phys_reader {
    vmt_status (*read)(void *ctx, vmt_pa pa, void *buf, size_t len);
    void *ctx;
} vmt_phys_reader;

#define VMT_WALK_ALLOW_RECURSIVE (1u << 0) /* allow a table to recur on one walk */

typedef struct vmt_paging_config {
    uint8_t levels;       /* 4 or 5 */
    uint8_t maxphyaddr;   /* physical address width, 36..52; 0 means 52 */
    uint8_t nxe;          /* EFER.NXE: when 0, bit 63 is reserved */
    uint32_t flags;       /* VMT_WALK_* */
} vmt_paging_config;

typedef struct vmt_walk_step {
    uint8_t level;        /* VMT_PT_LEVEL_* of the table this entry lives in */
    vmt_pa table_pa;      /* physical address of the table */
    vmt_pa entry_pa;      /* physical address of the entry */
    uint64_t value;       /* the entry as read */
} vmt_walk_step;

typedef struct vmt_walk {
    vmt_va va;
    vmt_pa root;
    uint8_t levels;        /* 4 or 5 */
    uint8_t nsteps;        /* entries read, 1..levels */
    vmt_walk_step steps[5];/* steps[0] is the top level */
    /* Valid when the call returned VMT_OK: */
    vmt_pa pa;             /* the translation of va */
    uint64_t page_size;    /* 4 KiB, 2 MiB or 1 GiB */
    uint8_t leaf_level;    /* level of the leaf entry (1, 2 or 3) */
    vmt_access rights;     /* effective R/W/X over all levels (R always) */
    uint8_t user;          /* 1 when every level has U/S set */
    /* Valid when the call returned VMT_E_NOT_PRESENT: the level and entry
     * where the walk stopped (also steps[nsteps - 1]). */
    uint8_t fault_level;
    vmt_pa fault_entry_pa;
} vmt_walk;

/* Index of va in a table of the given level (0..511). */
static inline unsigned vmt_pt_index(vmt_va va, unsigned level)
{
    return (unsigned)((va >> (12 + 9 * (level - 1))) & 511);
}

/* Bytes covered by one entry at a level (4 KiB at level 1, 2 MiB at 2, ...). */
static inline uint64_t vmt_pt_level_span(unsigned level)
{
    return 1ULL << (12 + 9 * (level - 1));
}

/* Is va canonical for the given number of levels? */
int vmt_va_is_canonical(vmt_va va, unsigned levels);

/* Walk the tables at `root` for `va`. On VMT_OK, out->pa is valid; on
 * VMT_E_NOT_PRESENT, out->fault_level / fault_entry_pa say where it stopped;
 * on VMT_E_BAD_PT or VMT_E_RANGE, out->steps up to the bad entry are valid.
 * `why`, when non-NULL, receives a one-line explanation (at most why_len). */
vmt_status vmt_paging_walk(const vmt_phys_reader *reader, const vmt_paging_config *cfg,
                           vmt_pa root, vmt_va va, vmt_walk *out, char *why, size_t why_len);

#ifdef __cplusplus
}
#endif
#endif
