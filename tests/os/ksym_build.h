/*
 * tests/os/ksym_build.h — builds kallsyms tables the way the kernel's
 * scripts/kallsyms.c lays them out (6.1 order: offsets, relative_base,
 * num_syms, names, markers, token_table, token_index; 8-byte alignment),
 * so parser tests need no kernel. Compression: byte 0x01 stands for "fn_",
 * 0x02 for "sys_"; other characters are their own tokens.
 */
#ifndef VMT_TESTS_OS_KSYM_BUILD_H
#define VMT_TESTS_OS_KSYM_BUILD_H

#include <stddef.h>
#include <stdint.h>

typedef struct kb_sym {
    const char *name;
    char type;
    uint64_t addr;
} kb_sym;

typedef struct kb_layout {
    size_t offsets, relative_base, num_syms, names, markers, token_table, token_index, end;
} kb_layout;

/* Write the tables for syms (sorted by address; addresses >= base are
 * relative, smaller ones absolute per-CPU) at buf[at] (at 8-aligned).
 * Returns the bytes used, 0 when cap is too small. */
size_t kb_build(uint8_t *buf, size_t cap, size_t at, const kb_sym *syms, size_t n, uint64_t base, kb_layout *lo);

#endif
