/*
 * tests/guests/test_pcid.c — PCIDs, INVPCID and INVLPG on the emulator
 * driver, asserted by the guest (guests/pcid) and measured by the host.
 *
 * The guest runs on a CPU offering PCID and INVPCID (Haswell + the driver's
 * offer_pcid/offer_invpcid: no Unicorn 2.1.1 model has them). It checks that
 * each address space sees its own frame after every kind of CR3 switch,
 * that every INVPCID type and INVLPG make a changed mapping visible, and the
 * #GP cases. The host, at the guest's STEP marks, reads the driver's
 * translation counters (a CR3 ping-pong with bit 63 set refills from the
 * driver's record instead of walking the guest tables; without bit 63 it
 * walks; INVPCID of an inactive PCID really drops its translations), runs
 * the invariant checker (the record's PCID tags, its coherence with the
 * guest tables) and round-trips the vCPU state with PCIDE and a PCID in it.
 * On qemu64 without the offer, CPUID says neither, CR4.PCIDE raises #GP and
 * INVPCID #UD.
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
#include "vmtrap/vcpu_state.h"

#define RAM_SIZE (64ULL << 20)
#define CR4_PCIDE (1ULL << 17)

typedef struct mark {
    vmt_emu_tlb_stats at_begin, at_end;
    uint64_t rounds;
    int seen;
} mark;

typedef struct host_view {
    mark pingpong_noflush, pingpong_flush, inactive_kept, inactive_dropped;
    mark *open;               /* the STEP pair being measured */
    int checks, check_failures;
    char check_why[256];
    int state_round_trips;
    uint64_t state_cr3, state_cr4;
} host_view;

static mark *mark_named(host_view *h, const char *step, const char *mode)
{
    if (!strcmp(step, "pingpong"))
        return !strcmp(mode, "noflush") ? &h->pingpong_noflush : !strcmp(mode, "flush") ? &h->pingpong_flush : NULL;
    if (!strcmp(step, "inactive"))
        return !strcmp(mode, "kept") ? &h->inactive_kept : !strcmp(mode, "dropped") ? &h->inactive_dropped : NULL;
    return NULL;
}

static void on_ucall(void *ctx, vmt_driver *d, const vmt_ucall *uc)
{
    host_view *h = ctx;
    if (uc->cmd != VMT_UCALL_STEP)
        return;
    /* the invariant checker at every mark: tags + coherence with the tables */
    h->checks++;
    if (vmt_emu_check(d) != VMT_OK && !h->check_failures++)
        snprintf(h->check_why, sizeof h->check_why, "%s", vmt_driver_error(d));
    vmt_emu_tlb_stats st;
    assert_int_equal(vmt_emu_tlb_stats_get(d, &st), VMT_OK);
    if (!strcmp(uc->text, "end") && h->open) {
        h->open->at_end = st;
        h->open->seen = 1;
        h->open = NULL;
    } else if (mark_named(h, uc->name, uc->text)) {
        h->open = mark_named(h, uc->name, uc->text);
        h->open->at_begin = st;
        h->open->rounds = uc->args[0];
    } else if (!strcmp(uc->name, "state")) {
        vmt_vcpu_state s;
        assert_int_equal(vmt_drv_get_vcpu_state(d, 0, &s), VMT_OK);
        h->state_cr3 = s.regs.cr3;
        h->state_cr4 = s.regs.cr4;
        assert_int_equal(s.regs.cr3, uc->args[0]);
        assert_int_equal(s.regs.cr4, uc->args[1]);
        assert_int_equal(vmt_drv_set_vcpu_state(d, 0, &s), VMT_OK);
        h->state_round_trips++;
    }
}

