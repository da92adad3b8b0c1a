/*
 * tests/kvm/test_kvm_run.c — how runs end and what the KVM driver says:
 * timeouts, the guest-time limit (a resumable STOPPED), triple fault, an
 * internal error that is not a breakpoint (rip and bytes in the message),
 * creation errors, and the dirty-page log (kept across memslot rebuilds).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kvm_guest.h"
#include "util/testutil.h"
#include "vmtrap/kvm.h"
#include "vmtrap/machine.h"

/* 1: jmp 1b */
static const uint8_t g_spin[] = { 0xeb, 0xfe };

/* mov rbx,0x100000; mov byte [rbx],1; mov byte [rbx+0x2000],2;
 * mov dx,0x5e1; out dx,eax; ud2 (no IDT: triple fault) */
static const uint8_t g_dirty_then_fault[] = {
    0x48, 0xc7, 0xc3, 0x00, 0x00, 0x10, 0x00, 0xc6, 0x03, 0x01, 0xc6, 0x83,
    0x00, 0x20, 0x00, 0x00, 0x02, 0x66, 0xba, 0xe1, 0x05, 0xef, 0x0f, 0x0b,
};

/* mov rax,0x4000000; jmp rax (RAM is 64 MiB: no memslot there) */
static const uint8_t g_jump_out[] = { 0x48, 0xc7, 0xc0, 0x00, 0x00, 0x00, 0x04, 0xff, 0xe0 };

static bool bit(const uint64_t *bm, uint64_t g) { return (bm[g / 64] >> (g % 64)) & 1; }

static void timeout_and_time_limit(void **state)
{
    (void)state;
    vmt_driver *d = kg_driver(g_spin, sizeof g_spin, KG_RAM);
    vmt_event ev;
    assert_int_equal(vmt_drv_wait_event(d, 50, &ev), VMT_E_TIMEOUT);
    assert_int_equal(vmt_drv_wait_event(d, 0, &ev), VMT_E_TIMEOUT);
    vmt_driver_stats s0, s1;
    assert_int_equal(vmt_drv_stats(d, &s0), VMT_OK);
    assert_int_equal(vmt_drv_set_limit(d, 0.1, 0), VMT_OK);
    assert_int_equal(vmt_drv_set_limit(d, 0.1, 1000), VMT_E_NOTSUP); /* no instruction counting */
    kg_expect(d, VMT_EVENT_STOPPED, &ev);
    assert_int_equal(ev.u.stop.reason, VMT_STOP_TIME_LIMIT);
    assert_non_null(strstr(ev.u.stop.message, "time limit"));
    assert_int_equal(ev.regs.rip, KG_CODE_PA);
    assert_int_equal(vmt_drv_stats(d, &s1), VMT_OK);
    assert_true(s1.ns_guest - s0.ns_guest >= 100000000ull);
    /* a limit stop is not fatal: the guest can run on */
    assert_int_equal(vmt_drv_wait_event(d, 20, &ev), VMT_E_TIMEOUT);
    /* paused, the guest does not run at all */
    assert_int_equal(vmt_drv_stats(d, &s0), VMT_OK);
    assert_int_equal(vmt_drv_pause(d), VMT_OK);
    assert_int_equal(vmt_drv_wait_event(d, 5, &ev), VMT_E_TIMEOUT);
    assert_int_equal(vmt_drv_wait_event(d, -1, &ev), VMT_E_BUSY);
    assert_int_equal(vmt_drv_stats(d, &s1), VMT_OK);
    assert_int_equal(s1.ns_guest, s0.ns_guest);
    assert_int_equal(vmt_drv_resume(d), VMT_OK);
    assert_int_equal(vmt_drv_wait_event(d, 5, &ev), VMT_E_TIMEOUT);
    assert_int_equal(vmt_drv_stats(d, &s1), VMT_OK);
    assert_true(s1.ns_guest > s0.ns_guest);
    kg_check(d);
    vmt_driver_destroy(d);
}

