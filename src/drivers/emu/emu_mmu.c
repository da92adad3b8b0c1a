/*
 * drivers/emu/emu_mmu.c — the emulator driver's MMU on Unicorn 2.1: the
 * TLB-fill hook that translates every guest-virtual page, and the record of
 * what Unicorn's TLB may hold.
 *
 * Design: guest memory is mapped into Unicorn once, physically (see
 * emu_phys_pa for the layout). Unicorn runs with UC_TLB_VIRTUAL: on every
 * miss of its own TLB it calls emu_mmu_fill(), which walks the guest's
 * tables (4/5 levels, 2M/1G, NX, U/S, WP, SMEP, SMAP, reserved bits, A/D
 * bits set as hardware does, recursive tables allowed), applies the MMU
 * view (remap + R/W/X) and answers one of:
 *   - the physical page and rights (rights never include W when the frame
 *     is a page-table frame of a recorded translation, or the leaf is clean
 *     and the access is not a write; the write fill sets D). EXEC only on
 *     a fetch fill (and data refills of a page fetched since the last
 *     flush): Unicorn keeps code rights apart (a later fetch asks again),
 *     so xframes marks only frames code really ran from, and writes into
 *     data frames (the engine's stack stores) never drop translated code
 *     or flush Unicorn's TLB;
 *   - a TRAP SLOT: a physical page nothing is mapped at. The access that
 *     follows reaches Unicorn's UNMAPPED hook with the exact offset, size and
 *     value, which records the fault (va = the slot's page + offset) and
 *     aborts the instruction before it changed anything. Used for every
 *     data access the guest tables or the view forbid and for guest writes
 *     into page-table frames, so #PF (CR2) and memory events are exact.
 *     Slots are handed out fresh after each Unicorn TLB flush (never
 *     renamed while a translation may reach them); a trap that became a
 *     memory event stays in Unicorn's TLB (the access keeps trapping the
 *     same way, so a monitored read costs no refills) until the MMU context
 *     changes (emu_tlb_revalidate flushes then); every other outcome flushes;
 *   - false for a fetch the tables or view forbid (Unicorn aborts the
 *     instruction with UC_ERR_EXCEPTION; the fault is recorded here).
 * emu_mmu_fault() then decides what a recorded fault is (#PF, event, page-
 * table write to perform, or a retry after a flush).
 *
 * Self-modifying code: the driver installs no UC_HOOK_MEM_READ/WRITE hook
 * (any one sends every guest load and store through Unicorn's slow path,
 * ~3x slower). Unicorn 2.1.1 then notices a guest store into translated
 * code this way: a write translation starts "not dirty" (slow path; the
 * first store drops translated code of the frame, then the entry turns
 * fast), and translating code re-marks the write translations of the SAME
 * virtual page only. A fast write translation through another virtual
 * page (an alias) would miss later code, so the driver never lets a frame
 * be executable through one page and writable through another at once: a
 * fill that would (alias_conflict) lets the access complete and stops the
 * CPU before the next instruction to flush everything (flush_asap).
 *
 * The record (tlb[] + tlb_index) holds every translation handed to Unicorn
 * since its TLB was last flushed (a superset of Unicorn's TLB): it is how
 * page-table writes, view changes and host writes find what to invalidate.
 * Unicorn has one TLB per MMU index (CPL3; CPL0-2 with EFLAGS.AC = 0 / 1
 * under SMAP) and may hold a page in several with different rights (SMEP,
 * SMAP, CR0.WP depend on CPL and AC): a refill of the same translation
 * keeps the union of what was handed out (uc_perms) and of the rights it
 * was handed out under (pte_rights), so a view change finds rights another
 * index still holds (a write with AC = 1 after a fetch with AC = 0).
 * Unicorn cannot forget one page, so any invalidation marks the whole TLB
 * for a flush (uc_ctl_flush_tlb: Unicorn's TLB only, not translated code)
 * that the run loop performs before the next uc_emu_start, together with
 * removing translated code of pages whose backing or X right changed.
 *
 * PCIDs (emu_pcid.c has the SDM rules): each translation is tagged with the
 * PCID it was walked under, or global (leaf G with CR4.PGE), keyed by
 * emu_tlb_key. The record may also hold translations Unicorn no longer has
 * (other PCIDs, or the current one after a flush of Unicorn's TLB): since a
 * guest or host write to any entry a recorded walk read drops translations
 * (more than the hardware does) and view changes revalidate, a recorded
 * translation is always what a walk would give now, so the fill answers
 * from it without walking (reusable(): the current PCID's walked from the
 * current root, or a global one) unless the walk has to write (D on a
 * write to a clean leaf) or a step changes rights. MOV to CR3, INVLPG,
 * INVPCID and CR4 drop what the SDM says (emu_tlb_invalidate); a CR3
 * switch flushes Unicorn's TLB (keyed by VA only) and keeps the record.
 *
 * SMAP (emu_cr4.c): Unicorn's CR4 has SMAP whenever the guest's does, so
 * its kernel TLB is two (EFLAGS.AC = 0 / 1, picked per access); the hook
 * is not told which and reads AC (emu_smap_explicit) to answer for it. The
 * record keeps one entry per (PCID, va) whatever the AC (or CPL) it was
 * filled for: its pte_rights are those of the last fill, and reuse
 * (reusable()) recomputes the rights for the current CPL and AC from
 * walk_rights/walk_user, so a record hit never carries AC = 1 rights into
 * an AC = 0 fill. The engine's accessors (EMULATE, FAST_STEP) and
 * emu_mmu_fault apply the same rule as the fill.
 *
 * Files: the guest walk and the rights an access gets are in emu_walk.c;
 * guest memory for the host and the engine in emu_access.c; PCID and
 * invalidation instructions in emu_pcid.c; CR4 rules in emu_cr4.c.
 *
 * Invariants: see emu_priv.h; checked by emu_mmu_check() (which also checks
 * that CR4 has no bit the CPU lacks and that Unicorn's CR4.SMAP is the
 * guest's, what keeps the AC states apart).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "drivers/emu/emu_priv.h"

vmt_paging_config emu_paging_cfg(const emu *e)
{
    vmt_paging_config c = { (e->cr4 & VMT_CR4_LA57) ? 5 : 4, e->maxphyaddr, (e->efer & VMT_EFER_NXE) ? 1 : 0,
                            VMT_WALK_ALLOW_RECURSIVE };
    return c;
}

vmt_status emu_tlb_init(emu *e, uint32_t cap)
{
    e->tlb = calloc(cap + EMU_TLB_SLACK, sizeof *e->tlb);
    if (!e->tlb)
        return VMT_E_NOMEM;
    e->tlb_cap = cap;
    vmt_hmap_init(&e->tlb_index, sizeof(uint64_t), sizeof(uint32_t));
    if (vmt_hmap_reserve(&e->tlb_index, cap + EMU_TLB_SLACK))
        return VMT_E_NOMEM;
    e->tstats.capacity = cap;
    e->code_va = UINT64_MAX;
    return VMT_OK;
}

void emu_tlb_free(emu *e)
{
    free(e->tlb);
    e->tlb = NULL;
    vmt_hmap_free(&e->tlb_index);
}

static uint32_t tlb_find(const emu *e, uint64_t key)
{
    const uint32_t *s = vmt_hmap_get(&e->tlb_index, &key);
    return s ? *s : EMU_NO_SLOT;
}

static uint64_t entry_key(const emu_tlb_entry *t) { return emu_tlb_key(t->va, t->global, t->pcid); }

/* The CR3 root (guest frame) translations are walked from now. */
static vmt_gfn cur_root(const emu *e) { return (e->cr3 & 0x000ffffffffff000ull) >> 12; }

