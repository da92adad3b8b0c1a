/*
 * drivers/kvm/kvm_mem.c — guest RAM, memslots, views, extra frames, dirty log.
 *
 * Design: RAM and extra frames live in one memfd (see kvm_internal.h). Each
 * RAM frame has a memslot state: writable slot, read-only slot (W denied: a
 * guest store exits as KVM_EXIT_MMIO with the exact value and is held back)
 * or no slot (R denied: every data access exits; code there runs through
 * temporary one-frame execute slots, see kvm_run.c). Changing one frame's
 * state rebuilds only the slot holding it and the slots touching it, and
 * only slots that actually differ are deleted and re-added, so runs of equal
 * state stay merged. Before a writable slot is deleted its dirty bitmap is
 * folded into dirty_acc, so the log never loses a page.
 *
 * Views are VM-wide: gmem shows map_view's remaps (one mmap(MAP_FIXED) of a
 * memfd page per remapped gfn, found through per-view remap lists; KVM's
 * MMU notifier sees it), and the slots encode layout_view's rights, which
 * is the current view, or any view while the vCPU is in view 0 (switched
 * there by a response; view 0 allows everything, so the extra exits are
 * served silently). View 0 is identity with all rights and cannot be changed.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "drivers/kvm/kvm_internal.h"

/* The memslot state a view's rights call for: no slot when reads are
 * denied (every data access exits), read-only when writes are. */
static inline uint8_t want_state(const kvm_drv *k, vmt_view v, uint64_t g)
{
    if (v == VMT_VIEW_DEFAULT)
        return KVM_SLOT_RW;
    uint8_t a = k->views[v].access[g];
    return !(a & VMT_ACCESS_R) ? KVM_SLOT_NONE : !(a & VMT_ACCESS_W) ? KVM_SLOT_RO : KVM_SLOT_RW;
}

uint64_t kvm_backing(const kvm_drv *k, vmt_view v, uint64_t gfn)
{
    return v == VMT_VIEW_DEFAULT ? gfn : k->views[v].backing[gfn];
}

void kvm_mark_dirty(kvm_drv *k, uint64_t gfn)
{
    if (gfn < k->ram_frames)
        k->dirty_acc[gfn / 64] |= 1ull << (gfn % 64);
}

void kvm_write_through(kvm_drv *k, vmt_view v, uint64_t gpa, const uint8_t *data, unsigned size)
{
    for (unsigned i = 0; i < size; i++) {
        uint64_t a = gpa + i, g = a >> VMT_PAGE_SHIFT;
        if (g >= k->ram_frames)
            break;
        k->direct[(kvm_backing(k, v, g) << VMT_PAGE_SHIFT) | (a & (VMT_PAGE_SIZE - 1))] = data[i];
        kvm_mark_dirty(k, g);
    }
}

void kvm_read_through(kvm_drv *k, vmt_view v, uint64_t gpa, uint8_t *data, unsigned size)
{
    for (unsigned i = 0; i < size; i++) {
        uint64_t a = gpa + i, g = a >> VMT_PAGE_SHIFT;
        data[i] = g < k->ram_frames ? k->direct[(kvm_backing(k, v, g) << VMT_PAGE_SHIFT) | (a & (VMT_PAGE_SIZE - 1))]
                                    : 0xff;
    }
}

/* ---- memslots ---- */

