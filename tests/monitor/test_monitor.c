/*
 * tests/monitor/test_monitor.c — the monitor on the mem driver (no CPU):
 * the test plays the CPU by queuing the events a real vCPU would cause and
 * runs the monitor's loop over them.
 *
 * The workload guest's ELF gives real symbols; its image is placed into the
 * mem driver's RAM and the test builds the guest's kernel mapping itself:
 *   PML4[511] -> PDPT[510] -> PD: PD[0] a 2 MiB page at pa 0 (kernel text,
 *   data, rodata), PD[1] -> PT: 4 KiB pages at pa 0x200000.. (the service
 *   pages, which tests page out and move).
 * Every test calls vmt_monitor_check() after each operation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "vmtrap/bpm.h"
#include "vmtrap/image.h"
#include "vmtrap/machine.h"
#include "vmtrap/mem.h"
#include "vmtrap/monitor.h"
#include "vmtrap/paging.h"
#include "vmtrap/session.h"
#include "vmtrap/ucall.h"

#define RAM_FRAMES 4096ULL /* 16 MiB */
#define RAM_SIZE (RAM_FRAMES * VMT_PAGE_SIZE)
#define KVMA 0xffffffff80000000ULL
#define PML4_PA 0xE00000ULL
#define PT_PA (PML4_PA + 3 * VMT_PAGE_SIZE)
#define ROOT2_PA 0xE10000ULL  /* a second address space (CR3 switch test) */
#define DATA_PA 0x180000ULL   /* free RAM inside the 2 MiB kernel page: strings, stack, ucalls */
#define PTE_FLAGS (VMT_PTE_P | VMT_PTE_RW | VMT_PTE_A | VMT_PTE_D)

typedef struct fixture {
    vmt_driver *drv;      /* owned by the session */
    vmt_session *s;
    vmt_image *img;
    vmt_monitor *m;
    /* what the callbacks saw */
    int hits, returns, pages, ucalls;
    char last_symbol[64];
    char last_string[128];
    vmt_status last_string_status;
    uint64_t last_count, last_rax;
    int last_alias;
    uint64_t last_rip;
    vmt_ptm_event last_page;
    char last_page_symbol[64];
    vmt_ucall last_ucall;
} fixture;

static vmt_status write_phys_cb(void *ctx, vmt_pa pa, const void *buf, size_t len)
{
    return vmt_drv_write_phys(ctx, pa, buf, len);
}

static void put64(fixture *f, vmt_pa pa, uint64_t v)
{
    assert_int_equal(vmt_drv_write_phys(f->drv, pa, &v, sizeof v), VMT_OK);
}

/* The kernel mapping at `root` (4 frames: PML4, PDPT, PD, PT). */
static void build_tables(fixture *f, vmt_pa root)
{
    uint8_t zero[4 * 4096] = { 0 };
    assert_int_equal(vmt_drv_write_phys(f->drv, root, zero, sizeof zero), VMT_OK);
    vmt_pa pdpt = root + 0x1000, pd = root + 0x2000, pt = root + 0x3000;
    put64(f, root + 511 * 8, pdpt | PTE_FLAGS);
    put64(f, pdpt + 510 * 8, pd | PTE_FLAGS);
    put64(f, pd + 0 * 8, 0 | PTE_FLAGS | VMT_PTE_PS);
    put64(f, pd + 1 * 8, pt | PTE_FLAGS);
    for (unsigned i = 0; i < 512; i++)
        put64(f, pt + i * 8, (0x200000ULL + i * VMT_PAGE_SIZE) | PTE_FLAGS);
}

static vmt_va sym(fixture *f, const char *name)
{
    vmt_va va = 0;
    assert_int_equal(vmt_image_symbol(f->img, name, &va, NULL), VMT_OK);
    return va;
}