const emu_tlb_entry *emu_tlb_current(const emu *e, uint64_t va_page)
{
    uint32_t s = tlb_find(e, emu_tlb_key(va_page, false, emu_pcid(e)));
    if (s != EMU_NO_SLOT && e->tlb[s].ntables && e->tlb[s].table_gfns[0] == cur_root(e))
        return &e->tlb[s];
    s = tlb_find(e, emu_tlb_key(va_page, true, 0));
    return s != EMU_NO_SLOT ? &e->tlb[s] : NULL;
}

/* Remove one recorded translation (the last slot moves into its place). */
void emu_tlb_drop_slot(emu *e, uint32_t slot)
{
    emu_tlb_entry *t = &e->tlb[slot];
    for (unsigned k = 0; k < t->ntables; k++)
        e->pt_refs[t->tables[k]]--;
    uint64_t key = entry_key(t);
    vmt_hmap_del(&e->tlb_index, &key, NULL);
    uint32_t last = --e->tlb_used;
    if (slot != last) {
        e->tlb[slot] = e->tlb[last];
        uint64_t moved = entry_key(&e->tlb[slot]);
        uint32_t *sv = vmt_hmap_get(&e->tlb_index, &moved);
        *sv = slot;
    }
    e->tstats.invalidations++;
}


