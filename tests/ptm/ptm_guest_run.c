/*
 * tests/ptm/ptm_guest_run.c — see ptm_guest_run.h.
 */
#include "ptm_guest_run.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vmtrap/image.h"
#include "vmtrap/machine.h"
#include "vmtrap/paging.h"
#include "vmtrap/session.h"
#include "vmtrap/ucall.h"
#ifdef PTM_GUEST_HAVE_EMU
#include "vmtrap/emu.h"
#endif
#ifdef PTM_GUEST_HAVE_KVM
#include "vmtrap/kvm.h"
#endif

#define NSVC 4
#define MAX_EV 64

static const char *const svc_syms[NSVC] = { "svc_open", "svc_write", "svc_spawn", "svc_exit" };

typedef struct e2e {
    vmt_driver *d;
    vmt_session *s;
    vmt_ptm *ptm;
    vmt_view view;
    bool monitoring;
    vmt_va va[NSVC];
    vmt_pa root;
    bool present[NSVC];   /* what the events say */
    vmt_pa pa[NSVC];
    vmt_ptm_event ev[MAX_EV];
    unsigned nev;
    uint64_t ptm_exits;   /* driver events the monitor handled */
    uint64_t steps, ptm_events;
    uint64_t by_kind[4];
    int mode;             /* ptm_guest_mode */
    bool done;
    int64_t exit_code;
    char error[512];
} e2e;

