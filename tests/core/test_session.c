/*
 * tests/core/test_session.c — the session: caches, virtual memory access,
 * the access arbiter and the event loop, over the scripted fake driver
 * (fake_driver.c), whose call counts and call log say exactly what the
 * session asked of the driver. vmt_session_check() runs after every step.
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fake_driver.h"
#include "vmtrap/session.h"

#define ALL_CAPS                                                                                             \
    (VMT_CAP_READ_PHYS | VMT_CAP_WRITE_PHYS | VMT_CAP_REGS_GET | VMT_CAP_VIEWS | VMT_CAP_VIEW_REMAP |       \
     VMT_CAP_VIEW_PERM | VMT_CAP_EVENTS)
#define FRAMES 64

typedef struct fixture {
    fake_driver f;
    vmt_session *s;
} fixture;

#define CHECK(s)                                                                                             \
    do {                                                                                                     \
        if (vmt_session_check(s) != VMT_OK)                                                                  \
            fail_msg("%s", vmt_session_error(s));                                                            \
    } while (0)

static fixture *make(uint64_t caps, const vmt_session_config *cfg, const vmt_regs *regs0)
{
    fixture *x = calloc(1, sizeof *x);
    vmt_driver *d = fake_driver_create(&x->f, FRAMES, caps);
    assert_non_null(d);
    if (regs0)
        x->f.regs0 = *regs0;
    assert_int_equal(vmt_session_create(d, cfg, &x->s), VMT_OK);
    CHECK(x->s);
    return x;
}

static void destroy(fixture *x)
{
    CHECK(x->s);
    vmt_session_destroy(x->s);
    assert_true(x->f.destroyed); /* the session owned the driver */
    fake_driver_release(&x->f);
    free(x);
}

static void poke64(fixture *x, vmt_pa pa, uint64_t v) { memcpy(x->f.ram + pa, &v, 8); }

#define PRW (VMT_PTE_P | VMT_PTE_RW)
/* Tables: PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> PT 0x4000.
 * va 0x400000 -> frame 0x10000, 0x401000 -> frame 0x20000 (not contiguous),
 * 0x402000 not present. */
static void build_tables(fixture *x)
{
    poke64(x, 0x1000, 0x2000 | PRW);
    poke64(x, 0x2000, 0x3000 | PRW);
    poke64(x, 0x3000 + 8 * 2, 0x4000 | PRW);
    poke64(x, 0x4000 + 8 * 0, 0x10000 | PRW);
    poke64(x, 0x4000 + 8 * 1, 0x20000 | PRW);
}

static vmt_status h_continue(vmt_session *s, const vmt_event *ev, vmt_response *r, void *user)
{
    (void)s, (void)ev, (void)r;
    (*(int *)user)++;
    return VMT_OK;
}

/* ---- creation ---- */

static void test_create_detects_paging(void **state)
{
    (void)state;
    vmt_regs r = { .cr0 = VMT_CR0_PG | VMT_CR0_PE, .cr4 = VMT_CR4_PAE | VMT_CR4_LA57, .efer = VMT_EFER_NXE };
    fixture *x = make(ALL_CAPS, NULL, &r);
    assert_int_equal(vmt_session_paging(x->s)->levels, 5);
    assert_int_equal(vmt_session_paging(x->s)->nxe, 1);
    assert_int_equal(vmt_session_paging(x->s)->maxphyaddr, 40);
    destroy(x);
    r.cr4 = VMT_CR4_PAE;
    r.efer = VMT_EFER_LME | VMT_EFER_LMA;
    x = make(ALL_CAPS, NULL, &r);
    assert_int_equal(vmt_session_paging(x->s)->levels, 4);
    assert_int_equal(vmt_session_paging(x->s)->nxe, 0);
    destroy(x);
    /* Bad config: the driver is still taken (destroyed). */
    fake_driver f;
    vmt_driver *d = fake_driver_create(&f, 4, ALL_CAPS);
    vmt_session_config bad = { .event_timeout_ms = -1 };
    vmt_session *s = NULL;
    assert_int_equal(vmt_session_create(d, &bad, &s), VMT_E_INVAL);
    assert_null(s);
    assert_true(f.destroyed);
    fake_driver_release(&f);
}