static uint32_t uc_perms_of(vmt_access a)
{
    uint32_t p = 0;
    if (a & VMT_ACCESS_R)
        p |= UC_PROT_READ;
    if (a & VMT_ACCESS_W)
        p |= UC_PROT_WRITE;
    if (a & VMT_ACCESS_X)
        p |= UC_PROT_EXEC;
    return p;
}

bool emu_gfn_is_ram(const emu *e, vmt_gfn gfn)
{
    if (gfn >= e->ram_frames)
        return false;
    if (!e->nranges)
        return true;
    for (size_t i = 0; i < e->nranges; i++)
        if (gfn >= e->ranges[i].start >> 12 && gfn < (e->ranges[i].start + e->ranges[i].size) >> 12)
            return true;
    return false;
}

uint64_t emu_phys_pa(const emu *e, vmt_gfn frame)
{
    if (frame < e->ram_frames)
        return frame << 12;
    return EMU_EXTRA_PA + ((frame - e->ram_frames) << 12);
}

void emu_code_cache_reset(emu *e)
{
    e->code_va = UINT64_MAX;
    e->code_host = NULL;
}

/* Forget every recorded translation; Unicorn's TLB is flushed before the
 * guest runs again. Translated code of pages whose mapping may change is
 * removed first, while Unicorn's TLB still finds its old frame. */
void emu_tlb_flush(emu *e)
{
    for (uint32_t i = 0; i < e->tlb_used; i++) {
        emu_tlb_entry *t = &e->tlb[i];
        for (unsigned k = 0; k < t->ntables; k++)
            e->pt_refs[t->tables[k]]--;
        e->tstats.invalidations++;
    }
    vmt_hmap_clear(&e->tlb_index);
    e->tlb_used = 0;
    e->uc_flush_pending = true;
    e->flush_asap = false;
    emu_code_cache_reset(e);
}

void emu_tlb_apply_flush(emu *e)
{
    if (!e->uc_flush_pending)
        return;
    uc_ctl_flush_tlb(e->uc);
    e->uc_flush_pending = false;
    e->trap_next = 0; /* no translation onto a trap slot is left */
    e->tstats.uc_flushes++;
}

/* Translated code of a recorded page that executed: removed (through the
 * mapping Unicorn still holds) when the page's frame or X right changes. */
static void drop_code(emu *e, const emu_tlb_entry *t)
{
    if ((t->uc_perms & UC_PROT_EXEC) && !t->is_mmio && !t->is_sink)
        emu_code_written(e, t->backing, 0, EMU_PAGE);
}

/* A recorded translation the fill may answer from without walking: the
 * record is coherent with the tables (invariants), so only what the walk
 * would WRITE needs one: D for a write to a clean leaf. Steps with changed
 * rights (grant, DENY, page-table write) always walk. */
static const emu_tlb_entry *reusable(const emu *e, uint64_t va_page, vmt_access kind)
{
    if (e->grant_kinds || e->deny_active || e->ptw_va != UINT64_MAX)
        return NULL;
    const emu_tlb_entry *t = emu_tlb_current(e, va_page);
    if (!t || t->is_sink || (kind == VMT_ACCESS_W && !t->dirty))
        return NULL;
    return t;
}

/* A trap slot for va_page: a fresh one since Unicorn's TLB was last
 * flushed (translations onto older slots may still be in that TLB, so a
 * slot is never renamed while one can reach it). The run loop flushes
 * before the slots run low (emu_trap_slots_low); a run adds at most a few,
 * since the first access through one ends it. */
static uint32_t trap_slot(emu *e, uint64_t va_page)
{
    if (e->trap_next >= EMU_TRAP_SLOTS) {
        e->trap_next = 0; /* not reached (see above); stop at once if it is */
        e->flush_asap = true;
    }
    uint32_t s = e->trap_next++;
    e->trap_va[s] = va_page;
    return s;
}

