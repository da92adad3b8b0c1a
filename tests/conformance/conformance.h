/*
 * tests/conformance/conformance.h — the driver conformance suite.
 *
 * One set of tests that every driver runs. A driver's conformance test is a
 * tiny main() that passes a factory to vmt_conformance_run():
 *
 *     static vmt_status make(void *ctx, const vmt_machine_config *cfg,
 *                            vmt_driver **out, char *why, size_t why_len)
 *     { return vmt_emu_driver_create(cfg, out, why, why_len); }
 *     int main(void) {
 *         vmt_conformance_factory f = { .create = make, .image = img, .runs_cpu = true };
 *         return vmt_conformance_run("emu", &f) ? 1 : 0;
 *     }
 *
 * Every test gets a FRESH driver made by the factory from a default machine
 * config (vmt_conf_default_config: 2 MiB RAM, 1 vCPU, 64 extra frames, the
 * factory's image) and is guarded by the capabilities it needs: when the
 * driver does not declare them the test is SKIPPED (cmocka skip()); when it
 * declares them, the test must pass. A driver never pretends.
 *
 * Groups. Tests are organised in groups, one group per file conf_<name>.c in
 * this directory, which defines
 *
 *     const vmt_conformance_group vmt_conf_group_<name> = {
 *         .name = "<name>", .needs = VMT_CAP_..., .needs_cpu = false,
 *         .tests = <name>_tests, .count = sizeof <name>_tests / sizeof <name>_tests[0],
 *     };
 *
 * with each test written as VMT_CONF_TEST(fn). CMake finds conf_*.c files
 * and generates the registry (conf_registry.c) at configure time: adding a
 * group is adding a file (re-run cmake). Groups run in file-name order.
 *
 * CPU groups (e.g. conf_events.c, owned by the emulator engineer: INT3 ->
 * breakpoint event, single-step, memory-access events with write data,
 * EMULATE/FAST_STEP, REINJECT) set .needs = VMT_CAP_EVENTS (plus what they
 * use) and .needs_cpu = true: they run only for factories with runs_cpu
 * (the mem driver declares EVENTS for queued events but has no CPU). Such a
 * test makes its own driver with the guest it needs:
 *
 *     vmt_conf *c = vmt_conf_begin(state, VMT_CAP_BREAKPOINT_EVENTS);
 *     static const uint8_t code[] = { 0x90, 0xcc, 0xf4 };  // nop; int3; hlt
 *     VMT_CONF_OK(c, vmt_conf_reopen_code(c, NULL, 0x1000, code, sizeof code));
 *     // c->d now runs that guest; or build any image and vmt_conf_reopen()
 *     vmt_event ev;
 *     vmt_conf_expect_event(c, VMT_EVENT_BREAKPOINT, &ev);  // 10 s guard
 *     assert_int_equal(ev.regs.rip, 0x1001);
 *
 * A test body:
 *
 *     static void views_switch(void **state) {
 *         vmt_conf *c = vmt_conf_begin(state, VMT_CAP_VIEWS);  // skips if absent
 *         vmt_view v;
 *         VMT_CONF_OK(c, vmt_drv_view_create(c->d, VMT_ACCESS_RWX, &v));
 *         VMT_CONF_EXPECT(c, VMT_E_NOTFOUND, vmt_drv_view_switch(c->d, 0, 999));
 *     }
 *
 * Contract decisions the suite enforces beyond driver.h (documented here so
 * driver authors see them in one place):
 *  - reads/writes that touch anything past guest RAM that is not an
 *    allocated extra frame fail with VMT_E_RANGE, and a failed write
 *    changes no byte; pa+len overflow is VMT_E_RANGE, never a crash;
 *  - unknown view: VMT_E_NOTFOUND; view 0 cannot be remapped or restricted;
 *  - destroying a view a vCPU is on is refused with VMT_E_BUSY;
 *  - without VIEW_PER_VCPU a switch of any vCPU switches all of them;
 *  - extra frames are outside RAM, distinct, host-readable/writable and
 *    cannot be remapped or restricted themselves (only used as backing).
 */
#ifndef VMT_TESTS_CONFORMANCE_H
#define VMT_TESTS_CONFORMANCE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "vmtrap/driver.h"
#include "vmtrap/image.h"
#include "vmtrap/machine.h"

