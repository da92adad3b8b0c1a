/*
 * drivers/mem/mem_driver.c — the in-memory driver: creation, capabilities,
 * guest-physical memory, extra frames, registers, pause, hardware
 * breakpoints, injection and the accessors of vmtrap/mem.h.
 *
 * Capabilities are computed once at create from the config: everything the
 * driver implements minus cfg.caps_remove (and the capabilities that depend
 * on a removed one). Behaviour follows the declared capabilities, not the
 * full set: without VIEW_PER_VCPU views are VM-wide, without VIEW_PERM no
 * access kind can be trapped, etc. Undeclared calls are refused by the
 * generic wrapper before they reach us.
 *
 * Physical accesses are validated for the whole range before any byte is
 * copied, so a failing read/write changes nothing (and a read fills nothing).
 *
 * In no-op mode (benchmarks, typically with a large RAM of which each page
 * is read once) guest RAM asks the kernel for transparent huge pages, like
 * a hugepage-backed VM: a first read of an untouched page then faults once
 * per 2 MiB instead of once per 4 KiB, so a benchmark measures the copy, not
 * the kernel populating fresh RAM.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/errbuf.h"
#include "drivers/mem/mem_internal.h"

#define MEM_ALL_CAPS                                                                                  \
    (VMT_CAP_READ_PHYS | VMT_CAP_WRITE_PHYS | VMT_CAP_REGS_GET | VMT_CAP_REGS_SET | VMT_CAP_PAUSE |  \
     VMT_CAP_VIEWS | VMT_CAP_VIEW_PER_VCPU | VMT_CAP_VIEW_REMAP | VMT_CAP_VIEW_PERM |                 \
     VMT_CAP_WRITE_DATA | VMT_CAP_SINGLESTEP | VMT_CAP_FAST_STEP | VMT_CAP_EMULATE | VMT_CAP_FRAMES | \
     VMT_CAP_INJECT_PF | VMT_CAP_INJECT_BP | VMT_CAP_EVENTS | VMT_CAP_BREAKPOINT_EVENTS |             \
     VMT_CAP_CR3_EVENTS | VMT_CAP_IO_EVENTS | VMT_CAP_HW_BREAKPOINTS | VMT_CAP_VCPU_STATE |         \
     VMT_CAP_DIRTY_LOG)
#define MEM_VIEW_DEPENDENTS (VMT_CAP_VIEW_PER_VCPU | VMT_CAP_VIEW_REMAP | VMT_CAP_VIEW_PERM)
#define MEM_EVENT_DEPENDENTS                                                                      \
    (VMT_CAP_WRITE_DATA | VMT_CAP_SINGLESTEP | VMT_CAP_FAST_STEP | VMT_CAP_EMULATE |              \
     VMT_CAP_BREAKPOINT_EVENTS | VMT_CAP_CR3_EVENTS | VMT_CAP_IO_EVENTS)

uint8_t *mem_frame_ptr(mem_drv *m, vmt_gfn gfn)
{
    if (gfn < m->cfg.ram_frames)
        return m->ram + gfn * VMT_PAGE_SIZE;
    uint64_t k = gfn - m->cfg.ram_frames;
    if (k < m->extra_hwm)
        return m->frame[k];
    return NULL;
}

/* ---- memory ---- */

/* Check [pa, pa+len) page by page. *noop_extra: the range is in the extra
 * area of a no-op-mode driver (reads zero, writes dropped). */
static vmt_status check_range(vmt_driver *d, mem_drv *m, vmt_pa pa, size_t len, const char *op, bool *noop_extra)
{
    *noop_extra = false;
    uint64_t limit = (m->cfg.ram_frames + m->cfg.extra_frames) * VMT_PAGE_SIZE;
    if (pa >= limit || len > limit - pa)
        return vmt_driver_fail(d, VMT_E_RANGE, "%s: [0x%llx, +0x%zx) is outside guest memory (RAM ends at 0x%llx)",
                               op, (unsigned long long)pa, len,
                               (unsigned long long)(m->cfg.ram_frames * VMT_PAGE_SIZE));
    vmt_gfn first = vmt_pa_to_gfn(pa), last = vmt_pa_to_gfn(pa + len - 1);
    if (m->cfg.noop && first >= m->cfg.ram_frames) {
        *noop_extra = true;
        return VMT_OK;
    }
    for (vmt_gfn g = first; g <= last; g++)
        if (!mem_frame_ptr(m, g))
            return vmt_driver_fail(d, VMT_E_RANGE,
                                   "%s: gfn 0x%llx (in [0x%llx, +0x%zx)) is neither RAM nor an allocated frame", op,
                                   (unsigned long long)g, (unsigned long long)pa, len);
    return VMT_OK;
}