bool emu_trap_slots_low(const emu *e) { return e->trap_next > EMU_TRAP_SLOTS / 2; }

/* Record a translation handed to Unicorn. After a walk (walked), the other
 * kind for the va in this PCID (global / non-global) goes: the walk just
 * said which one the current context uses. */
static void record(emu *e, const emu_tlb_entry *n, bool walked)
{
    uint32_t other = walked ? tlb_find(e, emu_tlb_key(n->va, !n->global, n->pcid)) : EMU_NO_SLOT;
    if (other != EMU_NO_SLOT)
        emu_tlb_drop_slot(e, other);
    uint64_t key = entry_key(n);
    uint32_t slot = tlb_find(e, key);
    uint32_t held_perms = 0;
    vmt_access held_rights = VMT_ACCESS_NONE;
    if (slot != EMU_NO_SLOT) {
        emu_tlb_entry *t = &e->tlb[slot];
        for (unsigned k = 0; k < t->ntables; k++)
            e->pt_refs[t->tables[k]]--;
        if (t->backing == n->backing && t->gfn == n->gfn && t->is_mmio == n->is_mmio && t->is_sink == n->is_sink) {
            /* another of Unicorn's TLBs (CPL3, or kernel with the other
             * EFLAGS.AC) may still hold what was handed out before */
            held_perms = t->uc_perms;
            held_rights = t->pte_rights;
        }
    } else {
        if (e->tlb_used == e->tlb_cap + EMU_TLB_SLACK)
            return; /* cannot happen: flush_asap stops the CPU first */
        slot = e->tlb_used++;
        void *sv;
        bool existed;
        vmt_hmap_put(&e->tlb_index, &key, &slot, &sv, &existed); /* reserved */
    }
    for (unsigned k = 0; k < n->ntables; k++) {
        vmt_gfn f = n->tables[k];
        if (e->pt_refs[f]++ == 0) {
            /* f became a table frame: a mapping of it may be writable */
            for (uint32_t i = 0; i < e->tlb_used; i++)
                if (e->tlb[i].backing == f && (e->tlb[i].uc_perms & UC_PROT_WRITE) && !e->tlb[i].is_mmio)
                    e->flush_asap = true;
        }
    }
    e->tlb[slot] = *n;
    e->tlb[slot].uc_perms |= held_perms;
    e->tlb[slot].pte_rights |= held_rights;
    e->tstats.fills++;
    if (e->tlb_used >= e->tlb_cap) {
        e->flush_asap = true; /* the record is full: start over */
        e->tstats.evictions += e->tlb_used;
    }
}

/* Whether va_page's recorded translation onto backing already has EXEC:
 * a data refill of a page code runs from keeps it (else fetches and
 * stores on one page would take turns replacing Unicorn's entry). */
static bool fetched_before(const emu *e, uint64_t va_page, vmt_gfn backing)
{
    const emu_tlb_entry *t = emu_tlb_current(e, va_page);
    return t && (t->uc_perms & UC_PROT_EXEC) && t->backing == backing && !t->is_mmio && !t->is_sink;
}

/* Whether handing out `perms` on backing at va_page would make the frame
 * executable through one virtual page and writable through another (see
 * the opening comment on self-modifying code). */
static bool alias_conflict(const emu *e, uint64_t va_page, vmt_gfn backing, uint32_t perms)
{
    uint32_t other = 0;
    if (perms & UC_PROT_EXEC)
        other |= UC_PROT_WRITE;
    if ((perms & UC_PROT_WRITE) && (e->xframes[backing >> 3] >> (backing & 7) & 1))
        other |= UC_PROT_EXEC;
    if (!other)
        return false;
    for (uint32_t i = 0; i < e->tlb_used; i++) {
        const emu_tlb_entry *t = &e->tlb[i];
        if (t->backing == backing && t->va != va_page && (t->uc_perms & other) && !t->is_mmio && !t->is_sink)
            return true;
    }
    return false;
}

