/*
 * fuzz/fuzz_ptm.c — the page-table monitor fed hostile write sequences.
 *
 * A mem-driver VM (64 frames, 2 vCPUs, both in the monitored view 1) with
 * 4-level tables mapping four VAs through shared tables. The input is a
 * program: byte 0 picks the driver's capabilities (with or without write
 * data, EMULATE / FAST_STEP / plain STEP; bit 2: a write-after driver, like
 * the qemu driver's watchpoints: the store lands first and is reported after,
 * answered CONTINUE), then each op is 12 bytes:
 * a guest store of 1..8 bytes anywhere in the table pages (by either vCPU,
 * value raw or shaped like an entry: loops, self-maps, frames past RAM,
 * reserved bits), a stepped store left half-done while the other vCPU
 * writes, monitor / unmonitor / resync, a host write behind the monitor's
 * back, or an injected driver failure. The "CPU" here reports each store
 * as a driver would and performs it as the response says (like
 * tests/ptm/ptm_fixture.c, without cmocka).
 *
 * After EVERY step: the monitor's, the session's and the driver's invariant
 * checkers pass, and — unless an injected failure or a host write left the
 * monitor behind and no resync has repaired it yet — every watch agrees
 * with a fresh walk of guest memory as the hardware would do it (present,
 * frame). At the end the monitor is destroyed and no restriction remains.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmtrap/mem.h"
#include "vmtrap/paging.h"
#include "vmtrap/ptm.h"
#include "vmtrap/session.h"

#define RAM_FRAMES 64
#define NVA 4
#define NCPU 2

static const vmt_va vas[NVA] = {
    (1ULL << 39) | (2ULL << 30) | (3ULL << 21) | (4ULL << 12),
    (1ULL << 39) | (2ULL << 30) | (3ULL << 21) | (5ULL << 12),
    (1ULL << 39) | (2ULL << 30) | (6ULL << 21),
    (7ULL << 39),
};

typedef struct vm {
    vmt_driver *d;
    vmt_session *s;
    vmt_ptm *ptm;
    vmt_view view;
    vmt_pa root;
    bool with_data;
    bool after;           /* VMT_CAP_WRITE_AFTER: stores land, then trap */
    bool watched[NVA];
    bool behind;          /* an injected failure / host write not resynced yet */
    /* A vCPU stopped between its trap (STEP response) and its step. */
    bool pending[NCPU];
    vmt_pa pend_pa[NCPU];
    unsigned pend_size[NCPU];
    uint64_t pend_value[NCPU];
    uint64_t events;
} vm;

#define CHECK(cond, ...)                                                                                               \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "fuzz_ptm: " __VA_ARGS__);                                                                 \
            fprintf(stderr, "\n");                                                                                     \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

static void sink(void *ctx, const vmt_ptm_event *ev)
{
    vm *v = ctx;
    CHECK(ev->kind >= VMT_PTM_PAGE_IN && ev->kind <= VMT_PTM_REMAP, "bad event kind %d", ev->kind);
    v->events++;
    if (getenv("FUZZ_PTM_TRACE"))
        fprintf(stderr, "  event %s va 0x%llx old 0x%llx new 0x%llx vcpu %u\n", vmt_ptm_event_kind_name(ev->kind),
                (unsigned long long)ev->ctx.va, (unsigned long long)ev->old_pa, (unsigned long long)ev->new_pa,
                ev->vcpu);
}

static void host_write(vm *v, vmt_pa pa, const void *buf, size_t len)
{
    CHECK(vmt_mem_write_view(v->d, 0, pa, buf, len) == VMT_OK, "host write failed");
    vmt_session_flush_frames(v->s);
    vmt_session_flush_v2p(v->s);
}

static void set_entry(vm *v, vmt_gfn table, unsigned index, uint64_t value)
{
    host_write(v, (table << 12) + 8ULL * index, &value, 8);
}

static vmt_status ram_read(void *ctx, vmt_pa pa, void *buf, size_t len)
{
    vm *v = ctx;
    if ((pa >> 12) >= RAM_FRAMES || ((pa + len - 1) >> 12) >= RAM_FRAMES)
        return VMT_E_RANGE;
    /* Not a driver op: never hit by an injected failure. */
    return vmt_mem_read_view(v->d, 0, pa, buf, len) == VMT_OK ? VMT_OK : VMT_E_IO;
}