static vmt_status op_read_phys(vmt_driver *d, vmt_pa pa, void *buf, size_t len)
{
    mem_drv *m = mem_of(d);
    vmt_mem_call c = { .op = VMT_MEM_OP_READ_PHYS, .addr = pa, .len = len };
    vmt_status st = mem_begin(d, m, &c);
    if (st || len == 0)
        return mem_end(m, &c, st);
    bool noop_extra;
    st = check_range(d, m, pa, len, "read_phys", &noop_extra);
    if (st)
        return mem_end(m, &c, st);
    if (noop_extra) {
        memset(buf, 0, len);
        return mem_end(m, &c, VMT_OK);
    }
    uint8_t *out = buf;
    while (len) {
        size_t off = vmt_page_offset(pa), n = VMT_PAGE_SIZE - off;
        if (n > len)
            n = len;
        memcpy(out, mem_frame_ptr(m, vmt_pa_to_gfn(pa)) + off, n);
        out += n;
        pa += n;
        len -= n;
    }
    return mem_end(m, &c, VMT_OK);
}

static vmt_status op_write_phys(vmt_driver *d, vmt_pa pa, const void *buf, size_t len)
{
    mem_drv *m = mem_of(d);
    vmt_mem_call c = { .op = VMT_MEM_OP_WRITE_PHYS, .addr = pa, .len = len };
    vmt_status st = mem_begin(d, m, &c);
    if (st || len == 0)
        return mem_end(m, &c, st);
    bool noop_extra;
    st = check_range(d, m, pa, len, "write_phys", &noop_extra);
    if (st || noop_extra)
        return mem_end(m, &c, st);
    const uint8_t *in = buf;
    mem_mark_dirty(m, pa, len);
    while (len) {
        size_t off = vmt_page_offset(pa), n = VMT_PAGE_SIZE - off;
        if (n > len)
            n = len;
        memcpy(mem_frame_ptr(m, vmt_pa_to_gfn(pa)) + off, in, n);
        in += n;
        pa += n;
        len -= n;
    }
    return mem_end(m, &c, VMT_OK);
}

/* ---- extra frames ---- */

static vmt_status op_frame_alloc(vmt_driver *d, vmt_gfn *out)
{
    mem_drv *m = mem_of(d);
    vmt_mem_call c = { .op = VMT_MEM_OP_FRAME_ALLOC };
    vmt_status st = mem_begin(d, m, &c);
    if (st)
        return mem_end(m, &c, st);
    if (m->cfg.noop) {
        *out = m->cfg.ram_frames + m->noop_next_frame;
        m->noop_next_frame = (m->noop_next_frame + 1) % m->cfg.extra_frames;
        return mem_end(m, &c, VMT_OK);
    }
    uint32_t k;
    bool from_stack = m->free_count > 0;
    if (from_stack)
        k = m->free_stack[m->free_count - 1];
    else if (m->extra_hwm < m->cfg.extra_frames)
        k = m->extra_hwm;
    else
        return mem_end(m, &c, vmt_driver_fail(d, VMT_E_NOMEM, "frame_alloc: all %u extra frames are in use",
                                              m->cfg.extra_frames));
    uint8_t *page = calloc(1, VMT_PAGE_SIZE);
    if (!page)
        return mem_end(m, &c, vmt_driver_fail(d, VMT_E_NOMEM, "frame_alloc: out of host memory"));
    if (from_stack)
        m->free_count--;
    else
        m->extra_hwm++;
    m->frame[k] = page;
    m->refs[k] = 0;
    *out = c.gfn = m->cfg.ram_frames + k;
    return mem_end(m, &c, VMT_OK);
}

