/*
 * tests/snapshot/make_test_core.c — writes a small synthetic QEMU ELF core
 * (core_builder.c: 1 MiB RAM + BIOS ROM block, one 64-bit vCPU) to the
 * path given, for the CLI test.
 */
#include <stdio.h>
#include <stdlib.h>

#include "core_builder.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make_test_core OUT\n");
        return 2;
    }
    core_spec spec;
    core_default_spec(&spec, 0x100000);
    size_t len;
    uint8_t *f = core_build(&spec, &len, NULL);
    FILE *o = fopen(argv[1], "wb");
    if (!f || !o || fwrite(f, 1, len, o) != len || fclose(o) != 0) {
        fprintf(stderr, "make_test_core: cannot write %s\n", argv[1]);
        return 1;
    }
    free(f);
    return 0;
}