static void fail_run(e2e *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail_run(e2e *x, const char *fmt, ...)
{
    if (x->error[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->error, sizeof x->error, fmt, ap);
    va_end(ap);
    vmt_session_request_stop(x->s);
}

static int svc_index(const e2e *x, vmt_va va)
{
    for (int i = 0; i < NSVC; i++)
        if ((x->va[i] & VMT_PAGE_MASK) == (va & VMT_PAGE_MASK))
            return i;
    return -1;
}

static void sink(void *ctx, const vmt_ptm_event *e)
{
    e2e *x = ctx;
    int i = svc_index(x, e->ctx.va);
    if (i < 0 || e->ctx.root != x->root || e->view != x->view || e->tag != (uint64_t)i) {
        fail_run(x, "event for an unknown watch: va 0x%" PRIx64, e->ctx.va);
        return;
    }
    bool ok = false;
    switch (e->kind) {
    case VMT_PTM_PAGE_IN:
        ok = !x->present[i];
        break;
    case VMT_PTM_PAGE_OUT:
        ok = x->present[i] && e->old_pa == x->pa[i];
        break;
    case VMT_PTM_REMAP:
        ok = x->present[i] && e->old_pa == x->pa[i] && e->new_pa != e->old_pa;
        break;
    }
    if (!ok) {
        fail_run(x, "%s for %s contradicts the state before it (present %d pa 0x%" PRIx64 ")",
                 vmt_ptm_event_kind_name(e->kind), svc_syms[i], x->present[i], x->pa[i]);
        return;
    }
    x->present[i] = e->kind != VMT_PTM_PAGE_OUT;
    x->pa[i] = x->present[i] ? e->new_pa : 0;
    x->by_kind[e->kind]++;
    x->ptm_events++;
    if (x->nev < MAX_EV)
        x->ev[x->nev++] = *e;
}

static void start_monitoring(e2e *x, const vmt_event *ev, vmt_response *resp)
{
    vmt_paging_config pc = { 0 };
    pc.levels = (ev->regs.cr4 & (1ULL << 12)) ? 5 : 4;
    pc.maxphyaddr = vmt_driver_caps(x->d)->maxphyaddr;
    pc.nxe = (ev->regs.efer >> 11) & 1;
    vmt_session_set_paging(x->s, &pc);
    x->root = ev->regs.cr3 & VMT_CR3_ADDR_MASK;
    for (int i = 0; i < NSVC; i++) {
        vmt_addr_ctx ctx = vmt_addr_ctx_make(x->va[i], x->root);
        vmt_status st = vmt_ptm_monitor(x->ptm, ctx, x->view, (uint64_t)i);
        if (st != VMT_OK) {
            fail_run(x, "monitor %s: %s", svc_syms[i], vmt_ptm_error(x->ptm));
            return;
        }
        vmt_ptm_watch_info wi;
        vmt_ptm_query(x->ptm, ctx, x->view, (uint64_t)i, &wi);
        x->present[i] = wi.present;
        x->pa[i] = wi.pa;
    }
    x->monitoring = true;
    resp->actions |= VMT_RESP_SWITCH_VIEW;
    resp->new_view = x->view;
}

/* Does the step's list of events hold `kind` for va (old/new frames)? */
static bool saw(const e2e *x, vmt_ptm_event_kind kind, vmt_va va, uint64_t old_frame, uint64_t new_frame)
{
    for (unsigned k = 0; k < x->nev; k++) {
        const vmt_ptm_event *e = &x->ev[k];
        if (e->kind != kind || (e->ctx.va & VMT_PAGE_MASK) != (va & VMT_PAGE_MASK))
            continue;
        if (kind != VMT_PTM_PAGE_IN && (e->old_pa & VMT_PAGE_MASK) != old_frame)
            continue;
        if (kind != VMT_PTM_PAGE_OUT && (e->new_pa & VMT_PAGE_MASK) != new_frame)
            continue;
        return true;
    }
    return false;
}

static void check_step(e2e *x, const vmt_ucall *uc)
{
    x->steps++;
    vmt_va va = uc->args[0];
    uint64_t old = uc->args[1], nw = uc->args[2];
    const char *n = uc->name;
    if (!strcmp(n, "pageout") && !saw(x, VMT_PTM_PAGE_OUT, va, old, 0))
        fail_run(x, "step %" PRIu64 ": pageout of 0x%" PRIx64 " (frame 0x%" PRIx64 ") not seen", x->steps, va, old);
    if (!strcmp(n, "pagein") && !saw(x, VMT_PTM_PAGE_IN, va, 0, nw))
        fail_run(x, "step %" PRIu64 ": pagein of 0x%" PRIx64 " at 0x%" PRIx64 " (%s) not seen", x->steps, va, nw,
                 uc->text);
    if (!strcmp(n, "move") && !saw(x, VMT_PTM_REMAP, va, old, nw))
        fail_run(x, "step %" PRIu64 ": move of 0x%" PRIx64 " 0x%" PRIx64 " -> 0x%" PRIx64 " (%s) not seen", x->steps,
                 va, old, nw, uc->text);
    if ((!strcmp(n, "cmpxchg-fail") || !strcmp(n, "replace-pt") || !strcmp(n, "split-2m")) && x->nev != 0)
        fail_run(x, "step %" PRIu64 ": %s produced %u page events", x->steps, n, x->nev);
    /* The events' picture equals the tables' and the monitor's own. */
    for (int i = 0; i < NSVC; i++) {
        vmt_addr_ctx ctx = vmt_addr_ctx_make(x->va[i], x->root);
        vmt_pa pa = 0;
        vmt_session_flush_v2p(x->s);
        vmt_status st = vmt_session_va_to_pa(x->s, ctx, &pa);
        bool present = st == VMT_OK;
        if (st != VMT_OK && st != VMT_E_NOT_PRESENT)
            fail_run(x, "translating %s: %s", svc_syms[i], vmt_session_error(x->s));
        if (present != x->present[i] || (present && pa != x->pa[i]))
            fail_run(x, "after step %" PRIu64 " (%s): %s is %s 0x%" PRIx64 " but the events say %s 0x%" PRIx64,
                     x->steps, n, svc_syms[i], present ? "at" : "absent", pa, x->present[i] ? "at" : "absent",
                     x->pa[i]);
        vmt_ptm_watch_info wi;
        vmt_ptm_query(x->ptm, ctx, x->view, (uint64_t)i, &wi);
        if (wi.present != present || (present && wi.pa != pa))
            fail_run(x, "after step %" PRIu64 ": the monitor's query disagrees for %s", x->steps, svc_syms[i]);
    }
    if (vmt_ptm_check(x->ptm) != VMT_OK)
        fail_run(x, "ptm check: %s", vmt_ptm_error(x->ptm));
    x->nev = 0;
}

static vmt_status on_event(vmt_session *s, const vmt_event *ev, vmt_response *resp, void *user)
{
    e2e *x = user;
    bool handled = false;
    /* A translation keeps the page offset: an event whose gpa and gva
     * offsets differ is a driver bug the monitor cannot see through. */
    if (ev->kind == VMT_EVENT_MEM_ACCESS && ev->u.mem.gva_valid &&
        vmt_page_offset(ev->u.mem.gpa) != vmt_page_offset(ev->u.mem.gva))
        fail_run(x, "driver '%s' reports gpa 0x%" PRIx64 " for gva 0x%" PRIx64 " (page offsets differ)",
                 vmt_driver_name(x->d), ev->u.mem.gpa, ev->u.mem.gva);
    vmt_event stripped;
    if (ev->kind == VMT_EVENT_MEM_ACCESS && x->mode != PTM_GUEST_WITH_DATA) {
        stripped = *ev;
        stripped.u.mem.has_data = false;
        stripped.u.mem.value = 0;
        if (x->mode == PTM_GUEST_STEP_BLIND)
            stripped.u.mem.size = 0;
        ev = &stripped;
    }
    vmt_status st = x->ptm ? vmt_ptm_handle_event(x->ptm, ev, resp, sink, x, &handled) : VMT_OK;
    if (handled && getenv("PTM_GUEST_TRACE"))
        fprintf(stderr, "ptm event %s vcpu %u view %u gpa 0x%" PRIx64 " size %u value 0x%" PRIx64 " data %d -> %s\n",
                vmt_event_kind_name(ev->kind), ev->vcpu, ev->view, ev->u.mem.gpa, ev->u.mem.size, ev->u.mem.value,
                ev->u.mem.has_data, vmt_strerror(st));
    if (handled) {
        x->ptm_exits++;
        if (st != VMT_OK)
            fail_run(x, "ptm: %s", vmt_ptm_error(x->ptm));
        return VMT_OK;
    }
    *resp = vmt_response_continue();
    switch (ev->kind) {
    case VMT_EVENT_IO: {
        if (!vmt_ucall_is_ucall(ev))
            break;
        vmt_phys_reader rd = vmt_session_reader(s);
        vmt_ucall uc;
        char why[256];
        if (vmt_ucall_decode(&rd, PTM_GUEST_RAM, ev, &uc, why, sizeof why) != VMT_OK) {
            fail_run(x, "bad ucall: %s", why);
            break;
        }
        if (!x->monitoring && x->ptm)
            start_monitoring(x, ev, resp);
        if (uc.cmd == VMT_UCALL_STEP && x->ptm)
            check_step(x, &uc);
        else if (uc.cmd == VMT_UCALL_ASSERT_FAIL)
            fail_run(x, "guest assertion: %s:%" PRIu64 " %s", uc.name, uc.args[0], uc.text);
        else if (uc.cmd == VMT_UCALL_DONE) {
            x->done = true;
            x->exit_code = (int64_t)uc.args[0];
            vmt_session_request_stop(s);
        }
        break;
    }
    case VMT_EVENT_BREAKPOINT:
        resp->actions = VMT_RESP_REINJECT; /* the guest's own INT3s */
        break;
    case VMT_EVENT_STOPPED:
        fail_run(x, "guest stopped: %s %s", vmt_stop_reason_name(ev->u.stop.reason), ev->u.stop.message);
        break;
    case VMT_EVENT_MEM_ACCESS:
        fail_run(x, "a memory access nobody claimed at gpa 0x%" PRIx64, ev->u.mem.gpa);
        break;
    default:
        break;
    }
    return VMT_OK;
}

static vmt_status create_driver(const char *driver, const vmt_machine_config *cfg, vmt_driver **d, char *why,
                                size_t len)
{
    if (!strcmp(driver, "emu")) {
#ifdef PTM_GUEST_HAVE_EMU
        return vmt_emu_driver_create(cfg, d, why, len);
#endif
    } else if (!strcmp(driver, "kvm")) {
#ifdef PTM_GUEST_HAVE_KVM
        if (access("/dev/kvm", R_OK | W_OK) != 0) {
            snprintf(why, len, "/dev/kvm is missing or not accessible");
            return VMT_E_NOTSUP;
        }
        return vmt_kvm_driver_create(cfg, d, why, len);
#endif
    }
    snprintf(why, len, "driver '%s' is not built", driver);
    return VMT_E_NOTSUP;
}

const char *ptm_guest_mode_name(ptm_guest_mode mode)
{
    static const char *const names[] = { "write data", "stepped, size known", "stepped, size unknown",
                                         "unmonitored" };
    return (unsigned)mode < 4 ? names[mode] : "?";
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void ptm_guest_run(const char *driver, const char *elf_path, ptm_guest_mode mode, ptm_guest_result *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->driver, sizeof out->driver, "%s", driver);
    e2e *x = calloc(1, sizeof *x);
    if (!x) {
        snprintf(out->error, sizeof out->error, "out of memory");
        return;
    }
    x->mode = (int)mode;
    vmt_image *img = NULL;
    if (vmt_image_load_elf(elf_path, PTM_GUEST_RAM, &img, out->error, sizeof out->error) != VMT_OK) {
        free(x);
        return;
    }
    for (int i = 0; i < NSVC; i++) {
        uint64_t size;
        if (vmt_image_symbol(img, svc_syms[i], &x->va[i], &size) != VMT_OK) {
            snprintf(out->error, sizeof out->error, "no symbol %s in %s", svc_syms[i], elf_path);
            vmt_image_destroy(img);
            free(x);
            return;
        }
    }
    vmt_machine_config cfg = { 0 };
    cfg.ram_size = PTM_GUEST_RAM;
    cfg.image = img;
    vmt_status st = create_driver(driver, &cfg, &x->d, out->error, sizeof out->error);
    vmt_image_destroy(img);
    if (st != VMT_OK) {
        out->skipped = st == VMT_E_NOTSUP;
        free(x);
        return;
    }
    if (vmt_driver_has(x->d, VMT_CAP_TIME_LIMIT))
        vmt_drv_set_limit(x->d, 60.0, 0);
    st = vmt_session_create(x->d, NULL, &x->s);
    if (st != VMT_OK) {
        snprintf(out->error, sizeof out->error, "session: %s", vmt_strerror(st));
        free(x);
        return;
    }
    out->data_and_emulate = vmt_driver_has(x->d, VMT_CAP_WRITE_DATA | VMT_CAP_EMULATE);
    if (mode != PTM_GUEST_UNMONITORED) {
        st = vmt_ptm_create(x->s, &x->ptm);
        if (st == VMT_E_NOTSUP) {
            out->skipped = true;
            snprintf(out->error, sizeof out->error, "driver '%s' cannot write-protect pages", driver);
        } else if (st == VMT_OK && vmt_drv_view_create(x->d, VMT_ACCESS_RWX, &x->view) != VMT_OK) {
            snprintf(out->error, sizeof out->error, "view: %s", vmt_driver_error(x->d));
        } else if (st != VMT_OK) {
            snprintf(out->error, sizeof out->error, "ptm: %s", vmt_strerror(st));
        }
        if (out->error[0]) {
            vmt_ptm_destroy(x->ptm);
            vmt_session_destroy(x->s);
            free(x);
            return;
        }
    }
    double t0 = now_s();
    st = vmt_session_run(x->s, on_event, x);
    out->seconds = now_s() - t0;
    if (st != VMT_OK && !x->error[0])
        snprintf(x->error, sizeof x->error, "run: %s: %s", vmt_strerror(st), vmt_session_error(x->s));
    if (x->ptm) {
        vmt_ptm_get_stats(x->ptm, &out->stats);
        out->check = vmt_ptm_check(x->ptm);
    }
    vmt_driver_stats ds;
    memset(&ds, 0, sizeof ds);
    if (vmt_drv_stats(x->d, &ds) == VMT_OK)
        out->driver_exits = ds.exits;
    out->done = x->done;
    out->exit_code = x->exit_code;
    out->steps = x->steps;
    out->ptm_exits = x->ptm_exits;
    memcpy(out->events, x->by_kind, sizeof out->events);
    snprintf(out->error, sizeof out->error, "%s", x->error);
    vmt_ptm_destroy(x->ptm);
    vmt_session_destroy(x->s);
    free(x);
}