static vmt_status op_frame_free(vmt_driver *d, vmt_gfn gfn)
{
    mem_drv *m = mem_of(d);
    vmt_mem_call c = { .op = VMT_MEM_OP_FRAME_FREE, .gfn = gfn };
    vmt_status st = mem_begin(d, m, &c);
    if (st || m->cfg.noop)
        return mem_end(m, &c, st);
    if (gfn < m->cfg.ram_frames)
        return mem_end(m, &c, vmt_driver_fail(d, VMT_E_INVAL, "frame_free: gfn 0x%llx is guest RAM, not an extra frame",
                                              (unsigned long long)gfn));
    if (!mem_frame_ptr(m, gfn))
        return mem_end(m, &c, vmt_driver_fail(d, VMT_E_NOTFOUND, "frame_free: gfn 0x%llx is not an allocated frame",
                                              (unsigned long long)gfn));
    uint64_t k = gfn - m->cfg.ram_frames;
    if (m->refs[k])
        return mem_end(m, &c, vmt_driver_fail(d, VMT_E_BUSY, "frame_free: gfn 0x%llx backs %u view entries",
                                              (unsigned long long)gfn, m->refs[k]));
    free(m->frame[k]);
    m->frame[k] = NULL;
    m->free_stack[m->free_count++] = (uint32_t)k;
    return mem_end(m, &c, VMT_OK);
}

/* ---- vCPU state ---- */

static vmt_status need_vcpu(vmt_driver *d, mem_drv *m, vmt_vcpu vcpu, bool allow_all, const char *op)
{
    if (vcpu < m->cfg.vcpus || (allow_all && vcpu == VMT_VCPU_ALL))
        return VMT_OK;
    return vmt_driver_fail(d, VMT_E_INVAL, "%s: no vCPU %u (driver has %u)", op, vcpu, m->cfg.vcpus);
}

static vmt_status op_get_regs(vmt_driver *d, vmt_vcpu vcpu, vmt_regs *regs)
{
    mem_drv *m = mem_of(d);
    vmt_mem_call c = { .op = VMT_MEM_OP_GET_REGS, .vcpu = vcpu };
    vmt_status st = mem_begin(d, m, &c);
    if (!st)
        st = need_vcpu(d, m, vcpu, false, "get_regs");
    if (!st)
        *regs = m->vcpus[vcpu].regs;
    return mem_end(m, &c, st);
}

static vmt_status op_set_regs(vmt_driver *d, vmt_vcpu vcpu, const vmt_regs *regs)
{
    mem_drv *m = mem_of(d);
    vmt_mem_call c = { .op = VMT_MEM_OP_SET_REGS, .vcpu = vcpu };
    vmt_status st = mem_begin(d, m, &c);
    if (!st)
        st = need_vcpu(d, m, vcpu, false, "set_regs");
    if (!st)
        m->vcpus[vcpu].regs = *regs;
    return mem_end(m, &c, st);
}

static vmt_status op_pause(vmt_driver *d)
{
    mem_drv *m = mem_of(d);
    vmt_mem_call c = { .op = VMT_MEM_OP_PAUSE };
    vmt_status st = mem_begin(d, m, &c);
    if (!st)
        m->paused = true;
    return mem_end(m, &c, st);
}

static vmt_status op_resume(vmt_driver *d)
{
    mem_drv *m = mem_of(d);
    vmt_mem_call c = { .op = VMT_MEM_OP_RESUME };
    vmt_status st = mem_begin(d, m, &c);
    if (!st)
        m->paused = false;
    return mem_end(m, &c, st);
}

