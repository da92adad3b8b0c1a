/*
 * fuzz/fuzz_paging.c — the page-table walker, differential.
 *
 * Input: 24 header bytes (levels, maxphyaddr, NXE, the recursive-table
 * flag, root, va) then guest RAM (at most 16 pages; reads past it fail with
 * VMT_E_RANGE as a driver would). The library's walker is compared with a
 * second one written here straight from the Intel SDM vol. 3A §4.5 (4-level
 * and 5-level paging, Tables 4-14..4-20), deliberately simple: recursion on
 * the level, every reserved bit spelled out per entry format. They must
 * agree on the status, every step read, and on success the address, page
 * size, leaf level and rights; on not-present the faulting entry.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmtrap/paging.h"

#define MAX_RAM (16 * 4096)

typedef struct ram {
    const uint8_t *bytes;
    size_t len;
    unsigned reads;
} ram;

static vmt_status ram_read(void *ctx, vmt_pa pa, void *buf, size_t len)
{
    ram *r = ctx;
    r->reads++;
    if (pa > r->len || len > r->len - pa)
        return VMT_E_RANGE;
    memcpy(buf, r->bytes + pa, len);
    return VMT_OK;
}

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* ---- the reference walker (SDM vol. 3A, 4.5) ---- */

typedef struct ref_walk {
    vmt_status status;
    unsigned nsteps;
    vmt_pa entry_pa[5];
    uint64_t value[5];
    vmt_pa pa;
    uint64_t page_size;
    unsigned leaf_level;
    bool writable, executable, user;
} ref_walk;

typedef struct ref_cfg {
    unsigned levels, maxphy;
    bool nxe, allow_recursive;
} ref_cfg;

static uint64_t bits(unsigned hi, unsigned lo)
{
    return (hi == 63 ? ~0ULL : ((1ULL << (hi + 1)) - 1)) & ~((1ULL << lo) - 1);
}

/* Reserved bits of a present paging-structure entry (SDM Table 4-20 and
 * the 5-level tables): M = MAXPHYADDR. */
static uint64_t ref_reserved(const ref_cfg *c, unsigned level, uint64_t e)
{
    uint64_t r = 0;
    if (c->maxphy < 52)
        r |= bits(51, c->maxphy);            /* bits M..51 in every format */
    if (!c->nxe)
        r |= 1ULL << 63;                     /* XD is reserved without IA32_EFER.NXE */
    bool ps = (e >> 7) & 1;
    switch (level) {
    case 5: /* PML5E: bit 7 reserved */
    case 4: /* PML4E: bit 7 reserved */
        r |= 1ULL << 7;
        break;
    case 3: /* PDPTE mapping a 1-GByte page: bits 29:13 reserved */
        if (ps)
            r |= bits(29, 13);
        break;
    case 2: /* PDE mapping a 2-MByte page: bits 20:13 reserved */
        if (ps)
            r |= bits(20, 13);
        break;
    default: /* PTE: bit 7 is PAT, nothing extra */
        break;
    }
    return r;
}

static void ref_step(const ref_cfg *c, ram *m, uint64_t table, vmt_va va, unsigned level, ref_walk *w)
{
    if (!c->allow_recursive)
        for (unsigned i = 0; i < w->nsteps; i++)
            if ((w->entry_pa[i] & ~0xfffULL) == table) {
                w->status = VMT_E_BAD_PT; /* a loop: hardware would walk it; we refuse */
                return;
            }
    unsigned shift = 12 + 9 * (level - 1);
    vmt_pa epa = table + 8 * ((va >> shift) & 0x1ff);
    uint8_t raw[8];
    if (ram_read(m, epa, raw, 8) != VMT_OK) {
        w->status = VMT_E_RANGE;
        return;
    }
    uint64_t e = le64(raw);
    w->entry_pa[w->nsteps] = epa;
    w->value[w->nsteps] = e;
    w->nsteps++;
    if (!(e & 1)) {
        w->status = VMT_E_NOT_PRESENT;
        return;
    }
    if (e & ref_reserved(c, level, e)) {
        w->status = VMT_E_BAD_PT;
        return;
    }
    if (!(e & 2))
        w->writable = false;
    if (!(e & 4))
        w->user = false;
    if (c->nxe && (e >> 63))
        w->executable = false;
    bool leaf = level == 1 || ((level == 2 || level == 3) && ((e >> 7) & 1));
    if (leaf) {
        uint64_t size = 1ULL << shift;
        w->pa = (e & bits(51, shift)) | (va & (size - 1));
        w->page_size = size;
        w->leaf_level = level;
        w->status = VMT_OK;
        return;
    }
    ref_step(c, m, e & bits(51, 12), va, level - 1, w);
}

