/*
 * tests/qemu/test_qemu_ptm_fake.c — the page-table monitor on the qemu
 * driver's write-only permission control, against the fake gdbstub
 * (fake_stub.c: 64 KiB of memory, paging on, scripted guest stores that hit
 * Z2 watchpoints the way QEMU 7.2 reports them: after the store, naming the
 * watch's start).
 *
 * The fake machine's tables: a direct map (the linear map the driver
 * watches frames through) at MAP = 0xffff888000000000 mapping pa 0..2 MiB
 * with one 2 MiB page, and two roots (PML4 at 0x2000 and at 0xa000) that
 * share the user PDPT/PD/PT (0x5000, 0x6000, 0x7000) mapping
 * va 0x400000 -> 0x8000, 0x401000 not present, 0x402000 -> 0x9000.
 * Checked: caps (none without a map base), a wrong map base refused, one
 * Z2 per table page however many roots share it, an 8-byte store (REMAP
 * under both roots, CONTINUE without a step), a 4-byte store into one entry
 * (PAGE_IN), a 16-byte store over two entries (two events, the second
 * before the guest runs again), a hit for a watch that was removed meanwhile
 * (dropped and counted), a store of the value already there (no data, no
 * event), a page still watched for the other root after one
 * root's watches went, and the breakpoint manager still choosing the debug
 * controller on such a driver.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "fake_stub.h"
#include "vmtrap/bpm.h"
#include "vmtrap/driver.h"
#include "vmtrap/ptm.h"
#include "vmtrap/qemu.h"
#include "vmtrap/session.h"

#define MAP 0xffff888000000000ull
#define ROOT1 0x2000ull
#define ROOT2 0xa000ull
#define PT 0x7000ull

typedef struct sink_log {
    vmt_ptm_event ev[16];
    unsigned n;
} sink_log;

static void sink(void *ctx, const vmt_ptm_event *ev)
{
    sink_log *l = ctx;
    if (l->n < 16)
        l->ev[l->n++] = *ev;
}

static void put(vmt_driver *d, uint64_t pa, uint64_t v)
{
    assert_int_equal(vmt_drv_write_phys(d, pa, &v, 8), VMT_OK);
}

static void build_tables(vmt_driver *d)
{
    static const uint8_t zero[4096];
    const uint64_t pages[] = { 0x2000, 0x3000, 0x4000, 0x5000, 0x6000, 0x7000, 0xa000 };
    for (unsigned i = 0; i < sizeof pages / sizeof pages[0]; i++)
        assert_int_equal(vmt_drv_write_phys(d, pages[i], zero, sizeof zero), VMT_OK);
    unsigned map_index = (unsigned)((MAP >> 39) & 511);
    put(d, ROOT1 + 8 * map_index, 0x3000 | 3);
    put(d, ROOT2 + 8 * map_index, 0x3000 | 3);
    put(d, 0x3000, 0x4000 | 3);
    put(d, 0x4000, 0x0 | 0x83); /* 2 MiB page: MAP + pa -> pa */
    put(d, ROOT1, 0x5000 | 7);
    put(d, ROOT2, 0x5000 | 7);
    put(d, 0x5000, 0x6000 | 7);
    put(d, 0x6000 + 8 * 2, PT | 7); /* va 0x400000: PD index 2 */
    put(d, PT + 0, 0x8000 | 7);
    put(d, PT + 16, 0x9000 | 7);
}

/* Wait for the next event, offer it to the ptm, check it was the ptm's and
 * answered CONTINUE, respond. */
static vmt_event next_write(vmt_driver *d, vmt_ptm *p, sink_log *log)
{
    vmt_event ev;
    assert_int_equal(vmt_drv_wait_event(d, 1000, &ev), VMT_OK);
    assert_int_equal(ev.kind, VMT_EVENT_MEM_ACCESS);
    assert_int_equal(ev.u.mem.access, VMT_ACCESS_W);
    vmt_response resp;
    memset(&resp, 0xff, sizeof resp);
    bool handled = false;
    log->n = 0;
    assert_int_equal(vmt_ptm_handle_event(p, &ev, &resp, sink, log, &handled), VMT_OK);
    assert_true(handled);
    assert_int_equal(resp.actions, VMT_RESP_CONTINUE); /* the store already landed: no step */
    assert_int_equal(vmt_drv_respond(d, &ev, &resp), VMT_OK);
    return ev;
}

static const vmt_ptm_event *find(const sink_log *l, vmt_ptm_event_kind kind, uint64_t tag)
{
    for (unsigned i = 0; i < l->n; i++)
        if (l->ev[i].kind == kind && l->ev[i].tag == tag)
            return &l->ev[i];
    return NULL;
}