static vmt_status op_hw_breakpoint(vmt_driver *d, vmt_vcpu vcpu, unsigned index, vmt_va va, int enable)
{
    mem_drv *m = mem_of(d);
    vmt_mem_call c = { .op = VMT_MEM_OP_HW_BREAKPOINT, .vcpu = vcpu, .index = index, .addr = va, .enable = enable };
    vmt_status st = mem_begin(d, m, &c);
    if (!st)
        st = need_vcpu(d, m, vcpu, true, "hw_breakpoint");
    if (!st && index >= m->caps.hw_breakpoints)
        st = vmt_driver_fail(d, VMT_E_RANGE, "hw_breakpoint: index %u out of range (%u)", index,
                             m->caps.hw_breakpoints);
    if (st)
        return mem_end(m, &c, st);
    for (uint32_t i = 0; i < m->cfg.vcpus; i++) {
        if (vcpu != VMT_VCPU_ALL && i != vcpu)
            continue;
        m->vcpus[i].hwbp[index].va = enable ? va : 0;
        m->vcpus[i].hwbp[index].enabled = enable != 0;
    }
    return mem_end(m, &c, VMT_OK);
}

static vmt_status op_inject(vmt_driver *d, vmt_vcpu vcpu, const vmt_injection *inj)
{
    mem_drv *m = mem_of(d);
    vmt_mem_call c = { .op = VMT_MEM_OP_INJECT, .vcpu = vcpu, .index = inj->vector, .addr = inj->cr2 };
    vmt_status st = mem_begin(d, m, &c);
    if (!st)
        st = need_vcpu(d, m, vcpu, false, "inject");
    if (!st && inj->vector >= 32)
        st = vmt_driver_fail(d, VMT_E_INVAL, "inject: vector %u is not an exception", inj->vector);
    if (!st) {
        m->vcpus[vcpu].has_injection = true;
        m->vcpus[vcpu].injection = *inj;
    }
    return mem_end(m, &c, st);
}

static vmt_status op_monitor(vmt_driver *d, vmt_event_kind kind, int enable)
{
    mem_drv *m = mem_of(d);
    vmt_mem_call c = { .op = VMT_MEM_OP_MONITOR, .index = (uint32_t)kind, .enable = enable };
    vmt_status st = mem_begin(d, m, &c);
    if (!st && kind != VMT_EVENT_CR_WRITE && kind != VMT_EVENT_IO && kind != VMT_EVENT_SINGLESTEP)
        st = vmt_driver_fail(d, VMT_E_INVAL, "monitor: %s events are not optional", vmt_event_kind_name(kind));
    if (!st)
        m->monitoring[kind] = enable != 0;
    return mem_end(m, &c, st);
}

static vmt_status op_set_limit(vmt_driver *d, double seconds, uint64_t instructions)
{
    mem_drv *m = mem_of(d);
    vmt_mem_call c = { .op = VMT_MEM_OP_SET_LIMIT, .len = instructions };
    vmt_status st = mem_begin(d, m, &c);
    if (!st) {
        m->limit_seconds = seconds;
        m->limit_insns = instructions;
    }
    return mem_end(m, &c, st);
}

/* ---- create / destroy ---- */

static void mem_free(mem_drv *m)
{
    if (!m)
        return;
    if (m->frame)
        for (uint32_t k = 0; k < m->extra_hwm; k++)
            free(m->frame[k]);
    mem_views_free(m);
    mem_events_free(m);
    free(m->frame);
    free(m->refs);
    free(m->free_stack);
    free(m->views);
    free(m->vcpus);
    free(m->log);
    free(m->ram);
    free(m->dirty);
    free(m);
}

static void op_destroy(vmt_driver *d) { mem_free(mem_of(d)); }

const char mem_driver_name[] = "mem";

static const vmt_driver_ops mem_ops = {
    .name = mem_driver_name,
    .destroy = op_destroy,
    .read_phys = op_read_phys,
    .write_phys = op_write_phys,
    .get_regs = op_get_regs,
    .set_regs = op_set_regs,
    .pause = op_pause,
    .resume = op_resume,
    .view_create = mem_op_view_create,
    .view_destroy = mem_op_view_destroy,
    .view_switch = mem_op_view_switch,
    .view_current = mem_op_view_current,
    .view_remap = mem_op_view_remap,
    .view_set_access = mem_op_view_set_access,
    .view_get_access = mem_op_view_get_access,
    .frame_alloc = op_frame_alloc,
    .frame_free = op_frame_free,
    .hw_breakpoint = op_hw_breakpoint,
    .inject = op_inject,
    .monitor = op_monitor,
    .wait_event = mem_op_wait_event,
    .respond = mem_op_respond,
    .set_limit = op_set_limit,
    .stats = mem_op_stats,
    .get_vcpu_state = mem_op_get_vcpu_state,
    .set_vcpu_state = mem_op_set_vcpu_state,
    .dirty_log = mem_op_dirty_log,
};