/* ---- caches ---- */

static void test_frame_cache_hits_until_flushed(void **state)
{
    (void)state;
    fixture *x = make(ALL_CAPS, NULL, NULL);
    poke64(x, 0x5008, 0x1111);
    uint64_t v = 0;
    assert_int_equal(vmt_session_read_pa(x->s, 0x5008, &v, 8), VMT_OK);
    assert_int_equal(v, 0x1111);
    assert_int_equal(x->f.reads, 1);
    CHECK(x->s);
    assert_int_equal(vmt_session_read_pa(x->s, 0x5010, &v, 8), VMT_OK);
    assert_int_equal(x->f.reads, 1); /* same frame: cached */
    /* The guest changes memory behind the session's back: the cache still
     * answers until it is flushed... */
    poke64(x, 0x5008, 0x2222);
    assert_int_equal(vmt_session_read_pa(x->s, 0x5008, &v, 8), VMT_OK);
    assert_int_equal(v, 0x1111);
    vmt_session_flush_frames(x->s);
    CHECK(x->s);
    assert_int_equal(vmt_session_read_pa(x->s, 0x5008, &v, 8), VMT_OK);
    assert_int_equal(v, 0x2222);
    assert_int_equal(x->f.reads, 2);
    /* ...and after every run. */
    poke64(x, 0x5008, 0x3333);
    fake_push_kind(&x->f, VMT_EVENT_BREAKPOINT);
    fake_push_kind(&x->f, VMT_EVENT_STOPPED);
    int n = 0;
    assert_int_equal(vmt_session_run(x->s, h_continue, &n), VMT_OK);
    CHECK(x->s);
    assert_int_equal(vmt_session_read_pa(x->s, 0x5008, &v, 8), VMT_OK);
    assert_int_equal(v, 0x3333);
    /* A write through the session is seen at once. */
    uint64_t w = 0x4444;
    assert_int_equal(vmt_session_write_pa(x->s, 0x5008, &w, 8), VMT_OK);
    CHECK(x->s);
    assert_int_equal(vmt_session_read_pa(x->s, 0x5008, &v, 8), VMT_OK);
    assert_int_equal(v, 0x4444);
    /* A read across a frame boundary. */
    vmt_session_flush_frames(x->s);
    poke64(x, 0x5ffc, 0x8877665544332211ULL);
    assert_int_equal(vmt_session_read_pa(x->s, 0x5ffc, &v, 8), VMT_OK);
    assert_int_equal(v, 0x8877665544332211ULL);
    /* Past the end of RAM: the driver's error comes through. */
    assert_int_equal(vmt_session_read_pa(x->s, FRAMES * 4096 - 4, &v, 8), VMT_E_RANGE);
    assert_non_null(strstr(vmt_session_error(x->s), "outside RAM"));
    CHECK(x->s);
    destroy(x);
}

static void test_frame_cache_eviction(void **state)
{
    (void)state;
    vmt_session_config cfg = { .frame_cache_frames = 4 };
    fixture *x = make(ALL_CAPS, &cfg, NULL);
    for (unsigned i = 0; i < 12; i++)
        x->f.ram[i * 4096] = (uint8_t)(i + 1);
    for (unsigned round = 0; round < 3; round++) {
        for (unsigned i = 0; i < 12; i++) {
            uint8_t b = 0;
            assert_int_equal(vmt_session_read_pa(x->s, (vmt_pa)i * 4096, &b, 1), VMT_OK);
            assert_int_equal(b, i + 1);
            CHECK(x->s);
        }
    }
    assert_int_equal(x->f.reads, 36); /* 12 frames through 4 slots: every read misses */
    unsigned before = x->f.reads;
    for (unsigned k = 0; k < 10; k++) /* the 4 most recent stay cached */
        for (unsigned i = 8; i < 12; i++) {
            uint8_t b;
            assert_int_equal(vmt_session_read_pa(x->s, (vmt_pa)i * 4096, &b, 1), VMT_OK);
        }
    assert_int_equal(x->f.reads, before);
    destroy(x);
}

