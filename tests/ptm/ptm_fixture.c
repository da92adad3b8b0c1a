/*
 * tests/ptm/ptm_fixture.c — see ptm_fixture.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ptm_fixture.h"
#include "vmtrap/paging.h"

void fx_sink(void *ctx, const vmt_ptm_event *ev)
{
    fx *f = ctx;
    assert_true(f->nevents < FX_MAX_EVENTS);
    f->events[f->nevents++] = *ev;
    if (f->on_event)
        f->on_event(f, ev);
}

fx *fx_create(uint64_t caps_remove, uint32_t vcpus)
{
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    vmt_mem_config cfg = { 0 };
    cfg.ram_frames = FX_RAM_FRAMES;
    cfg.vcpus = vcpus;
    cfg.maxphyaddr = 39;
    cfg.caps_remove = caps_remove;
    char why[256];
    assert_int_equal(vmt_mem_driver_create(&cfg, &f->d, why, sizeof why), VMT_OK);
    assert_int_equal(vmt_session_create(f->d, NULL, &f->s), VMT_OK);
    vmt_paging_config pc = { 4, 39, 1, 0 };
    vmt_session_set_paging(f->s, &pc);
    assert_int_equal(vmt_drv_view_create(f->d, VMT_ACCESS_RWX, &f->view), VMT_OK);
    assert_int_not_equal(f->view, 0);
    assert_int_equal(vmt_drv_view_switch(f->d, VMT_VCPU_ALL, f->view), VMT_OK);
    assert_int_equal(vmt_ptm_create(f->s, &f->ptm), VMT_OK);
    f->next_table = 16;
    f->next_data = 256;
    f->with_data = true;
    f->levels = 4;
    f->root = fx_table(f) << 12;
    fx_check(f);
    return f;
}

void fx_destroy(fx *f)
{
    fx_check(f);
    vmt_ptm_destroy(f->ptm);
    /* Every restriction of the monitor is gone. */
    for (vmt_gfn g = 0; g < FX_RAM_FRAMES; g++)
        assert_int_equal(vmt_session_effective_access(f->s, f->view, g), VMT_ACCESS_RWX);
    assert_int_equal(vmt_session_check(f->s), VMT_OK);
    vmt_session_destroy(f->s);
    free(f);
}

void fx_check(fx *f)
{
    char why[256];
    vmt_status st = vmt_ptm_check(f->ptm);
    if (st != VMT_OK)
        fail_msg("%s", vmt_ptm_error(f->ptm));
    st = vmt_session_check(f->s);
    if (st != VMT_OK)
        fail_msg("session check: %s", vmt_session_error(f->s));
    st = vmt_mem_check(f->d, why, sizeof why);
    if (st != VMT_OK)
        fail_msg("mem check: %s", why);
}

static void host_write(fx *f, vmt_pa pa, const void *buf, size_t len)
{
    assert_int_equal(vmt_drv_write_phys(f->d, pa, buf, len), VMT_OK);
    vmt_session_flush_frames(f->s);
    vmt_session_flush_v2p(f->s);
}

vmt_gfn fx_table(fx *f)
{
    assert_true(f->next_table < 256);
    vmt_gfn g = f->next_table++;
    static const uint8_t zero[4096];
    host_write(f, g << 12, zero, sizeof zero);
    return g;
}

vmt_gfn fx_data(fx *f)
{
    assert_true(f->next_data < FX_RAM_FRAMES);
    return f->next_data++;
}

void fx_set(fx *f, vmt_gfn table, unsigned index, uint64_t value)
{
    host_write(f, (table << 12) + 8ULL * index, &value, 8);
}

uint64_t fx_get(fx *f, vmt_gfn table, unsigned index)
{
    uint64_t v = 0;
    assert_int_equal(vmt_drv_read_phys(f->d, (table << 12) + 8ULL * index, &v, 8), VMT_OK);
    return v;
}

