/*
 * core/driver.c — the generic driver wrapper.
 *
 * Design: every public vmt_drv_* call checks the capability the call needs
 * before it reaches the driver's op, so a caller that did not look at the
 * capabilities gets VMT_E_NOTSUP with a message naming the capability, never
 * a half-working stub. vmt_driver_create() checks the other direction: every
 * declared capability has its op. Responses are checked too: a response that
 * asks for EMULATE from a driver without VMT_CAP_EMULATE is refused before
 * the driver sees it. Rights with bits beyond R/W/X are refused here, so
 * drivers need not check them.
 *
 * Invariant: d->caps is consistent with d->ops (checked at create and on
 * vmt_driver_set_caps).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errbuf.h"
#include "vmtrap/driver.h"

struct vmt_driver {
    const vmt_driver_ops *ops;
    void *impl;
    vmt_caps caps;
    vmt_errbuf err;
};

static const struct {
    uint64_t flag;
    const char *name;
} cap_names[] = {
    { VMT_CAP_READ_PHYS, "read-phys" },
    { VMT_CAP_WRITE_PHYS, "write-phys" },
    { VMT_CAP_REGS_GET, "regs-get" },
    { VMT_CAP_REGS_SET, "regs-set" },
    { VMT_CAP_PAUSE, "pause" },
    { VMT_CAP_VIEWS, "views" },
    { VMT_CAP_VIEW_PER_VCPU, "view-per-vcpu" },
    { VMT_CAP_VIEW_REMAP, "view-remap" },
    { VMT_CAP_VIEW_PERM, "view-perm" },
    { VMT_CAP_WRITE_DATA, "write-data" },
    { VMT_CAP_SINGLESTEP, "singlestep" },
    { VMT_CAP_FAST_STEP, "fast-step" },
    { VMT_CAP_EMULATE, "emulate" },
    { VMT_CAP_FRAMES, "frames" },
    { VMT_CAP_INJECT_PF, "inject-pf" },
    { VMT_CAP_INJECT_BP, "inject-bp" },
    { VMT_CAP_EVENTS, "events" },
    { VMT_CAP_BREAKPOINT_EVENTS, "breakpoint-events" },
    { VMT_CAP_CR3_EVENTS, "cr3-events" },
    { VMT_CAP_IO_EVENTS, "io-events" },
    { VMT_CAP_HW_BREAKPOINTS, "hw-breakpoints" },
    { VMT_CAP_TIME_LIMIT, "time-limit" },
    { VMT_CAP_INSN_LIMIT, "insn-limit" },
    { VMT_CAP_DETERMINISTIC, "deterministic" },
    { VMT_CAP_PT_AD_BITS, "pt-ad-bits" },
    { VMT_CAP_VCPU_STATE, "vcpu-state" },
    { VMT_CAP_DIRTY_LOG, "dirty-log" },
    { VMT_CAP_WRITE_AFTER, "write-after" },
};

const char *vmt_cap_name(uint64_t cap_flag)
{
    for (size_t i = 0; i < sizeof cap_names / sizeof cap_names[0]; i++)
        if (cap_names[i].flag == cap_flag)
            return cap_names[i].name;
    return "unknown-capability";
}

static const char *const event_names[VMT_EVENT_KIND_COUNT] = {
    [VMT_EVENT_NONE] = "none",
    [VMT_EVENT_MEM_ACCESS] = "mem-access",
    [VMT_EVENT_BREAKPOINT] = "breakpoint",
    [VMT_EVENT_SINGLESTEP] = "singlestep",
    [VMT_EVENT_CR_WRITE] = "cr-write",
    [VMT_EVENT_HW_BREAKPOINT] = "hw-breakpoint",
    [VMT_EVENT_IO] = "io",
    [VMT_EVENT_STOPPED] = "stopped",
};

const char *vmt_event_kind_name(vmt_event_kind kind)
{
    if ((unsigned)kind >= VMT_EVENT_KIND_COUNT)
        return "unknown";
    return event_names[kind];
}

const char *vmt_stop_reason_name(vmt_stop_reason reason)
{
    switch (reason) {
    case VMT_STOP_HALT: return "halt";
    case VMT_STOP_TIME_LIMIT: return "time limit";
    case VMT_STOP_INSN_LIMIT: return "instruction limit";
    case VMT_STOP_TRIPLE_FAULT: return "triple fault";
    case VMT_STOP_SHUTDOWN: return "shutdown";
    case VMT_STOP_GUEST_ERROR: return "guest error";
    case VMT_STOP_DRIVER_ERROR: return "driver error";
    }
    return "unknown";
}

/* Which op each capability needs (NULL-checked at create). */
static int caps_consistent(const vmt_driver_ops *o, const vmt_caps *c, char *why, size_t why_len)
{
    struct {
        uint64_t flag;
        const void *op;
        const char *op_name;
    } need[] = {
        { VMT_CAP_READ_PHYS, (const void *)o->read_phys, "read_phys" },
        { VMT_CAP_WRITE_PHYS, (const void *)o->write_phys, "write_phys" },
        { VMT_CAP_REGS_GET, (const void *)o->get_regs, "get_regs" },
        { VMT_CAP_REGS_SET, (const void *)o->set_regs, "set_regs" },
        { VMT_CAP_PAUSE, (const void *)o->pause, "pause" },
        { VMT_CAP_PAUSE, (const void *)o->resume, "resume" },
        { VMT_CAP_VIEWS, (const void *)o->view_create, "view_create" },
        { VMT_CAP_VIEWS, (const void *)o->view_destroy, "view_destroy" },
        { VMT_CAP_VIEWS, (const void *)o->view_switch, "view_switch" },
        { VMT_CAP_VIEWS, (const void *)o->view_current, "view_current" },
        { VMT_CAP_VIEW_REMAP, (const void *)o->view_remap, "view_remap" },
        { VMT_CAP_VIEW_PERM, (const void *)o->view_set_access, "view_set_access" },
        { VMT_CAP_VIEW_PERM, (const void *)o->view_get_access, "view_get_access" },
        { VMT_CAP_FRAMES, (const void *)o->frame_alloc, "frame_alloc" },
        { VMT_CAP_FRAMES, (const void *)o->frame_free, "frame_free" },
        { VMT_CAP_HW_BREAKPOINTS, (const void *)o->hw_breakpoint, "hw_breakpoint" },
        { VMT_CAP_INJECT_PF, (const void *)o->inject, "inject" },
        { VMT_CAP_INJECT_BP, (const void *)o->inject, "inject" },
        { VMT_CAP_EVENTS, (const void *)o->wait_event, "wait_event" },
        { VMT_CAP_EVENTS, (const void *)o->respond, "respond" },
        { VMT_CAP_EVENTS, (const void *)o->stats, "stats" },
        { VMT_CAP_CR3_EVENTS, (const void *)o->monitor, "monitor" },
        { VMT_CAP_TIME_LIMIT, (const void *)o->set_limit, "set_limit" },
        { VMT_CAP_INSN_LIMIT, (const void *)o->set_limit, "set_limit" },
        { VMT_CAP_VCPU_STATE, (const void *)o->get_vcpu_state, "get_vcpu_state" },
        { VMT_CAP_VCPU_STATE, (const void *)o->set_vcpu_state, "set_vcpu_state" },
        { VMT_CAP_DIRTY_LOG, (const void *)o->dirty_log, "dirty_log" },
    };
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        if ((c->flags & need[i].flag) && !need[i].op) {
            vmt_why(why, why_len, "driver '%s' declares %s but has no %s op", o->name ? o->name : "?",
                    vmt_cap_name(need[i].flag), need[i].op_name);
            return 0;
        }
    }
    /* Permissions on view 0 alone make sense only where writes are reported
     * after they landed (VMT_CAP_WRITE_AFTER): nothing needs an unaltered
     * view to let them land. */
    uint64_t view_features = VMT_CAP_VIEW_REMAP | VMT_CAP_VIEW_PER_VCPU |
                             ((c->flags & VMT_CAP_WRITE_AFTER) ? 0 : VMT_CAP_VIEW_PERM);
    if ((c->flags & view_features) && !(c->flags & VMT_CAP_VIEWS)) {
        vmt_why(why, why_len, "driver '%s' declares view features without views", o->name ? o->name : "?");
        return 0;
    }
    if ((c->flags & VMT_CAP_HW_BREAKPOINTS) && (c->hw_breakpoints == 0 || c->hw_breakpoints > 4)) {
        vmt_why(why, why_len, "driver '%s' declares hw-breakpoints with count %u", o->name ? o->name : "?",
                c->hw_breakpoints);
        return 0;
    }
    if ((c->flags & VMT_CAP_VIEWS) && c->max_views < 2) {
        vmt_why(why, why_len, "driver '%s' declares views with max_views %u", o->name ? o->name : "?",
                c->max_views);
        return 0;
    }
    return 1;
}