/* Decide a translation for an access of `kind` to va_page. */
bool emu_mmu_fill(emu *e, uint64_t va_page, vmt_access kind, uint64_t *paddr, uint32_t *perms)
{
    if (e->in_ctl) {
        /* uc_ctl_remove_cache of a physical page (emu_code_written) */
        if (!e->ctl_pa_valid || (va_page & EMU_CTL_VA) != EMU_CTL_VA)
            return false;
        *paddr = va_page & ~EMU_CTL_VA;
        *perms = UC_PROT_ALL;
        return true;
    }
    emu_walk_ctx wc;
    vmt_walk w;
    emu_tlb_entry n;
    const emu_tlb_entry *hit = reusable(e, va_page, kind);
    vmt_status st = VMT_OK;
    if (hit) {
        n = *hit; /* copied: record() below may move slots */
        e->tstats.record_hits++;
    } else {
        st = emu_walk(e, va_page, &w, &wc);
        e->tstats.walks++;
    }
    uint8_t cpl = emu_cpl(e);
    bool smap = emu_smap_explicit(e, cpl);
    vmt_access pte = hit ? emu_rights_for(e, n.walk_rights, n.walk_user, cpl, smap)
                     : st == VMT_OK ? emu_pte_rights_for(e, &w, cpl, smap) : VMT_ACCESS_NONE;
    vmt_gfn gfn = hit ? n.gfn : st == VMT_OK ? w.pa >> 12 : 0;
    vmt_gfn backing = gfn;
    bool ram = st == VMT_OK && emu_gfn_is_ram(e, gfn);
    vmt_access va_rights = ram ? emu_view_rights(e, va_page, gfn, &backing) : VMT_ACCESS_RWX;
    bool deny = e->deny_active && e->deny_va == va_page && e->deny_kind == kind;
    bool ok = st == VMT_OK && (pte & kind) && ((va_rights & kind) || deny);
    if (ok && kind == VMT_ACCESS_X && !ram)
        ok = false; /* execution outside RAM: stops the guest */
    if (ok && kind == VMT_ACCESS_W && ram && e->pt_refs[backing] && e->ptw_va != va_page && !deny)
        ok = false; /* a write into a page-table frame: performed exactly */
    if (!ok) {
        if (kind == VMT_ACCESS_X) {
            if (!e->fault.pending) {
                e->fault.pending = true;
                e->fault.counted = false;
                e->fault.kind = VMT_ACCESS_X;
                e->fault.va = va_page;
                e->fault.size = 0;
                e->fault.value = 0;
            }
            return false;
        }
        *paddr = EMU_TRAP_PA + (uint64_t)trap_slot(e, va_page) * EMU_PAGE;
        *perms = UC_PROT_READ | UC_PROT_WRITE;
        return true;
    }
    if (!hit) {
        emu_set_ad_bits(e, &w, kind == VMT_ACCESS_W);
        memset(&n, 0, sizeof n);
        n.va = va_page;
        n.gfn = gfn;
        n.dirty = (w.steps[w.nsteps - 1].value & VMT_PTE_D) != 0;
        n.global = (e->cr4 & EMU_CR4_PGE) && (w.steps[w.nsteps - 1].value & VMT_PTE_G);
        n.pcid = emu_pcid(e);
        n.walk_rights = w.rights;
        n.walk_user = w.user != 0;
        for (unsigned i = 0; i < w.nsteps; i++) {
            n.table_gfns[i] = w.steps[i].table_pa >> 12;
            n.tables[i] = emu_table_host_frame(e, n.table_gfns[i]);
            n.entry_off[i] = (uint16_t)vmt_page_offset(w.steps[i].entry_pa);
        }
        n.ntables = w.nsteps;
    }
    n.pte_rights = pte;
    n.is_sink = false;
    if (!ram) {
        n.is_mmio = true;
        n.backing = gfn;
        n.uc_perms = UC_PROT_READ | UC_PROT_WRITE;
        record(e, &n, !hit);
        *paddr = gfn << 12;
        *perms = n.uc_perms;
        return true;
    }
    vmt_access a = pte & (va_rights | (deny ? kind : 0));
    if (kind == VMT_ACCESS_W && !deny)
        emu_dirty_mark(e, backing);
    if (!n.dirty || (e->pt_refs[backing] && e->ptw_va != va_page) || !emu_dirty_test(e, backing))
        a &= (vmt_access)~VMT_ACCESS_W;
    if (deny && kind == VMT_ACCESS_W) {
        /* DENY of a write: the instruction writes into a copy */
        memcpy(e->sink, emu_frame_ptr(e, backing), EMU_PAGE);
        n.backing = backing;
        n.is_sink = true;
        n.uc_perms = UC_PROT_READ | UC_PROT_WRITE;
        record(e, &n, !hit);
        *paddr = EMU_SINK_PA;
        *perms = n.uc_perms;
        return true;
    }
    n.backing = backing;
    n.uc_perms = uc_perms_of(a) | uc_perms_of(kind);
    if (kind != VMT_ACCESS_X && !fetched_before(e, va_page, backing))
        n.uc_perms &= ~(uint32_t)UC_PROT_EXEC; /* X only for code: see the opening comment */
    if (alias_conflict(e, va_page, backing, n.uc_perms))
        e->flush_asap = true; /* this access goes on; the next instruction starts afresh */
    if (n.uc_perms & UC_PROT_EXEC)
        e->xframes[backing >> 3] |= (uint8_t)(1u << (backing & 7));
    record(e, &n, !hit);
    *paddr = emu_phys_pa(e, backing);
    *perms = n.uc_perms;
    return true;
}

