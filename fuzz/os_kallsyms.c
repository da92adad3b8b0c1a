/*
 * fuzz/os_kallsyms.c — the kallsyms finder/parser (src/os/linux/kallsyms.c)
 * on arbitrary bytes standing for a RAM window: every digit signature is
 * tried (at most 8), a parsed table must pass its invariant checker and
 * answer lookups. Seeds: tables built like scripts/kallsyms.c builds them.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "os/linux/kallsyms.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (8u << 20))
        return 0;
    /* An 8-aligned copy: the parser's alignment is the window's. */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    size_t sig = ksym_find_signature(buf, size, 0);
    for (int tries = 0; sig != (size_t)-1 && tries < 8; tries++) {
        ksym_table t;
        vmt_errbuf e = { 0 };
        if (ksym_parse(buf, size, sig, &t, &e) == VMT_OK) {
            char why[256];
            if (ksym_check(&t, why, sizeof why) != VMT_OK)
                abort();
            for (uint32_t i = 0; i < t.count; i++) {
                int64_t k = ksym_by_name(&t, ksym_name(&t, i));
                if (k < 0 || strcmp(ksym_name(&t, (uint32_t)k), ksym_name(&t, i)) != 0)
                    abort();
                if (ksym_by_addr(&t, t.addr[i]) < 0)
                    abort();
            }
            ksym_free(&t);
            break;
        }
        sig = ksym_find_signature(buf, size, sig + 1);
    }
    free(buf);
    return 0;
}