static void test_v2p_cache(void **state)
{
    (void)state;
    fixture *x = make(ALL_CAPS, NULL, NULL);
    build_tables(x);
    vmt_addr_ctx ctx = vmt_addr_ctx_make(0x400123, 0x1000 | 0x18);
    vmt_walk w;
    assert_int_equal(vmt_session_translate(x->s, ctx, &w), VMT_OK);
    assert_int_equal(w.pa, 0x10123);
    assert_int_equal(w.nsteps, 4);
    unsigned reads = x->f.reads;
    vmt_session_stats st0, st1;
    vmt_session_get_stats(x->s, &st0);
    assert_int_equal(st0.v2p_misses, 1);
    assert_int_equal(st0.frame_misses, 4); /* four table frames */
    /* Same page, other offset: no table reads at all. */
    vmt_pa pa = 0;
    vmt_session_flush_frames(x->s);
    assert_int_equal(vmt_session_va_to_pa(x->s, vmt_addr_ctx_make(0x400ff8, 0x1000), &pa), VMT_OK);
    assert_int_equal(pa, 0x10ff8);
    assert_int_equal(x->f.reads, reads);
    vmt_session_get_stats(x->s, &st1);
    assert_int_equal(st1.v2p_hits, st0.v2p_hits + 1);
    assert_int_equal(st1.frame_misses, st0.frame_misses);
    CHECK(x->s);
    /* The guest remaps the page: seen after a run. */
    poke64(x, 0x4000, 0x30000 | PRW);
    fake_push_kind(&x->f, VMT_EVENT_STOPPED);
    int n = 0;
    assert_int_equal(vmt_session_run(x->s, h_continue, &n), VMT_OK);
    assert_int_equal(vmt_session_va_to_pa(x->s, ctx, &pa), VMT_OK);
    assert_int_equal(pa, 0x30123);
    /* A write of a PTE through the session is seen at once. */
    uint64_t pte = 0x31000 | PRW;
    assert_int_equal(vmt_session_write_pa(x->s, 0x4000, &pte, 8), VMT_OK);
    assert_int_equal(vmt_session_va_to_pa(x->s, ctx, &pa), VMT_OK);
    assert_int_equal(pa, 0x31123);
    /* Explicit flush. */
    poke64(x, 0x4000, 0x32000 | PRW);
    vmt_session_flush_v2p(x->s);
    vmt_session_flush_frames(x->s);
    assert_int_equal(vmt_session_va_to_pa(x->s, ctx, &pa), VMT_OK);
    assert_int_equal(pa, 0x32123);
    /* Not present: the walker's message, nothing cached. */
    assert_int_equal(vmt_session_translate(x->s, vmt_addr_ctx_make(0x402000, 0x1000), &w), VMT_E_NOT_PRESENT);
    assert_int_equal(w.fault_level, 1);
    assert_non_null(strstr(vmt_session_error(x->s), "not present"));
    poke64(x, 0x4000 + 16, 0x33000 | PRW);
    vmt_session_flush_frames(x->s);
    assert_int_equal(vmt_session_va_to_pa(x->s, vmt_addr_ctx_make(0x402000, 0x1000), &pa), VMT_OK);
    assert_int_equal(pa, 0x33000);
    CHECK(x->s);
    destroy(x);
}

static void test_v2p_cache_bounded(void **state)
{
    (void)state;
    vmt_session_config cfg = { .v2p_cache_entries = 3 };
    fixture *x = make(ALL_CAPS, &cfg, NULL);
    build_tables(x);
    for (unsigned i = 0; i < 16; i++)
        poke64(x, 0x4000 + 8 * i, (0x10000 + 0x1000 * i) | PRW);
    for (unsigned round = 0; round < 3; round++)
        for (unsigned i = 0; i < 16; i++) {
            vmt_pa pa;
            assert_int_equal(vmt_session_va_to_pa(x->s, vmt_addr_ctx_make(0x400000 + 0x1000 * i + 5, 0x1000), &pa),
                             VMT_OK);
            assert_int_equal(pa, 0x10000 + 0x1000 * i + 5);
            CHECK(x->s);
        }
    destroy(x);
}