/* The UNMAPPED hook: an access through a trap slot. */
bool emu_mmu_trap(emu *e, vmt_access kind, uint64_t paddr, int size, int64_t value)
{
    if (paddr < EMU_TRAP_PA || paddr >= EMU_TRAP_PA + (uint64_t)EMU_TRAP_SLOTS * EMU_PAGE) {
        if (!e->fault.pending) {
            e->fault.pending = true;
            e->fault.counted = true;
            e->fault.kind = kind;
            e->fault.va = UINT64_MAX;
            e->fault.pa = paddr;
        }
        return false;
    }
    uint32_t slot = (uint32_t)((paddr - EMU_TRAP_PA) / EMU_PAGE);
    if (!e->fault.pending) {
        e->fault.pending = true;
        e->fault.counted = true;
        e->fault.kind = kind;
        e->fault.va = e->trap_va[slot] + (paddr & (EMU_PAGE - 1));
        e->fault.size = size;
        e->fault.value = (uint64_t)value;
    }
    return false;
}

/* Only what the written bytes can change is dropped: the translations
 * whose walk read one of the written entries (of any PCID). Unicorn then
 * forgets everything (it cannot forget one page) and refills the rest from
 * the record without walking. */
void emu_tlb_range_written(emu *e, vmt_gfn frame, uint32_t off, uint32_t len)
{
    if (len == 0 || off >= EMU_PAGE || !e->pt_refs || frame >= emu_total_frames(e) || !e->pt_refs[frame])
        return;
    if (len > EMU_PAGE - off)
        len = EMU_PAGE - off;
    bool dropped = false;
    for (uint32_t i = e->tlb_used; i-- > 0;) {
        const emu_tlb_entry *t = &e->tlb[i];
        for (unsigned k = 0; k < t->ntables; k++) {
            if (t->tables[k] == frame && t->entry_off[k] < off + len && t->entry_off[k] + 8u > off) {
                drop_code(e, t);
                emu_tlb_drop_slot(e, i); /* the last slot moves to i, already looked at */
                dropped = true;
                break;
            }
        }
    }
    if (dropped) {
        e->uc_flush_pending = true;
        emu_code_cache_reset(e);
    }
}

void emu_tlb_frame_written(emu *e, vmt_gfn frame) { emu_tlb_range_written(e, frame, 0, EMU_PAGE); }

/* After a view / rights / grant change: any recorded translation that would
 * now be answered differently makes Unicorn forget them all. */
void emu_tlb_revalidate(emu *e)
{
    /* translations onto trap slots are not recorded: they last until the
     * MMU context changes (see emu_op_wait_event's fault path) */
    bool stale = e->trap_next != 0;
    for (uint32_t i = 0; i < e->tlb_used; i++) {
        const emu_tlb_entry *t = &e->tlb[i];
        bool s = t->is_sink;
        for (unsigned k = 0; k < t->ntables && !s; k++) {
            vmt_gfn b;
            vmt_access a = emu_view_rights(e, UINT64_MAX - 1, t->table_gfns[k], &b);
            s = b != t->tables[k] || !(a & VMT_ACCESS_R);
        }
        if (!s && !t->is_mmio) {
            vmt_gfn b;
            vmt_access a = emu_view_rights(e, t->va, t->gfn, &b) & t->pte_rights;
            s = b != t->backing || (uc_perms_of(a) & t->uc_perms) != t->uc_perms;
            if (b != t->backing || ((t->uc_perms & UC_PROT_EXEC) && !(a & VMT_ACCESS_X)))
                drop_code(e, t);
        }
        stale |= s;
    }
    if (stale)
        emu_tlb_flush(e);
}