static void *wait_in_thread(void *arg)
{
    vmt_driver *d = arg;
    vmt_event ev;
    static vmt_status st;
    st = vmt_drv_wait_event(d, 30, &ev);
    return &st;
}

/* The timeout still interrupts a spinning guest when another thread than
 * the creator drives the driver (one at a time). */
static void timeout_from_another_thread(void **state)
{
    (void)state;
    vmt_driver *d = kg_driver(g_spin, sizeof g_spin, KG_RAM);
    pthread_t t;
    void *ret;
    assert_int_equal(pthread_create(&t, NULL, wait_in_thread, d), 0);
    assert_int_equal(pthread_join(t, &ret), 0);
    assert_int_equal(*(vmt_status *)ret, VMT_E_TIMEOUT);
    vmt_event ev;
    assert_int_equal(vmt_drv_wait_event(d, 10, &ev), VMT_E_TIMEOUT); /* and back here */
    vmt_driver_destroy(d);
}

/* Two drivers in one thread: timeouts work for both, and destroying one
 * leaves the other's timer working (the signal stays blocked). */
static void two_drivers_one_thread(void **state)
{
    (void)state;
    vmt_driver *a = kg_driver(g_spin, sizeof g_spin, KG_RAM);
    vmt_driver *b = kg_driver(g_spin, sizeof g_spin, KG_RAM);
    vmt_event ev;
    assert_int_equal(vmt_drv_wait_event(a, 10, &ev), VMT_E_TIMEOUT);
    assert_int_equal(vmt_drv_wait_event(b, 10, &ev), VMT_E_TIMEOUT);
    vmt_driver_destroy(a);
    assert_int_equal(vmt_drv_wait_event(b, 20, &ev), VMT_E_TIMEOUT);
    vmt_driver_destroy(b);
}

static void dirty_log_and_triple_fault(void **state)
{
    (void)state;
    vmt_driver *d = kg_driver(g_dirty_then_fault, sizeof g_dirty_then_fault, KG_RAM);
    uint64_t frames = vmt_driver_caps(d)->ram_frames;
    uint64_t *bm = calloc((frames + 63) / 64 + 1, 8);
    assert_non_null(bm);
    assert_int_equal(vmt_kvm_dirty_log(d, bm, frames - 1), VMT_E_INVAL); /* too small */
    assert_int_equal(vmt_kvm_dirty_log(d, bm, frames), VMT_OK);           /* clear it */
    vmt_event ev;
    kg_expect(d, VMT_EVENT_IO, &ev);
    kg_continue(d, &ev);
    kg_expect(d, VMT_EVENT_STOPPED, &ev);
    assert_int_equal(ev.u.stop.reason, VMT_STOP_TRIPLE_FAULT);
    assert_non_null(strstr(ev.u.stop.message, "triple fault"));
    assert_int_equal(vmt_drv_wait_event(d, 10, &ev), VMT_E_STOPPED);
    assert_non_null(strstr(vmt_driver_error(d), "triple fault"));
    /* a memslot rebuild (protecting gfn 0x101 splits the slot) keeps the log */
    vmt_view v;
    assert_int_equal(vmt_drv_view_create(d, VMT_ACCESS_RWX, &v), VMT_OK);
    assert_int_equal(vmt_drv_view_switch(d, 0, v), VMT_OK);
    assert_int_equal(vmt_drv_view_set_access(d, v, 0x101, VMT_ACCESS_RX), VMT_OK);
    uint8_t x = 7;
    assert_int_equal(vmt_drv_write_phys(d, 0x105000, &x, 1), VMT_OK); /* host writes count too */
    assert_int_equal(vmt_kvm_dirty_log(d, bm, frames), VMT_OK);
    assert_true(bit(bm, 0x100));
    assert_true(bit(bm, 0x102));
    assert_true(bit(bm, 0x105));
    assert_false(bit(bm, 0x101));
    assert_false(bit(bm, 0x103));
    assert_false(bit(bm, KG_CODE_PA >> 12)); /* code was only read */
    /* reading cleared it */
    assert_int_equal(vmt_kvm_dirty_log(d, bm, frames), VMT_OK);
    assert_false(bit(bm, 0x100));
    assert_false(bit(bm, 0x105));
    kg_check(d);
    free(bm);
    vmt_driver_destroy(d);
}