static void test_read_write_va_across_pages(void **state)
{
    (void)state;
    fixture *x = make(ALL_CAPS, NULL, NULL);
    build_tables(x);
    memcpy(x->f.ram + 0x10ffc, "abcd", 4);
    memcpy(x->f.ram + 0x20000, "efgh", 4);
    char buf[16] = { 0 };
    size_t done = 99;
    assert_int_equal(vmt_session_read_va(x->s, vmt_addr_ctx_make(0x400ffc, 0x1000), buf, 8, &done), VMT_OK);
    assert_int_equal(done, 8);
    assert_memory_equal(buf, "abcdefgh", 8);
    /* Into the not-present page: the bytes before it are read. */
    assert_int_equal(vmt_session_read_va(x->s, vmt_addr_ctx_make(0x401ffa, 0x1000), buf, 10, &done),
                     VMT_E_NOT_PRESENT);
    assert_int_equal(done, 6);
    /* Write across two pages. */
    assert_int_equal(vmt_session_write_va(x->s, vmt_addr_ctx_make(0x400ffe, 0x1000), "WXYZ", 4), VMT_OK);
    assert_memory_equal(x->f.ram + 0x10ffe, "WX", 2);
    assert_memory_equal(x->f.ram + 0x20000, "YZ", 2);
    CHECK(x->s);
    /* A write reaching a not-present page writes nothing. */
    unsigned writes = x->f.writes;
    assert_int_equal(vmt_session_write_va(x->s, vmt_addr_ctx_make(0x401ffe, 0x1000), "1234", 4), VMT_E_NOT_PRESENT);
    assert_int_equal(x->f.writes, writes);
    assert_int_equal(x->f.ram[0x20ffe], 0);
    /* Strings: across a page, truncated, and into a hole. */
    memcpy(x->f.ram + 0x10ff0, "0123456789abcdef", 16);
    memcpy(x->f.ram + 0x20000, "tail", 5);
    char str[64];
    assert_int_equal(vmt_session_read_str(x->s, vmt_addr_ctx_make(0x400ff0, 0x1000), str, sizeof str), VMT_OK);
    assert_string_equal(str, "0123456789abcdeftail");
    assert_int_equal(vmt_session_read_str(x->s, vmt_addr_ctx_make(0x400ff0, 0x1000), str, 5), VMT_E_RANGE);
    assert_string_equal(str, "0123");
    memset(x->f.ram + 0x21000 - 8, 'z', 8);
    vmt_session_flush_frames(x->s);
    assert_int_equal(vmt_session_read_str(x->s, vmt_addr_ctx_make(0x401ff8, 0x1000), str, sizeof str),
                     VMT_E_NOT_PRESENT);
    assert_string_equal(str, "zzzzzzzz");
    /* Non-canonical. */
    assert_int_equal(vmt_session_read_va(x->s, vmt_addr_ctx_make(0x0000800000000000ULL, 0x1000), buf, 1, &done),
                     VMT_E_INVAL);
    assert_int_equal(done, 0);
    CHECK(x->s);
    destroy(x);
}

/* ---- access arbiter ---- */

static void expect_call(fixture *x, size_t i, fake_op op, vmt_view v, vmt_gfn g, uint64_t arg)
{
    assert_true(i < x->f.nlog);
    assert_int_equal(x->f.log[i].op, op);
    assert_int_equal(x->f.log[i].view, v);
    assert_int_equal(x->f.log[i].gfn, g);
    assert_int_equal(x->f.log[i].arg, arg);
}