static void check_all(vm *v)
{
    char why[256];
    CHECK(vmt_ptm_check(v->ptm) == VMT_OK, "%s", vmt_ptm_error(v->ptm));
    CHECK(vmt_session_check(v->s) == VMT_OK, "session: %s", vmt_session_error(v->s));
    CHECK(vmt_mem_check(v->d, why, sizeof why) == VMT_OK, "mem: %s", why);
    if (v->behind)
        return;
    for (unsigned i = 0; i < NCPU; i++)
        if (v->pending[i] || vmt_ptm_stepping(v->ptm, i))
            return; /* a write is between its trap and its landing */
    vmt_phys_reader rd = { ram_read, v };
    vmt_paging_config cfg = { 4, 39, 1, 0 };
    for (unsigned k = 0; k < NVA; k++) {
        if (!v->watched[k])
            continue;
        vmt_ptm_watch_info wi;
        CHECK(vmt_ptm_query(v->ptm, vmt_addr_ctx_make(vas[k], v->root), v->view, k, &wi) == VMT_OK, "query");
        vmt_walk w;
        vmt_status st = vmt_paging_walk(&rd, &cfg, v->root, vas[k], &w, NULL, 0);
        bool hw = st == VMT_OK && (w.pa >> 12) < RAM_FRAMES;
        CHECK(wi.present == hw, "va %u: monitor says %s, memory says %s (walk %s)", k,
              wi.present ? "present" : "absent", hw ? "present" : "absent", vmt_strerror(st));
        CHECK(!hw || wi.pa == w.pa, "va %u: monitor pa 0x%llx, memory 0x%llx", k, (unsigned long long)wi.pa,
              (unsigned long long)w.pa);
    }
}

static void note_failures(vm *v, uint64_t injected_before)
{
    if (vmt_mem_injected(v->d) != injected_before)
        v->behind = true;
}

static vmt_response deliver(vm *v, const vmt_event *ev)
{
    CHECK(vmt_mem_push_event(v->d, ev) == VMT_OK, "push");
    vmt_event got;
    vmt_status ws = VMT_E_INJECTED;
    for (int tries = 0; tries < 3 && ws == VMT_E_INJECTED; tries++) /* an injected failure changes nothing */
        ws = vmt_drv_wait_event(v->d, 0, &got);
    CHECK(ws == VMT_OK, "wait: %s", vmt_strerror(ws));
    vmt_session_flush_frames(v->s);
    vmt_session_flush_v2p(v->s);
    vmt_response resp;
    memset(&resp, 0xa5, sizeof resp);
    bool handled = false;
    uint64_t inj = vmt_mem_injected(v->d);
    vmt_status st = vmt_ptm_handle_event(v->ptm, &got, &resp, sink, v, &handled);
    note_failures(v, inj);
    CHECK(handled, "the monitor did not claim its event (%s)", vmt_event_kind_name(got.kind));
    CHECK(st == VMT_OK || v->behind, "handle_event failed without an injected failure: %s", vmt_ptm_error(v->ptm));
    vmt_status rs = VMT_E_INJECTED;
    for (int tries = 0; tries < 3 && rs == VMT_E_INJECTED; tries++) /* the loop would retry */
        rs = vmt_drv_respond(v->d, &got, &resp);
    CHECK(rs == VMT_OK, "respond: %s", vmt_strerror(rs));
    return resp;
}

static void store_bytes(vm *v, vmt_pa pa, unsigned size, uint64_t value)
{
    if (getenv("FUZZ_PTM_TRACE"))
        fprintf(stderr, "  store pa 0x%llx size %u value 0x%llx\n", (unsigned long long)pa, size,
                (unsigned long long)value);
    uint8_t b[8];
    for (unsigned i = 0; i < size; i++)
        b[i] = (uint8_t)(value >> (8 * i));
    host_write(v, pa, b, size);
}

static void finish_step(vm *v, unsigned cpu)
{
    if (!v->pending[cpu])
        return;
    v->pending[cpu] = false;
    store_bytes(v, v->pend_pa[cpu], v->pend_size[cpu], v->pend_value[cpu]);
    vmt_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = VMT_EVENT_SINGLESTEP;
    ev.vcpu = cpu;
    if (vmt_ptm_stepping(v->ptm, cpu))
        deliver(v, &ev);
}

