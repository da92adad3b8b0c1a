/*
 * fuzz/os_btf.c — BTF read from guest RAM (src/os/linux/btf.c): magic and
 * size checks, libbpf's parser, then the prototype builder (proto_btf.c)
 * for functions the kernel hooks use and the decoder on them with a reader
 * that fails half of the time. Seeds: BTF written by libbpf's own writer.
 */
#include <bpf/btf.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "os/linux/os_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static vmt_status flaky_read(void *ctx, uint64_t va, void *buf, size_t len, size_t *done)
{
    (void)ctx;
    if (va & 1) {
        *done = 0;
        return VMT_E_NOT_PRESENT;
    }
    memset(buf, 'a', len);
    *done = len;
    return VMT_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (4u << 20))
        return 0;
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    struct btf *btf;
    char note[160];
    if (os_btf_parse(copy, size, &btf, note, sizeof note) == 0) {
        static const char *const fns[] = { "do_sys_openat2", "ksys_write", "kernel_clone", "do_exit",
                                           "__task_pid_nr_ns" };
        vmt_proto p;
        vmt_regs r;
        memset(&r, 0x11, sizeof r);
        vmt_vreader rd = { flaky_read, NULL };
        for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
            if (os_btf_proto(btf, fns[i], &p) != 0)
                continue;
            vmt_value v[VMT_PROTO_MAX_PARAMS], ret;
            vmt_proto_decode_args(&p, &r, &rd, v);
            vmt_proto_decode_ret(&p, &r, &rd, &ret);
        }
        btf__free(btf);
    }
    free(copy);
    return 0;
}
