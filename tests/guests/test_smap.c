/*
 * tests/guests/test_smap.c — SMEP, SMAP and CR4's reserved bits on the
 * emulator driver, asserted by the guest (guests/smap) and by the host.
 *
 * On Broadwell (Unicorn's first model with SMAP) the guest checks that a
 * kernel read/write of a user page faults with AC = 0 and works with AC = 1
 * however AC changes (STAC, CLAC, POPF), including right after the page was
 * used with the other AC (a translation cached for one AC state must not
 * serve the other), that SMEP still stops kernel fetches and SMAP does not,
 * and that CR4 bits the CPU lacks raise #GP. The host, at the guest's
 * "smap_on" mark, runs the driver's invariant checker and round-trips the
 * vCPU state with SMAP in CR4; at "protect" it takes W away from a frame
 * the guest wrote with AC = 1 and then executed with AC = 0 (the driver's
 * last translation of it was the fetch) and counts the guest's next write
 * with AC = 1 as an event: rights another of Unicorn's TLBs holds are not
 * forgotten. Under a monitor with a hidden breakpoint on
 * smap_hooked_read (whose first instruction reads the user page) the guest
 * sees exactly the faults it sees without one, under each breakpoint
 * controller: the monitor's way of performing the hooked instruction (the
 * engine's EMULATE, or a step) applies SMAP like the CPU.
 * Implicit supervisor accesses: with the IDT in a user page an exception is
 * delivered with AC = 1 and shuts the CPU down (triple fault) with AC = 0.
 * On qemu64 CPUID has neither SMEP nor SMAP: setting them raises #GP, STAC
 * #UD. On Skylake-Server CPUID has no PKU (the driver has no protection
 * keys) and CR4.PKE raises #GP. set_regs with a CR4 bit the model lacks is
 * refused with a message naming the bit and the model;
 * vmt_emu_options_for_cr4 (a snapshot's resume) picks the least model that
 * has what a CR4 uses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <unicorn/unicorn.h>

#include "guest_runner.h"
#include "vmtrap/driver.h"
#include "vmtrap/emu.h"
#include "vmtrap/image.h"
#include "vmtrap/monitor.h"
#include "vmtrap/session.h"
#include "vmtrap/vcpu_state.h"

#define RAM_SIZE (64ULL << 20)
#define CR4_SMEP (1ULL << 20)
#define CR4_SMAP (1ULL << 21)
#define CR4_LA57 (1ULL << 12)
#define RESERVED_TRIED 8 /* CR4 bits guests/smap tries that no model here has */

typedef struct host_view {
    int checks, check_failures;
    char check_why[256];
    int state_round_trips;
    uint64_t state_cr4;
    vmt_view view;            /* the write-protecting view of STEP protect */
    uint64_t writes_before, protected_writes;
    int protect_seen;
} host_view;

static void on_ucall(void *ctx, vmt_driver *d, const vmt_ucall *uc)
{
    host_view *h = ctx;
    if (uc->cmd == VMT_UCALL_STEP && !strcmp(uc->name, "protect")) {
        vmt_driver_stats st;
        assert_int_equal(vmt_drv_stats(d, &st), VMT_OK);
        h->writes_before = st.events[VMT_EVENT_MEM_ACCESS];
        assert_int_equal(vmt_drv_view_create(d, VMT_ACCESS_RWX, &h->view), VMT_OK);
        assert_int_equal(vmt_drv_view_set_access(d, h->view, uc->args[0] >> 12, VMT_ACCESS_R | VMT_ACCESS_X),
                         VMT_OK);
        assert_int_equal(vmt_drv_view_switch(d, 0, h->view), VMT_OK);
        return;
    }
    if (uc->cmd == VMT_UCALL_STEP && !strcmp(uc->name, "protected")) {
        vmt_driver_stats st;
        assert_int_equal(vmt_drv_stats(d, &st), VMT_OK);
        h->protected_writes = st.events[VMT_EVENT_MEM_ACCESS] - h->writes_before;
        assert_int_equal(vmt_drv_view_switch(d, 0, 0), VMT_OK);
        assert_int_equal(vmt_drv_view_destroy(d, h->view), VMT_OK);
        h->protect_seen = 1;
        return;
    }
    if (uc->cmd != VMT_UCALL_STEP || strcmp(uc->name, "smap_on") != 0)
        return;
    h->checks++;
    if (vmt_emu_check(d) != VMT_OK && !h->check_failures++)
        snprintf(h->check_why, sizeof h->check_why, "%s", vmt_driver_error(d));
    vmt_vcpu_state s;
    assert_int_equal(vmt_drv_get_vcpu_state(d, 0, &s), VMT_OK);
    h->state_cr4 = s.regs.cr4;
    assert_int_equal(s.regs.cr4, uc->args[0]);
    assert_int_equal(vmt_drv_set_vcpu_state(d, 0, &s), VMT_OK);
    assert_int_equal(vmt_emu_check(d), VMT_OK);
    h->state_round_trips++;
}