static void test_arbiter_intersection_and_remap(void **state)
{
    (void)state;
    fixture *x = make(ALL_CAPS, NULL, NULL);
    vmt_session *s = x->s;
    assert_int_equal(vmt_session_effective_access(s, 1, 5), VMT_ACCESS_RWX);
    assert_int_equal(vmt_session_restrict(s, 1, 5, VMT_OWNER_BPM, VMT_ACCESS_X), VMT_OK);
    CHECK(s);
    assert_int_equal(vmt_session_restrict(s, 1, 5, VMT_OWNER_PTM, VMT_ACCESS_RX), VMT_OK);
    CHECK(s);
    assert_int_equal(vmt_session_effective_access(s, 1, 5), VMT_ACCESS_X);
    assert_int_equal(x->f.nlog, 1); /* X & RX == X: nothing changed, no second call */
    expect_call(x, 0, FAKE_SET_ACCESS, 1, 5, VMT_ACCESS_X);
    assert_int_equal(vmt_session_restrict(s, 1, 5, VMT_OWNER_PTM, VMT_ACCESS_R), VMT_OK);
    CHECK(s);
    expect_call(x, 1, FAKE_SET_ACCESS, 1, 5, VMT_ACCESS_NONE);
    /* BPM leaves: PTM's R remains. */
    assert_int_equal(vmt_session_unrestrict(s, 1, 5, VMT_OWNER_BPM), VMT_OK);
    CHECK(s);
    expect_call(x, 2, FAKE_SET_ACCESS, 1, 5, VMT_ACCESS_R);
    assert_int_equal(vmt_session_effective_access(s, 1, 5), VMT_ACCESS_R);
    /* Remap resets rights in the driver: the arbiter applies them again. */
    assert_int_equal(vmt_session_remap(s, 1, 5, 0x30), VMT_OK);
    CHECK(s);
    expect_call(x, 3, FAKE_REMAP, 1, 5, 0x30);
    expect_call(x, 4, FAKE_SET_ACCESS, 1, 5, VMT_ACCESS_R);
    /* A remap of a gfn nobody restricts: no rights call. */
    assert_int_equal(vmt_session_remap(s, 1, 6, 0x31), VMT_OK);
    assert_int_equal(x->f.nlog, 6);
    expect_call(x, 5, FAKE_REMAP, 1, 6, 0x31);
    /* The last owner leaves: RWX, entry gone. */
    assert_int_equal(vmt_session_unrestrict(s, 1, 5, VMT_OWNER_PTM), VMT_OK);
    CHECK(s);
    expect_call(x, 6, FAKE_SET_ACCESS, 1, 5, VMT_ACCESS_RWX);
    assert_int_equal(vmt_session_effective_access(s, 1, 5), VMT_ACCESS_RWX);
    assert_int_equal(vmt_session_unrestrict(s, 1, 5, VMT_OWNER_PTM), VMT_E_NOTFOUND);
    assert_int_equal(vmt_session_restrict(s, 1, 5, VMT_OWNER_COUNT, VMT_ACCESS_R), VMT_E_INVAL);
    assert_int_equal(vmt_session_restrict(s, 1, 5, VMT_OWNER_USER, 0x8), VMT_E_INVAL);
    CHECK(s);
    destroy(x);
}