vmt_status vmt_driver_create(const vmt_driver_ops *ops, void *impl, const vmt_caps *caps,
                             vmt_driver **out, char *why, size_t why_len)
{
    if (!ops || !caps || !out || !ops->name || !ops->destroy) {
        vmt_why(why, why_len, "vmt_driver_create: ops (with name and destroy), caps and out are required");
        return VMT_E_INVAL;
    }
    if (!caps_consistent(ops, caps, why, why_len))
        return VMT_E_INVAL;
    vmt_driver *d = calloc(1, sizeof *d);
    if (!d) {
        vmt_why(why, why_len, "vmt_driver_create: out of memory");
        return VMT_E_NOMEM;
    }
    d->ops = ops;
    d->impl = impl;
    d->caps = *caps;
    *out = d;
    return VMT_OK;
}

vmt_status vmt_driver_set_caps(vmt_driver *d, const vmt_caps *caps)
{
    char why[VMT_ERRBUF_LEN];
    if (!caps_consistent(d->ops, caps, why, sizeof why))
        return vmt_errbuf_set(&d->err, VMT_E_INVAL, "%s", why);
    d->caps = *caps;
    return VMT_OK;
}

void *vmt_driver_impl(vmt_driver *d) { return d->impl; }

vmt_status vmt_driver_fail(vmt_driver *d, vmt_status status, const char *fmt, ...)
{
    char msg[VMT_ERRBUF_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return vmt_errbuf_set(&d->err, status, "driver '%s': %s", d->ops->name, msg);
}

void vmt_driver_destroy(vmt_driver *d)
{
    if (!d)
        return;
    d->ops->destroy(d);
    free(d);
}

const char *vmt_driver_name(const vmt_driver *d) { return d->ops->name; }
const vmt_caps *vmt_driver_caps(const vmt_driver *d) { return &d->caps; }
int vmt_driver_has(const vmt_driver *d, uint64_t cap_flags) { return (d->caps.flags & cap_flags) == cap_flags; }
const char *vmt_driver_error(const vmt_driver *d) { return d->err.msg; }

static vmt_status need(vmt_driver *d, uint64_t flag, const char *call)
{
    if (d->caps.flags & flag)
        return VMT_OK;
    return vmt_errbuf_set(&d->err, VMT_E_NOTSUP, "driver '%s' does not declare %s (needed by %s)", d->ops->name,
                          vmt_cap_name(flag), call);
}

#define NEED(flag) do { vmt_status st_ = need(d, (flag), __func__); if (st_) return st_; } while (0)

vmt_status vmt_drv_read_phys(vmt_driver *d, vmt_pa pa, void *buf, size_t len)
{
    NEED(VMT_CAP_READ_PHYS);
    return d->ops->read_phys(d, pa, buf, len);
}

vmt_status vmt_drv_write_phys(vmt_driver *d, vmt_pa pa, const void *buf, size_t len)
{
    NEED(VMT_CAP_WRITE_PHYS);
    return d->ops->write_phys(d, pa, buf, len);
}

vmt_status vmt_drv_get_regs(vmt_driver *d, vmt_vcpu vcpu, vmt_regs *regs)
{
    NEED(VMT_CAP_REGS_GET);
    if (vcpu >= d->caps.vcpus)
        return vmt_errbuf_set(&d->err, VMT_E_INVAL, "vcpu %u out of range (driver has %u)", vcpu, d->caps.vcpus);
    return d->ops->get_regs(d, vcpu, regs);
}

vmt_status vmt_drv_set_regs(vmt_driver *d, vmt_vcpu vcpu, const vmt_regs *regs)
{
    NEED(VMT_CAP_REGS_SET);
    if (vcpu >= d->caps.vcpus)
        return vmt_errbuf_set(&d->err, VMT_E_INVAL, "vcpu %u out of range (driver has %u)", vcpu, d->caps.vcpus);
    return d->ops->set_regs(d, vcpu, regs);
}

vmt_status vmt_drv_pause(vmt_driver *d)
{
    NEED(VMT_CAP_PAUSE);
    return d->ops->pause(d);
}

vmt_status vmt_drv_resume(vmt_driver *d)
{
    NEED(VMT_CAP_PAUSE);
    return d->ops->resume(d);
}

vmt_status vmt_drv_view_create(vmt_driver *d, vmt_access default_access, vmt_view *out)
{
    NEED(VMT_CAP_VIEWS);
    if (default_access & ~VMT_ACCESS_RWX)
        return vmt_errbuf_set(&d->err, VMT_E_INVAL, "view_create: rights 0x%x have bits beyond r/w/x", default_access);
    return d->ops->view_create(d, default_access, out);
}

vmt_status vmt_drv_view_destroy(vmt_driver *d, vmt_view view)
{
    NEED(VMT_CAP_VIEWS);
    if (view == VMT_VIEW_DEFAULT)
        return vmt_errbuf_set(&d->err, VMT_E_INVAL, "view 0 (the unaltered view) cannot be destroyed");
    return d->ops->view_destroy(d, view);
}

vmt_status vmt_drv_view_switch(vmt_driver *d, vmt_vcpu vcpu, vmt_view view)
{
    NEED(VMT_CAP_VIEWS);
    return d->ops->view_switch(d, vcpu, view);
}

vmt_status vmt_drv_view_current(vmt_driver *d, vmt_vcpu vcpu, vmt_view *out)
{
    if (!(d->caps.flags & VMT_CAP_VIEWS)) {
        *out = VMT_VIEW_DEFAULT;
        return VMT_OK;
    }
    return d->ops->view_current(d, vcpu, out);
}

vmt_status vmt_drv_view_remap(vmt_driver *d, vmt_view view, vmt_gfn gfn, vmt_gfn backing)
{
    NEED(VMT_CAP_VIEW_REMAP);
    return d->ops->view_remap(d, view, gfn, backing);
}

vmt_status vmt_drv_view_set_access(vmt_driver *d, vmt_view view, vmt_gfn gfn, vmt_access allowed)
{
    NEED(VMT_CAP_VIEW_PERM);
    if (allowed & ~VMT_ACCESS_RWX)
        return vmt_errbuf_set(&d->err, VMT_E_INVAL, "view_set_access: rights 0x%x have bits beyond r/w/x", allowed);
    vmt_access denied = (vmt_access)(~allowed & VMT_ACCESS_RWX);
    if (denied & ~d->caps.trap_access) {
        char a[4], t[4];
        return vmt_errbuf_set(&d->err, VMT_E_NOTSUP,
                              "driver '%s' cannot trap every access that rights '%s' deny (it traps '%s')",
                              d->ops->name, vmt_access_str(allowed, a), vmt_access_str(d->caps.trap_access, t));
    }
    return d->ops->view_set_access(d, view, gfn, allowed);
}

vmt_status vmt_drv_view_get_access(vmt_driver *d, vmt_view view, vmt_gfn gfn, vmt_access *allowed,
                                   vmt_gfn *backing)
{
    NEED(VMT_CAP_VIEW_PERM);
    return d->ops->view_get_access(d, view, gfn, allowed, backing);
}

vmt_status vmt_drv_frame_alloc(vmt_driver *d, vmt_gfn *out)
{
    NEED(VMT_CAP_FRAMES);
    return d->ops->frame_alloc(d, out);
}

vmt_status vmt_drv_frame_free(vmt_driver *d, vmt_gfn gfn)
{
    NEED(VMT_CAP_FRAMES);
    return d->ops->frame_free(d, gfn);
}

vmt_status vmt_drv_hw_breakpoint(vmt_driver *d, vmt_vcpu vcpu, unsigned index, vmt_va va, int enable)
{
    NEED(VMT_CAP_HW_BREAKPOINTS);
    if (index >= d->caps.hw_breakpoints)
        return vmt_errbuf_set(&d->err, VMT_E_RANGE, "hardware breakpoint %u out of range (driver has %u)", index,
                              d->caps.hw_breakpoints);
    return d->ops->hw_breakpoint(d, vcpu, index, va, enable);
}

vmt_status vmt_drv_inject(vmt_driver *d, vmt_vcpu vcpu, const vmt_injection *inj)
{
    if (inj->vector == 14)
        NEED(VMT_CAP_INJECT_PF);
    else if (inj->vector == 3)
        NEED(VMT_CAP_INJECT_BP);
    else if (!(d->caps.flags & (VMT_CAP_INJECT_PF | VMT_CAP_INJECT_BP)) || !d->ops->inject)
        return vmt_errbuf_set(&d->err, VMT_E_NOTSUP, "driver '%s' cannot inject vector %u", d->ops->name,
                              inj->vector);
    return d->ops->inject(d, vcpu, inj);
}

vmt_status vmt_drv_monitor(vmt_driver *d, vmt_event_kind kind, int enable)
{
    if (kind == VMT_EVENT_CR_WRITE)
        NEED(VMT_CAP_CR3_EVENTS);
    else if (kind == VMT_EVENT_IO)
        NEED(VMT_CAP_IO_EVENTS);
    else
        NEED(VMT_CAP_EVENTS);
    if (!d->ops->monitor)
        return vmt_errbuf_set(&d->err, VMT_E_NOTSUP, "driver '%s' has no optional event kinds", d->ops->name);
    return d->ops->monitor(d, kind, enable);
}

vmt_status vmt_drv_wait_event(vmt_driver *d, int timeout_ms, vmt_event *ev)
{
    NEED(VMT_CAP_EVENTS);
    return d->ops->wait_event(d, timeout_ms, ev);
}

vmt_status vmt_drv_respond(vmt_driver *d, const vmt_event *ev, const vmt_response *resp)
{
    NEED(VMT_CAP_EVENTS);
    uint32_t a = resp->actions;
    if (a & VMT_RESP_STEP)
        NEED(VMT_CAP_SINGLESTEP);
    if (a & VMT_RESP_FAST_STEP)
        NEED(VMT_CAP_FAST_STEP);
    if (a & VMT_RESP_EMULATE)
        NEED(VMT_CAP_EMULATE);
    if (a & VMT_RESP_REINJECT)
        NEED(VMT_CAP_INJECT_BP);
    if (a & VMT_RESP_SET_REGS)
        NEED(VMT_CAP_REGS_SET);
    if (a & (VMT_RESP_SWITCH_VIEW))
        NEED(VMT_CAP_VIEWS);
    if ((a & VMT_RESP_REINJECT) && ev->kind != VMT_EVENT_BREAKPOINT)
        return vmt_errbuf_set(&d->err, VMT_E_INVAL, "REINJECT answers only a breakpoint event (got %s)",
                              vmt_event_kind_name(ev->kind));
    if ((a & VMT_RESP_STEP) && (a & VMT_RESP_FAST_STEP))
        return vmt_errbuf_set(&d->err, VMT_E_INVAL, "STEP and FAST_STEP exclude each other");
    if ((a & VMT_RESP_EMULATE) && (a & (VMT_RESP_STEP | VMT_RESP_FAST_STEP)))
        return vmt_errbuf_set(&d->err, VMT_E_INVAL, "EMULATE excludes STEP and FAST_STEP");
    return d->ops->respond(d, ev, resp);
}

vmt_status vmt_drv_set_limit(vmt_driver *d, double seconds, uint64_t instructions)
{
    if (seconds > 0)
        NEED(VMT_CAP_TIME_LIMIT);
    if (instructions > 0)
        NEED(VMT_CAP_INSN_LIMIT);
    if (!d->ops->set_limit)
        return VMT_OK; /* clearing limits on a driver without them */
    return d->ops->set_limit(d, seconds, instructions);
}

vmt_status vmt_drv_stats(vmt_driver *d, vmt_driver_stats *out)
{
    NEED(VMT_CAP_EVENTS);
    memset(out, 0, sizeof *out);
    return d->ops->stats(d, out);
}

vmt_status vmt_drv_get_vcpu_state(vmt_driver *d, vmt_vcpu vcpu, vmt_vcpu_state *s)
{
    NEED(VMT_CAP_VCPU_STATE);
    return d->ops->get_vcpu_state(d, vcpu, s);
}

vmt_status vmt_drv_set_vcpu_state(vmt_driver *d, vmt_vcpu vcpu, const vmt_vcpu_state *s)
{
    NEED(VMT_CAP_VCPU_STATE);
    return d->ops->set_vcpu_state(d, vcpu, s);
}

vmt_status vmt_drv_dirty_log(vmt_driver *d, int (*fn)(void *ctx, vmt_gfn gfn), void *ctx, int clear)
{
    NEED(VMT_CAP_DIRTY_LOG);
    return d->ops->dirty_log(d, fn, ctx, clear);
}