static void run_smap_guest(int model, host_view *h, guest_run *r)
{
    memset(h, 0, sizeof *h);
    vmt_emu_options opt = { .set_cpu_model = true, .cpu_model = model };
    guest_run_config c = { .driver = "emu", .elf_path = VMT_GUEST_DIR "/smap.elf", .ram_size = RAM_SIZE,
                           .time_limit_s = 60.0, .emu_options = &opt, .on_ucall = on_ucall, .on_ucall_ctx = h };
    vmt_status st = guest_run_config_elf(&c, r);
    if (st != VMT_OK || !r->done || r->exit_code != 0) {
        guest_run_dump(r);
        fail_msg("smap guest: %s (%s)", vmt_strerror(st), r->error);
    }
    assert_int_equal(guest_run_count(r, VMT_UCALL_ASSERT_FAIL, NULL), 0);
    if (h->check_failures)
        fail_msg("invariant checker failed %d of %d times: %s", h->check_failures, h->checks, h->check_why);
}

static void assert_report(const guest_run *r, const char *key, uint64_t want)
{
    int found = 0;
    uint64_t v = guest_run_report(r, key, &found);
    if (!found || v != want)
        fail_msg("REPORT %s: found %d, value %llu, want %llu", key, found, (unsigned long long)v,
                 (unsigned long long)want);
}

static const char *const smap_phases[] = { "smap.read_pf", "smap.write_pf", "smap.stac_ok", "smap.clac_pf",
                                           "smep.fetch_pf", "smap.fetch_ok", "hooked.pf",  "hooked.ok" };

static void assert_smap_phases(const guest_run *r)
{
    for (size_t i = 0; i < sizeof smap_phases / sizeof smap_phases[0]; i++)
        assert_report(r, smap_phases[i], 1);
    assert_report(r, "smap.rounds", 32);
}

static void broadwell_enforces_smap(void **state)
{
    (void)state;
    host_view h;
    guest_run r;
    run_smap_guest(UC_CPU_X86_BROADWELL, &h, &r);
    assert_report(&r, "cpuid.smap", 1);
    assert_report(&r, "cpuid.smep", 1);
    assert_report(&r, "reserved.gp", RESERVED_TRIED);
    assert_smap_phases(&r);
    assert_int_equal(h.checks, 1);
    assert_int_equal(h.state_round_trips, 1);
    assert_true((h.state_cr4 & (CR4_SMEP | CR4_SMAP)) == (CR4_SMEP | CR4_SMAP));
    /* the write with AC = 1 after the frame lost W in the view was seen,
     * although the last translation of the page was an AC = 0 fetch */
    assert_true(h.protect_seen);
    assert_int_equal(h.protected_writes, 1);
    guest_run_free(&r);
}

static void qemu64_has_no_smep_or_smap(void **state)
{
    (void)state;
    host_view h;
    guest_run r;
    run_smap_guest(UC_CPU_X86_QEMU64, &h, &r);
    assert_report(&r, "cpuid.smap", 0);
    assert_report(&r, "cpuid.smep", 0);
    assert_report(&r, "reserved.gp", RESERVED_TRIED);
    assert_report(&r, "nosmep.gp", 1);
    assert_report(&r, "nosmap.gp", 1);
    assert_report(&r, "nosmap.stac_ud", 1);
    assert_int_equal(guest_run_count(&r, VMT_UCALL_REPORT, "smap.read_pf"), 0);
    guest_run_free(&r);
}