static vmt_status normalise(const vmt_mem_config *in, vmt_mem_config *c, char *why, size_t why_len)
{
    memset(c, 0, sizeof *c);
    if (in)
        *c = *in;
    if (!c->ram_frames)
        c->ram_frames = 256;
    if (!c->vcpus)
        c->vcpus = 1;
    if (!c->extra_frames)
        c->extra_frames = 1024;
    if (!c->max_views)
        c->max_views = 16;
    if (!c->hw_breakpoints)
        c->hw_breakpoints = MEM_HW_BP_MAX;
    if (!c->maxphyaddr)
        c->maxphyaddr = 39;
    if (!c->trap_access)
        c->trap_access = VMT_ACCESS_RWX;
    if (c->maxphyaddr < 32 || c->maxphyaddr > 52) {
        vmt_why(why, why_len, "mem driver: maxphyaddr %u not in 32..52", c->maxphyaddr);
        return VMT_E_INVAL;
    }
    uint64_t frames_max = 1ull << (c->maxphyaddr - VMT_PAGE_SHIFT);
    if (c->ram_frames > frames_max || c->extra_frames > frames_max - c->ram_frames ||
        c->ram_frames > (1ull << 22)) {
        vmt_why(why, why_len, "mem driver: %llu RAM + %u extra frames do not fit (max 2^22 RAM frames, %u address bits)",
                (unsigned long long)c->ram_frames, c->extra_frames, c->maxphyaddr);
        return VMT_E_INVAL;
    }
    if (c->vcpus > 1024 || c->max_views < 2 || c->max_views >= VMT_VIEW_INVALID ||
        c->hw_breakpoints > MEM_HW_BP_MAX || (c->trap_access & ~VMT_ACCESS_RWX)) {
        vmt_why(why, why_len, "mem driver: bad config (vcpus %u <= 1024, max_views %u in 2..0xfffe, "
                "hw_breakpoints %u <= 4, trap_access 0x%x)", c->vcpus, c->max_views, c->hw_breakpoints,
                c->trap_access);
        return VMT_E_INVAL;
    }
    return VMT_OK;
}

static vmt_caps caps_from(const vmt_mem_config *c)
{
    uint64_t remove = c->caps_remove;
    if (remove & VMT_CAP_VIEWS)
        remove |= MEM_VIEW_DEPENDENTS;
    if (remove & VMT_CAP_EVENTS)
        remove |= MEM_EVENT_DEPENDENTS;
    vmt_caps caps = {
        .flags = (MEM_ALL_CAPS & ~remove) | (c->write_after ? VMT_CAP_WRITE_AFTER : 0),
        .trap_access = c->trap_access,
        .max_views = c->max_views,
        .hw_breakpoints = c->hw_breakpoints,
        .vcpus = c->vcpus,
        .ram_frames = c->ram_frames,
        .maxphyaddr = c->maxphyaddr,
    };
    if (!(caps.flags & VMT_CAP_VIEWS))
        caps.max_views = 1;
    if (!(caps.flags & VMT_CAP_VIEW_PERM))
        caps.trap_access = VMT_ACCESS_NONE;
    if (!(caps.flags & VMT_CAP_HW_BREAKPOINTS))
        caps.hw_breakpoints = 0;
    return caps;
}

/* Advise the whole pages of [p, p+len) to use huge pages (a hint: the
 * kernel may ignore it, and so do we when it fails). */
