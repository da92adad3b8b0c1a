/*
 * tests/kvm/test_kvm_conformance.c — the driver conformance suite on the KVM
 * driver: every capability it declares must pass its group (tests of
 * capabilities it does not declare are skipped by the suite).
 *
 * The factory image is a guest that halts at once (hlt at 0x1000, boot
 * protocol): groups that run the CPU bring their own guests.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#include <cmocka.h>

#include "conformance.h"
#include "util/testutil.h"
#include "vmtrap/image.h"
#include "vmtrap/kvm.h"

static vmt_status make(void *ctx, const vmt_machine_config *cfg, vmt_driver **out, char *why, size_t why_len)
{
    (void)ctx;
    return vmt_kvm_driver_create(cfg, out, why, why_len);
}

int main(void)
{
    vmt_test_require_kvm();
    char why[256];
    static const uint8_t hlt[] = { 0xf4 };
    vmt_image_segment seg = { .pa = 0x1000, .data = hlt, .filesz = 1, .memsz = 1 };
    vmt_image *img;
    if (vmt_image_from_segments(&seg, 1, NULL, 2u << 20, &img, why, sizeof why) != VMT_OK) {
        fprintf(stderr, "image: %s\n", why);
        return 1;
    }
    vmt_conformance_factory f = { .create = make, .image = img, .runs_cpu = true };
    int failed = vmt_conformance_run("kvm", &f);
    vmt_image_destroy(img);
    return failed ? 1 : 0;
}
