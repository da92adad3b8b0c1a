/*
 * tests/core/fake_driver.c — see fake_driver.h.
 */
#include "fake_driver.h"

#include <stdlib.h>
#include <string.h>

static fake_driver *F(vmt_driver *d) { return vmt_driver_impl(d); }

static void fake_destroy(vmt_driver *d) { F(d)->destroyed = 1; }

static vmt_status fake_read(vmt_driver *d, vmt_pa pa, void *buf, size_t len)
{
    fake_driver *f = F(d);
    f->reads++;
    uint64_t size = f->ram_frames * VMT_PAGE_SIZE;
    if (pa > size || len > size - pa)
        return vmt_driver_fail(d, VMT_E_RANGE, "read of pa 0x%llx outside RAM", (unsigned long long)pa);
    memcpy(buf, f->ram + pa, len);
    return VMT_OK;
}

static vmt_status fake_write(vmt_driver *d, vmt_pa pa, const void *buf, size_t len)
{
    fake_driver *f = F(d);
    f->writes++;
    uint64_t size = f->ram_frames * VMT_PAGE_SIZE;
    if (pa > size || len > size - pa)
        return vmt_driver_fail(d, VMT_E_RANGE, "write of pa 0x%llx outside RAM", (unsigned long long)pa);
    memcpy(f->ram + pa, buf, len);
    return VMT_OK;
}

static vmt_status fake_get_regs(vmt_driver *d, vmt_vcpu vcpu, vmt_regs *regs)
{
    (void)vcpu;
    *regs = F(d)->regs0;
    return VMT_OK;
}

static vmt_status fake_view_create(vmt_driver *d, vmt_access a, vmt_view *out)
{
    (void)d, (void)a;
    *out = 1;
    return VMT_OK;
}

static vmt_status fake_view_destroy(vmt_driver *d, vmt_view v)
{
    (void)d, (void)v;
    return VMT_OK;
}

static vmt_status fake_view_switch(vmt_driver *d, vmt_vcpu c, vmt_view v)
{
    (void)d, (void)c, (void)v;
    return VMT_OK;
}

static vmt_status fake_view_current(vmt_driver *d, vmt_vcpu c, vmt_view *out)
{
    (void)d, (void)c;
    *out = 0;
    return VMT_OK;
}

static void log_call(fake_driver *f, fake_op op, vmt_view v, vmt_gfn g, uint64_t arg)
{
    if (f->nlog < FAKE_MAX_LOG)
        f->log[f->nlog++] = (fake_call){ op, v, g, arg };
}

static vmt_status fake_remap(vmt_driver *d, vmt_view v, vmt_gfn g, vmt_gfn backing)
{
    log_call(F(d), FAKE_REMAP, v, g, backing);
    return VMT_OK;
}

static vmt_status fake_set_access(vmt_driver *d, vmt_view v, vmt_gfn g, vmt_access a)
{
    fake_driver *f = F(d);
    if (f->fail_set_access) {
        f->fail_set_access--;
        return vmt_driver_fail(d, VMT_E_INJECTED, "set_access failed on purpose");
    }
    log_call(f, FAKE_SET_ACCESS, v, g, a);
    return VMT_OK;
}

static vmt_status fake_get_access(vmt_driver *d, vmt_view v, vmt_gfn g, vmt_access *a, vmt_gfn *b)
{
    (void)d, (void)v;
    *a = VMT_ACCESS_RWX;
    *b = g;
    return VMT_OK;
}

static vmt_status fake_wait(vmt_driver *d, int timeout_ms, vmt_event *ev)
{
    fake_driver *f = F(d);
    f->waits++;
    f->last_timeout_ms = timeout_ms;
    if (f->awaiting_response)
        return vmt_driver_fail(d, VMT_E_BUSY, "previous event not answered");
    if (f->timeouts_given < f->timeouts_before_each || f->next == f->nscript) {
        if (f->next < f->nscript)
            f->timeouts_given++;
        return VMT_E_TIMEOUT;
    }
    f->timeouts_given = 0;
    *ev = f->script[f->next++];
    ev->seq = ++f->seq;
    f->awaiting_response = ev->kind != VMT_EVENT_STOPPED;
    return VMT_OK;
}

static vmt_status fake_respond(vmt_driver *d, const vmt_event *ev, const vmt_response *r)
{
    fake_driver *f = F(d);
    if (!f->awaiting_response || ev->seq != f->seq)
        return vmt_driver_fail(d, VMT_E_INVAL, "respond to an event that is not pending");
    f->responds++;
    f->last_resp = *r;
    f->awaiting_response = 0;
    if (f->fail_respond)
        return vmt_driver_fail(d, f->fail_respond, "respond failed on purpose");
    return VMT_OK;
}

static vmt_status fake_stats(vmt_driver *d, vmt_driver_stats *out)
{
    (void)d;
    memset(out, 0, sizeof *out);
    return VMT_OK;
}

static const vmt_driver_ops fake_ops = {
    .name = "fake",
    .destroy = fake_destroy,
    .read_phys = fake_read,
    .write_phys = fake_write,
    .get_regs = fake_get_regs,
    .view_create = fake_view_create,
    .view_destroy = fake_view_destroy,
    .view_switch = fake_view_switch,
    .view_current = fake_view_current,
    .view_remap = fake_remap,
    .view_set_access = fake_set_access,
    .view_get_access = fake_get_access,
    .wait_event = fake_wait,
    .respond = fake_respond,
    .stats = fake_stats,
};

vmt_driver *fake_driver_create(fake_driver *f, uint64_t frames, uint64_t caps)
{
    memset(f, 0, sizeof *f);
    f->ram = calloc(frames, VMT_PAGE_SIZE);
    f->ram_frames = frames;
    vmt_caps c = { .flags = caps, .trap_access = VMT_ACCESS_RWX, .max_views = 4, .vcpus = 1,
                   .ram_frames = frames, .maxphyaddr = 40 };
    vmt_driver *d = NULL;
    char why[200];
    if (vmt_driver_create(&fake_ops, f, &c, &d, why, sizeof why) != VMT_OK)
        return NULL;
    return d;
}

void fake_driver_release(fake_driver *f)
{
    free(f->ram);
    f->ram = NULL;
}

void fake_push(fake_driver *f, const vmt_event *ev)
{
    if (f->nscript < FAKE_MAX_EVENTS)
        f->script[f->nscript++] = *ev;
}

void fake_push_kind(fake_driver *f, vmt_event_kind kind)
{
    vmt_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = kind;
    if (kind == VMT_EVENT_STOPPED)
        ev.u.stop.reason = VMT_STOP_HALT;
    fake_push(f, &ev);
}

void fake_clear_log(fake_driver *f) { f->nlog = 0; }