static void fill_mem_event(const emu_fault *f, const vmt_walk *w, vmt_event *ev)
{
    vmt_mem_access_info *m = &ev->u.mem;
    memset(m, 0, sizeof *m);
    m->gpa = (w->pa & ~(uint64_t)(EMU_PAGE - 1)) | vmt_page_offset(f->va);
    m->gva = f->va;
    m->gva_valid = true;
    m->access = f->kind;
    if (f->kind == VMT_ACCESS_W && f->size >= 1 && f->size <= 8) {
        m->has_data = true;
        m->size = (uint8_t)f->size;
        m->value = f->size == 8 ? (uint64_t)f->value : ((uint64_t)f->value & ((1ULL << (8 * f->size)) - 1));
    }
}

emu_fault_result emu_mmu_fault(emu *e, const emu_fault *f, vmt_event *ev, uint32_t *pf_error)
{
    uint64_t page = f->va & ~(uint64_t)(EMU_PAGE - 1);
    uint8_t cpl = emu_cpl(e);
    emu_walk_ctx wc;
    vmt_walk w;
    uint32_t kind_bits = (f->kind == VMT_ACCESS_W ? 2u : 0) | (f->kind == VMT_ACCESS_X ? 0x10u : 0) |
                         (cpl == 3 ? 4u : 0);
    if (f->va == UINT64_MAX) {
        snprintf(e->stop.message, sizeof e->stop.message,
                 "unicorn reached unmapped physical address 0x%" PRIx64 " (driver bug)", f->pa);
        e->stop.reason = VMT_STOP_DRIVER_ERROR;
        return EMU_FR_STOP;
    }
    if (!vmt_va_is_canonical(f->va, (e->cr4 & VMT_CR4_LA57) ? 5 : 4))
        return EMU_FR_GP;
    vmt_status st = emu_walk(e, page, &w, &wc);
    if (wc.pt_violation) {
        memset(&ev->u.mem, 0, sizeof ev->u.mem);
        ev->u.mem.gpa = wc.violation_pa;
        ev->u.mem.gva = f->va;
        ev->u.mem.gva_valid = true;
        ev->u.mem.access = VMT_ACCESS_R;
        ev->u.mem.in_pt_walk = true;
        return EMU_FR_EVENT;
    }
    if (st == VMT_E_INVAL)
        return EMU_FR_GP;
    if (st == VMT_E_NOT_PRESENT) {
        *pf_error = kind_bits;
        return EMU_FR_PAGE_FAULT;
    }
    if (st != VMT_OK) {
        *pf_error = kind_bits | 1u | 8u; /* present + reserved bit */
        return EMU_FR_PAGE_FAULT;
    }
    vmt_access pte = emu_pte_rights_for(e, &w, cpl, emu_smap_explicit(e, cpl));
    if (!(pte & f->kind)) {
        *pf_error = kind_bits | 1u;
        return EMU_FR_PAGE_FAULT;
    }
    vmt_gfn gfn = w.pa >> 12;
    if (!emu_gfn_is_ram(e, gfn)) {
        if (f->kind == VMT_ACCESS_X) {
            snprintf(e->stop.message, sizeof e->stop.message,
                     "execution at va 0x%" PRIx64 " reaches gfn 0x%" PRIx64 " outside guest RAM", f->va, gfn);
            e->stop.reason = VMT_STOP_GUEST_ERROR;
            return EMU_FR_STOP;
        }
        return EMU_FR_RETRY;
    }
    vmt_gfn backing;
    vmt_access va_rights = emu_view_rights(e, page, gfn, &backing);
    bool denied = e->deny_active && e->deny_va == page && e->deny_kind == f->kind;
    if (!(va_rights & f->kind) && !denied) {
        fill_mem_event(f, &w, ev);
        return EMU_FR_EVENT;
    }
    if (f->kind == VMT_ACCESS_W && e->pt_refs[backing] && !denied && e->ptw_va != page)
        return EMU_FR_PT_WRITE;
    return EMU_FR_RETRY;
}