static void prefer_huge_pages(void *p, size_t len)
{
    const uintptr_t page = VMT_PAGE_SIZE;
    uintptr_t lo = ((uintptr_t)p + page - 1) & ~(page - 1), hi = ((uintptr_t)p + len) & ~(page - 1);
    if (hi > lo)
        (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
}

vmt_status vmt_mem_driver_create(const vmt_mem_config *cfg, vmt_driver **out, char *why, size_t why_len)
{
    if (!out) {
        vmt_why(why, why_len, "vmt_mem_driver_create: out is required");
        return VMT_E_INVAL;
    }
    mem_drv *m = calloc(1, sizeof *m);
    if (!m) {
        vmt_why(why, why_len, "mem driver: out of memory");
        return VMT_E_NOMEM;
    }
    m->magic = MEM_MAGIC;
    vmt_status st = normalise(cfg, &m->cfg, why, why_len);
    if (st) {
        free(m);
        return st;
    }
    m->caps = caps_from(&m->cfg);
    m->cfg.max_views = m->caps.max_views; /* 1 without views */
    m->noop_next_view = 1;
    m->ram = calloc(m->cfg.ram_frames, VMT_PAGE_SIZE);
    m->frame = calloc(m->cfg.extra_frames, sizeof *m->frame);
    m->refs = calloc(m->cfg.extra_frames, sizeof *m->refs);
    m->free_stack = calloc(m->cfg.extra_frames, sizeof *m->free_stack);
    m->views = calloc(m->cfg.max_views, sizeof *m->views);
    m->vcpus = calloc(m->cfg.vcpus, sizeof *m->vcpus);
    m->dirty = calloc((m->cfg.ram_frames + 63) / 64, sizeof *m->dirty);
    if (!m->ram || !m->frame || !m->refs || !m->free_stack || !m->views || !m->vcpus || !m->dirty) {
        vmt_why(why, why_len, "mem driver: out of memory for %llu RAM frames",
                (unsigned long long)m->cfg.ram_frames);
        mem_free(m);
        return VMT_E_NOMEM;
    }
    if (m->cfg.noop)
        prefer_huge_pages(m->ram, m->cfg.ram_frames * VMT_PAGE_SIZE);
    for (uint32_t i = 0; i < m->cfg.vcpus; i++)
        vmt_vcpu_state_init(&m->vcpus[i].full);
    m->views[0].live = true;
    m->views[0].default_access = VMT_ACCESS_RWX;
    vmt_hmap_init(&m->views[0].entries, sizeof(vmt_gfn), sizeof(mem_entry));
    st = vmt_driver_create(&mem_ops, m, &m->caps, out, why, why_len);
    if (st)
        mem_free(m);
    return st;
}

/* ---- accessors ---- */

bool vmt_mem_paused(const vmt_driver *d)
{
    mem_drv *m = mem_of(d);
    return m && m->paused;
}

vmt_status vmt_mem_hw_breakpoint_get(const vmt_driver *d, vmt_vcpu vcpu, unsigned index, vmt_va *va, bool *enabled)
{
    mem_drv *m = mem_of(d);
    if (!m || vcpu >= m->cfg.vcpus || index >= MEM_HW_BP_MAX)
        return VMT_E_INVAL;
    if (va)
        *va = m->vcpus[vcpu].hwbp[index].va;
    if (enabled)
        *enabled = m->vcpus[vcpu].hwbp[index].enabled;
    return VMT_OK;
}

vmt_status vmt_mem_last_injection(const vmt_driver *d, vmt_vcpu vcpu, vmt_injection *inj)
{
    mem_drv *m = mem_of(d);
    if (!m || vcpu >= m->cfg.vcpus)
        return VMT_E_INVAL;
    if (!m->vcpus[vcpu].has_injection)
        return VMT_E_NOTFOUND;
    if (inj)
        *inj = m->vcpus[vcpu].injection;
    return VMT_OK;
}

bool vmt_mem_monitoring(const vmt_driver *d, vmt_event_kind kind)
{
    mem_drv *m = mem_of(d);
    return m && (unsigned)kind < VMT_EVENT_KIND_COUNT && m->monitoring[kind];
}

void vmt_mem_limits(const vmt_driver *d, double *seconds, uint64_t *instructions)
{
    mem_drv *m = mem_of(d);
    if (seconds)
        *seconds = m ? m->limit_seconds : 0;
    if (instructions)
        *instructions = m ? m->limit_insns : 0;
}

uint64_t vmt_mem_frames_in_use(const vmt_driver *d)
{
    mem_drv *m = mem_of(d);
    return m ? m->extra_hwm - m->free_count : 0;
}
