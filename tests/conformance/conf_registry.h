/*
 * tests/conformance/conf_registry.h — the list of conformance groups
 * (internal). Defined by conf_registry.c, which CMake generates from the
 * conf_*.c files of this directory (see CMakeLists.txt).
 */
#ifndef VMT_TESTS_CONF_REGISTRY_H
#define VMT_TESTS_CONF_REGISTRY_H

#include <stddef.h>

#include "conformance.h"

extern const vmt_conformance_group *const vmt_conformance_groups[];
extern const size_t vmt_conformance_group_count;

#endif
