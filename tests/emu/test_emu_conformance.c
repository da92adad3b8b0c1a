/*
 * tests/emu/test_emu_conformance.c — the emulator driver runs the driver
 * conformance suite (every group; CPU groups included since it runs guest
 * code). Each test gets a fresh driver with blank RAM (no factory image);
 * CPU groups place their own guests.
 */
#include "conformance.h"
#include "vmtrap/emu.h"

static vmt_status make(void *ctx, const vmt_machine_config *cfg, vmt_driver **out, char *why, size_t why_len)
{
    (void)ctx;
    return vmt_emu_driver_create(cfg, out, why, why_len);
}

int main(void)
{
    vmt_conformance_factory f = { .create = make, .ctx = NULL, .image = NULL, .runs_cpu = true };
    return vmt_conformance_run("emu", &f) ? 1 : 0;
}
