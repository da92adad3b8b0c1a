/*
 * tests/mem/mem_factory.c — see mem_factory.h.
 */
#include <stdio.h>

#include "mem_factory.h"

vmt_status mem_factory_create(void *ctx, const vmt_machine_config *mc, vmt_driver **out, char *why,
                              size_t why_len)
{
    const mem_factory *f = ctx;
    vmt_mem_config cfg = { 0 };
    if (f)
        cfg = f->base;
    uint64_t ram = mc->ram_size ? mc->ram_size : 64ull << 20;
    if (ram % VMT_PAGE_SIZE) {
        snprintf(why, why_len, "mem factory: ram_size %llu is not a multiple of 4 KiB", (unsigned long long)ram);
        return VMT_E_INVAL;
    }
    cfg.ram_frames = ram / VMT_PAGE_SIZE;
    cfg.vcpus = mc->vcpus ? mc->vcpus : 1;
    cfg.extra_frames = mc->extra_frames ? mc->extra_frames : 65536;
    if (mc->max_views)
        cfg.max_views = mc->max_views;
    vmt_status st = vmt_mem_driver_create(&cfg, out, why, why_len);
    if (!st && f && f->fail)
        vmt_mem_fail_always(*out, f->fail_op, true);
    return st;
}
