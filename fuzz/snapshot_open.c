/*
 * fuzz/snapshot_open.c — vmt_snapshot_open_mem on arbitrary bytes: QEMU ELF
 * cores and vmtrap snapshot files (the first bytes choose the loader). A
 * loaded snapshot must pass its invariant checker and every RAM byte it
 * claims must be readable.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmtrap/snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size ? size : 1); /* exact size: ASan sees reads past the end */
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    vmt_snapshot *s = NULL;
    char why[256];
    vmt_snapshot_options opts = { .quiet = true };
    if (vmt_snapshot_open_mem(copy, size, &opts, &s, why, sizeof why) == VMT_OK) {
        if (vmt_snapshot_check(s, why, sizeof why) != VMT_OK)
            abort();
        for (size_t i = 0; i < vmt_snapshot_ram_count(s); i++) {
            vmt_snapshot_ram r;
            vmt_snapshot_ram_at(s, i, &r);
            uint8_t b[64];
            size_t n = r.size < sizeof b ? (size_t)r.size : sizeof b;
            if (vmt_snapshot_read(s, r.gpa, b, n) || vmt_snapshot_read(s, r.gpa + r.size - n, b, n))
                abort();
        }
        vmt_snapshot_apply_sidecar(s, "{\"vcpus\":[{\"efer\":\"0xd01\"}]}");
        vmt_snapshot_reconstruct(s, NULL, NULL);
        vmt_snapshot_destroy(s);
    }
    free(copy);
    return 0;
}
