/*
 * bpm/bpm_ctl.c — the three controllers: how one active address context is
 * armed and disarmed in the driver.
 *
 * SHADOW (hidden INT3, after DRAKVUF's inject_trap_pa, but freeing what it
 * allocates): the first site of a (view, gfn) allocates a shadow frame,
 * copies the original page into it with 0xCC at the site (one write), remaps
 * gfn -> shadow in the view, THEN restricts the gfn to execute-only through
 * the access arbiter (a remap resets rights, so the order matters). Further
 * sites on the frame read the original byte and write one 0xCC into the
 * shadow. A byte that is already 0xCC is a double trap: nothing is written
 * and the guest's INT3 is reinjected when hit. Disarming the last site of a
 * frame remaps the gfn back, drops the restriction and frees the shadow
 * (which the driver refuses while it still backs a gfn: hence that order).
 * EXEC: the first site of a frame restricts it to RW (no execute); sites
 * themselves cost nothing. DEBUG: one debug register per distinct va on all
 * vCPUs, reference-counted.
 *
 * Atomicity: every arm/disarm either completes or undoes the driver calls it
 * made and leaves the maps untouched (capacity is reserved before the first
 * driver call, so no map insertion can fail after one).
 */
#include <stdio.h>
#include <stdlib.h>

#include "bpm/bpm_internal.h"
#include "core/session_internal.h" /* vmt_arbiter_prefetch only */

int bpm_site_find(const bpm_frame *f, unsigned off)
{
    unsigned lo = bpm_site_lower_bound(f, off);
    return (lo < f->nsites && bpm_sites_c(f)[lo].off == off) ? (int)lo : -1;
}