static void internal_error_reports_rip(void **state)
{
    (void)state;
    vmt_driver *d = kg_driver(g_jump_out, sizeof g_jump_out, KG_RAM);
    /* map va 0x4000000 -> pa 0x4000000 (past RAM) with a 2 MiB PD entry */
    uint64_t pde = 0x4000000ull | 0xe3;
    assert_int_equal(vmt_drv_write_phys(d, KG_RAM - 4 * VMT_PAGE_SIZE + 32 * 8, &pde, 8), VMT_OK);
    vmt_event ev;
    kg_expect(d, VMT_EVENT_STOPPED, &ev);
    assert_int_equal(ev.u.stop.reason, VMT_STOP_GUEST_ERROR);
    assert_non_null(strstr(ev.u.stop.message, "rip 0x4000000"));
    assert_non_null(strstr(ev.u.stop.message, "bytes"));
    vmt_driver_destroy(d);
}

/* An image with its own CPU state (as from a raw memory image + CPU-state
 * file): its page tables, registers and segment selectors are used as given,
 * and get_regs reads back exactly what was set. */
static void own_cpu_state(void **state)
{
    (void)state;
    static uint64_t pml4[512], pdpt[512], pd[512];
    pml4[0] = 0x11000 | 3;
    pdpt[0] = 0x12000 | 3;
    for (uint64_t i = 0; i < 8; i++)
        pd[i] = (i << 21) | 0xe3;
    /* mov dx,0x5e1; out dx,eax; mov eax,ebx; out dx,eax; hlt */
    static const uint8_t code[] = { 0x66, 0xba, 0xe1, 0x05, 0xef, 0x89, 0xd8, 0xef, 0xf4 };
    vmt_image_segment segs[] = {
        { .pa = 0x1000, .data = code, .filesz = sizeof code, .memsz = sizeof code },
        { .pa = 0x10000, .data = (const uint8_t *)pml4, .filesz = 4096, .memsz = 4096 },
        { .pa = 0x11000, .data = (const uint8_t *)pdpt, .filesz = 4096, .memsz = 4096 },
        { .pa = 0x12000, .data = (const uint8_t *)pd, .filesz = 4096, .memsz = 4096 },
    };
    vmt_regs r = { 0 };
    r.rip = 0x1000;
    r.rsp = 0x8000;
    r.rax = 0x1234;
    r.rbx = 0x5678;
    r.r15 = 0xf15;
    r.rflags = 0x2;
    r.cr0 = VMT_CR0_PE | VMT_CR0_PG | VMT_CR0_WP | (1u << 5) | (1u << 4);
    r.cr3 = 0x10000;
    r.cr4 = VMT_CR4_PAE;
    r.efer = VMT_EFER_LME | VMT_EFER_LMA;
    r.cs = 0x08;
    r.ss = r.ds = r.es = 0x10;
    r.fs_base = 0x7000;
    r.gs_base = 0x7100;
    r.kernel_gs_base = 0x7200;
    char why[256];
    vmt_image *img;
    assert_int_equal(vmt_image_from_segments(segs, 4, &r, 16u << 20, &img, why, sizeof why), VMT_OK);
    vmt_machine_config cfg = { .ram_size = 16u << 20, .image = img };
    vmt_driver *d;
    assert_int_equal(vmt_kvm_driver_create(&cfg, &d, why, sizeof why), VMT_OK);
    vmt_image_destroy(img);
    vmt_regs g;
    assert_int_equal(vmt_drv_get_regs(d, 0, &g), VMT_OK);
    assert_int_equal(g.rip, r.rip);
    assert_int_equal(g.rsp, r.rsp);
    assert_int_equal(g.r15, r.r15);
    assert_int_equal(g.cr3, r.cr3);
    assert_int_equal(g.efer & (VMT_EFER_LME | VMT_EFER_LMA), VMT_EFER_LME | VMT_EFER_LMA);
    assert_int_equal(g.cs, 0x08);
    assert_int_equal(g.ss, 0x10);
    assert_int_equal(g.fs_base, r.fs_base);
    assert_int_equal(g.gs_base, r.gs_base);
    assert_int_equal(g.kernel_gs_base, r.kernel_gs_base);
    vmt_event ev;
    kg_expect(d, VMT_EVENT_IO, &ev);
    assert_int_equal(ev.u.io.value, 0x1234);
    assert_int_equal(ev.regs.kernel_gs_base, r.kernel_gs_base);
    /* set_regs with the response: the next out reports the new rbx */
    vmt_response resp = { .actions = VMT_RESP_SET_REGS, .regs = ev.regs };
    resp.regs.rbx = 0xabcdef;
    assert_int_equal(vmt_drv_respond(d, &ev, &resp), VMT_OK);
    kg_expect_io(d, 0xabcdef, &ev);
    kg_expect(d, VMT_EVENT_STOPPED, &ev);
    vmt_driver_destroy(d);
}