static vmt_status slot_ioctl(kvm_drv *k, uint32_t id, uint64_t gfn, uint64_t npages, bool ro)
{
    struct kvm_userspace_memory_region r = {
        .slot = id,
        .flags = npages ? (ro ? KVM_MEM_READONLY : KVM_MEM_LOG_DIRTY_PAGES) : 0,
        .guest_phys_addr = gfn << VMT_PAGE_SHIFT,
        .memory_size = npages << VMT_PAGE_SHIFT,
        .userspace_addr = (uint64_t)(uintptr_t)(k->gmem + (gfn << VMT_PAGE_SHIFT)),
    };
    if (ioctl(k->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
        return vmt_driver_fail(k->d, VMT_E_DRIVER, "KVM_SET_USER_MEMORY_REGION slot %u gfn 0x%" PRIx64
                               " pages %" PRIu64 "%s: %s", id, gfn, npages, ro ? " read-only" : "", strerror(errno));
    return VMT_OK;
}

/* Fold a writable slot's dirty bitmap into dirty_acc. */
static vmt_status slot_collect(kvm_drv *k, const kvm_slot *s)
{
    if (s->ro)
        return VMT_OK;
    uint64_t words = (s->npages + 63) / 64;
    memset(k->dirty_tmp, 0, words * 8);
    struct kvm_dirty_log log = { .slot = s->id };
    log.dirty_bitmap = k->dirty_tmp;
    if (ioctl(k->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0)
        return vmt_driver_fail(k->d, VMT_E_DRIVER, "KVM_GET_DIRTY_LOG slot %u: %s", s->id, strerror(errno));
    for (uint64_t i = 0; i < s->npages; i++)
        if (k->dirty_tmp[i / 64] & (1ull << (i % 64)))
            kvm_mark_dirty(k, s->gfn + i);
    return VMT_OK;
}

vmt_status kvm_collect_dirty(kvm_drv *k)
{
    for (uint32_t i = 0; i < k->nslots; i++) {
        vmt_status st = slot_collect(k, &k->slots[i]);
        if (st)
            return st;
    }
    return VMT_OK;
}

/* Index of the first slot whose end is above gfn (nslots if none). */
static uint32_t slot_after(const kvm_drv *k, uint64_t gfn)
{
    uint32_t lo = 0, hi = k->nslots;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (k->slots[mid].gfn + k->slots[mid].npages <= gfn)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The slot holding gfn, or -1. */
static int64_t slot_holding(const kvm_drv *k, uint64_t gfn)
{
    uint32_t i = slot_after(k, gfn);
    return i < k->nslots && k->slots[i].gfn <= gfn ? (int64_t)i : -1;
}

/* Rebuild the slots of [lo, hi) from state[]. No slot may straddle lo or
 * hi. Slots that come out identical stay; runs of KVM_SLOT_NONE get none. */
static vmt_status slots_rebuild(kvm_drv *k, uint64_t lo, uint64_t hi)
{
    uint32_t i0 = slot_after(k, lo), i1 = i0; /* old slots [i0, i1) */
    while (i1 < k->nslots && k->slots[i1].gfn < hi)
        i1++;
    uint64_t nruns = 0;
    for (uint64_t g = lo; g < hi; g++)
        if (k->state[g] != KVM_SLOT_NONE && (g == lo || k->state[g] != k->state[g - 1]))
            nruns++;
    uint32_t nold = i1 - i0;
    kvm_slot *runs = calloc(nruns ? nruns : 1, sizeof *runs);
    uint8_t *keep_new = calloc(nruns ? nruns : 1, 1);
    uint8_t *keep_old = calloc(nold ? nold : 1, 1);
    vmt_status st = VMT_OK;
    if (!runs || !keep_new || !keep_old) {
        st = vmt_driver_fail(k->d, VMT_E_NOMEM, "out of memory rebuilding memslots");
        goto out;
    }
    uint64_t r = 0;
    for (uint64_t g = lo; g < hi; g++) {
        if (k->state[g] == KVM_SLOT_NONE)
            continue;
        if (g == lo || k->state[g] != k->state[g - 1]) {
            runs[r].gfn = g;
            runs[r].ro = k->state[g] == KVM_SLOT_RO;
            r++;
        }
        runs[r - 1].npages++;
    }
    for (uint32_t i = i0; i < i1; i++)
        for (uint64_t j = 0; j < nruns; j++)
            if (!keep_new[j] && runs[j].gfn == k->slots[i].gfn && runs[j].npages == k->slots[i].npages &&
                runs[j].ro == k->slots[i].ro) {
                keep_new[j] = 1;
                keep_old[i - i0] = 1;
                runs[j].id = k->slots[i].id;
            }
    if (k->nslots - nold + nruns > k->slots_cap || k->nfree_ids + nold < nruns) {
        st = vmt_driver_fail(k->d, VMT_E_RANGE, "out of KVM memslots (%u in use, limit %u)", k->nslots, k->max_slots);
        goto out;
    }
    for (uint32_t i = i0; i < i1; i++) {
        if (keep_old[i - i0])
            continue;
        if ((st = slot_collect(k, &k->slots[i])) || (st = slot_ioctl(k, k->slots[i].id, k->slots[i].gfn, 0, false)))
            goto out;
        k->free_ids[k->nfree_ids++] = k->slots[i].id;
    }
    for (uint64_t j = 0; j < nruns; j++) {
        if (keep_new[j])
            continue;
        runs[j].id = k->free_ids[--k->nfree_ids];
        if ((st = slot_ioctl(k, runs[j].id, runs[j].gfn, runs[j].npages, runs[j].ro))) {
            k->free_ids[k->nfree_ids++] = runs[j].id;
            goto out;
        }
    }
    memmove(&k->slots[i0 + nruns], &k->slots[i1], (k->nslots - i1) * sizeof *k->slots);
    memcpy(&k->slots[i0], runs, nruns * sizeof *runs);
    k->nslots = (uint32_t)(k->nslots - nold + nruns);
out:
    free(runs);
    free(keep_new);
    free(keep_old);
    return st;
}

static vmt_status set_state(kvm_drv *k, uint64_t g, uint8_t state)
{
    uint8_t old = k->state[g];
    if (old == state)
        return VMT_OK;
    /* the range: g, the slot holding it and the slots touching it (so runs can merge) */
    uint64_t lo = g, hi = g + 1;
    int64_t i = slot_holding(k, g);
    if (i >= 0) {
        lo = k->slots[i].gfn;
        hi = k->slots[i].gfn + k->slots[i].npages;
    }
    if (lo > 0 && (i = slot_holding(k, lo - 1)) >= 0)
        lo = k->slots[i].gfn;
    if (hi < k->ram_frames && (i = slot_holding(k, hi)) >= 0)
        hi = k->slots[i].gfn + k->slots[i].npages;
    k->state[g] = state;
    vmt_status st = slots_rebuild(k, lo, hi);
    if (st)
        k->state[g] = old;
    return st;
}

/* ---- temporary execute slots ---- */

vmt_status kvm_exec_map(kvm_drv *k, uint64_t gfn)
{
    if (k->nexec >= KVM_EXEC_SLOTS || !k->nfree_ids)
        return vmt_driver_fail(k->d, VMT_E_RANGE, "no room to map gfn 0x%" PRIx64 " for execution", gfn);
    uint32_t id = k->free_ids[--k->nfree_ids];
    vmt_status st = slot_ioctl(k, id, gfn, 1, true);
    if (st) {
        k->free_ids[k->nfree_ids++] = id;
        return st;
    }
    k->exec_gfn[k->nexec] = gfn;
    k->exec_id[k->nexec] = id;
    k->nexec++;
    return VMT_OK;
}

vmt_status kvm_exec_unmap_all(kvm_drv *k)
{
    vmt_status first = VMT_OK;
    while (k->nexec) {
        k->nexec--;
        vmt_status st = slot_ioctl(k, k->exec_id[k->nexec], k->exec_gfn[k->nexec], 0, false);
        if (st && !first)
            first = st;
        k->free_ids[k->nfree_ids++] = k->exec_id[k->nexec];
    }
    return first;
}

bool kvm_exec_mapped(const kvm_drv *k, uint64_t gfn)
{
    for (uint32_t i = 0; i < k->nexec; i++)
        if (k->exec_gfn[i] == gfn)
            return true;
    return false;
}

/* ---- backing ---- */

static vmt_status map_backing(kvm_drv *k, uint64_t g, uint64_t backing)
{
    void *p = mmap(k->gmem + (g << VMT_PAGE_SHIFT), VMT_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
                   k->memfd, (off_t)(backing << VMT_PAGE_SHIFT));
    if (p == MAP_FAILED)
        return vmt_driver_fail(k->d, VMT_E_DRIVER, "mmap of frame 0x%" PRIx64 " over gfn 0x%" PRIx64 ": %s", backing,
                               g, strerror(errno));
    return VMT_OK;
}

static vmt_status remap_list_set(kvm_drv *k, kvm_view *w, uint64_t g, bool remapped)
{
    if (remapped) {
        if (w->nremap == w->remap_cap) {
            uint64_t cap = w->remap_cap ? 2 * w->remap_cap : 16;
            uint32_t *n = realloc(w->remapped, cap * sizeof *n);
            if (!n)
                return vmt_driver_fail(k->d, VMT_E_NOMEM, "out of memory for remaps");
            w->remapped = n;
            w->remap_cap = cap;
        }
        w->remapped[w->nremap++] = (uint32_t)g;
        return VMT_OK;
    }
    for (uint64_t i = 0; i < w->nremap; i++)
        if (w->remapped[i] == g) {
            w->remapped[i] = w->remapped[--w->nremap];
            break;
        }
    return VMT_OK;
}

/* Make gmem show view v's backings: only gfns remapped in either view change. */
vmt_status kvm_map_view(kvm_drv *k, vmt_view v)
{
    vmt_view old = k->map_view;
    if (v == old)
        return VMT_OK;
    vmt_status st;
    const kvm_view *wo = &k->views[old], *wn = &k->views[v];
    for (uint64_t i = 0; old && i < wo->nremap; i++) {
        uint64_t g = wo->remapped[i], b = kvm_backing(k, v, g);
        if (b != wo->backing[g] && (st = map_backing(k, g, b)))
            return st;
    }
    for (uint64_t i = 0; v && i < wn->nremap; i++) {
        uint64_t g = wn->remapped[i];
        if (kvm_backing(k, old, g) == g && (st = map_backing(k, g, wn->backing[g])))
            return st;
    }
    k->map_view = v;
    return VMT_OK;
}

/* Make the memslots encode view v's rights exactly. */
vmt_status kvm_layout_to(kvm_drv *k, vmt_view v)
{
    vmt_view old = k->layout_view;
    k->lazy_runs = 0;
    if (v == old)
        return VMT_OK;
    bool prots = (old && k->views[old].nprot) || (v && k->views[v].nprot);
    if (!prots) {
        k->layout_view = v;
        return VMT_OK;
    }
    bool changed = false;
    uint8_t *prev = malloc(k->ram_frames);
    if (!prev)
        return vmt_driver_fail(k->d, VMT_E_NOMEM, "out of memory switching views");
    memcpy(prev, k->state, k->ram_frames);
    for (uint64_t g = 0; g < k->ram_frames; g++) {
        uint8_t want = want_state(k, v, g);
        changed |= k->state[g] != want;
        k->state[g] = want;
    }
    vmt_status st = changed ? slots_rebuild(k, 0, k->ram_frames) : VMT_OK;
    if (st)
        memcpy(k->state, prev, k->ram_frames);
    else
        k->layout_view = v;
    free(prev);
    return st;
}

/* Switch the vCPU to view v. `exact`: the memslots encode v's rights at
 * once. Otherwise a switch to view 0 keeps the current layout (it traps
 * more than view 0 needs; those exits are served without events), which
 * makes the STEP-in-view-0-and-back dance cost no memslot changes. */
vmt_status kvm_switch_view(kvm_drv *k, vmt_view v, bool exact)
{
    vmt_status st = kvm_map_view(k, v);
    if (st)
        return st;
    k->cur_view = v;
    k->lazy_runs = 0;
    if (v == k->layout_view || (v == VMT_VIEW_DEFAULT && !exact))
        return VMT_OK;
    return kvm_layout_to(k, v);
}

/* ---- init ---- */

vmt_status kvm_mem_init(kvm_drv *k, char *why, size_t why_len)
{
    k->mem_size = (k->ram_frames + k->extra_frames) << VMT_PAGE_SHIFT;
    k->memfd = memfd_create("vmtrap-kvm-ram", MFD_CLOEXEC);
    if (k->memfd < 0 || ftruncate(k->memfd, (off_t)k->mem_size) < 0) {
        vmt_why(why, why_len, "kvm: memfd for %" PRIu64 " bytes of guest memory: %s", k->mem_size, strerror(errno));
        return VMT_E_NOMEM;
    }
    k->direct = mmap(NULL, k->mem_size, PROT_READ | PROT_WRITE, MAP_SHARED, k->memfd, 0);
    k->gmem = mmap(NULL, k->ram_size, PROT_READ | PROT_WRITE, MAP_SHARED, k->memfd, 0);
    if (k->direct == MAP_FAILED || k->gmem == MAP_FAILED) {
        if (k->direct == MAP_FAILED)
            k->direct = NULL;
        if (k->gmem == MAP_FAILED)
            k->gmem = NULL;
        vmt_why(why, why_len, "kvm: mapping guest memory: %s", strerror(errno));
        return VMT_E_NOMEM;
    }
    int n = ioctl(k->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS);
    k->max_slots = n > 0 ? (uint32_t)n : 32;
    k->have_ro_slots = ioctl(k->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_READONLY_MEM) > 0;
    k->trap_access = k->have_ro_slots ? VMT_ACCESS_RW : VMT_ACCESS_NONE;
    uint64_t words = (k->ram_frames + 63) / 64;
    k->slots_cap = k->max_slots;
    k->slots = calloc(k->slots_cap, sizeof *k->slots);
    k->free_ids = calloc(k->max_slots, sizeof *k->free_ids);
    k->state = calloc(k->ram_frames, 1);
    k->dirty_acc = calloc(words, 8);
    k->dirty_tmp = calloc(words, 8);
    k->extra_used = calloc(k->extra_frames ? k->extra_frames : 1, 1);
    k->extra_refs = calloc(k->extra_frames ? k->extra_frames : 1, sizeof *k->extra_refs);
    k->views = calloc(k->max_views, sizeof *k->views);
    if (!k->slots || !k->free_ids || !k->state || !k->dirty_acc || !k->dirty_tmp || !k->extra_used || !k->extra_refs ||
        !k->views) {
        vmt_why(why, why_len, "kvm: out of memory");
        return VMT_E_NOMEM;
    }
    for (uint32_t i = 0; i < k->max_slots; i++)
        k->free_ids[i] = k->max_slots - 1 - i;
    k->nfree_ids = k->max_slots;
    k->views[0].used = true;
    k->views[0].dflt = VMT_ACCESS_RWX;
    k->slots[0] = (kvm_slot){ .gfn = 0, .npages = k->ram_frames, .id = k->free_ids[--k->nfree_ids], .ro = 0 };
    k->nslots = 1;
    if (slot_ioctl(k, k->slots[0].id, 0, k->ram_frames, false)) {
        vmt_why(why, why_len, "kvm: %s", vmt_driver_error(k->d));
        return VMT_E_DRIVER;
    }
    return VMT_OK;
}

void kvm_mem_fini(kvm_drv *k)
{
    if (k->views)
        for (uint16_t v = 0; v < k->max_views; v++) {
            free(k->views[v].access);
            free(k->views[v].backing);
            free(k->views[v].remapped);
        }
    free(k->views);
    free(k->slots);
    free(k->free_ids);
    free(k->state);
    free(k->dirty_acc);
    free(k->dirty_tmp);
    free(k->extra_used);
    free(k->extra_refs);
    if (k->gmem)
        munmap(k->gmem, k->ram_size);
    if (k->direct)
        munmap(k->direct, k->mem_size);
    if (k->memfd >= 0)
        close(k->memfd);
}

/* ---- physical memory ---- */

static vmt_status check_range(kvm_drv *k, vmt_pa pa, size_t len, const char *what)
{
    if (pa > k->mem_size || len > k->mem_size - pa)
        return vmt_driver_fail(k->d, VMT_E_RANGE, "%s of %zu bytes at pa 0x%" PRIx64 " is outside guest memory (0x%"
                               PRIx64 " bytes incl. extra frames)", what, len, pa, k->mem_size);
    uint64_t first = pa >> VMT_PAGE_SHIFT, last = (pa + (len ? len - 1 : 0)) >> VMT_PAGE_SHIFT;
    for (uint64_t g = first; len && g <= last; g++)
        if (g >= k->ram_frames && !k->extra_used[g - k->ram_frames])
            return vmt_driver_fail(k->d, VMT_E_RANGE, "%s at pa 0x%" PRIx64 ": frame 0x%" PRIx64
                                   " is an extra frame that is not allocated", what, pa, g);
    return VMT_OK;
}

vmt_status kvm_read_phys(vmt_driver *d, vmt_pa pa, void *buf, size_t len)
{
    kvm_drv *k = vmt_driver_impl(d);
    vmt_status st = check_range(k, pa, len, "read");
    if (st)
        return st;
    memcpy(buf, k->direct + pa, len);
    return VMT_OK;
}

vmt_status kvm_write_phys(vmt_driver *d, vmt_pa pa, const void *buf, size_t len)
{
    kvm_drv *k = vmt_driver_impl(d);
    vmt_status st = check_range(k, pa, len, "write");
    if (st)
        return st;
    memcpy(k->direct + pa, buf, len);
    for (uint64_t g = pa >> VMT_PAGE_SHIFT; len && g <= (pa + len - 1) >> VMT_PAGE_SHIFT; g++)
        kvm_mark_dirty(k, g);
    return VMT_OK;
}

/* ---- views ---- */

static vmt_status check_view(kvm_drv *k, vmt_view v, bool allow_default)
{
    if (v >= k->max_views || !k->views[v].used)
        return vmt_driver_fail(k->d, VMT_E_NOTFOUND, "no view %u", v);
    if (!allow_default && v == VMT_VIEW_DEFAULT)
        return vmt_driver_fail(k->d, VMT_E_INVAL, "view 0 is the unaltered view and cannot be changed");
    return VMT_OK;
}

static vmt_status check_gfn(kvm_drv *k, vmt_gfn gfn)
{
    if (gfn >= k->ram_frames)
        return vmt_driver_fail(k->d, VMT_E_RANGE, "gfn 0x%" PRIx64 " is outside guest RAM (%" PRIu64 " frames)", gfn,
                               k->ram_frames);
    return VMT_OK;
}

vmt_status kvm_view_create(vmt_driver *d, vmt_access dflt, vmt_view *out)
{
    kvm_drv *k = vmt_driver_impl(d);
    if (!(dflt & VMT_ACCESS_X) || ((~dflt & VMT_ACCESS_RW) & ~k->trap_access))
        return vmt_driver_fail(d, VMT_E_NOTSUP, "kvm cannot trap what default rights 0x%x deny (execute is never "
                               "trapped)", dflt);
    vmt_view v = 1;
    while (v < k->max_views && k->views[v].used)
        v++;
    if (v >= k->max_views)
        return vmt_driver_fail(d, VMT_E_RANGE, "all %u views are in use", k->max_views);
    kvm_view *w = &k->views[v];
    w->access = malloc(k->ram_frames);
    w->backing = malloc(k->ram_frames * sizeof *w->backing);
    if (!w->access || !w->backing) {
        free(w->access);
        free(w->backing);
        w->access = NULL;
        w->backing = NULL;
        return vmt_driver_fail(d, VMT_E_NOMEM, "out of memory for view %u", v);
    }
    memset(w->access, dflt & VMT_ACCESS_RWX, k->ram_frames);
    for (uint64_t g = 0; g < k->ram_frames; g++)
        w->backing[g] = (uint32_t)g;
    w->used = true;
    w->dflt = dflt & VMT_ACCESS_RWX;
    w->nremap = 0; /* remapped/remap_cap: zero from the last destroy or calloc */
    w->nprot = (dflt & VMT_ACCESS_RW) == VMT_ACCESS_RW ? 0 : k->ram_frames;
    *out = v;
    return VMT_OK;
}

vmt_status kvm_view_destroy(vmt_driver *d, vmt_view v)
{
    kvm_drv *k = vmt_driver_impl(d);
    vmt_status st = check_view(k, v, false);
    if (st)
        return st;
    if (v == k->cur_view)
        return vmt_driver_fail(d, VMT_E_BUSY, "view %u is the current view; switch away before destroying it", v);
    if (v == k->layout_view && (st = kvm_layout_to(k, k->cur_view)))
        return st;
    kvm_view *w = &k->views[v];
    for (uint64_t i = 0; i < w->nremap; i++)
        if (w->backing[w->remapped[i]] >= k->ram_frames)
            k->extra_refs[w->backing[w->remapped[i]] - k->ram_frames]--;
    free(w->access);
    free(w->backing);
    free(w->remapped);
    memset(w, 0, sizeof *w);
    return VMT_OK;
}

vmt_status kvm_view_switch(vmt_driver *d, vmt_vcpu vcpu, vmt_view v)
{
    kvm_drv *k = vmt_driver_impl(d);
    if (vcpu != 0 && vcpu != VMT_VCPU_ALL)
        return vmt_driver_fail(d, VMT_E_INVAL, "vcpu %u out of range (driver has 1)", vcpu);
    vmt_status st = check_view(k, v, true);
    return st ? st : kvm_switch_view(k, v, true);
}

vmt_status kvm_view_current(vmt_driver *d, vmt_vcpu vcpu, vmt_view *out)
{
    kvm_drv *k = vmt_driver_impl(d);
    if (vcpu != 0 && vcpu != VMT_VCPU_ALL)
        return vmt_driver_fail(d, VMT_E_INVAL, "vcpu %u out of range (driver has 1)", vcpu);
    *out = k->cur_view;
    return VMT_OK;
}

vmt_status kvm_view_remap(vmt_driver *d, vmt_view v, vmt_gfn gfn, vmt_gfn backing)
{
    kvm_drv *k = vmt_driver_impl(d);
    vmt_status st = check_view(k, v, false);
    if (st || (st = check_gfn(k, gfn)))
        return st;
    if (backing >= k->ram_frames + k->extra_frames ||
        (backing >= k->ram_frames && !k->extra_used[backing - k->ram_frames]))
        return vmt_driver_fail(d, VMT_E_RANGE, "backing frame 0x%" PRIx64 " is neither RAM nor an allocated frame",
                               backing);
    kvm_view *w = &k->views[v];
    uint64_t old = w->backing[gfn];
    if ((old != gfn) != (backing != gfn) && (st = remap_list_set(k, w, gfn, backing != gfn)))
        return st;
    if (v == k->map_view && old != backing && (st = map_backing(k, gfn, backing))) {
        if ((old != gfn) != (backing != gfn))
            remap_list_set(k, w, gfn, old != gfn);
        return st;
    }
    if (old >= k->ram_frames)
        k->extra_refs[old - k->ram_frames]--;
    if (backing >= k->ram_frames)
        k->extra_refs[backing - k->ram_frames]++;
    w->backing[gfn] = (uint32_t)backing;
    return kvm_view_set_access(d, v, gfn, w->dflt);
}

vmt_status kvm_view_set_access(vmt_driver *d, vmt_view v, vmt_gfn gfn, vmt_access allowed)
{
    kvm_drv *k = vmt_driver_impl(d);
    vmt_status st = check_view(k, v, false);
    if (st || (st = check_gfn(k, gfn)))
        return st;
    if (!(allowed & VMT_ACCESS_X) || ((~allowed & VMT_ACCESS_RW) & ~k->trap_access))
        return vmt_driver_fail(d, VMT_E_NOTSUP, "kvm cannot trap what rights 0x%x deny (execute is never trapped)",
                               allowed);
    kvm_view *w = &k->views[v];
    uint8_t old = w->access[gfn];
    allowed &= VMT_ACCESS_RWX;
    w->access[gfn] = allowed;
    if (v == k->layout_view && (st = set_state(k, gfn, want_state(k, v, gfn)))) {
        w->access[gfn] = old;
        return st;
    }
    w->nprot += ((allowed & VMT_ACCESS_RW) != VMT_ACCESS_RW) - ((old & VMT_ACCESS_RW) != VMT_ACCESS_RW);
    return VMT_OK;
}

vmt_status kvm_view_get_access(vmt_driver *d, vmt_view v, vmt_gfn gfn, vmt_access *allowed, vmt_gfn *backing)
{
    kvm_drv *k = vmt_driver_impl(d);
    vmt_status st = check_view(k, v, true);
    if (st || (st = check_gfn(k, gfn)))
        return st;
    if (allowed)
        *allowed = v ? k->views[v].access[gfn] : VMT_ACCESS_RWX;
    if (backing)
        *backing = kvm_backing(k, v, gfn);
    return VMT_OK;
}

/* ---- extra frames ---- */

vmt_status kvm_frame_alloc(vmt_driver *d, vmt_gfn *out)
{
    kvm_drv *k = vmt_driver_impl(d);
    for (uint64_t i = 0; i < k->extra_frames; i++) {
        if (k->extra_used[i])
            continue;
        k->extra_used[i] = 1;
        memset(k->direct + ((k->ram_frames + i) << VMT_PAGE_SHIFT), 0, VMT_PAGE_SIZE);
        *out = k->ram_frames + i;
        return VMT_OK;
    }
    return vmt_driver_fail(d, VMT_E_NOMEM, "all %" PRIu64 " extra frames are allocated", k->extra_frames);
}

vmt_status kvm_frame_free(vmt_driver *d, vmt_gfn gfn)
{
    kvm_drv *k = vmt_driver_impl(d);
    if (gfn < k->ram_frames || gfn >= k->ram_frames + k->extra_frames || !k->extra_used[gfn - k->ram_frames])
        return vmt_driver_fail(d, VMT_E_NOTFOUND, "frame 0x%" PRIx64 " is not an allocated extra frame", gfn);
    if (k->extra_refs[gfn - k->ram_frames])
        return vmt_driver_fail(d, VMT_E_BUSY, "frame 0x%" PRIx64 " still backs %u gfn(s) in views", gfn,
                               k->extra_refs[gfn - k->ram_frames]);
    k->extra_used[gfn - k->ram_frames] = 0;
    return VMT_OK;
}

/* ---- checker ---- */

vmt_status kvm_mem_check(kvm_drv *k)
{
    /* slots: sorted, disjoint, exactly the frames whose state is not NONE */
    uint64_t g = 0;
    for (uint32_t i = 0; i <= k->nslots; i++) {
        uint64_t start = i < k->nslots ? k->slots[i].gfn : k->ram_frames;
        if (i < k->nslots && (k->slots[i].npages == 0 || start < g))
            return vmt_driver_fail(k->d, VMT_E_INTERNAL, "memslot %u (gfn 0x%" PRIx64 ") overlaps or is empty", i,
                                   start);
        for (; g < start; g++)
            if (k->state[g] != KVM_SLOT_NONE)
                return vmt_driver_fail(k->d, VMT_E_INTERNAL, "gfn 0x%" PRIx64 " has state %u but no memslot", g,
                                       k->state[g]);
        if (i == k->nslots)
            break;
        const kvm_slot *s = &k->slots[i];
        uint8_t want = s->ro ? KVM_SLOT_RO : KVM_SLOT_RW;
        for (; g < s->gfn + s->npages; g++)
            if (g >= k->ram_frames || k->state[g] != want)
                return vmt_driver_fail(k->d, VMT_E_INTERNAL, "gfn 0x%" PRIx64 " in a %s memslot has state %u", g,
                                       s->ro ? "read-only" : "writable", g < k->ram_frames ? k->state[g] : 0);
    }
    if (k->layout_view >= k->max_views || !k->views[k->layout_view].used ||
        (k->layout_view != k->cur_view && k->cur_view != VMT_VIEW_DEFAULT))
        return vmt_driver_fail(k->d, VMT_E_INTERNAL, "memslots encode view %u while the vCPU is in view %u",
                               k->layout_view, k->cur_view);
    for (g = 0; g < k->ram_frames; g++)
        if (k->state[g] != want_state(k, k->layout_view, g))
            return vmt_driver_fail(k->d, VMT_E_INTERNAL, "gfn 0x%" PRIx64 " memslot state %u differs from view %u's "
                                   "rights", g, k->state[g], k->layout_view);
    if (k->nexec)
        return vmt_driver_fail(k->d, VMT_E_INTERNAL, "%u temporary execute slots outside a step", k->nexec);
    for (uint16_t v = 1; v < k->max_views; v++) {
        const kvm_view *w = &k->views[v];
        uint64_t n = 0;
        for (uint64_t x = 0; w->used && x < k->ram_frames; x++)
            n += (w->access[x] & VMT_ACCESS_RW) != VMT_ACCESS_RW;
        if (w->used && n != w->nprot)
            return vmt_driver_fail(k->d, VMT_E_INTERNAL, "view %u has %" PRIu64 " restricted gfns, counter %" PRIu64, v,
                                   n, w->nprot);
    }
    for (uint16_t v = 1; v < k->max_views; v++) {
        const kvm_view *w = &k->views[v];
        uint64_t n = 0;
        for (uint64_t x = 0; w->used && x < k->ram_frames; x++)
            n += w->backing[x] != x;
        if (w->used && n != w->nremap)
            return vmt_driver_fail(k->d, VMT_E_INTERNAL, "view %u has %" PRIu64 " remapped gfns, list has %" PRIu64, v,
                                   n, w->nremap);
        for (uint64_t i = 0; w->used && i < w->nremap; i++)
            if (w->backing[w->remapped[i]] == w->remapped[i])
                return vmt_driver_fail(k->d, VMT_E_INTERNAL, "view %u lists gfn 0x%x as remapped", v, w->remapped[i]);
    }
    if (k->map_view != k->cur_view)
        return vmt_driver_fail(k->d, VMT_E_INTERNAL, "mapping shows view %u outside a step, current is %u",
                               k->map_view, k->cur_view);
    uint32_t *refs = calloc(k->extra_frames ? k->extra_frames : 1, sizeof *refs);
    if (!refs)
        return vmt_driver_fail(k->d, VMT_E_NOMEM, "out of memory checking frames");
    for (uint16_t v = 1; v < k->max_views; v++)
        for (uint64_t x = 0; k->views[v].used && x < k->ram_frames; x++) {
            uint64_t b = k->views[v].backing[x];
            if (b >= k->ram_frames)
                refs[b - k->ram_frames]++;
        }
    for (uint64_t i = 0; i < k->extra_frames; i++) {
        if (refs[i] != k->extra_refs[i] || (refs[i] && !k->extra_used[i])) {
            vmt_status st = vmt_driver_fail(k->d, VMT_E_INTERNAL, "extra frame 0x%" PRIx64 " has %u refs, views "
                                            "use it %u times", k->ram_frames + i, k->extra_refs[i], refs[i]);
            free(refs);
            return st;
        }
    }
    free(refs);
    return VMT_OK;
}