/* One guest store; leave_pending: a STEP response is not completed yet. */
static void guest_store(vm *v, unsigned cpu, vmt_pa pa, unsigned size, uint64_t value, bool leave_pending)
{
    if (v->pending[cpu])
        finish_step(v, cpu); /* the vCPU's next instruction comes after its step */
    vmt_view cur = 0;
    vmt_status vs = VMT_E_INJECTED;
    for (int tries = 0; tries < 3 && vs == VMT_E_INJECTED; tries++)
        vs = vmt_drv_view_current(v->d, cpu, &cur);
    CHECK(vs == VMT_OK, "view_current: %s", vmt_strerror(vs));
    vmt_access a = vmt_session_effective_access(v->s, cur, pa >> 12);
    if (a & VMT_ACCESS_W) {
        store_bytes(v, pa, size, value);
        return;
    }
    if (v->after)
        store_bytes(v, pa, size, value); /* reported after it landed */
    vmt_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = VMT_EVENT_MEM_ACCESS;
    ev.vcpu = cpu;
    ev.u.mem.gpa = pa;
    ev.u.mem.access = VMT_ACCESS_W;
    ev.u.mem.has_data = v->with_data;
    ev.u.mem.size = (uint8_t)size;
    ev.u.mem.value = v->with_data ? value : 0;
    vmt_response r = deliver(v, &ev);
    if (getenv("FUZZ_PTM_TRACE"))
        fprintf(stderr, "  trap cpu %u pa 0x%llx: actions 0x%x\n", cpu, (unsigned long long)pa, r.actions);
    if (v->after) {
        CHECK(r.actions == VMT_RESP_CONTINUE, "write-after driver: response 0x%x, not CONTINUE", r.actions);
        return;
    }
    if (r.actions & VMT_RESP_STEP) {
        v->pending[cpu] = true;
        v->pend_pa[cpu] = pa;
        v->pend_size[cpu] = size;
        v->pend_value[cpu] = value;
        if (!leave_pending)
            finish_step(v, cpu);
        return;
    }
    store_bytes(v, pa, size, value); /* CONTINUE (emulated) or FAST_STEP */
}

