/*
 * core/paging.c — the amd64 page-table walker (see vmtrap/paging.h).
 *
 * Design: a straight loop from the top level (PML5 or PML4) down to the
 * leaf. Each iteration reads exactly one 8-byte entry through the caller's
 * reader, records it as a step, and then decides: not present -> stop with
 * VMT_E_NOT_PRESENT; reserved bits set -> VMT_E_BAD_PT; leaf (PS at PD/PDPT,
 * or any PT entry) -> compute the physical address; else descend. The loop
 * runs at most `levels` (<= 5) times, so a hostile table can never make it
 * hang; a table frame that already appeared on this walk is refused unless
 * the caller allows recursive (self-map) tables.
 *
 * Invariants on return: out->nsteps <= out->levels; steps[0..nsteps) are the
 * entries actually read, top level first; on VMT_OK out->pa lies inside the
 * leaf page and below 2^maxphyaddr.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "core/errbuf.h"
#include "vmtrap/paging.h"

static const char *level_name(unsigned level)
{
    static const char *const names[] = { "?", "PT", "PD", "PDPT", "PML4", "PML5" };
    return level <= 5 ? names[level] : "?";
}

int vmt_va_is_canonical(vmt_va va, unsigned levels)
{
    unsigned bits = levels == 5 ? 57 : 48;
    /* Sign-extend from bit (bits-1) and compare. */
    int64_t s = (int64_t)(va << (64 - bits)) >> (64 - bits);
    return (uint64_t)s == va;
}

/* Reserved bits of a present entry at `level` (PS as read from the entry). */
static uint64_t reserved_mask(const vmt_paging_config *cfg, unsigned maxphy, unsigned level, int ps)
{
    uint64_t mask = 0;
    if (maxphy < 52)
        mask |= ((1ULL << 52) - 1) & ~((1ULL << maxphy) - 1);
    if (!cfg->nxe)
        mask |= VMT_PTE_NX;
    if (level >= VMT_PT_LEVEL_PML4)
        mask |= VMT_PTE_PS; /* no pages bigger than 1 GiB */
    else if (ps && level == VMT_PT_LEVEL_PDPT)
        mask |= ((1ULL << 30) - 1) & ~((1ULL << 13) - 1); /* bits 13..29 (bit 12 is PAT) */
    else if (ps && level == VMT_PT_LEVEL_PD)
        mask |= ((1ULL << 21) - 1) & ~((1ULL << 13) - 1); /* bits 13..20 */
    return mask;
}

vmt_status vmt_paging_walk(const vmt_phys_reader *reader, const vmt_paging_config *cfg,
                           vmt_pa root, vmt_va va, vmt_walk *out, char *why, size_t why_len)
{
    if (!reader || !reader->read || !cfg || !out) {
        vmt_why(why, why_len, "paging: reader, config and out are required");
        return VMT_E_INVAL;
    }
    memset(out, 0, sizeof *out);
    out->va = va;
    out->root = root;
    out->levels = cfg->levels;
    if (cfg->levels != 4 && cfg->levels != 5) {
        vmt_why(why, why_len, "paging: %u-level paging is not supported (4 or 5)", cfg->levels);
        return VMT_E_INVAL;
    }
    unsigned maxphy = cfg->maxphyaddr ? cfg->maxphyaddr : 52;
    if (maxphy < 32 || maxphy > 52) {
        vmt_why(why, why_len, "paging: maxphyaddr %u is outside 32..52", maxphy);
        return VMT_E_INVAL;
    }
    if (!vmt_va_is_canonical(va, cfg->levels)) {
        vmt_why(why, why_len, "paging: va 0x%" PRIx64 " is not canonical for %u-level paging", va, cfg->levels);
        return VMT_E_INVAL;
    }
    uint64_t phys_limit = 1ULL << maxphy;
    vmt_pa table = root & VMT_PTE_ADDR_MASK;
    if (table >= phys_limit) {
        vmt_why(why, why_len, "paging: root 0x%" PRIx64 " is beyond maxphyaddr %u", root, maxphy);
        return VMT_E_BAD_PT;
    }

    vmt_access rights = VMT_ACCESS_RWX;
    uint8_t user = 1;
    for (unsigned level = cfg->levels; level >= 1; level--) {
        if (!(cfg->flags & VMT_WALK_ALLOW_RECURSIVE)) {
            for (unsigned i = 0; i < out->nsteps; i++) {
                if (out->steps[i].table_pa == table) {
                    vmt_why(why, why_len,
                            "paging: %s table at pa 0x%" PRIx64 " was already used as the %s table on this walk "
                            "(a loop in the tables)",
                            level_name(level), table, level_name(out->steps[i].level));
                    return VMT_E_BAD_PT;
                }
            }
        }
        vmt_pa entry_pa = table + 8ULL * vmt_pt_index(va, level);
        uint64_t value = 0;
        vmt_status st = reader->read(reader->ctx, entry_pa, &value, sizeof value);
        if (st != VMT_OK) {
            vmt_why(why, why_len, "paging: reading the %s entry at pa 0x%" PRIx64 " failed: %s", level_name(level),
                    entry_pa, vmt_strerror(st));
            return st;
        }
        vmt_walk_step *step = &out->steps[out->nsteps++];
        step->level = (uint8_t)level;
        step->table_pa = table;
        step->entry_pa = entry_pa;
        step->value = value;

        if (!(value & VMT_PTE_P)) {
            out->fault_level = (uint8_t)level;
            out->fault_entry_pa = entry_pa;
            vmt_why(why, why_len, "paging: va 0x%" PRIx64 " not present: %s entry at pa 0x%" PRIx64 " is 0x%" PRIx64,
                    va, level_name(level), entry_pa, value);
            return VMT_E_NOT_PRESENT;
        }
        int ps = level <= VMT_PT_LEVEL_PDPT && level > VMT_PT_LEVEL_PT && (value & VMT_PTE_PS);
        uint64_t rsvd = value & reserved_mask(cfg, maxphy, level, (value & VMT_PTE_PS) != 0);
        if (rsvd) {
            vmt_why(why, why_len, "paging: %s entry at pa 0x%" PRIx64 " (0x%" PRIx64 ") has reserved bits 0x%016" PRIx64,
                    level_name(level), entry_pa, value, rsvd);
            return VMT_E_BAD_PT;
        }
        if (!(value & VMT_PTE_RW))
            rights &= (vmt_access)~VMT_ACCESS_W;
        if (cfg->nxe && (value & VMT_PTE_NX))
            rights &= (vmt_access)~VMT_ACCESS_X;
        if (!(value & VMT_PTE_US))
            user = 0;

        if (ps || level == VMT_PT_LEVEL_PT) {
            uint64_t span = vmt_pt_level_span(level);
            vmt_pa frame = value & VMT_PTE_ADDR_MASK & ~(span - 1);
            out->pa = frame | (va & (span - 1));
            out->page_size = span;
            out->leaf_level = (uint8_t)level;
            out->rights = rights;
            out->user = user;
            return VMT_OK;
        }
        table = value & VMT_PTE_ADDR_MASK;
    }
    /* Not reachable: level 1 always ends the loop. */
    vmt_why(why, why_len, "paging: internal error: walk did not end at the PT level");
    return VMT_E_INTERNAL;
}