static void test_arbiter_driver_failures(void **state)
{
    (void)state;
    fixture *x = make(ALL_CAPS, NULL, NULL);
    vmt_session *s = x->s;
    /* A new entry whose rights the driver refuses is not kept. */
    x->f.fail_set_access = 1;
    assert_int_equal(vmt_session_restrict(s, 2, 9, VMT_OWNER_BPM, VMT_ACCESS_X), VMT_E_INJECTED);
    assert_non_null(strstr(vmt_session_error(s), "failed on purpose"));
    CHECK(s);
    assert_int_equal(vmt_session_effective_access(s, 2, 9), VMT_ACCESS_RWX);
    assert_int_equal(vmt_session_unrestrict(s, 2, 9, VMT_OWNER_BPM), VMT_E_NOTFOUND);
    /* An existing entry keeps its old state. */
    assert_int_equal(vmt_session_restrict(s, 2, 9, VMT_OWNER_BPM, VMT_ACCESS_X), VMT_OK);
    x->f.fail_set_access = 1;
    assert_int_equal(vmt_session_restrict(s, 2, 9, VMT_OWNER_PTM, VMT_ACCESS_R), VMT_E_INJECTED);
    CHECK(s);
    assert_int_equal(vmt_session_effective_access(s, 2, 9), VMT_ACCESS_X);
    assert_int_equal(vmt_session_unrestrict(s, 2, 9, VMT_OWNER_PTM), VMT_E_NOTFOUND);
    x->f.fail_set_access = 1;
    assert_int_equal(vmt_session_unrestrict(s, 2, 9, VMT_OWNER_BPM), VMT_E_INJECTED);
    assert_int_equal(vmt_session_effective_access(s, 2, 9), VMT_ACCESS_X);
    CHECK(s);
    /* Re-applying after a remap fails: the next touch applies again even if
     * the rights do not change. */
    x->f.fail_set_access = 1;
    assert_int_equal(vmt_session_remap(s, 2, 9, 0x40), VMT_E_INJECTED);
    assert_non_null(strstr(vmt_session_error(s), "after remap"));
    CHECK(s);
    fake_clear_log(&x->f);
    assert_int_equal(vmt_session_restrict(s, 2, 9, VMT_OWNER_BPM, VMT_ACCESS_X), VMT_OK);
    assert_int_equal(x->f.nlog, 1);
    expect_call(x, 0, FAKE_SET_ACCESS, 2, 9, VMT_ACCESS_X);
    CHECK(s);
    destroy(x);
}

static void test_arbiter_forget_view(void **state)
{
    (void)state;
    fixture *x = make(ALL_CAPS, NULL, NULL);
    vmt_session *s = x->s;
    for (vmt_gfn g = 0; g < 200; g++) {
        assert_int_equal(vmt_session_restrict(s, 1, g, VMT_OWNER_BPM, VMT_ACCESS_X), VMT_OK);
        assert_int_equal(vmt_session_restrict(s, 3, g, VMT_OWNER_PTM, VMT_ACCESS_RX), VMT_OK);
    }
    CHECK(s);
    fake_clear_log(&x->f);
    vmt_session_forget_view(s, 1);
    CHECK(s);
    assert_int_equal(x->f.nlog, 0); /* the view is gone: nothing to tell the driver */
    for (vmt_gfn g = 0; g < 200; g++) {
        assert_int_equal(vmt_session_effective_access(s, 1, g), VMT_ACCESS_RWX);
        assert_int_equal(vmt_session_effective_access(s, 3, g), VMT_ACCESS_RX);
    }
    /* A new view with the same id starts clean: a restriction is applied. */
    assert_int_equal(vmt_session_restrict(s, 1, 7, VMT_OWNER_BPM, VMT_ACCESS_X), VMT_OK);
    assert_int_equal(x->f.nlog, 1);
    CHECK(s);
    destroy(x);
}

/* ---- event loop ---- */

typedef struct loop_ctx {
    int seen;
    int stop_at;        /* request stop when seen reaches this */
    int fail_at;        /* return VMT_E_INJECTED when seen reaches this */
    int raise_at;       /* raise(SIGTERM) when seen reaches this */
    vmt_event_kind kinds[16];
    int checks_failed;
} loop_ctx;

static vmt_status h_loop(vmt_session *s, const vmt_event *ev, vmt_response *r, void *user)
{
    loop_ctx *c = user;
    if (vmt_session_check(s) != VMT_OK)
        c->checks_failed++;
    c->kinds[c->seen++ & 15] = ev->kind;
    if (c->seen == c->stop_at)
        vmt_session_request_stop(s);
    if (c->seen == c->raise_at)
        raise(SIGTERM);
    if (c->seen == c->fail_at) {
        r->actions = VMT_RESP_DENY;
        return VMT_E_INJECTED;
    }
    return VMT_OK;
}

