/*
 * tests/qemu/test_qemu_conformance.c — the driver conformance suite on the
 * qemu driver. Each test gets a fresh QEMU the driver launches (pc machine,
 * TCG, RAM of the suite's size, stopped with -S) with the suite's image
 * written into guest RAM through the driver. QEMU cannot be started in the
 * vmtrap boot protocol's 64-bit state through the gdbstub (segment
 * descriptors are not registers there), so the factory does not run CPU
 * groups (runs_cpu = false): basics, memory and the refusal of every
 * capability the driver does not declare are what is checked here; the
 * CPU behaviour is checked on a real Linux in test_qemu_linux and
 * test_qemu_ticks. Skipped (77) only without qemu-system-x86_64.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#include <cmocka.h>

#include "conformance.h"
#include "linux_snap.h"
#include "util/testutil.h"
#include "vmtrap/image.h"
#include "vmtrap/qemu.h"

static vmt_status place_write(void *ctx, vmt_pa pa, const void *buf, size_t len)
{
    return vmt_drv_write_phys(ctx, pa, buf, len);
}

static vmt_status make(void *ctx, const vmt_machine_config *cfg, vmt_driver **out, char *why, size_t why_len)
{
    (void)ctx;
    char mem[32];
    uint64_t mib = (cfg->ram_size + (1u << 20) - 1) >> 20;
    snprintf(mem, sizeof mem, "%lluM", (unsigned long long)(mib ? mib : 2));
    const char *argv[] = { "qemu-system-x86_64", "-machine", "pc", "-accel", "tcg", "-m", mem, "-nodefaults",
                           "-display", "none", NULL };
    /* The suite's RAM size exactly (QEMU rounds to MiB). */
    vmt_qemu_config qc = { .qemu_argv = argv, .ram_bytes = cfg->ram_size, .timeout_ms = 10000 };
    vmt_status st = vmt_qemu_driver_create(&qc, out, why, why_len);
    if (st || !cfg->image)
        return st;
    vmt_regs boot;
    st = vmt_image_place((vmt_image *)cfg->image, cfg->ram_size, place_write, *out, &boot, why, why_len);
    if (st) {
        vmt_driver_destroy(*out);
        *out = NULL;
    }
    return st;
}

int main(void)
{
    if (!snap_have_qemu()) {
        printf("SKIP: qemu-system-x86_64 is not installed\n");
        return VMT_TEST_SKIP;
    }
    char why[256];
    static const uint8_t hlt[] = { 0xf4 };
    vmt_image_segment seg = { .pa = 0x1000, .data = hlt, .filesz = 1, .memsz = 1 };
    vmt_image *img;
    if (vmt_image_from_segments(&seg, 1, NULL, 2u << 20, &img, why, sizeof why) != VMT_OK) {
        fprintf(stderr, "image: %s\n", why);
        return 1;
    }
    vmt_conformance_factory f = { .create = make, .image = img, .runs_cpu = false };
    /* All groups, but from basics not regs_round_trip: the fresh QEMU is in
     * real mode, where its gdbstub keeps only 32 bits of a general register
     * (the driver reads every set back and reports that as VMT_E_NOTSUP,
     * checked below); 64-bit register writes are covered on Linux. */
    static const char *const basics[] = { "caps_record_consistent", "undeclared_caps_are_refused", "pause_resume",
                                          "hw_breakpoint_slots", "optional_kinds_and_limits_toggle",
                                          "stats_of_fresh_driver" };
    int failed = 0;
    for (size_t i = 0; i < sizeof basics / sizeof basics[0]; i++)
        failed += vmt_conformance_run_only("qemu", &f, "basics", basics[i]);
    static const char *const groups[] = { "events", "frames", "memory", "views" };
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++)
        failed += vmt_conformance_run_only("qemu", &f, groups[i], NULL);
    /* The real-mode register write is refused, not silently truncated. */
    vmt_driver *d;
    vmt_machine_config mc = { .ram_size = 2u << 20, .image = img };
    if (make(NULL, &mc, &d, why, sizeof why) != VMT_OK) {
        fprintf(stderr, "qemu: %s\n", why);
        return 1;
    }
    vmt_regs r;
    if (vmt_drv_get_regs(d, 0, &r) != VMT_OK) {
        fprintf(stderr, "get_regs: %s\n", vmt_driver_error(d));
        failed++;
    } else {
        r.rax = 0x1032547698badcfeull;
        vmt_status st = vmt_drv_set_regs(d, 0, &r);
        printf("real-mode 64-bit rax write: %s (%s)\n", vmt_strerror(st), vmt_driver_error(d));
        failed += st != VMT_E_NOTSUP;
    }
    vmt_driver_destroy(d);
    vmt_image_destroy(img);
    return failed ? 1 : 0;
}
