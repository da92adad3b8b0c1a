/*
 * tests/os/make_fuzz_seeds.c — writes the seeds of fuzz/os_kallsyms and
 * fuzz/os_btf (run by hand: make_fuzz_seeds DIR; the output is committed
 * under fuzz/corpus/). Built, not run, by ctest.
 */
#include <bpf/btf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ksym_build.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make_fuzz_seeds DIR\n");
        return 2;
    }
    char path[512];
    static kb_sym syms[300];
    static char names[300][32];
    for (int i = 0; i < 300; i++) {
        snprintf(names[i], sizeof names[i], i % 7 ? "fn_%d" : "sys_read_%d", i);
        syms[i].name = names[i];
        syms[i].type = i < 3 ? 'A' : 'T';
        syms[i].addr = i < 3 ? 0x1000u * (unsigned)(i + 1) : 0xffffffff81000000ull + 16ull * (unsigned)i;
    }
    static uint8_t buf[1 << 16];
    size_t n = kb_build(buf, sizeof buf, 64, syms, 300, 0xffffffff81000000ull, NULL);
    snprintf(path, sizeof path, "%s/os_kallsyms/seed_6_1_layout", argv[1]);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, n + 64, f) != n + 64)
        return 1;
    fclose(f);

    struct btf *b = btf__new_empty();
    int t_int = btf__add_int(b, "int", 4, BTF_INT_SIGNED);
    int t_char = btf__add_int(b, "char", 1, BTF_INT_SIGNED);
    int t_long = btf__add_int(b, "long int", 8, BTF_INT_SIGNED);
    int t_u64 = btf__add_int(b, "long long unsigned int", 8, 0);
    int t_cc = btf__add_ptr(b, btf__add_const(b, t_char));
    int t_how = btf__add_struct(b, "open_how", 24);
    btf__add_field(b, "flags", t_u64, 0, 0);
    btf__add_field(b, "mode", t_u64, 64, 0);
    btf__add_field(b, "resolve", t_u64, 128, 0);
    int fp = btf__add_func_proto(b, t_long);
    btf__add_func_param(b, "dfd", t_int);
    btf__add_func_param(b, "filename", t_cc);
    btf__add_func_param(b, "how", btf__add_ptr(b, t_how));
    btf__add_func(b, "do_sys_openat2", BTF_FUNC_GLOBAL, fp);
    int t_enum = btf__add_enum(b, "pid_type", 4);
    btf__add_enum_value(b, "PIDTYPE_PID", 0);
    fp = btf__add_func_proto(b, t_int);
    btf__add_func_param(b, "type", t_enum);
    btf__add_func(b, "__task_pid_nr_ns", BTF_FUNC_GLOBAL, fp);
    uint32_t sz;
    const void *raw = btf__raw_data(b, &sz);
    snprintf(path, sizeof path, "%s/os_btf/seed_libbpf_writer", argv[1]);
    f = fopen(path, "wb");
    if (!f || fwrite(raw, 1, sz, f) != sz)
        return 1;
    fclose(f);
    btf__free(b);
    return 0;
}