static void ptm_on_fake_qemu(void **state)
{
    (void)state;
    fake_stub s;
    assert_int_equal(fake_stub_start(&s, FAKE_OK, 0), 0);
    s.map_base = MAP;
    vmt_qemu_config cfg = { .gdb_socket = s.path, .ram_bytes = FAKE_MEM, .timeout_ms = 300 };
    vmt_driver *d;
    char why[256];
    assert_int_equal(vmt_qemu_driver_create(&cfg, &d, why, sizeof why), VMT_OK);
    /* Without a map base: no permission control at all. */
    const vmt_caps *caps = vmt_driver_caps(d);
    assert_false(caps->flags & (VMT_CAP_VIEW_PERM | VMT_CAP_WRITE_AFTER));
    vmt_access a;
    assert_int_equal(vmt_drv_view_set_access(d, 0, 7, VMT_ACCESS_RX), VMT_E_NOTSUP);
    build_tables(d);
    /* A map base that does not map the frame is refused, not pretended. */
    assert_int_equal(vmt_qemu_set_map_base(d, MAP + 0x40000000ull), VMT_OK);
    assert_int_equal(vmt_drv_view_set_access(d, 0, 7, VMT_ACCESS_RX), VMT_E_RANGE);
    assert_non_null(strstr(vmt_driver_error(d), "does not map gfn 0x7"));
    assert_int_equal(vmt_qemu_set_map_base(d, MAP), VMT_OK);
    caps = vmt_driver_caps(d);
    assert_true(vmt_driver_has(d, VMT_CAP_VIEW_PERM | VMT_CAP_WRITE_AFTER | VMT_CAP_WRITE_DATA));
    assert_false(caps->flags & (VMT_CAP_VIEWS | VMT_CAP_VIEW_REMAP | VMT_CAP_FRAMES | VMT_CAP_EMULATE));
    assert_int_equal(caps->trap_access, VMT_ACCESS_W);
    assert_int_equal(caps->max_views, 1);
    /* Only writes can be trapped; only view 0 exists. */
    assert_int_equal(vmt_drv_view_set_access(d, 0, 7, VMT_ACCESS_R), VMT_E_NOTSUP);
    assert_int_equal(vmt_drv_view_set_access(d, 1, 7, VMT_ACCESS_RX), VMT_E_NOTFOUND);

    vmt_session *ses;
    assert_int_equal(vmt_session_create(d, NULL, &ses), VMT_OK);
    /* The breakpoint manager keeps the debug controller (no views to hide a shadow in). */
    vmt_bpm *bpm;
    vmt_bpm_config bc = { VMT_BPM_CTL_AUTO, 0 };
    assert_int_equal(vmt_bpm_create(ses, &bc, &bpm, why, sizeof why), VMT_OK);
    assert_int_equal(vmt_bpm_controller_of(bpm), VMT_BPM_CTL_DEBUG);
    vmt_bpm_destroy(bpm);

    vmt_ptm *p;
    assert_int_equal(vmt_ptm_create(ses, &p), VMT_OK);
    assert_int_equal(vmt_ptm_monitor(p, vmt_addr_ctx_make(0x400000, ROOT1), 0, 1), VMT_OK);
    assert_int_equal(vmt_ptm_monitor(p, vmt_addr_ctx_make(0x401000, ROOT1), 0, 2), VMT_OK);
    assert_int_equal(vmt_ptm_monitor(p, vmt_addr_ctx_make(0x402000, ROOT2), 0, 3), VMT_OK);
    assert_int_equal(vmt_ptm_monitor(p, vmt_addr_ctx_make(0x400000, ROOT2), 0, 4), VMT_OK);
    /* 5 table pages (2 PML4s + the shared PDPT, PD, PT), one watch each. */
    assert_int_equal(s.nwatches, 5);
    assert_int_equal(fake_stub_count(&s, "Z2,"), 5);
    assert_int_equal(fake_stub_count(&s, "Z2,ffff888000007000,1000"), 1);
    assert_int_equal(vmt_drv_view_get_access(d, 0, 7, &a, NULL), VMT_OK);
    assert_int_equal(a, VMT_ACCESS_RX);
    assert_int_equal(vmt_drv_view_get_access(d, 0, 8, &a, NULL), VMT_OK);
    assert_int_equal(a, VMT_ACCESS_RWX);
    assert_int_equal(vmt_qemu_check(d), VMT_OK);
    assert_int_equal(vmt_ptm_check(p), VMT_OK);

    sink_log log;
    unsigned steps = fake_stub_count(&s, "s");
    /* An 8-byte store: va 0x400000 moves to 0xb000 under both roots. */
    fake_stub_store(&s, MAP + PT, 8, 0xb000 | 7, 0, false);
    vmt_event ev = next_write(d, p, &log);
    assert_true(ev.u.mem.gpa == PT && ev.u.mem.has_data && ev.u.mem.size == 8 && ev.u.mem.value == (0xb000 | 7));
    assert_int_equal(log.n, 2);
    const vmt_ptm_event *pe = find(&log, VMT_PTM_REMAP, 1);
    assert_non_null(pe);
    assert_true(pe->old_pa == 0x8000 && pe->new_pa == 0xb000);
    assert_non_null(find(&log, VMT_PTM_REMAP, 4));

    /* A 4-byte store into the not-present entry of 0x401000: PAGE_IN. */
    fake_stub_store(&s, MAP + PT + 8, 4, 0xc000 | 7, 0, false);
    ev = next_write(d, p, &log);
    assert_true(ev.u.mem.gpa == PT + 8 && ev.u.mem.size == 8 && ev.u.mem.value == (0xc000 | 7));
    assert_int_equal(log.n, 1);
    pe = find(&log, VMT_PTM_PAGE_IN, 2);
    assert_non_null(pe);
    assert_true(pe->new_pa == 0xc000 && pe->page_size == 4096);

    /* A 16-byte store over entries 0 and 1: two events, the second without
     * the guest running again (no 'c' between them). */
    fake_stub_store(&s, MAP + PT, 16, 0xd000 | 7, 0, false);
    ev = next_write(d, p, &log);
    assert_true(ev.u.mem.gpa == PT && ev.u.mem.value == (0xd000 | 7));
    assert_int_equal(log.n, 2);
    assert_non_null(find(&log, VMT_PTM_REMAP, 1));
    unsigned conts = fake_stub_count(&s, "c");
    ev = next_write(d, p, &log);
    assert_int_equal(fake_stub_count(&s, "c"), conts);
    assert_true(ev.u.mem.gpa == PT + 8 && ev.u.mem.has_data && ev.u.mem.value == 0);
    assert_int_equal(log.n, 1);
    pe = find(&log, VMT_PTM_PAGE_OUT, 2);
    assert_non_null(pe);
    assert_true(pe->old_pa == 0xc000);
    assert_int_equal(fake_stub_count(&s, "s"), steps); /* never a step */

    /* Root 1's watches go: its PML4 is no longer watched, the shared pages stay. */
    assert_int_equal(vmt_ptm_unmonitor(p, vmt_addr_ctx_make(0x400000, ROOT1), 0, 1), VMT_OK);
    assert_int_equal(vmt_ptm_unmonitor(p, vmt_addr_ctx_make(0x401000, ROOT1), 0, 2), VMT_OK);
    assert_int_equal(fake_stub_count(&s, "z2,ffff888000002000,1000"), 1);
    assert_int_equal(fake_stub_count(&s, "z2,ffff888000007000,1000"), 0);
    assert_int_equal(s.nwatches, 4);

    /* QEMU reports a hit for the watch just removed: dropped, counted, the guest goes on. */
    fake_stub_store(&s, MAP + ROOT1 + 8 * 5, 8, 0x1234000 | 7, 0, true);
    assert_int_equal(vmt_drv_wait_event(d, 300, &ev), VMT_E_TIMEOUT);
    vmt_qemu_info info;
    assert_int_equal(vmt_qemu_get_info(d, &info), VMT_OK);
    assert_int_equal(info.stale_watch_hits, 1);
    assert_int_equal(info.protected_frames, 4);

    /* The PT still watched for root 2: va 0x402000 moves. */
    fake_stub_store(&s, MAP + PT + 16, 8, 0xf000 | 7, 0, false);
    ev = next_write(d, p, &log);
    assert_int_equal(log.n, 1);
    pe = find(&log, VMT_PTM_REMAP, 3);
    assert_non_null(pe);
    assert_true(pe->ctx.root == ROOT2 && pe->old_pa == 0x9000 && pe->new_pa == 0xf000);
    /* The same value stored again: an event without data at the frame's
     * start; the ptm re-reads, nothing moves. */
    fake_stub_store(&s, MAP + PT + 16, 8, 0xf000 | 7, 0, false);
    ev = next_write(d, p, &log);
    assert_false(ev.u.mem.has_data);
    assert_true(ev.u.mem.gpa == PT);
    assert_int_equal(log.n, 0);
    vmt_ptm_watch_info wi;
    assert_int_equal(vmt_ptm_query(p, vmt_addr_ctx_make(0x400000, ROOT2), 0, 4, &wi), VMT_OK);
    assert_true(wi.present && wi.pa == 0xd000);
    vmt_ptm_stats ps;
    vmt_ptm_get_stats(p, &ps);
    assert_int_equal(ps.writes_after, 6);
    assert_int_equal(ps.writes_stepped, 0);
    assert_int_equal(vmt_ptm_check(p), VMT_OK);
    assert_int_equal(vmt_qemu_check(d), VMT_OK);
    /* A frame the ptm protects is not the raw watch API's to remove. */
    assert_int_equal(vmt_qemu_watch(d, MAP + PT, 4096, 0), VMT_E_BUSY);
    /* The map base cannot move under watched frames. */
    assert_int_equal(vmt_qemu_set_map_base(d, 0), VMT_E_BUSY);
    vmt_ptm_destroy(p);
    assert_int_equal(s.nwatches, 0);
    assert_int_equal(vmt_qemu_set_map_base(d, 0), VMT_OK);
    assert_false(vmt_driver_has(d, VMT_CAP_VIEW_PERM));
    vmt_session_destroy(ses);
    fake_stub_stop(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ptm_on_fake_qemu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