/* Haswell: SMEP without SMAP. */
static void haswell_has_smep_only(void **state)
{
    (void)state;
    host_view h;
    guest_run r;
    run_smap_guest(UC_CPU_X86_HASWELL, &h, &r);
    assert_report(&r, "cpuid.smap", 0);
    assert_report(&r, "cpuid.smep", 1);
    assert_report(&r, "nosmap.gp", 1);
    assert_report(&r, "nosmap.stac_ud", 1);
    assert_int_equal(guest_run_count(&r, VMT_UCALL_REPORT, "nosmep.gp"), 0);
    guest_run_free(&r);
}

/* Skylake-Server's model has PKU; the driver has no protection keys, so
 * CPUID does not show it and CR4.PKE is reserved (in reserved.gp). */
static void skylake_server_hides_pku(void **state)
{
    (void)state;
    host_view h;
    guest_run r;
    run_smap_guest(UC_CPU_X86_SKYLAKE_SERVER, &h, &r);
    assert_report(&r, "cpuid.pku", 0);
    assert_report(&r, "reserved.gp", RESERVED_TRIED);
    assert_smap_phases(&r);
    guest_run_free(&r);
}

/* The IDT in a user page (guests/smap's smap_idt_user): delivered with
 * AC = 1, a triple fault with AC = 0 — the run stops and says why. */
static void idt_in_a_user_page_is_an_implicit_access(void **state)
{
    (void)state;
    host_view h;
    memset(&h, 0, sizeof h);
    vmt_emu_options opt = { .set_cpu_model = true, .cpu_model = UC_CPU_X86_BROADWELL };
    guest_param p = { "smap_idt_user", 1 };
    guest_run r;
    guest_run_config c = { .driver = "emu", .elf_path = VMT_GUEST_DIR "/smap.elf", .ram_size = RAM_SIZE,
                           .params = &p, .nparams = 1, .time_limit_s = 60.0, .emu_options = &opt,
                           .on_ucall = on_ucall, .on_ucall_ctx = &h };
    (void)guest_run_config_elf(&c, &r);
    if (r.done || !r.stopped || r.stop.reason != VMT_STOP_TRIPLE_FAULT)
        guest_run_dump(&r);
    assert_int_equal(guest_run_count(&r, VMT_UCALL_ASSERT_FAIL, NULL), 0);
    assert_smap_phases(&r);
    assert_report(&r, "idt_user.ac1", 1);
    assert_false(r.done);
    assert_true(r.stopped);
    assert_int_equal(r.stop.reason, VMT_STOP_TRIPLE_FAULT);
    print_message("stop: %s\n", r.stop.message);
    assert_non_null(strstr(r.stop.message, "user page under SMAP"));
    guest_run_free(&r);
}

static vmt_driver *make_driver(int model)
{
    vmt_machine_config cfg = { .ram_size = RAM_SIZE };
    vmt_emu_options opt = { .set_cpu_model = true, .cpu_model = model };
    vmt_driver *d = NULL;
    char why[256];
    assert_int_equal(vmt_emu_driver_create_ex(&cfg, &opt, &d, why, sizeof why), VMT_OK);
    return d;
}

/* set_regs (and so set_vcpu_state, a snapshot's resume) with a CR4 bit the
 * model lacks: refused, naming the bit, the model and what to do. */
static void set_regs_refuses_bits_the_model_lacks(void **state)
{
    (void)state;
    vmt_driver *d = make_driver(UC_CPU_X86_QEMU64);
    vmt_regs regs;
    assert_int_equal(vmt_drv_get_regs(d, 0, &regs), VMT_OK);
    regs.cr4 |= CR4_SMAP;
    assert_int_equal(vmt_drv_set_regs(d, 0, &regs), VMT_E_NOTSUP);
    const char *msg = vmt_driver_error(d);
    print_message("qemu64, CR4.SMAP: %s\n", msg);
    assert_non_null(strstr(msg, "SMAP (bit 21)"));
    assert_non_null(strstr(msg, "qemu64"));
    assert_non_null(strstr(msg, "cpu_model"));
    vmt_vcpu_state s;
    assert_int_equal(vmt_drv_get_vcpu_state(d, 0, &s), VMT_OK);
    s.regs.cr4 |= CR4_SMEP;
    assert_int_equal(vmt_drv_set_vcpu_state(d, 0, &s), VMT_E_NOTSUP);
    assert_non_null(strstr(vmt_driver_error(d), "SMEP (bit 20)"));
    assert_int_equal(vmt_emu_check(d), VMT_OK);
    vmt_driver_destroy(d);

    d = make_driver(UC_CPU_X86_BROADWELL);
    assert_int_equal(vmt_drv_get_regs(d, 0, &regs), VMT_OK);
    regs.cr4 |= CR4_SMAP | CR4_SMEP;
    assert_int_equal(vmt_drv_set_regs(d, 0, &regs), VMT_OK);
    assert_int_equal(vmt_emu_check(d), VMT_OK);
    regs.cr4 |= CR4_LA57;
    assert_int_equal(vmt_drv_set_regs(d, 0, &regs), VMT_E_NOTSUP);
    assert_non_null(strstr(vmt_driver_error(d), "LA57"));
    vmt_driver_destroy(d);
}