static void create_errors(void **state)
{
    (void)state;
    char why[256] = "";
    vmt_driver *d = NULL;
    vmt_machine_config cfg = { 0 };
    assert_int_equal(vmt_kvm_driver_create(&cfg, &d, why, sizeof why), VMT_E_INVAL);
    assert_non_null(strstr(why, "image"));
    vmt_image_segment seg = { .pa = KG_CODE_PA, .data = g_spin, .filesz = 2, .memsz = 2 };
    vmt_image *img;
    assert_int_equal(vmt_image_from_segments(&seg, 1, NULL, KG_RAM, &img, why, sizeof why), VMT_OK);
    cfg.image = img;
    /* a host without the device, and a device that is not KVM */
    setenv("VMT_KVM_DEVICE", "/nonexistent/kvm", 1);
    assert_int_equal(vmt_kvm_driver_create(&cfg, &d, why, sizeof why), VMT_E_NOTSUP);
    assert_non_null(strstr(why, "/nonexistent/kvm does not exist"));
    setenv("VMT_KVM_DEVICE", "/dev/null", 1);
    assert_int_equal(vmt_kvm_driver_create(&cfg, &d, why, sizeof why), VMT_E_NOTSUP);
    assert_non_null(strstr(why, "not a KVM device"));
    unsetenv("VMT_KVM_DEVICE");
    cfg.vcpus = 2;
    assert_int_equal(vmt_kvm_driver_create(&cfg, &d, why, sizeof why), VMT_E_NOTSUP);
    assert_non_null(strstr(why, "one vCPU"));
    cfg.vcpus = 1;
    cfg.ram_size = 12345;
    assert_int_equal(vmt_kvm_driver_create(&cfg, &d, why, sizeof why), VMT_E_INVAL);
    cfg.ram_size = 1 << 20; /* the image was built for 64 MiB: the segment still fits */
    assert_int_equal(vmt_kvm_driver_create(&cfg, &d, why, sizeof why), VMT_OK);
    assert_int_equal(vmt_driver_caps(d)->ram_frames, 256);
    vmt_driver_destroy(d);
    vmt_image_destroy(img);
}

int main(void)
{
    vmt_test_require_kvm();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(timeout_and_time_limit),
        cmocka_unit_test(timeout_from_another_thread),
        cmocka_unit_test(two_drivers_one_thread),
        cmocka_unit_test(dirty_log_and_triple_fault),
        cmocka_unit_test(internal_error_reports_rip),
        cmocka_unit_test(own_cpu_state),
        cmocka_unit_test(create_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
