/*
 * tests/mem/test_mem_conformance.c — the mem driver runs the driver
 * conformance suite: with every capability, and again with capabilities
 * removed (the suite must then skip what the driver no longer declares and
 * still pass the rest; VM-wide views take the other branch of switch_scope).
 */
#include <stdio.h>

#include "conformance.h"
#include "mem_factory.h"

int main(void)
{
    mem_factory full = { 0 };
    vmt_conformance_factory f = { .create = mem_factory_create, .ctx = &full, .image = NULL, .runs_cpu = false };
    int failed = vmt_conformance_run("mem", &f);

    mem_factory reduced = { 0 };
    reduced.base.caps_remove = VMT_CAP_VIEW_PER_VCPU | VMT_CAP_VIEW_PERM | VMT_CAP_HW_BREAKPOINTS |
                               VMT_CAP_REGS_SET | VMT_CAP_EVENTS;
    reduced.base.trap_access = VMT_ACCESS_W;
    f.ctx = &reduced;
    failed += vmt_conformance_run("mem (reduced)", &f);

    mem_factory write_traps_only = { 0 };
    write_traps_only.base.trap_access = VMT_ACCESS_W;
    f.ctx = &write_traps_only;
    failed += vmt_conformance_run_only("mem (write traps only)", &f, "views", NULL);
    return failed ? 1 : 0;
}