static void test_run_stops_on_request(void **state)
{
    (void)state;
    fixture *x = make(ALL_CAPS, NULL, NULL);
    for (int i = 0; i < 4; i++)
        fake_push_kind(&x->f, VMT_EVENT_BREAKPOINT);
    loop_ctx c = { .stop_at = 2 };
    assert_int_equal(vmt_session_run(x->s, h_loop, &c), VMT_OK);
    CHECK(x->s);
    assert_int_equal(c.seen, 2);
    assert_int_equal(x->f.responds, 2); /* the second event was answered before returning */
    assert_false(x->f.awaiting_response);
    assert_int_equal(vmt_session_last_stop(x->s)->reason, 0);
    assert_int_equal(vmt_session_events_handled(x->s), 2);
    assert_false(vmt_session_stop_requested(x->s)); /* consumed by run */
    /* Run again: it goes on where it stopped. */
    c.stop_at = 4;
    assert_int_equal(vmt_session_run(x->s, h_loop, &c), VMT_OK);
    assert_int_equal(c.seen, 4);
    assert_int_equal(x->f.responds, 4);
    /* A request before run: returns without waiting. */
    unsigned waits = x->f.waits;
    vmt_session_request_stop(x->s);
    assert_true(vmt_session_stop_requested(x->s));
    assert_int_equal(vmt_session_run(x->s, h_loop, &c), VMT_OK);
    assert_int_equal(x->f.waits, waits);
    assert_int_equal(c.checks_failed, 0);
    destroy(x);
}

static void test_run_stops_after_stopped_event(void **state)
{
    (void)state;
    vmt_session_config cfg = { .event_timeout_ms = 7 };
    fixture *x = make(ALL_CAPS, &cfg, NULL);
    x->f.timeouts_before_each = 3; /* timeouts just loop */
    fake_push_kind(&x->f, VMT_EVENT_BREAKPOINT);
    vmt_event stop;
    memset(&stop, 0, sizeof stop);
    stop.kind = VMT_EVENT_STOPPED;
    stop.u.stop.reason = VMT_STOP_TRIPLE_FAULT;
    strcpy(stop.u.stop.message, "triple fault at rip 0x1234");
    fake_push(&x->f, &stop);
    fake_push_kind(&x->f, VMT_EVENT_BREAKPOINT);
    loop_ctx c = { 0 };
    assert_int_equal(vmt_session_run(x->s, h_loop, &c), VMT_OK);
    CHECK(x->s);
    assert_int_equal(c.seen, 2);
    assert_int_equal(c.kinds[1], VMT_EVENT_STOPPED);
    assert_int_equal(x->f.responds, 1); /* a stop event is not answered */
    assert_int_equal(x->f.waits, 8);    /* 3 timeouts + event, twice */
    assert_int_equal(x->f.last_timeout_ms, 7);
    assert_int_equal(vmt_session_last_stop(x->s)->reason, VMT_STOP_TRIPLE_FAULT);
    assert_string_equal(vmt_session_last_stop(x->s)->message, "triple fault at rip 0x1234");
    assert_int_equal(x->f.next, 2); /* the third event is still queued */
    destroy(x);
}

static void test_run_returns_handler_error(void **state)
{
    (void)state;
    fixture *x = make(ALL_CAPS, NULL, NULL);
    for (int i = 0; i < 3; i++)
        fake_push_kind(&x->f, VMT_EVENT_SINGLESTEP);
    loop_ctx c = { .fail_at = 2 };
    assert_int_equal(vmt_session_run(x->s, h_loop, &c), VMT_E_INJECTED);
    CHECK(x->s);
    assert_int_equal(c.seen, 2);
    /* The failed event was still answered, neutrally. */
    assert_int_equal(x->f.responds, 2);
    assert_int_equal(x->f.last_resp.actions, VMT_RESP_CONTINUE);
    assert_non_null(strstr(vmt_session_error(x->s), "handler failed"));
    assert_non_null(strstr(vmt_session_error(x->s), "singlestep event 2"));
    /* A driver that refuses the response ends the run with its error. */
    x->f.fail_respond = VMT_E_DRIVER;
    c.fail_at = 0;
    assert_int_equal(vmt_session_run(x->s, h_loop, &c), VMT_E_DRIVER);
    assert_non_null(strstr(vmt_session_error(x->s), "respond failed on purpose"));
    assert_int_equal(vmt_session_run(x->s, NULL, NULL), VMT_E_INVAL);
    destroy(x);
}