unsigned bpm_site_lower_bound(const bpm_frame *f, unsigned off)
{
    const bpm_site *sites = bpm_sites_c(f);
    unsigned lo = 0, hi = f->nsites;
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        if (sites[mid].off < off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* ---- controller choice ---- */

static void append_missing(char *buf, size_t len, const char *what)
{
    size_t n = strlen(buf);
    if (n < len)
        snprintf(buf + n, len - n, "%s%s", n ? ", " : "", what);
}

static void missing_caps(const vmt_driver *d, uint64_t need, char *buf, size_t len)
{
    for (unsigned i = 0; i < 64; i++) {
        uint64_t f = 1ull << i;
        if ((need & f) && !vmt_driver_has(d, f))
            append_missing(buf, len, vmt_cap_name(f));
    }
}

/* Empty string when controller c can run on d; else what is missing. */
static void ctl_missing(const vmt_driver *d, vmt_bpm_controller c, char *buf, size_t len)
{
    const vmt_caps *caps = vmt_driver_caps(d);
    buf[0] = 0;
    switch (c) {
    case VMT_BPM_CTL_SHADOW:
        missing_caps(d, VMT_CAP_READ_PHYS | VMT_CAP_WRITE_PHYS | VMT_CAP_VIEWS | VMT_CAP_VIEW_REMAP |
                            VMT_CAP_VIEW_PERM | VMT_CAP_FRAMES | VMT_CAP_BREAKPOINT_EVENTS,
                     buf, len);
        if (!vmt_driver_has(d, VMT_CAP_EMULATE) && !vmt_driver_has(d, VMT_CAP_FAST_STEP))
            append_missing(buf, len, "emulate or fast-step");
        if ((caps->trap_access & VMT_ACCESS_RW) != VMT_ACCESS_RW)
            append_missing(buf, len, "read and write traps");
        break;
    case VMT_BPM_CTL_EXEC:
        missing_caps(d, VMT_CAP_VIEWS | VMT_CAP_VIEW_PERM, buf, len);
        if (!vmt_driver_has(d, VMT_CAP_EMULATE) && !vmt_driver_has(d, VMT_CAP_FAST_STEP))
            append_missing(buf, len, "emulate or fast-step");
        if (!(caps->trap_access & VMT_ACCESS_X))
            append_missing(buf, len, "execute traps");
        break;
    case VMT_BPM_CTL_DEBUG:
        missing_caps(d, VMT_CAP_HW_BREAKPOINTS | VMT_CAP_EVENTS, buf, len);
        if (vmt_driver_has(d, VMT_CAP_HW_BREAKPOINTS) && caps->hw_breakpoints == 0)
            append_missing(buf, len, "at least one debug register");
        break;
    default:
        snprintf(buf, len, "a valid controller");
        break;
    }
}

vmt_status bpm_ctl_choose(vmt_driver *d, vmt_bpm_controller want, vmt_bpm_controller *out, char *why,
                          size_t why_len)
{
    char miss[3][160];
    if (want != VMT_BPM_CTL_AUTO) {
        ctl_missing(d, want, miss[0], sizeof miss[0]);
        if (miss[0][0]) {
            vmt_why(why, why_len, "bpm: the %s controller cannot run on driver '%s': it needs %s",
                    vmt_bpm_controller_name(want), vmt_driver_name(d), miss[0]);
            return VMT_E_NOTSUP;
        }
        *out = want;
        return VMT_OK;
    }
    static const vmt_bpm_controller order[3] = { VMT_BPM_CTL_SHADOW, VMT_BPM_CTL_EXEC, VMT_BPM_CTL_DEBUG };
    for (int i = 0; i < 3; i++) {
        ctl_missing(d, order[i], miss[i], sizeof miss[i]);
        if (!miss[i][0]) {
            *out = order[i];
            return VMT_OK;
        }
    }
    vmt_why(why, why_len,
            "bpm: no breakpoint controller runs on driver '%s' (shadow needs %s; exec needs %s; debug needs %s)",
            vmt_driver_name(d), miss[0], miss[1], miss[2]);
    return VMT_E_NOTSUP;
}

/* ---- errors ---- */

static vmt_status drv_fail(vmt_bpm *b, vmt_status st, const char *what, vmt_view view, vmt_gfn gfn)
{
    return vmt_errbuf_set(&b->err, st, "bpm: %s (view %u, gfn 0x%llx) failed: %s", what, (unsigned)view,
                          (unsigned long long)gfn, vmt_driver_error(b->d));
}

static vmt_status sess_fail(vmt_bpm *b, vmt_status st, const char *what, vmt_view view, vmt_gfn gfn)
{
    return vmt_errbuf_set(&b->err, st, "bpm: %s (view %u, gfn 0x%llx) failed: %s", what, (unsigned)view,
                          (unsigned long long)gfn, vmt_session_error(b->s));
}

/* ---- DEBUG ---- */

static vmt_status dbg_arm(vmt_bpm *b, vmt_va va)
{
    int free_slot = -1;
    for (unsigned i = 0; i < b->ndbg; i++) {
        if (b->dbg[i].nref && b->dbg[i].va == va) {
            b->dbg[i].nref++;
            return VMT_OK;
        }
        if (!b->dbg[i].nref && free_slot < 0)
            free_slot = (int)i;
    }
    if (free_slot < 0)
        return vmt_errbuf_set(&b->err, VMT_E_RANGE,
                              "bpm: all %u debug registers are in use; va 0x%llx needs another "
                              "(use the shadow or exec controller for more breakpoints)",
                              b->ndbg, (unsigned long long)va);
    vmt_status st = vmt_drv_hw_breakpoint(b->d, VMT_VCPU_ALL, (unsigned)free_slot, va, 1);
    if (st)
        return vmt_errbuf_set(&b->err, st, "bpm: setting debug register %d to 0x%llx failed: %s", free_slot,
                              (unsigned long long)va, vmt_driver_error(b->d));
    b->dbg[free_slot].va = va;
    b->dbg[free_slot].nref = 1;
    b->nsites++;
    return VMT_OK;
}

static vmt_status dbg_disarm(vmt_bpm *b, vmt_va va)
{
    for (unsigned i = 0; i < b->ndbg; i++) {
        if (!b->dbg[i].nref || b->dbg[i].va != va)
            continue;
        if (b->dbg[i].nref > 1) {
            b->dbg[i].nref--;
            return VMT_OK;
        }
        vmt_status st = vmt_drv_hw_breakpoint(b->d, VMT_VCPU_ALL, i, 0, 0);
        if (st)
            return vmt_errbuf_set(&b->err, st, "bpm: clearing debug register %u (0x%llx) failed: %s", i,
                                  (unsigned long long)va, vmt_driver_error(b->d));
        b->dbg[i].nref = 0;
        b->dbg[i].va = 0;
        b->nsites--;
        return VMT_OK;
    }
    return vmt_errbuf_set(&b->err, VMT_E_INTERNAL, "bpm: no debug register holds active va 0x%llx",
                          (unsigned long long)va);
}

/* ---- SHADOW / EXEC ---- */

/* Room for one more site (the inline site moves to a heap array). */
static vmt_status sites_reserve(vmt_bpm *b, bpm_frame *f)
{
    if (f->nsites < bpm_sites_room(f))
        return VMT_OK;
    uint32_t cap = f->cap ? f->cap * 2 : 2;
    if (cap > VMT_PAGE_SIZE)
        cap = VMT_PAGE_SIZE;
    bpm_site *n = realloc(f->cap ? f->s.heap : NULL, cap * sizeof *n);
    if (!n)
        return vmt_errbuf_set(&b->err, VMT_E_NOMEM, "bpm: out of memory for the sites of a frame");
    if (!f->cap)
        n[0] = f->s.one;
    b->site_bytes += (size_t)(cap - f->cap) * sizeof *n;
    f->s.heap = n;
    f->cap = cap;
    return VMT_OK;
}

static void site_insert(bpm_frame *f, bpm_site s)
{
    bpm_site *sites = bpm_sites(f);
    unsigned at = bpm_site_lower_bound(f, s.off);
    memmove(&sites[at + 1], &sites[at], (f->nsites - at) * sizeof *sites);
    sites[at] = s;
    f->nsites++;
}

/* Erase a site (never the last one: the frame goes then); back to the
 * inline site when one remains. */
static void site_erase(vmt_bpm *b, bpm_frame *f, unsigned at)
{
    bpm_site *sites = bpm_sites(f);
    memmove(&sites[at], &sites[at + 1], (f->nsites - at - 1) * sizeof *sites);
    f->nsites--;
    if (f->nsites == 1 && f->cap) {
        bpm_site one = sites[0];
        free(f->s.heap);
        b->site_bytes -= f->cap * sizeof *sites;
        f->s.one = one;
        f->cap = 0;
    }
}

/* A new site on a frame that is already installed. */
static vmt_status arm_site(vmt_bpm *b, vmt_view view, vmt_gfn gfn, bpm_frame *f, unsigned off)
{
    bpm_site s = { (uint16_t)off, 0, 0, 1 };
    vmt_status st;
    if (b->ctl == VMT_BPM_CTL_SHADOW) {
        st = vmt_drv_read_phys(b->d, vmt_gfn_to_pa(gfn) + off, &s.orig, 1);
        if (st)
            return drv_fail(b, st, "reading the original byte", view, gfn);
    }
    /* after the read (which fails in failure tests), before the write:
     * growing the array changes no state a failure must undo */
    if ((st = sites_reserve(b, f)))
        return st;
    if (b->ctl == VMT_BPM_CTL_SHADOW) {
        if (s.orig == BPM_INT3) {
            s.flags |= SITE_DOUBLE;
        } else {
            uint8_t cc = BPM_INT3;
            st = vmt_drv_write_phys(b->d, vmt_gfn_to_pa(f->shadow) + off, &cc, 1);
            if (st)
                return drv_fail(b, st, "planting an INT3 in the shadow frame", view, gfn);
        }
    }
    site_insert(f, s);
    b->nsites++;
    return VMT_OK;
}

/* The first site of a frame: install the frame. */
static vmt_status arm_frame(vmt_bpm *b, vmt_view view, vmt_gfn gfn, uint64_t fk, unsigned off)
{
    vmt_status st;
    if ((st = vmt_hmap_reserve(&b->frames, vmt_hmap_count(&b->frames) + 1)))
        return vmt_errbuf_set(&b->err, st, "bpm: out of memory for the frame map");
    bpm_frame f;
    memset(&f, 0, sizeof f);
    f.nsites = 1;
    f.s.one = (bpm_site){ (uint16_t)off, 0, 0, 1 };

    if (b->ctl == VMT_BPM_CTL_SHADOW) {
        uint8_t page[VMT_PAGE_SIZE];
        vmt_gfn sh = 0;
        st = vmt_drv_frame_alloc(b->d, &sh);
        if (st)
            return drv_fail(b, st, "allocating a shadow frame", view, gfn);
        /* the shadow's and the arbiter's lookups below overlap the page read */
        vmt_hmap_prefetch2(&b->frames, &sh);
        vmt_arbiter_prefetch(b->s, view, gfn);
        st = vmt_drv_read_phys(b->d, vmt_gfn_to_pa(gfn), page, sizeof page);
        if (st) {
            drv_fail(b, st, "reading the original frame", view, gfn);
            goto free_shadow;
        }
        if (vmt_hmap_get2(&b->frames, &sh, NULL)) /* a driver bug; never free a frame in use */
            return vmt_errbuf_set(&b->err, VMT_E_INTERNAL,
                                  "bpm: the driver gave shadow frame 0x%llx, which already shadows another frame "
                                  "(view %u, gfn 0x%llx)",
                                  (unsigned long long)sh, (unsigned)view, (unsigned long long)gfn);
        f.s.one.orig = page[off];
        if (page[off] == BPM_INT3)
            f.s.one.flags |= SITE_DOUBLE;
        page[off] = BPM_INT3;
        st = vmt_drv_write_phys(b->d, vmt_gfn_to_pa(sh), page, sizeof page);
        if (st) {
            drv_fail(b, st, "copying the frame into its shadow", view, gfn);
            goto free_shadow;
        }
        st = vmt_session_remap(b->s, view, gfn, sh);
        if (st) {
            sess_fail(b, st, "remapping the frame to its shadow", view, gfn);
            (void)vmt_session_remap(b->s, view, gfn, gfn); /* the remap may have happened */
            goto free_shadow;
        }
        st = vmt_session_restrict(b->s, view, gfn, VMT_OWNER_BPM, VMT_ACCESS_X);
        if (st) {
            sess_fail(b, st, "making the frame execute-only", view, gfn);
            (void)vmt_session_remap(b->s, view, gfn, gfn);
            goto free_shadow;
        }
        f.shadow = sh;
        goto done;
    free_shadow:
        (void)vmt_drv_frame_free(b->d, sh);
        return st;
    } else {
        st = vmt_session_restrict(b->s, view, gfn, VMT_OWNER_BPM, VMT_ACCESS_RW);
        if (st)
            return sess_fail(b, st, "making the frame non-executable", view, gfn);
    }
done:
    (void)vmt_hmap_put(&b->frames, &fk, &f, NULL, NULL); /* reserved, shadow unique: cannot fail */
    b->nsites++;
    return VMT_OK;
}

vmt_status bpm_ctl_arm(vmt_bpm *b, vmt_view view, vmt_gfn gfn, vmt_va va)
{
    if (b->ctl == VMT_BPM_CTL_DEBUG)
        return dbg_arm(b, va);
    unsigned off = (unsigned)vmt_page_offset(va);
    uint64_t fk = bpm_fkey(view, gfn);
    bpm_frame *f = bpm_frame_at(b, fk);
    if (!f)
        return arm_frame(b, view, gfn, fk, off);
    int i = bpm_site_find(f, off);
    if (i >= 0) {
        bpm_sites(f)[i].nref++;
        return VMT_OK;
    }
    return arm_site(b, view, gfn, f, off);
}

/* Uninstall a whole frame (its last site goes). */
static vmt_status disarm_frame(vmt_bpm *b, vmt_view view, vmt_gfn gfn, uint64_t fk, const bpm_frame *f)
{
    vmt_status st;
    if (b->ctl == VMT_BPM_CTL_SHADOW) {
        vmt_hmap_prefetch2(&b->frames, &f->shadow); /* for the delete below */
        vmt_arbiter_prefetch(b->s, view, gfn);
        st = bpm_gone_ok(vmt_session_remap(b->s, view, gfn, gfn));
        if (st) {
            sess_fail(b, st, "remapping the frame back from its shadow", view, gfn);
            (void)vmt_session_remap(b->s, view, gfn, f->shadow); /* the remap may have happened */
            return st;
        }
        st = bpm_gone_ok(vmt_session_unrestrict(b->s, view, gfn, VMT_OWNER_BPM));
        if (st) {
            sess_fail(b, st, "dropping the execute-only restriction", view, gfn);
            (void)vmt_session_remap(b->s, view, gfn, f->shadow);
            return st;
        }
        st = vmt_drv_frame_free(b->d, f->shadow);
        if (st) {
            drv_fail(b, st, "freeing the shadow frame", view, gfn);
            (void)vmt_session_remap(b->s, view, gfn, f->shadow);
            (void)vmt_session_restrict(b->s, view, gfn, VMT_OWNER_BPM, VMT_ACCESS_X);
            return st;
        }
    } else {
        st = bpm_gone_ok(vmt_session_unrestrict(b->s, view, gfn, VMT_OWNER_BPM));
        if (st)
            return sess_fail(b, st, "dropping the no-execute restriction", view, gfn);
    }
    if (f->cap) {
        b->site_bytes -= f->cap * sizeof(bpm_site);
        free(f->s.heap);
    }
    vmt_hmap_del(&b->frames, &fk, NULL);
    b->nsites--;
    return VMT_OK;
}

vmt_status bpm_ctl_disarm(vmt_bpm *b, vmt_view view, vmt_gfn gfn, vmt_va va)
{
    if (b->ctl == VMT_BPM_CTL_DEBUG)
        return dbg_disarm(b, va);
    unsigned off = (unsigned)vmt_page_offset(va);
    uint64_t fk = bpm_fkey(view, gfn);
    bpm_frame *f = bpm_frame_at(b, fk);
    int i;
    if (!f || (i = bpm_site_find(f, off)) < 0)
        return vmt_errbuf_set(&b->err, VMT_E_INTERNAL, "bpm: active va 0x%llx has no site at view %u gfn 0x%llx",
                              (unsigned long long)va, (unsigned)view, (unsigned long long)gfn);
    bpm_site *site = &bpm_sites(f)[i];
    if (site->nref > 1) {
        site->nref--;
        return VMT_OK;
    }
    if (f->nsites == 1) {
        bpm_frame copy = *f; /* the record goes with the map entry */
        return disarm_frame(b, view, gfn, fk, &copy);
    }
    if (b->ctl == VMT_BPM_CTL_SHADOW && !(site->flags & SITE_DOUBLE)) {
        vmt_status st = vmt_drv_write_phys(b->d, vmt_gfn_to_pa(f->shadow) + off, &site->orig, 1);
        if (st)
            return drv_fail(b, st, "restoring the original byte in the shadow", view, gfn);
    }
    site_erase(b, f, (unsigned)i);
    b->nsites--;
    return VMT_OK;
}

vmt_status bpm_ctl_refresh_frame(vmt_bpm *b, uint64_t fk)
{
    bpm_frame *f = bpm_frame_at(b, fk);
    if (!f || b->ctl != VMT_BPM_CTL_SHADOW)
        return VMT_OK; /* removed meanwhile: nothing to refresh */
    bpm_site *sites = bpm_sites(f);
    vmt_view view = bpm_fkey_view(fk);
    vmt_gfn gfn = bpm_fkey_gfn(fk);
    uint8_t page[VMT_PAGE_SIZE];
    vmt_status st = vmt_drv_read_phys(b->d, vmt_gfn_to_pa(gfn), page, sizeof page);
    if (st)
        return drv_fail(b, st, "reading the written frame", view, gfn);
    uint8_t orig[VMT_PAGE_SIZE];
    memcpy(orig, page, sizeof page);
    for (uint32_t i = 0; i < f->nsites; i++)
        page[sites[i].off] = BPM_INT3;
    st = vmt_drv_write_phys(b->d, vmt_gfn_to_pa(f->shadow), page, sizeof page);
    if (st)
        return drv_fail(b, st, "rebuilding the shadow frame", view, gfn);
    for (uint32_t i = 0; i < f->nsites; i++) {
        sites[i].orig = orig[sites[i].off];
        sites[i].flags = (uint8_t)((sites[i].flags & ~SITE_DOUBLE) | (orig[sites[i].off] == BPM_INT3 ? SITE_DOUBLE : 0));
    }
    b->refreshes++;
    return VMT_OK;
}

vmt_status bpm_ctl_patch_frame(vmt_bpm *b, uint64_t fk, unsigned off, const uint8_t *bytes, unsigned size)
{
    bpm_frame *f = bpm_frame_at(b, fk);
    if (!f || b->ctl != VMT_BPM_CTL_SHADOW || off >= VMT_PAGE_SIZE)
        return VMT_OK;
    if (size > VMT_PAGE_SIZE - off)
        size = (unsigned)(VMT_PAGE_SIZE - off); /* the part in this frame */
    uint8_t buf[8];
    if (size > sizeof buf)
        size = sizeof buf;
    int idx[8];
    for (unsigned i = 0; i < size; i++) {
        idx[i] = bpm_site_find(f, off + i);
        buf[i] = idx[i] >= 0 ? BPM_INT3 : bytes[i];
    }
    vmt_status st = vmt_drv_write_phys(b->d, vmt_gfn_to_pa(f->shadow) + off, buf, size);
    if (st)
        return drv_fail(b, st, "patching the shadow frame with the guest's write", bpm_fkey_view(fk),
                        bpm_fkey_gfn(fk));
    for (unsigned i = 0; i < size; i++) {
        if (idx[i] < 0)
            continue;
        bpm_site *s = &bpm_sites(f)[idx[i]];
        s->orig = bytes[i];
        s->flags = (uint8_t)((s->flags & ~SITE_DOUBLE) | (bytes[i] == BPM_INT3 ? SITE_DOUBLE : 0));
    }
    b->refreshes++;
    return VMT_OK;
}

void bpm_ctl_release_all(vmt_bpm *b)
{
    size_t it = 0;
    void *k, *v;
    while (vmt_hmap_next(&b->frames, &it, &k, &v)) {
        uint64_t fk;
        bpm_frame f;
        memcpy(&fk, k, sizeof fk);
        memcpy(&f, v, sizeof f);
        vmt_view view = bpm_fkey_view(fk);
        vmt_gfn gfn = bpm_fkey_gfn(fk);
        if (b->ctl == VMT_BPM_CTL_SHADOW) {
            (void)vmt_session_remap(b->s, view, gfn, gfn);
            (void)vmt_session_unrestrict(b->s, view, gfn, VMT_OWNER_BPM);
            (void)vmt_drv_frame_free(b->d, f.shadow);
        } else {
            (void)vmt_session_unrestrict(b->s, view, gfn, VMT_OWNER_BPM);
        }
        if (f.cap)
            free(f.s.heap);
    }
    vmt_hmap_free(&b->frames);
    for (unsigned i = 0; i < b->ndbg; i++) {
        if (b->dbg[i].nref)
            (void)vmt_drv_hw_breakpoint(b->d, VMT_VCPU_ALL, i, 0, 0);
        b->dbg[i].nref = 0;
    }
    b->nsites = 0;
    b->site_bytes = 0;
}