static uint64_t le(const uint8_t *p, unsigned n)
{
    uint64_t x = 0;
    for (unsigned i = n; i-- > 0;)
        x = x << 8 | p[i];
    return x;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const uint64_t caps_variants[] = { 0, VMT_CAP_EMULATE, VMT_CAP_EMULATE | VMT_CAP_FAST_STEP,
                                              VMT_CAP_WRITE_DATA };
    vm v;
    memset(&v, 0, sizeof v);
    vmt_mem_config cfg = { 0 };
    cfg.ram_frames = RAM_FRAMES;
    cfg.vcpus = NCPU;
    cfg.maxphyaddr = 39;
    cfg.extra_frames = 8; /* small: the checkers after every step walk everything */
    cfg.max_views = 3;
    cfg.caps_remove = caps_variants[data[0] & 3];
    v.with_data = (data[0] & 3) != 3;
    v.after = (data[0] & 4) != 0;
    cfg.write_after = v.after;
    char why[256];
    CHECK(vmt_mem_driver_create(&cfg, &v.d, why, sizeof why) == VMT_OK, "driver: %s", why);
    vmt_session_config scfg = { .frame_cache_frames = 8, .v2p_cache_entries = 16 };
    CHECK(vmt_session_create(v.d, &scfg, &v.s) == VMT_OK, "session");
    vmt_paging_config pc = { 4, 39, 1, 0 };
    vmt_session_set_paging(v.s, &pc);
    CHECK(vmt_drv_view_create(v.d, VMT_ACCESS_RWX, &v.view) == VMT_OK, "view");
    CHECK(vmt_drv_view_switch(v.d, VMT_VCPU_ALL, v.view) == VMT_OK, "switch");
    CHECK(vmt_ptm_create(v.s, &v.ptm) == VMT_OK, "ptm");
    /* Tables: PML4 1, PDPT 2, PD 3, PT 4 (VA 0, 1), a 2 MiB page (VA 2),
     * PDPT 5 -> PD 6 -> PT 7 (VA 3); data frames from 16. */
    v.root = 1 << 12;
    set_entry(&v, 1, 1, (2 << 12) | 7);
    set_entry(&v, 2, 2, (3 << 12) | 7);
    set_entry(&v, 3, 3, (4 << 12) | 7);
    set_entry(&v, 4, 4, (16 << 12) | 7);
    set_entry(&v, 4, 5, (17 << 12) | 7);
    set_entry(&v, 3, 6, 0x87);               /* a 2 MiB page at pa 0 */
    set_entry(&v, 1, 7, (5 << 12) | 7);
    set_entry(&v, 5, 0, (6 << 12) | 7);
    set_entry(&v, 6, 0, (7 << 12) | 7);
    set_entry(&v, 7, 0, (18 << 12) | 7);
    for (unsigned k = 0; k < NVA; k++)
        v.watched[k] = vmt_ptm_monitor(v.ptm, vmt_addr_ctx_make(vas[k], v.root), v.view, k) == VMT_OK;
    check_all(&v);

    for (size_t at = 1; at + 12 <= size; at += 12) {
        const uint8_t *op = data + at;
        unsigned cpu = op[0] >> 7 & 1;
        uint64_t inj = vmt_mem_injected(v.d);
        if (getenv("FUZZ_PTM_TRACE"))
            fprintf(stderr, "op %zu: kind %u cpu %u\n", (at - 1) / 12, op[0] & 15, cpu);
        switch (op[0] & 15) {
        case 0: case 1: case 2: case 3: case 4: case 5: { /* guest store */
            vmt_gfn table = 1 + op[1] % 7;
            unsigned sz = 1u << (op[2] & 3);
            unsigned index = (op[2] & 4) ? op[3] % 8 : op[3] * 2u;
            unsigned off = (op[2] >> 3) & 7;
            vmt_pa pa = (table << 12) + 8ULL * (index & 511) + off;
            if ((pa & 0xfff) + sz > 0x1000)
                pa -= sz;
            uint64_t value = le(op + 4, 8);
            if (op[2] & 0x40) { /* entry-shaped: a frame in (or just past) RAM */
                uint64_t frame = value % (RAM_FRAMES + 4);
                value = (frame << 12) | (op[3] & 0x87) | 1 | ((op[2] & 0x80) ? VMT_PTE_NX : 0);
                if (off)
                    value >>= 8 * off;
            }
            guest_store(&v, cpu, pa, sz, value, (op[0] & 15) == 5);
            break;
        }
        case 6:
            finish_step(&v, cpu);
            break;
        case 7: case 8: {
            unsigned k = op[1] % NVA;
            vmt_addr_ctx c = vmt_addr_ctx_make(vas[k], v.root);
            if ((op[0] & 15) == 7) {
                vmt_status st = vmt_ptm_monitor(v.ptm, c, v.view, k);
                if (st == VMT_OK)
                    v.watched[k] = true;
            } else if (vmt_ptm_unmonitor(v.ptm, c, v.view, k) == VMT_OK) {
                v.watched[k] = false;
            }
            break;
        }
        case 9: {
            vmt_status st = vmt_ptm_resync(v.ptm, sink, &v);
            if (st == VMT_OK && vmt_mem_injected(v.d) == inj)
                v.behind = false;
            break;
        }
        case 10: { /* a host (DMA) write behind the monitor's back */
            vmt_gfn table = 1 + op[1] % 7;
            set_entry(&v, table, op[3] % 8, le(op + 4, 8));
            v.behind = true;
            break;
        }
        case 11: { /* the next driver call of some kind fails */
            static const vmt_mem_op ops[] = { VMT_MEM_OP_READ_PHYS, VMT_MEM_OP_VIEW_SET_ACCESS, VMT_MEM_OP_ANY,
                                              VMT_MEM_OP_RESPOND };
            vmt_mem_fail_nth(v.d, ops[op[1] & 3], 1 + op[2] % 4);
            break;
        }
        default:
            break;
        }
        note_failures(&v, inj);
        check_all(&v);
    }
    vmt_mem_fail_clear(v.d);
    for (unsigned c = 0; c < NCPU; c++)
        finish_step(&v, c);
    if (vmt_ptm_resync(v.ptm, sink, &v) == VMT_OK)
        v.behind = false;
    check_all(&v);
    vmt_ptm_destroy(v.ptm);
    for (vmt_gfn g = 0; g < RAM_FRAMES; g++)
        CHECK(vmt_session_effective_access(v.s, v.view, g) == VMT_ACCESS_RWX, "gfn %llu still restricted",
              (unsigned long long)g);
    CHECK(vmt_session_check(v.s) == VMT_OK, "session after destroy: %s", vmt_session_error(v.s));
    vmt_session_destroy(v.s);
    return 0;
}