/* The least model for a CR4 (what a snapshot's resume uses): each one
 * accepts that CR4 through set_regs; bits no model has are named. */
static void options_for_cr4_pick_the_least_model(void **state)
{
    (void)state;
    const uint64_t base = 0x6f0; /* the Linux snapshot's (qemu64) */
    static const struct {
        uint64_t cr4;
        bool set_model;
        int model;
        bool pcid;
    } cases[] = {
        { 0x6f0, false, UC_CPU_X86_QEMU64, false },
        { 0x6f0 | 1ull << 18, true, UC_CPU_X86_SANDYBRIDGE, false },
        { 0x6f0 | CR4_SMEP | 1ull << 16, true, UC_CPU_X86_IVYBRIDGE, false },
        { 0x6f0 | CR4_SMEP | CR4_SMAP, true, UC_CPU_X86_BROADWELL, false },
        { 0x6f0 | CR4_SMAP | 1ull << 17, true, UC_CPU_X86_BROADWELL, true },
        { 0x6f0 | CR4_LA57 | CR4_SMAP, true, UC_CPU_X86_ICELAKE_SERVER, false },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        vmt_emu_options opt;
        memset(&opt, 0, sizeof opt);
        char why[256] = "";
        assert_int_equal(vmt_emu_options_for_cr4(cases[i].cr4, &opt, why, sizeof why), VMT_OK);
        assert_int_equal(opt.set_cpu_model, cases[i].set_model);
        assert_int_equal(opt.cpu_model, cases[i].model);
        assert_int_equal(opt.offer_pcid, cases[i].pcid);
        vmt_machine_config cfg = { .ram_size = RAM_SIZE };
        vmt_driver *d = NULL;
        assert_int_equal(vmt_emu_driver_create_ex(&cfg, &opt, &d, why, sizeof why), VMT_OK);
        vmt_regs regs;
        assert_int_equal(vmt_drv_get_regs(d, 0, &regs), VMT_OK);
        regs.cr4 = cases[i].cr4;
        if (vmt_drv_set_regs(d, 0, &regs) != VMT_OK)
            fail_msg("cr4 0x%llx on %s: %s", (unsigned long long)cases[i].cr4,
                     vmt_emu_cpu_model_name(opt.cpu_model), vmt_driver_error(d));
        vmt_driver_destroy(d);
    }
    vmt_emu_options opt;
    memset(&opt, 0, sizeof opt);
    char why[256] = "";
    assert_int_equal(vmt_emu_options_for_cr4(base | 1ull << 22, &opt, why, sizeof why), VMT_E_NOTSUP);
    assert_non_null(strstr(why, "PKE (bit 22)"));
    assert_int_equal(vmt_emu_options_for_cr4(base | 1ull << 11 | CR4_SMAP, &opt, why, sizeof why), VMT_E_NOTSUP);
    assert_non_null(strstr(why, "UMIP (bit 11)"));
    assert_false(opt.set_cpu_model);
}

/* ---- the hooked first instruction under a monitor ---- */

typedef struct hook_ctx {
    uint64_t hits;
    struct {
        char key[VMT_UCALL_NAME_LEN];
        uint64_t value;
    } reports[32];
    size_t nreports;
    int done, asserts;
    uint64_t exit_code;
} hook_ctx;

static vmt_status on_hooked_read(const vmt_hit *hit, void *user)
{
    (void)hit;
    ((hook_ctx *)user)->hits++;
    return VMT_OK;
}