typedef struct vmt_conformance_factory {
    /* Create a driver from a machine config (required). */
    vmt_status (*create)(void *ctx, const vmt_machine_config *cfg, vmt_driver **out, char *why, size_t why_len);
    void *ctx;
    /* Put into every machine config the suite builds (may be NULL for
     * drivers that ignore images, like mem). */
    const vmt_image *image;
    /* The driver executes guest code: groups with needs_cpu run. */
    bool runs_cpu;
} vmt_conformance_factory;

typedef struct vmt_conformance_group {
    const char *name;
    uint64_t needs;                 /* VMT_CAP_* every test of the group needs */
    bool needs_cpu;                 /* only for factories with runs_cpu */
    const struct CMUnitTest *tests; /* VMT_CONF_TEST(...) entries */
    size_t count;
} vmt_conformance_group;

/* Run every group. Returns the number of failed tests (0: conformant). */
int vmt_conformance_run(const char *driver_name, const vmt_conformance_factory *f);
/* Run only the groups named `group` (NULL: all) and the tests matching the
 * cmocka pattern `test` (NULL: all; '*' and '?' wildcards). Same return. */
int vmt_conformance_run_only(const char *driver_name, const vmt_conformance_factory *f, const char *group,
                             const char *test);

/* ---- for tests ---- */

/* The fixture each test gets: a fresh driver. */
typedef struct vmt_conf {
    const vmt_conformance_factory *factory;
    const char *driver_name;
    const vmt_conformance_group *group;
    vmt_machine_config cfg;  /* what d was created from */
    vmt_driver *d;
    const vmt_caps *caps;    /* vmt_driver_caps(d) */
    char why[256];
} vmt_conf;

/* Test setup/teardown: make and destroy the fresh driver. */
int vmt_conf_setup(void **state);
int vmt_conf_teardown(void **state);
#define VMT_CONF_TEST(fn) cmocka_unit_test_setup_teardown(fn, vmt_conf_setup, vmt_conf_teardown)

/* Start a test: the fixture, or skip() when the driver lacks the group's or
 * these capabilities (or the group needs a CPU the factory has not). */
vmt_conf *vmt_conf_begin(void **state, uint64_t needs);
/* The suite's default machine config (with the factory's image). */
vmt_machine_config vmt_conf_default_config(const vmt_conf *c);
/* Replace c->d by a fresh driver made from cfg (cfg->image NULL: the
 * factory's image). On failure c->d is NULL and c->why says why. */
vmt_status vmt_conf_reopen(vmt_conf *c, const vmt_machine_config *cfg);

/* Replace c->d by a driver running `code`: the bytes are placed at code_pa
 * and started there under the vmtrap boot protocol (64-bit, CPL0, identity
 * paging, see image.h), with cfg (NULL: the default config) for the rest.
 * Lets CPU groups test every runs_cpu driver with the same tiny guests. */
vmt_status vmt_conf_reopen_code(vmt_conf *c, const vmt_machine_config *cfg, vmt_pa code_pa, const void *code,
                                size_t len);

/* For CPU groups: wait (at most 10 s) for the next event and fail the test
 * unless it has `kind` (a STOPPED event's message is shown); respond with a
 * plain CONTINUE (failing the test on error). */
void vmt_conf_expect_event_at(vmt_conf *c, vmt_event_kind kind, vmt_event *ev, const char *file, int line);
void vmt_conf_continue_at(vmt_conf *c, const vmt_event *ev, const char *file, int line);
#define vmt_conf_expect_event(c, kind, ev) vmt_conf_expect_event_at((c), (kind), (ev), __FILE__, __LINE__)
#define vmt_conf_continue(c, ev) vmt_conf_continue_at((c), (ev), __FILE__, __LINE__)

/* Assert a call's status; the failure message names the call, the driver and
 * its error message. */
void vmt_conf_expect(vmt_conf *c, vmt_status want, vmt_status got, const char *call, const char *file, int line);
#define VMT_CONF_EXPECT(c, want, call) vmt_conf_expect((c), (want), (call), #call, __FILE__, __LINE__)
#define VMT_CONF_OK(c, call) VMT_CONF_EXPECT(c, VMT_OK, call)
/* Assert a call fails (any status but VMT_OK). */
void vmt_conf_expect_fail(vmt_conf *c, vmt_status got, const char *call, const char *file, int line);
#define VMT_CONF_FAILS(c, call) vmt_conf_expect_fail((c), (call), #call, __FILE__, __LINE__)

#endif