static void run_pcid_guest(const vmt_emu_options *opt, host_view *h, guest_run *r)
{
    memset(h, 0, sizeof *h);
    char path[512];
    snprintf(path, sizeof path, "%s/pcid.elf", VMT_GUEST_DIR);
    guest_run_config c = { .driver = "emu", .elf_path = path, .ram_size = RAM_SIZE, .time_limit_s = 60.0,
                           .emu_options = opt, .on_ucall = on_ucall, .on_ucall_ctx = h };
    vmt_status st = guest_run_config_elf(&c, r);
    if (st != VMT_OK || !r->done || r->exit_code != 0) {
        guest_run_dump(r);
        fail_msg("pcid guest: %s (%s)", vmt_strerror(st), r->error);
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

static uint64_t delta(const mark *m, size_t field_off)
{
    uint64_t a, b;
    memcpy(&a, (const char *)&m->at_begin + field_off, 8);
    memcpy(&b, (const char *)&m->at_end + field_off, 8);
    return b - a;
}
#define DELTA(m, f) delta(&(m), offsetof(vmt_emu_tlb_stats, f))

static void pcid_guest_switches_and_invalidates_exactly(void **state)
{
    (void)state;
    vmt_emu_options opt = { .set_cpu_model = true, .cpu_model = UC_CPU_X86_HASWELL, .offer_pcid = true,
                            .offer_invpcid = true };
    host_view h;
    guest_run r;
    run_pcid_guest(&opt, &h, &r);
    static const char *const phases[] = { "cpuid.pcid",  "cpuid.invpcid", "pcide.gp",    "switch.ok",
                                          "inval.type0", "inval.type1",   "inval.type2", "inval.type3",
                                          "inval.invlpg", "invpcid.faults", "state.ok",  "pcide.clear" };
    for (size_t i = 0; i < sizeof phases / sizeof phases[0]; i++)
        assert_report(&r, phases[i], 1);
    assert_true(h.pingpong_noflush.seen && h.pingpong_flush.seen && h.inactive_kept.seen && h.inactive_dropped.seen);
    assert_true(h.checks >= 9);

    /* CR3 ping-pong: 2 switches a round; with bit 63 each switch refills
     * Unicorn's TLB from the record, without it the guest tables are walked */
    uint64_t n = 2 * h.pingpong_noflush.rounds;
    assert_int_equal(DELTA(h.pingpong_noflush, cr3_noflush), n);
    assert_int_equal(DELTA(h.pingpong_flush, cr3_noflush), 0);
    assert_true(DELTA(h.pingpong_noflush, cr3_writes) >= n);
    uint64_t walks_noflush = DELTA(h.pingpong_noflush, walks), walks_flush = DELTA(h.pingpong_flush, walks);
    uint64_t hits_noflush = DELTA(h.pingpong_noflush, record_hits);
    print_message("ping-pong, %llu switches: bit 63 set: %llu walks, %llu refills from the record; "
                  "clear: %llu walks\n", (unsigned long long)n, (unsigned long long)walks_noflush,
                  (unsigned long long)hits_noflush, (unsigned long long)walks_flush);
    assert_true(hits_noflush >= n);          /* at least TEST_VA after every switch */
    assert_true(walks_flush >= n);           /* at least TEST_VA after every switch */
    assert_true(walks_noflush * 8 <= walks_flush);

    /* INVPCID type 1 of the inactive PCID drops its translations: coming
     * back walks again; without it they were kept */
    uint64_t kept = DELTA(h.inactive_kept, walks), dropped = DELTA(h.inactive_dropped, walks);
    print_message("inactive PCID, %llu returns: kept %llu walks, dropped by INVPCID %llu walks\n",
                  (unsigned long long)h.inactive_kept.rounds, (unsigned long long)kept, (unsigned long long)dropped);
    assert_true(dropped >= h.inactive_dropped.rounds);
    assert_true(kept * 4 <= dropped);
    assert_int_equal(DELTA(h.inactive_dropped, invpcid), h.inactive_dropped.rounds);
    assert_true(DELTA(h.inactive_dropped, invalidations) >= h.inactive_dropped.rounds);

    /* the vCPU state carried PCIDE and PCID 2 (and went back in) */
    assert_int_equal(h.state_round_trips, 1);
    assert_true(h.state_cr4 & CR4_PCIDE);
    assert_int_equal(h.state_cr3 & 0xfff, 2);
    guest_run_free(&r);
}

static void qemu64_offers_neither(void **state)
{
    (void)state;
    host_view h;
    guest_run r;
    run_pcid_guest(NULL, &h, &r);
    assert_report(&r, "cpuid.pcid", 0);
    assert_report(&r, "cpuid.invpcid", 0);
    assert_report(&r, "nopcid.gp", 1);
    assert_report(&r, "noinvpcid.ud", 1);
    assert_int_equal(guest_run_count(&r, VMT_UCALL_REPORT, "switch.ok"), 0);
    guest_run_free(&r);
}

static void pcid_without_invpcid(void **state)
{
    (void)state;
    vmt_emu_options opt = { .offer_pcid = true };
    host_view h;
    guest_run r;
    run_pcid_guest(&opt, &h, &r);
    assert_report(&r, "cpuid.pcid", 1);
    assert_report(&r, "cpuid.invpcid", 0);
    assert_report(&r, "noinvpcid.ud", 1);
    guest_run_free(&r);
}

/* set_regs / set_vcpu_state with CR4.PCIDE on a CPU without PCID: refused. */
static void pcide_refused_without_the_offer(void **state)
{
    (void)state;
    vmt_machine_config cfg = { .ram_size = RAM_SIZE };
    vmt_driver *d = NULL;
    char why[256];
    assert_int_equal(vmt_emu_driver_create(&cfg, &d, why, sizeof why), VMT_OK);
    vmt_regs regs;
    assert_int_equal(vmt_drv_get_regs(d, 0, &regs), VMT_OK);
    regs.cr4 |= CR4_PCIDE;
    assert_int_equal(vmt_drv_set_regs(d, 0, &regs), VMT_E_NOTSUP);
    assert_non_null(strstr(vmt_driver_error(d), "PCID"));
    vmt_driver_destroy(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pcid_guest_switches_and_invalidates_exactly),
        cmocka_unit_test(qemu64_offers_neither),
        cmocka_unit_test(pcid_without_invpcid),
        cmocka_unit_test(pcide_refused_without_the_offer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
