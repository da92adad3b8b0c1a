/*
 * tests/mem/mem_factory.h — a conformance factory for the mem driver
 * (test helper): maps a vmt_machine_config to a vmt_mem_config (the image is
 * ignored) and can arm fault injection on every driver it makes, which is
 * how tests build a driver that declares a capability but fails it.
 */
#ifndef VMT_TESTS_MEM_FACTORY_H
#define VMT_TESTS_MEM_FACTORY_H

#include <stdbool.h>

#include "vmtrap/machine.h"
#include "vmtrap/mem.h"

typedef struct mem_factory {
    vmt_mem_config base;  /* fields the machine config does not set */
    bool fail;            /* arm vmt_mem_fail_always(fail_op) on each driver */
    vmt_mem_op fail_op;
} mem_factory;

/* vmt_conformance_factory.create; ctx is a mem_factory (may be NULL). */
vmt_status mem_factory_create(void *ctx, const vmt_machine_config *mc, vmt_driver **out, char *why,
                              size_t why_len);

#endif