void fx_set_levels(fx *f, unsigned levels)
{
    vmt_paging_config pc = { (uint8_t)levels, 39, 1, 0 };
    vmt_session_set_paging(f->s, &pc);
    f->levels = levels;
}

vmt_gfn fx_table_at(fx *f, vmt_pa root, vmt_va va, unsigned level)
{
    vmt_gfn t = root >> 12;
    for (unsigned l = f->levels; l > level; l--) {
        uint64_t e = fx_get(f, t, vmt_pt_index(va, l));
        if (!(e & VMT_PTE_P) || (e & VMT_PTE_PS))
            return 0;
        t = (e & VMT_PTE_ADDR_MASK) >> 12;
    }
    return t;
}

void fx_map4k(fx *f, vmt_pa root, vmt_va va, vmt_gfn frame)
{
    vmt_gfn t = root >> 12;
    for (unsigned l = f->levels; l > 1; l--) {
        unsigned i = vmt_pt_index(va, l);
        uint64_t e = fx_get(f, t, i);
        if (!(e & VMT_PTE_P)) {
            e = pte_table(fx_table(f));
            fx_set(f, t, i, e);
        }
        t = (e & VMT_PTE_ADDR_MASK) >> 12;
    }
    fx_set(f, t, vmt_pt_index(va, 1), pte_page(frame));
}

vmt_access fx_access(fx *f, vmt_view view, vmt_gfn gfn)
{
    vmt_access a = 0;
    vmt_gfn backing = 0;
    assert_int_equal(vmt_drv_view_get_access(f->d, view, gfn, &a, &backing), VMT_OK);
    return a;
}

vmt_view fx_current_view(fx *f, vmt_vcpu vcpu)
{
    vmt_view v = 0;
    assert_int_equal(vmt_drv_view_current(f->d, vcpu, &v), VMT_OK);
    return v;
}

static void store_bytes(fx *f, vmt_pa pa, unsigned size, uint64_t value)
{
    uint8_t b[8];
    for (unsigned i = 0; i < size; i++)
        b[i] = (uint8_t)(value >> (8 * i));
    host_write(f, pa, b, size);
}

/* Deliver the queued event through the driver and the monitor. */
static vmt_response deliver(fx *f, vmt_event *got)
{
    assert_int_equal(vmt_drv_wait_event(f->d, 0, got), VMT_OK);
    f->exits++;
    vmt_session_flush_frames(f->s); /* the guest ran */
    vmt_session_flush_v2p(f->s);
    vmt_response resp;
    memset(&resp, 0xa5, sizeof resp);
    bool handled = false;
    f->last_status = vmt_ptm_handle_event(f->ptm, got, &resp, fx_sink, f, &handled);
    assert_true(handled);
    assert_int_equal(vmt_drv_respond(f->d, got, &resp), VMT_OK);
    fx_check(f);
    return resp;
}

vmt_response cpu_store_trap(fx *f, vmt_vcpu vcpu, vmt_pa pa, unsigned size, uint64_t value)
{
    vmt_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = VMT_EVENT_MEM_ACCESS;
    ev.vcpu = vcpu;
    ev.u.mem.gpa = pa;
    ev.u.mem.access = VMT_ACCESS_W;
    ev.u.mem.has_data = f->with_data;
    ev.u.mem.size = (uint8_t)(f->with_data || f->report_size ? size : 0);
    ev.u.mem.value = f->with_data ? value : 0;
    assert_int_equal(vmt_mem_push_event(f->d, &ev), VMT_OK);
    vmt_event got;
    assert_true(vcpu < 4);
    f->last_resp[vcpu] = deliver(f, &got);
    return f->last_resp[vcpu];
}