static void ref_walk_va(const ref_cfg *c, ram *m, uint64_t cr3, vmt_va va, ref_walk *w)
{
    memset(w, 0, sizeof *w);
    w->writable = w->executable = w->user = true;
    unsigned vbits = c->levels == 5 ? 57 : 48;
    uint64_t upper = va >> (vbits - 1);
    if (upper != 0 && upper != (~0ULL >> (vbits - 1))) {
        w->status = VMT_E_INVAL; /* not canonical */
        return;
    }
    uint64_t table = cr3 & bits(51, 12);
    if (c->maxphy < 52 && (table >> c->maxphy)) {
        w->status = VMT_E_BAD_PT;
        return;
    }
    ref_step(c, m, table, va, c->levels, w);
}

#define MISMATCH(...)                                                                                                  \
    do {                                                                                                               \
        fprintf(stderr, "fuzz_paging: walkers disagree: " __VA_ARGS__);                                                \
        fprintf(stderr, " (va 0x%llx root 0x%llx levels %u maxphy %u nxe %d rec %d)\n", (unsigned long long)va,        \
                (unsigned long long)root, c.levels, c.maxphy, c.nxe, c.allow_recursive);                               \
        abort();                                                                                                       \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 24)
        return 0;
    ref_cfg c;
    c.levels = (data[0] & 1) ? 5 : 4;
    c.maxphy = 32 + data[1] % 21;
    c.nxe = data[2] & 1;
    c.allow_recursive = (data[2] >> 1) & 1;
    uint64_t root = le64(data + 8);
    if (!(data[2] & 4))
        root &= 0xf000; /* usually a table inside the RAM given */
    vmt_va va = le64(data + 16);
    if (!(data[2] & 8)) { /* usually canonical */
        unsigned vbits = c.levels == 5 ? 57 : 48;
        va = (uint64_t)((int64_t)(va << (64 - vbits)) >> (64 - vbits));
    }
    size_t ram_len = size - 24 > MAX_RAM ? MAX_RAM : size - 24;
    ram m = { data + 24, ram_len, 0 };

    vmt_paging_config cfg = { (uint8_t)c.levels, (uint8_t)c.maxphy, (uint8_t)c.nxe,
                              c.allow_recursive ? VMT_WALK_ALLOW_RECURSIVE : 0 };
    vmt_phys_reader rd = { ram_read, &m };
    vmt_walk w;
    char why[256];
    vmt_status st = vmt_paging_walk(&rd, &cfg, root, va, &w, why, sizeof why);
    unsigned lib_reads = m.reads;
    ref_walk r;
    ref_walk_va(&c, &m, root, va, &r);

    if (!memchr(why, 0, sizeof why))
        abort();
    if (lib_reads > c.levels)
        MISMATCH("library read %u entries for %u levels", lib_reads, c.levels);
    if (st != r.status)
        MISMATCH("status %s vs reference %s", vmt_strerror(st), vmt_strerror(r.status));
    if (st == VMT_E_INVAL)
        return 0;
    unsigned nsteps = w.nsteps;
    if (nsteps != r.nsteps)
        MISMATCH("%u steps vs reference %u", nsteps, r.nsteps);
    for (unsigned i = 0; i < nsteps; i++) {
        if (w.steps[i].entry_pa != r.entry_pa[i] || w.steps[i].value != r.value[i])
            MISMATCH("step %u entry 0x%llx=0x%llx vs 0x%llx=0x%llx", i, (unsigned long long)w.steps[i].entry_pa,
                     (unsigned long long)w.steps[i].value, (unsigned long long)r.entry_pa[i],
                     (unsigned long long)r.value[i]);
        if (w.steps[i].level != c.levels - i)
            MISMATCH("step %u level %u", i, w.steps[i].level);
    }
    if (st == VMT_OK) {
        if (w.pa != r.pa || w.page_size != r.page_size || w.leaf_level != r.leaf_level)
            MISMATCH("pa 0x%llx size 0x%llx leaf %u vs 0x%llx 0x%llx %u", (unsigned long long)w.pa,
                     (unsigned long long)w.page_size, w.leaf_level, (unsigned long long)r.pa,
                     (unsigned long long)r.page_size, r.leaf_level);
        vmt_access want = VMT_ACCESS_R | (r.writable ? VMT_ACCESS_W : 0) | (r.executable ? VMT_ACCESS_X : 0);
        if (w.rights != want || w.user != r.user)
            MISMATCH("rights 0x%x user %u vs 0x%x %u", w.rights, w.user, want, r.user);
        if (c.maxphy < 52 && (w.pa >> c.maxphy))
            MISMATCH("pa 0x%llx beyond maxphyaddr", (unsigned long long)w.pa);
    }
    if (st == VMT_E_NOT_PRESENT) {
        if (w.fault_level != c.levels - (nsteps - 1) || w.fault_entry_pa != r.entry_pa[nsteps - 1])
            MISMATCH("fault level %u entry 0x%llx", w.fault_level, (unsigned long long)w.fault_entry_pa);
    }
    return 0;
}