static void test_run_follows_paging_mode(void **state)
{
    (void)state;
    fixture *x = make(ALL_CAPS, NULL, NULL);
    assert_int_equal(vmt_session_paging(x->s)->levels, 4);
    vmt_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = VMT_EVENT_CR_WRITE;
    ev.regs.cr0 = VMT_CR0_PG | VMT_CR0_PE;
    ev.regs.cr4 = VMT_CR4_PAE | VMT_CR4_LA57;
    ev.regs.efer = VMT_EFER_NXE | VMT_EFER_LMA;
    fake_push(&x->f, &ev);
    fake_push_kind(&x->f, VMT_EVENT_STOPPED); /* regs all zero: paging off, ignored */
    int n = 0;
    assert_int_equal(vmt_session_run(x->s, h_continue, &n), VMT_OK);
    assert_int_equal(vmt_session_paging(x->s)->levels, 5);
    assert_int_equal(vmt_session_paging(x->s)->nxe, 1);
    /* Pinned by the user: events no longer change it. */
    vmt_paging_config pin = { .levels = 4, .maxphyaddr = 40, .nxe = 0 };
    vmt_session_set_paging(x->s, &pin);
    fake_push(&x->f, &ev);
    fake_push_kind(&x->f, VMT_EVENT_STOPPED);
    assert_int_equal(vmt_session_run(x->s, h_continue, &n), VMT_OK);
    assert_int_equal(vmt_session_paging(x->s)->levels, 4);
    destroy(x);
}

static void test_sigterm_stops_run_cleanly(void **state)
{
    (void)state;
    sigset_t before, after;
    pthread_sigmask(SIG_SETMASK, NULL, &before);
    assert_false(sigismember(&before, SIGTERM));
    fixture *x = make(ALL_CAPS, NULL, NULL);
    assert_int_equal(vmt_session_stop_on_signals(x->s), VMT_OK);
    for (int i = 0; i < 3; i++)
        fake_push_kind(&x->f, VMT_EVENT_BREAKPOINT);
    loop_ctx c = { .raise_at = 1 };
    assert_int_equal(vmt_session_run(x->s, h_loop, &c), VMT_OK);
    assert_int_equal(c.seen, 1);
    assert_int_equal(x->f.responds, 1);
    assert_false(x->f.awaiting_response);
    assert_int_equal(vmt_session_last_stop(x->s)->reason, 0);
    /* SIGINT too, and a signal arriving while not running is kept for the next run. */
    raise(SIGINT);
    assert_int_equal(vmt_session_run(x->s, h_loop, &c), VMT_OK);
    assert_int_equal(c.seen, 1);
    /* A pending signal at destroy is drained, not delivered (which would kill us). */
    raise(SIGTERM);
    destroy(x);
    pthread_sigmask(SIG_SETMASK, NULL, &after);
    assert_false(sigismember(&after, SIGTERM));
    assert_false(sigismember(&after, SIGINT));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_detects_paging),
        cmocka_unit_test(test_frame_cache_hits_until_flushed),
        cmocka_unit_test(test_frame_cache_eviction),
        cmocka_unit_test(test_v2p_cache),
        cmocka_unit_test(test_v2p_cache_bounded),
        cmocka_unit_test(test_read_write_va_across_pages),
        cmocka_unit_test(test_arbiter_intersection_and_remap),
        cmocka_unit_test(test_arbiter_driver_failures),
        cmocka_unit_test(test_arbiter_forget_view),
        cmocka_unit_test(test_run_stops_on_request),
        cmocka_unit_test(test_run_stops_after_stopped_event),
        cmocka_unit_test(test_run_returns_handler_error),
        cmocka_unit_test(test_run_follows_paging_mode),
        cmocka_unit_test(test_sigterm_stops_run_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