vmt_status emu_mmu_check(emu *e, char *why, size_t why_len)
{
    uint64_t frames = emu_total_frames(e);
    uint32_t *refs = calloc(frames ? frames : 1, sizeof *refs);
    if (!refs)
        return VMT_E_NOMEM;
    vmt_status st = VMT_OK;
    for (uint32_t i = 0; i < e->tlb_used && !st; i++) {
        const emu_tlb_entry *t = &e->tlb[i];
        if (tlb_find(e, entry_key(t)) != i) {
            snprintf(why, why_len, "tlb slot %u (va 0x%" PRIx64 ") is not in the index", i, t->va);
            st = VMT_E_INTERNAL;
        }
        for (unsigned k = 0; k < t->ntables; k++)
            refs[t->tables[k]]++;
        if (!t->is_mmio && !t->is_sink) {
            vmt_gfn b;
            vmt_access a = emu_view_resolve(e, e->mmu_view, t->gfn, &b);
            if (e->grant_kinds)
                a |= e->grant_kinds;
            if (!e->uc_flush_pending && (b != t->backing || (uc_perms_of(a & t->pte_rights) & t->uc_perms) != t->uc_perms)) {
                snprintf(why, why_len, "tlb va 0x%" PRIx64 " handed out perms %u beyond PTE and view rights", t->va,
                         t->uc_perms);
                st = VMT_E_INTERNAL;
            }
        }
    }
    for (uint32_t i = 0; i < e->tlb_used && !st; i++) {
        const emu_tlb_entry *t = &e->tlb[i];
        if (!t->is_mmio && !t->is_sink && refs[t->backing] && (t->uc_perms & UC_PROT_WRITE) && !e->flush_asap &&
            !e->uc_flush_pending && e->ptw_va != t->va) {
            snprintf(why, why_len, "va 0x%" PRIx64 " maps page-table frame 0x%" PRIx64 " writable", t->va,
                     t->backing);
            st = VMT_E_INTERNAL;
        }
    }
    for (uint64_t f = 0; f < frames && !st; f++) {
        if (refs[f] != e->pt_refs[f]) {
            snprintf(why, why_len, "frame 0x%" PRIx64 " has %u table references, counted %u", f, e->pt_refs[f],
                     refs[f]);
            st = VMT_E_INTERNAL;
        }
    }
    free(refs);
    if (!st)
        st = emu_tlb_check_tags(e, why, why_len);
    if (!st && vmt_hmap_count(&e->tlb_index) != e->tlb_used) {
        snprintf(why, why_len, "tlb counts disagree: used %u, index %zu", e->tlb_used, vmt_hmap_count(&e->tlb_index));
        st = VMT_E_INTERNAL;
    }
    if (!st && e->tlb_used > e->tlb_cap + EMU_TLB_SLACK) {
        snprintf(why, why_len, "tlb record holds %u entries, more than %u", e->tlb_used, e->tlb_cap + EMU_TLB_SLACK);
        st = VMT_E_INTERNAL;
    }
    if (!st && (e->cr4 & e->cr4_reserved)) {
        snprintf(why, why_len, "CR4 0x%" PRIx64 " has bits this CPU does not have (0x%" PRIx64 ")", e->cr4,
                 e->cr4 & e->cr4_reserved);
        st = VMT_E_INTERNAL;
    }
    /* translations of user pages handed out with EFLAGS.AC = 1 are kept
     * apart from AC = 0 ones only while Unicorn's CR4 has SMAP too */
    if (!st && ((uint64_t)emu_rd(e, UC_X86_REG_CR4) & EMU_CR4_SMAP) != (e->cr4 & EMU_CR4_SMAP)) {
        snprintf(why, why_len, "CR4.SMAP is %d but Unicorn's is %d: its TLB would mix EFLAGS.AC states",
                 (e->cr4 & EMU_CR4_SMAP) != 0, (e->cr4 & EMU_CR4_SMAP) == 0);
        st = VMT_E_INTERNAL;
    }
    return st;
}