static void on_monitor_ucall(const vmt_ucall *uc, void *user)
{
    hook_ctx *c = user;
    if (uc->cmd == VMT_UCALL_REPORT && c->nreports < 32) {
        snprintf(c->reports[c->nreports].key, sizeof c->reports[0].key, "%s", uc->name);
        c->reports[c->nreports++].value = uc->args[0];
    } else if (uc->cmd == VMT_UCALL_DONE) {
        c->done = 1;
        c->exit_code = uc->args[0];
    } else if (uc->cmd == VMT_UCALL_ASSERT_FAIL) {
        c->asserts++;
        fprintf(stderr, "guest assert: %s %s\n", uc->name, uc->text);
    }
}

static uint64_t hook_report(const hook_ctx *c, const char *key)
{
    for (size_t i = 0; i < c->nreports; i++)
        if (!strcmp(c->reports[i].key, key))
            return c->reports[i].value;
    fail_msg("guest did not report %s", key);
    return 0;
}

static void hooked_read_faults_like_the_cpu(vmt_bpm_controller ctl)
{
    hook_ctx c;
    memset(&c, 0, sizeof c);
    char why[256] = "";
    vmt_image *img = NULL;
    assert_int_equal(vmt_image_load_elf(VMT_GUEST_DIR "/smap.elf", RAM_SIZE, &img, why, sizeof why), VMT_OK);
    vmt_machine_config mc = { .ram_size = RAM_SIZE, .image = img };
    vmt_emu_options opt = { .set_cpu_model = true, .cpu_model = UC_CPU_X86_BROADWELL };
    vmt_driver *d = NULL;
    assert_int_equal(vmt_emu_driver_create_ex(&mc, &opt, &d, why, sizeof why), VMT_OK);
    vmt_drv_set_limit(d, 30.0, 0);
    vmt_session *s = NULL;
    assert_int_equal(vmt_session_create(d, NULL, &s), VMT_OK);
    vmt_monitor_config cfg = { .controller = ctl };
    vmt_monitor *m = NULL;
    assert_int_equal(vmt_monitor_create_ex(s, img, &cfg, &m, why, sizeof why), VMT_OK);
    assert_int_equal(vmt_monitor_hook(m, "smap_hooked_read", on_hooked_read, &c), VMT_OK);
    vmt_monitor_on_ucall(m, on_monitor_ucall, &c);
    vmt_status st = vmt_monitor_run(m);
    if (st)
        fail_msg("run (%s): %s: %s", vmt_bpm_controller_name(ctl), vmt_strerror(st), vmt_monitor_error(m));
    assert_int_equal(vmt_monitor_check(m), VMT_OK);
    assert_int_equal(vmt_emu_check(d), VMT_OK);
    print_message("%s: %llu hits\n", vmt_bpm_controller_name(ctl), (unsigned long long)c.hits);
    assert_int_equal(vmt_monitor_hook_hits(m, 0), 2); /* AC = 0 (#PF) and AC = 1 */
    assert_int_equal(c.hits, 2);
    vmt_monitor_destroy(m);
    vmt_session_destroy(s);
    vmt_image_destroy(img);
    assert_int_equal(c.asserts, 0);
    assert_true(c.done);
    assert_int_equal(c.exit_code, 0);
    assert_int_equal(hook_report(&c, "hooked.pf"), 1);
    assert_int_equal(hook_report(&c, "hooked.ok"), 1);
    assert_int_equal(hook_report(&c, "smap.rounds"), 32);
}

static void hidden_breakpoint_shadow(void **state)
{
    (void)state;
    hooked_read_faults_like_the_cpu(VMT_BPM_CTL_SHADOW);
}

static void hidden_breakpoint_exec(void **state)
{
    (void)state;
    hooked_read_faults_like_the_cpu(VMT_BPM_CTL_EXEC);
}

static void hidden_breakpoint_debug(void **state)
{
    (void)state;
    hooked_read_faults_like_the_cpu(VMT_BPM_CTL_DEBUG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(broadwell_enforces_smap),
        cmocka_unit_test(qemu64_has_no_smep_or_smap),
        cmocka_unit_test(haswell_has_smep_only),
        cmocka_unit_test(skylake_server_hides_pku),
        cmocka_unit_test(idt_in_a_user_page_is_an_implicit_access),
        cmocka_unit_test(set_regs_refuses_bits_the_model_lacks),
        cmocka_unit_test(options_for_cr4_pick_the_least_model),
        cmocka_unit_test(hidden_breakpoint_shadow),
        cmocka_unit_test(hidden_breakpoint_exec),
        cmocka_unit_test(hidden_breakpoint_debug),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