static void check(fixture *f)
{
    vmt_status st = vmt_monitor_check(f->m);
    if (st != VMT_OK)
        fail_msg("vmt_monitor_check: %s", vmt_monitor_error(f->m));
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    char why[256];
    vmt_mem_config mc = { .ram_frames = RAM_FRAMES, .extra_frames = 256 };
    assert_int_equal(vmt_mem_driver_create(&mc, &f->drv, why, sizeof why), VMT_OK);
    if (vmt_image_load_elf(VMT_GUEST_DIR "/workload.elf", RAM_SIZE, &f->img, why, sizeof why) != VMT_OK)
        fail_msg("workload.elf: %s", why);
    vmt_regs regs;
    assert_int_equal(vmt_image_place(f->img, RAM_SIZE, write_phys_cb, f->drv, &regs, why, sizeof why), VMT_OK);
    build_tables(f, PML4_PA);
    regs.cr3 = PML4_PA;
    assert_int_equal(vmt_drv_set_regs(f->drv, 0, &regs), VMT_OK);
    assert_int_equal(vmt_session_create(f->drv, NULL, &f->s), VMT_OK);
    if (vmt_monitor_create(f->s, f->img, &f->m, why, sizeof why) != VMT_OK)
        fail_msg("vmt_monitor_create: %s", why);
    check(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    vmt_monitor_destroy(f->m);
    char why[256] = "";
    vmt_status st = vmt_mem_check(f->drv, why, sizeof why);
    if (st == VMT_OK && vmt_mem_frames_in_use(f->drv) != 0)
        snprintf(why, sizeof why, "%llu extra frames still allocated after destroy",
                 (unsigned long long)vmt_mem_frames_in_use(f->drv));
    vmt_session_destroy(f->s);
    vmt_image_destroy(f->img);
    free(f);
    if (why[0])
        fail_msg("after destroy: %s", why);
    return 0;
}

/* ---- callbacks ---- */

static vmt_status on_hit(const vmt_hit *hit, void *user)
{
    fixture *f = user;
    snprintf(f->last_symbol, sizeof f->last_symbol, "%s", hit->symbol);
    f->last_count = hit->count;
    f->last_alias = hit->alias;
    f->last_rip = hit->regs.rip;
    if (hit->is_return) {
        f->returns++;
        f->last_rax = hit->regs.rax;
        return VMT_OK;
    }
    f->hits++;
    uint64_t a0 = 0;
    assert_int_equal(vmt_hit_arg(hit, 0, &a0), VMT_OK);
    f->last_string_status = vmt_hit_read_str(hit, a0, f->last_string, sizeof f->last_string, NULL);
    return VMT_OK;
}

static void on_page(const vmt_ptm_event *ev, const char *symbol, void *user)
{
    fixture *f = user;
    f->pages++;
    f->last_page = *ev;
    snprintf(f->last_page_symbol, sizeof f->last_page_symbol, "%s", symbol ? symbol : "");
}

static void on_ucall(const vmt_ucall *uc, void *user)
{
    fixture *f = user;
    f->ucalls++;
    f->last_ucall = *uc;
}

/* ---- playing the CPU ---- */

static vmt_regs cpu_regs(fixture *f)
{
    vmt_regs r;
    assert_int_equal(vmt_drv_get_regs(f->drv, 0, &r), VMT_OK);
    return r;
}

static void push_breakpoint(fixture *f, vmt_va rip, vmt_pa pa, const vmt_regs *base)
{
    vmt_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = VMT_EVENT_BREAKPOINT;
    ev.regs = *base;
    ev.regs.rip = rip;
    ev.u.bp.gva = rip;
    ev.u.bp.gpa = pa;
    ev.u.bp.gfn = vmt_pa_to_gfn(pa);
    ev.u.bp.insn_len = 1;
    assert_int_equal(vmt_mem_push_event(f->drv, &ev), VMT_OK);
}

static void push_stop(fixture *f)
{
    vmt_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = VMT_EVENT_STOPPED;
    ev.regs = cpu_regs(f);
    ev.u.stop.reason = VMT_STOP_HALT;
    assert_int_equal(vmt_mem_push_event(f->drv, &ev), VMT_OK);
}

/* Run the monitor over the queued events (the last one is a STOPPED). */
static void run(fixture *f)
{
    push_stop(f);
    vmt_status st = vmt_monitor_run(f->m);
    if (st != VMT_OK)
        fail_msg("vmt_monitor_run: %s / %s", vmt_monitor_error(f->m), vmt_session_error(f->s));
    assert_int_equal(vmt_mem_pending_events(f->drv), 0);
    check(f);
}

/* The PTE that maps kernel address `va` (the one page table under PT_PA). */
static vmt_pa pte_of(vmt_va va)
{
    return PT_PA + ((va - KVMA - 0x200000) >> 12) * 8;
}

/* Queue the guest's 8-byte store of 0 into the PTE at `pte` (a page-out the
 * page-table monitor traps); *ev keeps the event so a test can re-queue it
 * with another value. */
static void push_pte_clear(fixture *f, vmt_pa pte, vmt_event *ev)
{
    memset(ev, 0, sizeof *ev);
    ev->kind = VMT_EVENT_MEM_ACCESS;
    ev->regs = cpu_regs(f);
    ev->u.mem.gpa = pte;
    ev->u.mem.access = VMT_ACCESS_W;
    ev->u.mem.has_data = true;
    ev->u.mem.size = 8;
    ev->u.mem.value = 0;
    assert_int_equal(vmt_mem_push_event(f->drv, ev), VMT_OK);
}

/* Copy the page holding kernel address `va` to `new_frame` (the guest
 * paging it back in elsewhere). */
static void copy_page_to(fixture *f, vmt_va va, vmt_pa new_frame)
{
    uint8_t page[4096];
    assert_int_equal(vmt_drv_read_phys(f->drv, (va - KVMA) & VMT_PAGE_MASK, page, sizeof page), VMT_OK);
    assert_int_equal(vmt_drv_write_phys(f->drv, new_frame, page, sizeof page), VMT_OK);
}

/* Page events on, a hook on svc_spawn; returns svc_spawn's address. */
static vmt_va hook_spawn(fixture *f)
{
    vmt_monitor_on_page_event(f->m, on_page, f);
    assert_int_equal(vmt_monitor_hook(f->m, "svc_spawn", on_hit, f), VMT_OK);
    return sym(f, "svc_spawn");
}

/* A breakpoint event at `va` (physical `pa`) whose first argument points
 * to the string `name` is the hook's one hit and decodes to `name`. */
static void expect_string_hit(fixture *f, vmt_va va, vmt_pa pa, const char *name)
{
    assert_int_equal(vmt_drv_write_phys(f->drv, DATA_PA, name, strlen(name) + 1), VMT_OK);
    vmt_regs r = cpu_regs(f);
    r.rdi = KVMA + DATA_PA;
    push_breakpoint(f, va, pa, &r);
    run(f);
    assert_int_equal(f->hits, 1);
    assert_string_equal(f->last_string, name);
}

static vmt_response last_response(fixture *f, vmt_event_kind kind)
{
    /* The STOPPED event needs no answer: the last answered one is ours. */
    vmt_event ev;
    vmt_response resp;
    assert_int_equal(vmt_mem_last_response(f->drv, &ev, &resp), VMT_OK);
    assert_int_equal(ev.kind, kind);
    return resp;
}

/* ---- tests ---- */

static void test_unknown_symbol_is_refused_by_name(void **state)
{
    fixture *f = *state;
    assert_int_equal(vmt_monitor_hook(f->m, "no_such_function", on_hit, f), VMT_E_NOTFOUND);
    assert_non_null(strstr(vmt_monitor_error(f->m), "no_such_function"));
    assert_int_equal(vmt_monitor_hook_count(f->m), 0);
    check(f);
    assert_int_equal(vmt_monitor_hook(f->m, "svc_open", on_hit, f), VMT_OK);
    assert_int_equal(vmt_monitor_hook(f->m, "svc_open", on_hit, f), VMT_E_EXISTS);
    assert_int_equal(vmt_monitor_hook_count(f->m), 1);
    check(f);
}

static void test_hit_calls_back_with_decoded_string(void **state)
{
    fixture *f = *state;
    vmt_monitor_on_page_event(f->m, on_page, f);
    for (const char *const *s = (const char *const[]){ "svc_open", "svc_write", "svc_spawn", "svc_exit", NULL }; *s;
         s++) {
        assert_int_equal(vmt_monitor_hook(f->m, *s, on_hit, f), VMT_OK);
        check(f);
    }
    const char path[] = "/etc/passwd";
    assert_int_equal(vmt_drv_write_phys(f->drv, DATA_PA, path, sizeof path), VMT_OK);
    vmt_regs r = cpu_regs(f);
    r.rdi = KVMA + DATA_PA;
    vmt_va va = sym(f, "svc_open");
    push_breakpoint(f, va, va - KVMA, &r);
    push_breakpoint(f, va, va - KVMA, &r);
    run(f);
    assert_int_equal(f->hits, 2);
    assert_string_equal(f->last_symbol, "svc_open");
    assert_int_equal(f->last_count, 2);
    assert_int_equal(f->last_string_status, VMT_OK);
    assert_string_equal(f->last_string, "/etc/passwd");
    assert_int_equal(vmt_monitor_hook_hits(f->m, 0), 2);
    assert_int_equal(vmt_monitor_hook_hits(f->m, 1), 0);
    assert_int_equal(vmt_monitor_stats_get(f->m)->hits, 2);
    /* The monitor steps over the INT3: the displaced instruction runs. */
    vmt_response resp = last_response(f, VMT_EVENT_BREAKPOINT);
    assert_true(resp.actions & (VMT_RESP_EMULATE | VMT_RESP_FAST_STEP | VMT_RESP_STEP));
    assert_int_equal(f->pages, 0);
}

static void test_string_into_paged_out_page_is_reported(void **state)
{
    fixture *f = *state;
    assert_int_equal(vmt_monitor_hook(f->m, "svc_open", on_hit, f), VMT_OK);
    /* "abcd" ends page 10 of the PT region, page 11 is not present. */
    vmt_pa page10 = 0x200000 + 10 * VMT_PAGE_SIZE;
    assert_int_equal(vmt_drv_write_phys(f->drv, page10 + 4092, "abcd", 4), VMT_OK);
    put64(f, PT_PA + 11 * 8, 0);
    vmt_hit hit;
    memset(&hit, 0, sizeof hit);
    hit.monitor = f->m;
    hit.symbol = "svc_open";
    hit.root = PML4_PA;
    hit.regs = cpu_regs(f);
    vmt_va str = KVMA + page10 + 4092;
    char buf[64];
    vmt_va fault = 0;
    vmt_session_flush_frames(f->s);
    vmt_session_flush_v2p(f->s);
    assert_int_equal(vmt_hit_read_str(&hit, str, buf, sizeof buf, &fault), VMT_E_NOT_PRESENT);
    assert_string_equal(buf, "abcd");
    assert_int_equal(fault, KVMA + page10 + VMT_PAGE_SIZE);
    /* A string that ends before the hole reads fine. */
    assert_int_equal(vmt_drv_write_phys(f->drv, page10 + 4094, "z", 2), VMT_OK);
    vmt_session_flush_frames(f->s);
    assert_int_equal(vmt_hit_read_str(&hit, KVMA + page10 + 4092, buf, sizeof buf, &fault), VMT_OK);
    assert_string_equal(buf, "abz");
    /* A tiny buffer truncates and still terminates. */
    assert_int_equal(vmt_hit_read_str(&hit, KVMA + page10 + 4092, buf, 3, NULL), VMT_OK);
    assert_string_equal(buf, "ab");
    /* Stack arguments: argument 6 is above the return address. */
    uint64_t a6 = 0x1122334455667788ULL;
    assert_int_equal(vmt_drv_write_phys(f->drv, DATA_PA + 0x1008, &a6, 8), VMT_OK);
    vmt_session_flush_frames(f->s);
    hit.regs.rsp = KVMA + DATA_PA + 0x1000;
    hit.regs.r9 = 5;
    uint64_t v = 0;
    assert_int_equal(vmt_hit_arg(&hit, 5, &v), VMT_OK);
    assert_int_equal(v, 5);
    assert_int_equal(vmt_hit_arg(&hit, 6, &v), VMT_OK);
    assert_int_equal(v, a6);
    /* A stack in a paged-out page. */
    hit.regs.rsp = KVMA + page10 + VMT_PAGE_SIZE;
    assert_int_equal(vmt_hit_arg(&hit, 6, &v), VMT_E_NOT_PRESENT);
    check(f);
}

static void test_guest_int3_in_hooked_page_is_reinjected(void **state)
{
    fixture *f = *state;
    assert_int_equal(vmt_monitor_hook(f->m, "svc_write", on_hit, f), VMT_OK);
    vmt_va va = sym(f, "int3_in_service_page");
    vmt_regs r = cpu_regs(f);
    push_breakpoint(f, va, va - KVMA, &r);
    run(f);
    vmt_response resp = last_response(f, VMT_EVENT_BREAKPOINT);
    assert_true(resp.actions & VMT_RESP_REINJECT);
    assert_int_equal(f->hits, 0);
    assert_int_equal(vmt_monitor_stats_get(f->m)->foreign_int3, 1);
}

static void put_ucall(fixture *f, vmt_pa pa, uint16_t cmd, uint64_t seq, uint32_t nargs, const uint64_t *args,
                      const char *name, const char *text)
{
    vmt_ucall_wire w;
    memset(&w, 0, sizeof w);
    w.magic = VMT_UCALL_MAGIC;
    w.version = VMT_UCALL_VERSION;
    w.cmd = cmd;
    w.size = sizeof w;
    w.nargs = nargs;
    w.seq = seq;
    for (uint32_t i = 0; i < nargs; i++)
        w.args[i] = args[i];
    snprintf(w.name, sizeof w.name, "%s", name);
    snprintf(w.text, sizeof w.text, "%s", text);
    assert_int_equal(vmt_drv_write_phys(f->drv, pa, &w, sizeof w), VMT_OK);
}

static void push_io(fixture *f, uint16_t port, uint32_t value)
{
    vmt_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = VMT_EVENT_IO;
    ev.regs = cpu_regs(f);
    ev.u.io.port = port;
    ev.u.io.size = 4;
    ev.u.io.is_write = true;
    ev.u.io.value = value;
    assert_int_equal(vmt_mem_push_event(f->drv, &ev), VMT_OK);
}

static void test_ucalls_are_decoded_and_recorded(void **state)
{
    fixture *f = *state;
    vmt_monitor_on_ucall(f->m, on_ucall, f);
    const uint64_t det_pass[] = { 3, 1 }, det_fail[] = { 5, 0 }, rep[] = { 42 }, done[] = { 0 };
    put_ucall(f, DATA_PA, VMT_UCALL_DETECTOR, 1, 2, det_pass, "write-readback", "ok");
    push_io(f, VMT_PORT_UCALL, DATA_PA);
    put_ucall(f, DATA_PA + 0x200, VMT_UCALL_DETECTOR, 2, 2, det_fail, "own-int3", "not delivered");
    push_io(f, VMT_PORT_UCALL, DATA_PA + 0x200);
    put_ucall(f, DATA_PA + 0x400, VMT_UCALL_REPORT, 3, 1, rep, "calls.svc_open", "");
    push_io(f, VMT_PORT_UCALL, DATA_PA + 0x400);
    /* Hostile: a record with a bad magic, and one past the end of RAM. */
    put_ucall(f, DATA_PA + 0x600, VMT_UCALL_REPORT, 4, 1, rep, "x", "");
    uint32_t bad = 0;
    assert_int_equal(vmt_drv_write_phys(f->drv, DATA_PA + 0x600, &bad, 4), VMT_OK);
    push_io(f, VMT_PORT_UCALL, DATA_PA + 0x600);
    push_io(f, VMT_PORT_UCALL, (uint32_t)(RAM_SIZE - 8));
    /* Another port is not a ucall. */
    push_io(f, 0x80, DATA_PA);
    put_ucall(f, DATA_PA + 0x800, VMT_UCALL_DONE, 5, 1, done, "", "");
    push_io(f, VMT_PORT_UCALL, DATA_PA + 0x800);
    run(f);
    const vmt_monitor_stats *st = vmt_monitor_stats_get(f->m);
    assert_int_equal(st->ucalls, 4);
    assert_int_equal(st->ucall_errors, 2);
    assert_int_equal(f->ucalls, 4);
    assert_int_equal(st->ndetectors, 2);
    assert_int_equal(st->detectors[0].id, 3);
    assert_true(st->detectors[0].pass);
    assert_string_equal(st->detectors[0].name, "write-readback");
    assert_int_equal(st->detectors[1].id, 5);
    assert_false(st->detectors[1].pass);
    assert_string_equal(st->detectors[1].detail, "not delivered");
    assert_true(st->guest_done);
    assert_int_equal(st->guest_exit_code, 0);
    assert_int_equal(f->last_ucall.cmd, VMT_UCALL_DONE);
    assert_int_equal(st->events[VMT_EVENT_IO], 7);
}

/* Detector ids are 32-bit: a guest id beyond that must not alias a real
 * one (0x1_00000003 would be stored as detector 3 a second time, with its
 * own verdict). It is a malformed ucall, not a detector result. */
static void test_detector_id_beyond_32_bits_is_malformed(void **state)
{
    fixture *f = *state;
    vmt_monitor_on_ucall(f->m, on_ucall, f);
    const uint64_t det_pass[] = { 3, 1 }, det_alias[] = { (1ULL << 32) | 3, 0 };
    put_ucall(f, DATA_PA, VMT_UCALL_DETECTOR, 1, 2, det_pass, "write-readback", "ok");
    push_io(f, VMT_PORT_UCALL, DATA_PA);
    put_ucall(f, DATA_PA + 0x200, VMT_UCALL_DETECTOR, 2, 2, det_alias, "forged", "alias of 3");
    push_io(f, VMT_PORT_UCALL, DATA_PA + 0x200);
    run(f);
    const vmt_monitor_stats *st = vmt_monitor_stats_get(f->m);
    assert_int_equal(st->ucalls, 1);
    assert_int_equal(st->ucall_errors, 1);
    assert_int_equal(f->ucalls, 1);
    assert_int_equal(st->ndetectors, 1);
    assert_int_equal(st->detectors[0].id, 3);
    assert_true(st->detectors[0].pass);
    assert_string_equal(st->detectors[0].name, "write-readback");
    assert_non_null(strstr(vmt_monitor_error(f->m), "detector id"));
}

static void test_page_out_and_in_follow_the_hook(void **state)
{
    fixture *f = *state;
    vmt_va va = hook_spawn(f);
    vmt_pa pte = pte_of(va);
    vmt_bpm_stats bs;

    /* The guest clears the PTE (one 8-byte store). */
    vmt_event ev;
    push_pte_clear(f, pte, &ev);
    run(f);
    put64(f, pte, 0); /* the store lands (the test is the CPU) */
    assert_int_equal(f->pages, 1);
    assert_int_equal(f->last_page.kind, VMT_PTM_PAGE_OUT);
    assert_string_equal(f->last_page_symbol, "svc_spawn");
    assert_int_equal(f->last_page.old_pa, va - KVMA);
    assert_int_equal(vmt_monitor_stats_get(f->m)->page_out, 1);
    assert_int_equal(vmt_monitor_stats_get(f->m)->pt_writes, 1);
    (void)bs;

    /* Paged back in at another frame. */
    vmt_pa new_frame = 0x400000;
    copy_page_to(f, va, new_frame);
    ev.u.mem.value = new_frame | PTE_FLAGS;
    assert_int_equal(vmt_mem_push_event(f->drv, &ev), VMT_OK);
    run(f);
    put64(f, pte, new_frame | PTE_FLAGS);
    assert_int_equal(f->pages, 2);
    assert_int_equal(f->last_page.kind, VMT_PTM_PAGE_IN);
    assert_int_equal(f->last_page.new_pa, new_frame + vmt_page_offset(va));
    assert_int_equal(vmt_monitor_stats_get(f->m)->page_in, 1);

    /* The hook fires at the new frame. */
    expect_string_hit(f, va, new_frame + vmt_page_offset(va), "sh");
}

static void test_page_table_monitor_failure_is_survived(void **state)
{
    fixture *f = *state;
    vmt_va va = hook_spawn(f);
    vmt_pa pte = pte_of(va);
    vmt_event ev;
    push_pte_clear(f, pte, &ev);
    /* The page-table monitor's read of the tables fails once. */
    vmt_mem_fail_nth(f->drv, VMT_MEM_OP_READ_PHYS, 1);
    run(f);
    const vmt_monitor_stats *st = vmt_monitor_stats_get(f->m);
    assert_int_equal(vmt_mem_injected(f->drv), 1);
    assert_int_equal(st->errors, 1);
    assert_non_null(strstr(vmt_monitor_first_error(f->m), "page-table monitor"));
    /* The guest was let go on, and the watches were re-walked before the next event. */
    vmt_response resp = last_response(f, VMT_EVENT_MEM_ACCESS);
    assert_false(resp.actions & VMT_RESP_DENY);
    assert_int_equal(st->resyncs, 1);
    /* The store landed meanwhile: the next event's re-walk... none pending now;
     * a new write is handled normally. */
    put64(f, pte, 0);
    ev.u.mem.value = 0x500000 | PTE_FLAGS;
    assert_int_equal(vmt_mem_push_event(f->drv, &ev), VMT_OK);
    run(f);
    put64(f, pte, 0x500000 | PTE_FLAGS);
    assert_int_equal(st->errors, 1);
    assert_true(f->pages >= 1);
    assert_int_equal(f->last_page.new_pa, 0x500000 + vmt_page_offset(va));
    assert_string_equal(f->last_page_symbol, "svc_spawn");
}

static void test_breakpoint_manager_failure_on_page_in_is_repaired(void **state)
{
    fixture *f = *state;
    vmt_va va = hook_spawn(f);
    vmt_pa pte = pte_of(va);
    vmt_event ev;
    push_pte_clear(f, pte, &ev);
    run(f);
    put64(f, pte, 0);
    /* Paged in at another frame; the shadow frame for it cannot be allocated once. */
    vmt_pa new_frame = 0x480000;
    copy_page_to(f, va, new_frame);
    ev.u.mem.value = new_frame | PTE_FLAGS;
    assert_int_equal(vmt_mem_push_event(f->drv, &ev), VMT_OK);
    vmt_mem_fail_nth(f->drv, VMT_MEM_OP_FRAME_ALLOC, 1);
    run(f); /* the STOPPED event after it re-registers the hook */
    put64(f, pte, new_frame | PTE_FLAGS);
    assert_int_equal(vmt_mem_injected(f->drv), 1);
    assert_int_equal(f->last_page.kind, VMT_PTM_PAGE_IN);
    assert_int_equal(vmt_monitor_stats_get(f->m)->errors, 1);
    assert_non_null(strstr(vmt_monitor_first_error(f->m), "breakpoint manager"));
    /* The breakpoint is armed at the new frame: a hit there is the hook's. */
    vmt_bpm_bp bp;
    memset(&bp, 0, sizeof bp);
    bp.ctx = vmt_addr_ctx_make(va, PML4_PA);
    bp.view = vmt_monitor_view(f->m);
    bp.key = VMT_BPM_KEY_ANY;
    assert_true(vmt_bpm_contains(vmt_monitor_bpm(f->m), &bp));
    assert_true(vmt_bpm_is_active(vmt_monitor_bpm(f->m), &bp));
    expect_string_hit(f, va, new_frame + vmt_page_offset(va), "editor");
}

static void test_unattributed_breakpoint_never_loops(void **state)
{
    fixture *f = *state;
    /* Breakpoint events at a rip with no breakpoint and no INT3 byte: the
     * first is taken for a removed breakpoint (CONTINUE re-executes the
     * byte); the same event again right after cannot be, it is the guest's
     * own trap and goes to its IDT. However many come, the run goes on. */
    vmt_monitor_destroy(f->m);
    char why[256];
    vmt_monitor_config cfg = { .livelock_repeats = 5 };
    assert_int_equal(vmt_monitor_create_ex(f->s, f->img, &cfg, &f->m, why, sizeof why), VMT_OK);
    assert_int_equal(vmt_monitor_hook(f->m, "svc_open", on_hit, f), VMT_OK);
    vmt_va va = sym(f, "svc_va"); /* no breakpoint and no INT3 byte there */
    vmt_regs r = cpu_regs(f);
    push_breakpoint(f, va, va - KVMA, &r);
    run(f);
    assert_int_equal(last_response(f, VMT_EVENT_BREAKPOINT).actions, VMT_RESP_CONTINUE);
    push_breakpoint(f, va, va - KVMA, &r);
    run(f);
    assert_int_equal(last_response(f, VMT_EVENT_BREAKPOINT).actions, VMT_RESP_REINJECT);
    assert_int_equal(vmt_monitor_stats_get(f->m)->foreign_int3, 1);
    /* more than the livelock limit in a row: never a livelock */
    for (int i = 0; i < 12; i++)
        push_breakpoint(f, va, va - KVMA, &r);
    run(f);
    assert_int_equal(vmt_monitor_stats_get(f->m)->foreign_int3, 7);
    check(f);
}

static void test_new_root_gets_every_hook(void **state)
{
    fixture *f = *state;
    assert_int_equal(vmt_monitor_hook(f->m, "svc_open", on_hit, f), VMT_OK);
    assert_int_equal(vmt_monitor_hook(f->m, "svc_exit", on_hit, f), VMT_OK);
    assert_int_equal(vmt_monitor_stats_get(f->m)->roots, 1);
    build_tables(f, ROOT2_PA);
    vmt_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = VMT_EVENT_CR_WRITE;
    ev.regs = cpu_regs(f);
    ev.u.cr.cr = 3;
    ev.u.cr.old_value = PML4_PA;
    ev.u.cr.new_value = ROOT2_PA;
    assert_int_equal(vmt_mem_push_event(f->drv, &ev), VMT_OK);
    run(f);
    assert_int_equal(vmt_monitor_stats_get(f->m)->roots, 2);
    assert_int_equal(vmt_monitor_stats_get(f->m)->cr3_writes, 1);
    /* A hit under the new root is found. */
    vmt_regs r = cpu_regs(f);
    r.cr3 = ROOT2_PA;
    r.rdi = 7;
    vmt_va va = sym(f, "svc_exit");
    push_breakpoint(f, va, va - KVMA, &r);
    run(f);
    assert_int_equal(f->hits, 1);
    assert_string_equal(f->last_symbol, "svc_exit");
}

static void switch_root(fixture *f, vmt_pa from, vmt_pa to)
{
    vmt_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = VMT_EVENT_CR_WRITE;
    ev.regs = cpu_regs(f);
    ev.regs.cr3 = to;
    ev.u.cr.cr = 3;
    ev.u.cr.old_value = from;
    ev.u.cr.new_value = to;
    assert_int_equal(vmt_mem_push_event(f->drv, &ev), VMT_OK);
    run(f);
}

/* The case 2: under a new root one hooked function's PTE has a
 * reserved bit; the other hook must stay armed and count every call, the
 * poisoned one is refused for that root only, counted and named. */
static void test_poisoned_path_beside_healthy_hook(void **state)
{
    fixture *f = *state;
    assert_int_equal(vmt_monitor_hook(f->m, "svc_open", on_hit, f), VMT_OK);
    assert_int_equal(vmt_monitor_hook(f->m, "svc_exit", on_hit, f), VMT_OK);
    build_tables(f, ROOT2_PA);
    vmt_pa poisoned = ROOT2_PA + 0x3000 + ((sym(f, "svc_open") - KVMA - 0x200000) >> 12) * 8;
    put64(f, poisoned, 0x200000ULL | PTE_FLAGS | (1ULL << 45)); /* above maxphyaddr 39: reserved */
    switch_root(f, PML4_PA, ROOT2_PA);
    const vmt_monitor_stats *st = vmt_monitor_stats_get(f->m);
    assert_int_equal(st->hook_refusals, 1);
    assert_int_equal(st->roots_failed, 1);
    vmt_hook_status hs;
    assert_int_equal(vmt_monitor_hook_status(f->m, 0, &hs), VMT_OK); /* svc_open */
    assert_int_equal(hs.roots_refused, 1);
    /* The old root is kept, not dropped: svc_open is registered only there
     * (dropping it would lose the hook). */
    assert_int_equal(hs.roots_armed, 1);
    assert_int_equal(st->roots, 2);
    assert_int_equal(hs.refused_root, ROOT2_PA);
    assert_non_null(strstr(hs.refused_why, "svc_open"));
    assert_non_null(strstr(hs.refused_why, "reserved"));
    assert_int_equal(vmt_monitor_hook_status(f->m, 1, &hs), VMT_OK); /* svc_exit */
    assert_int_equal(hs.state, VMT_HOOK_ARMED);
    assert_int_equal(hs.refusals, 0);
    /* 20 calls of the healthy hook under the new root: 20 hits. */
    vmt_regs r = cpu_regs(f);
    r.cr3 = ROOT2_PA;
    vmt_va va = sym(f, "svc_exit");
    for (int i = 0; i < 20; i++)
        push_breakpoint(f, va, va - KVMA, &r);
    run(f);
    assert_int_equal(f->hits, 20);
    assert_int_equal(vmt_monitor_hook_hits(f->m, 1), 20);
    /* The guest repairs the entry and comes back to the root: armed there
     * again, and the old root, which no longer holds anything that would be
     * lost, is dropped. */
    put64(f, poisoned, 0x200000ULL | PTE_FLAGS);
    switch_root(f, ROOT2_PA, PML4_PA);
    switch_root(f, PML4_PA, ROOT2_PA);
    assert_int_equal(vmt_monitor_hook_status(f->m, 0, &hs), VMT_OK);
    assert_int_equal(hs.state, VMT_HOOK_ARMED);
    assert_int_equal(hs.roots_refused, 0);
    assert_int_equal(hs.roots_armed, 1);
    assert_int_equal(hs.refusals, 1); /* history stays */
    assert_int_equal(vmt_monitor_stats_get(f->m)->roots_failed, 0);
}

/* A hook on a data object is refused by name; with debug registers a hook
 * past the register count is refused up front naming the hooks that hold
 * them (not silently registered and never hit). */
static void test_usage_limits_are_refused(void **state)
{
    fixture *f = *state;
    assert_int_equal(vmt_monitor_hook(f->m, "workload_iterations", on_hit, f), VMT_E_INVAL);
    assert_non_null(strstr(vmt_monitor_error(f->m), "not code"));
    assert_int_equal(vmt_monitor_hook_count(f->m), 0);
    /* A monitor on debug registers (the mem driver has 4). */
    vmt_monitor_destroy(f->m);
    vmt_monitor_config cfg = { .controller = VMT_BPM_CTL_DEBUG };
    char why[256];
    assert_int_equal(vmt_monitor_create_ex(f->s, f->img, &cfg, &f->m, why, sizeof why), VMT_OK);
    assert_int_equal(vmt_monitor_breakpoint_limit(f->m), 4);
    const char *names[] = { "svc_open", "svc_write", "svc_spawn", "svc_exit" };
    for (int i = 0; i < 4; i++)
        assert_int_equal(vmt_monitor_hook(f->m, names[i], on_hit, f), VMT_OK);
    assert_int_equal(vmt_monitor_hook(f->m, "svc_va", on_hit, f), VMT_E_RANGE);
    const char *msg = vmt_monitor_error(f->m);
    assert_non_null(strstr(msg, "'svc_va' does not fit"));
    assert_non_null(strstr(msg, "svc_open, svc_write, svc_spawn, svc_exit"));
    assert_int_equal(vmt_monitor_hook_count(f->m), 4);
    for (size_t i = 0; i < 4; i++) {
        vmt_hook_status hs;
        assert_int_equal(vmt_monitor_hook_status(f->m, i, &hs), VMT_OK);
        assert_int_equal(hs.state, VMT_HOOK_ARMED);
    }
    check(f);
}

static void test_return_hook_reports_rax_once(void **state)
{
    fixture *f = *state;
    assert_int_equal(vmt_monitor_hook(f->m, "svc_spawn", on_hit, f), VMT_OK);
    assert_int_equal(vmt_monitor_hook_return(f->m, "svc_spawn", on_hit, f), VMT_OK);
    assert_int_equal(vmt_monitor_hook_return(f->m, "svc_write", on_hit, f), VMT_E_NOTFOUND);
    /* The caller: return address inside svc_va (kernel .text). */
    vmt_va ret = sym(f, "svc_va") + 4;
    vmt_va sp = KVMA + DATA_PA + 0x2000;
    assert_int_equal(vmt_drv_write_phys(f->drv, DATA_PA + 0x2000, &ret, 8), VMT_OK);
    assert_int_equal(vmt_drv_write_phys(f->drv, DATA_PA + 0x100, "init", 5), VMT_OK);
    vmt_regs r = cpu_regs(f);
    r.rdi = KVMA + DATA_PA + 0x100;
    r.rsp = sp;
    vmt_va va = sym(f, "svc_spawn");
    push_breakpoint(f, va, va - KVMA, &r);
    run(f);
    assert_int_equal(f->hits, 1);
    assert_int_equal(f->returns, 0);
    /* The return: rip = return address, rsp popped. */
    r.rsp = sp + 8;
    r.rax = 100;
    push_breakpoint(f, ret, ret - KVMA, &r);
    run(f);
    assert_int_equal(f->returns, 1);
    assert_int_equal(f->last_rax, 100);
    assert_int_equal(f->last_count, 1);
    assert_int_equal(vmt_monitor_hook_returns(f->m, 0), 1);
    /* The one-shot breakpoint went with the hit: the instruction there is
     * stepped over like any displaced one (the manager guards stores into
     * hooked pages itself; no special case in the monitor). */
    vmt_response resp = last_response(f, VMT_EVENT_BREAKPOINT);
    assert_int_equal(resp.actions, VMT_RESP_EMULATE);
    /* The one-shot breakpoint is gone: the same INT3 event now is stale or foreign. */
    push_breakpoint(f, ret, ret - KVMA, &r);
    run(f);
    assert_int_equal(f->returns, 1);
}

/* A hooked frame executed through a virtual address with no breakpoint of
 * its own (a physical alias): reported as the hook's hit with the address
 * actually executed, or, with alias_mode COUNT, only counted. */
static void test_alias_hit_reported_or_counted(void **state)
{
    fixture *f = *state;
    assert_int_equal(vmt_monitor_hook(f->m, "svc_open", on_hit, f), VMT_OK);
    assert_int_equal(vmt_drv_write_phys(f->drv, DATA_PA + 0x100, "/etc/alias", 11), VMT_OK);
    vmt_regs r = cpu_regs(f);
    r.rdi = KVMA + DATA_PA + 0x100;
    vmt_va va = sym(f, "svc_open");
    vmt_va alias = va - 0x40000000; /* same page offset, another address */
    push_breakpoint(f, alias, va - KVMA, &r);
    run(f);
    assert_int_equal(f->hits, 1);
    assert_true(f->last_alias);
    assert_int_equal(f->last_rip, alias);
    assert_string_equal(f->last_symbol, "svc_open");
    assert_string_equal(f->last_string, "/etc/alias");
    assert_int_equal(vmt_monitor_stats_get(f->m)->alias_hits, 1);
    assert_int_equal(vmt_monitor_hook_hits(f->m, 0), 1);
    /* the hooked address itself: a plain hit */
    push_breakpoint(f, va, va - KVMA, &r);
    run(f);
    assert_int_equal(f->hits, 2);
    assert_false(f->last_alias);
    assert_int_equal(vmt_monitor_stats_get(f->m)->alias_hits, 1);

    /* configured to count them only */
    vmt_monitor_destroy(f->m);
    char why[256];
    vmt_monitor_config cfg = { .alias_mode = VMT_MONITOR_ALIAS_COUNT };
    assert_int_equal(vmt_monitor_create_ex(f->s, f->img, &cfg, &f->m, why, sizeof why), VMT_OK);
    assert_int_equal(vmt_monitor_hook(f->m, "svc_open", on_hit, f), VMT_OK);
    push_breakpoint(f, alias, va - KVMA, &r);
    run(f);
    assert_int_equal(f->hits, 2); /* no callback */
    assert_int_equal(vmt_monitor_hook_hits(f->m, 0), 0);
    assert_int_equal(vmt_monitor_stats_get(f->m)->alias_hits, 1);
    vmt_response resp = last_response(f, VMT_EVENT_BREAKPOINT);
    assert_int_equal(resp.actions, VMT_RESP_EMULATE); /* still stepped over */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_unknown_symbol_is_refused_by_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hit_calls_back_with_decoded_string, setup, teardown),
        cmocka_unit_test_setup_teardown(test_string_into_paged_out_page_is_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_guest_int3_in_hooked_page_is_reinjected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ucalls_are_decoded_and_recorded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_detector_id_beyond_32_bits_is_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_page_out_and_in_follow_the_hook, setup, teardown),
        cmocka_unit_test_setup_teardown(test_page_table_monitor_failure_is_survived, setup, teardown),
        cmocka_unit_test_setup_teardown(test_breakpoint_manager_failure_on_page_in_is_repaired, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unattributed_breakpoint_never_loops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alias_hit_reported_or_counted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_root_gets_every_hook, setup, teardown),
        cmocka_unit_test_setup_teardown(test_poisoned_path_beside_healthy_hook, setup, teardown),
        cmocka_unit_test_setup_teardown(test_usage_limits_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_return_hook_reports_rax_once, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