void cpu_store_finish(fx *f, vmt_vcpu vcpu, vmt_pa pa, unsigned size, uint64_t value)
{
    assert_true(vcpu < 4);
    vmt_response r = f->last_resp[vcpu];
    if (r.actions == VMT_RESP_FAST_STEP) {
        assert_int_equal(r.step_view, 0);
        assert_true(fx_access(f, r.step_view, pa >> 12) & VMT_ACCESS_W);
        store_bytes(f, pa, size, value);
        f->exits++; /* the driver's internal exit after the step */
        return;
    }
    assert_int_equal(r.actions, VMT_RESP_STEP | VMT_RESP_SWITCH_VIEW);
    assert_int_equal(r.new_view, 0);
    assert_int_equal(fx_current_view(f, vcpu), 0);
    assert_true(fx_access(f, 0, pa >> 12) & VMT_ACCESS_W);
    store_bytes(f, pa, size, value);
    vmt_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = VMT_EVENT_SINGLESTEP;
    ev.vcpu = vcpu;
    assert_int_equal(vmt_mem_push_event(f->d, &ev), VMT_OK);
    vmt_event got;
    vmt_response back = deliver(f, &got);
    assert_int_equal(back.actions, VMT_RESP_SWITCH_VIEW);
    assert_int_equal(fx_current_view(f, vcpu), f->view);
}

void cpu_store(fx *f, vmt_vcpu vcpu, vmt_pa pa, unsigned size, uint64_t value)
{
    vmt_view cur = fx_current_view(f, vcpu);
    if (fx_access(f, cur, pa >> 12) & VMT_ACCESS_W) {
        store_bytes(f, pa, size, value); /* no trap */
        return;
    }
    vmt_response r = cpu_store_trap(f, vcpu, pa, size, value);
    if (r.actions == VMT_RESP_CONTINUE) {
        store_bytes(f, pa, size, value); /* the driver performs it once */
        return;
    }
    cpu_store_finish(f, vcpu, pa, size, value);
}

void cpu_set(fx *f, vmt_vcpu vcpu, vmt_gfn table, unsigned index, uint64_t value)
{
    cpu_store(f, vcpu, (table << 12) + 8ULL * index, 8, value);
}

void cpu_cmpxchg_fail(fx *f, vmt_vcpu vcpu, vmt_pa pa)
{
    uint64_t old = 0;
    assert_int_equal(vmt_drv_read_phys(f->d, pa, &old, 8), VMT_OK);
    cpu_store(f, vcpu, pa, 8, old); /* reported as a write of the old value */
}

void fx_clear_events(fx *f)
{
    f->nevents = 0;
}

const vmt_ptm_event *fx_expect(fx *f, vmt_ptm_event_kind kind, vmt_va va, vmt_pa root)
{
    const vmt_ptm_event *found = NULL;
    unsigned n = 0;
    for (unsigned i = 0; i < f->nevents; i++) {
        if (f->events[i].ctx.va == va && f->events[i].ctx.root == root) {
            found = &f->events[i];
            n++;
        }
    }
    if (n != 1)
        fail_msg("expected one %s event for va 0x%llx, got %u", vmt_ptm_event_kind_name(kind),
                 (unsigned long long)va, n);
    if (found->kind != kind)
        fail_msg("expected %s for va 0x%llx, got %s", vmt_ptm_event_kind_name(kind), (unsigned long long)va,
                 vmt_ptm_event_kind_name(found->kind));
    return found;
}

vmt_addr_ctx fx_ctx_a(fx *f)
{
    return vmt_addr_ctx_make(FX_VA_A, f->root);
}

vmt_ptm_watch_info fx_info_a(fx *f, uint64_t tag)
{
    vmt_ptm_watch_info wi;
    assert_int_equal(vmt_ptm_query(f->ptm, fx_ctx_a(f), f->view, tag, &wi), VMT_OK);
    return wi;
}

vmt_gfn fx_setup_a(fx *f, uint64_t tag)
{
    vmt_gfn frame = fx_data(f);
    fx_map4k(f, f->root, FX_VA_A, frame);
    assert_int_equal(vmt_ptm_monitor(f->ptm, fx_ctx_a(f), f->view, tag), VMT_OK);
    fx_check(f);
    return frame;
}
