/*
 * tests/snapshot/test_snapshot_sidecar.c — what a bare core lacks: the
 * JSON sidecar (all or nothing, unknown fields named) and the
 * reconstruction without OS symbols (EFER from the paging mode and the
 * page tables' XD bits, APIC base, TSC, XCR0, PAT), every value listed as a
 * fixup with its reason; the OS-layer hook.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core_builder.h"
#include "vmtrap/snapshot.h"

typedef struct fx {
    core_spec spec;
    core_layout lay;
    uint8_t *f;
    size_t len;
    vmt_snapshot *s;
} fx;

/* Page tables at CR3 0x2000: PML4[0] -> PDPT 0x3000 -> PD 0x4000 whose
 * entry 0 maps 2 MiB, XD set when xd. */
static void put_tables(fx *x, int xd)
{
    uint8_t *ram = x->f + x->lay.data[0];
    memset(ram + 0x2000, 0, 0x3000);
    core_put64(ram + 0x2000, 0x3000 | 3);
    core_put64(ram + 0x3000, 0x4000 | 3);
    core_put64(ram + 0x4000, 0x200000ull | 0x83 | (xd ? 1ull << 63 : 0));
}

static vmt_snapshot *open_fx(fx *x)
{
    char why[256] = "";
    vmt_snapshot *s = NULL;
    if (vmt_snapshot_open_mem(x->f, x->len, NULL, &s, why, sizeof why))
        fail_msg("open: %s", why);
    return s;
}

static int setup(void **state)
{
    fx *x = calloc(1, sizeof *x);
    core_default_spec(&x->spec, 0x100000);
    x->spec.nvcpus = 2;
    core_default_vcpu(&x->spec.vcpu[1], 1);
    x->spec.vcpu[1].cr3 = 0x2000;
    x->f = core_build(&x->spec, &x->len, &x->lay);
    put_tables(x, 1);
    x->s = open_fx(x);
    *state = x;
    return 0;
}

static int teardown(void **state)
{
    fx *x = *state;
    vmt_snapshot_destroy(x->s);
    free(x->f);
    free(x);
    return 0;
}

static const vmt_snapshot_fixup *find_fixup(vmt_snapshot *s, uint32_t vcpu, const char *field)
{
    for (size_t i = 0; i < vmt_snapshot_fixup_count(s); i++) {
        const vmt_snapshot_fixup *f = vmt_snapshot_fixup_at(s, i);
        if (f->vcpu == vcpu && strcmp(f->field, field) == 0)
            return f;
    }
    return NULL;
}

static void test_sidecar_fills_what_the_core_lacks(void **state)
{
    fx *x = *state;
    char fxsave[1025];
    for (int i = 0; i < 512; i++)
        snprintf(fxsave + 2 * i, 3, "%02x", (unsigned)(i * 3) & 0xff);
    char doc[4096];
    snprintf(doc, sizeof doc,
             "{ \"tsc_hz\": 2600000000, \"start_ns\": \"0x1000\",\n"
             "  \"vcpus\": [ { \"efer\": \"0xd01\", \"star\": \"0x23001000000000\", \"lstar\": \"0xffffffff81a00080\",\n"
             "    \"cstar\": \"0xffffffff81a01680\", \"fmask\": 18176, \"sysenter_cs\": 16, \"pat\": \"0x407050600070106\",\n"
             "    \"apic_base\": \"0xfee00900\", \"tsc_deadline\": 0, \"tsc\": 123456789, \"xcr0\": 1, \"halted\": true,\n"
             "    \"fxsave\": \"%s\" } ] }",
             fxsave);
    assert_int_equal(vmt_snapshot_apply_sidecar(x->s, doc), VMT_OK);
    const vmt_vcpu_state *v = vmt_snapshot_vcpu(x->s, 0);
    assert_int_equal(v->regs.efer, 0xd01);
    assert_int_equal(v->star, 0x23001000000000ull);
    assert_int_equal(v->lstar, 0xffffffff81a00080ull);
    assert_int_equal(v->cstar, 0xffffffff81a01680ull);
    assert_int_equal(v->fmask, 18176);
    assert_int_equal(v->sysenter_cs, 16);
    assert_int_equal(v->pat, 0x407050600070106ull);
    assert_int_equal(v->apic_base, 0xfee00900ull);
    assert_int_equal(v->tsc, 123456789);
    assert_true(v->halted);
    assert_int_equal(v->fpu.fxsave[5], 15);
    uint32_t groups = VMT_VS_REGS | VMT_VS_SEGMENTS | VMT_VS_SYSCALL | VMT_VS_SYSENTER | VMT_VS_MSRS |
                      VMT_VS_APIC_BASE | VMT_VS_TSC | VMT_VS_FPU | VMT_VS_EVENTS;
    assert_int_equal(v->known, groups);
    assert_int_equal(v->reconstructed, 0); /* the user gave these: not reconstructed */
    const vmt_snapshot_fixup *f = find_fixup(x->s, 0, "lstar");
    assert_non_null(f);
    assert_string_equal(f->how, "sidecar");
    vmt_clock_config clk;
    vmt_snapshot_clock(x->s, &clk);
    assert_int_equal(clk.tsc_hz, 2600000000ull);
    assert_int_equal(clk.start_ns, 0x1000);
    /* vCPU 1 untouched */
    assert_int_equal(vmt_snapshot_vcpu(x->s, 1)->known, VMT_VS_REGS | VMT_VS_SEGMENTS);
    /* reconstruction leaves vCPU 0 alone (all known) and fills vCPU 1 */
    size_t before = vmt_snapshot_fixup_count(x->s);
    assert_int_equal(vmt_snapshot_reconstruct(x->s, NULL, NULL), VMT_OK);
    assert_int_equal(v->regs.efer, 0xd01);
    const vmt_snapshot_fixup *ab = find_fixup(x->s, 0, "apic_base");
    assert_string_equal(ab->how, "sidecar"); /* only the sidecar's, no reconstruction on top */
    assert_non_null(find_fixup(x->s, 1, "efer"));
    assert_true(vmt_snapshot_fixup_count(x->s) > before);
}

static void expect_refused(fx *x, const char *doc, const char *word)
{
    vmt_vcpu_state before = *vmt_snapshot_vcpu(x->s, 0);
    size_t fixups = vmt_snapshot_fixup_count(x->s);
    vmt_status st = vmt_snapshot_apply_sidecar(x->s, doc);
    if (st != VMT_E_FORMAT)
        fail_msg("sidecar %s: status %d", doc, st);
    if (!strstr(vmt_snapshot_error(x->s), word))
        fail_msg("message '%s' lacks '%s'", vmt_snapshot_error(x->s), word);
    assert_memory_equal(&before, vmt_snapshot_vcpu(x->s, 0), sizeof before);
    assert_int_equal(vmt_snapshot_fixup_count(x->s), fixups);
}

static void test_sidecar_refusals_change_nothing(void **state)
{
    fx *x = *state;
    /* the first member is valid: it must not stick when a later one fails */
    expect_refused(x, "{\"vcpus\":[{\"lstar\":1,\"lsatr\":2}]}", "vcpus[0].lsatr");
    expect_refused(x, "{\"vcpus\":[{\"efer\":\"0xd01\"}],\"tsc_hzz\":1}", "tsc_hzz");
    expect_refused(x, "{\"vcpus\":[{\"efer\":-1}]}", "negative");
    expect_refused(x, "{\"vcpus\":[{\"efer\":\"0xzz\"}]}", "vcpus[0].efer");
    expect_refused(x, "{\"vcpus\":[{\"efer\":[1]}]}", "vcpus[0].efer");
    expect_refused(x, "{\"vcpus\":[{},{},{}]}", "3 vcpus");
    expect_refused(x, "{\"vcpus\":[{\"fxsave\":\"00\"}]}", "1024 hex");
    expect_refused(x, "{\"vcpus\":[{\"halted\":1}]}", "true or false");
    expect_refused(x, "{\"vcpus\":{}}", "array");
    expect_refused(x, "{\"vcpus\":[{\"efer\":1}]", "JSON");
    expect_refused(x, "{} {}", "after");
    expect_refused(x, "[1]", "not a JSON object");
    /* a value too wide for its register */
    expect_refused(x, "{\"vcpus\":[{},{\"fcw\":65536}]}", "vcpus[1].fcw");
    assert_int_equal(vmt_snapshot_apply_sidecar_file(x->s, "/nonexistent/sidecar.json"), VMT_E_IO);
}

static void test_reconstruct_efer_from_page_tables(void **state)
{
    fx *x = *state;
    assert_int_equal(vmt_snapshot_reconstruct(x->s, NULL, NULL), VMT_OK);
    const vmt_vcpu_state *v0 = vmt_snapshot_vcpu(x->s, 0), *v1 = vmt_snapshot_vcpu(x->s, 1);
    assert_int_equal(v0->regs.efer, 0xd01); /* SCE|LME|LMA|NXE: the PD entry has XD */
    assert_int_equal(v1->regs.efer, 0xd01);
    assert_true(v0->reconstructed & VMT_VS_REGS);
    const vmt_snapshot_fixup *f = find_fixup(x->s, 0, "efer");
    assert_non_null(f);
    assert_non_null(strstr(f->how, "XD"));
    assert_int_equal(v0->apic_base, 0xfee00900ull);
    assert_int_equal(v1->apic_base, 0xfee00800ull); /* not the BSP */
    assert_true(v0->known & VMT_VS_APIC_BASE);
    assert_true(v0->reconstructed & VMT_VS_APIC_BASE);
    assert_non_null(find_fixup(x->s, 1, "tsc"));
    assert_non_null(find_fixup(x->s, 0, "pat"));
    assert_non_null(find_fixup(x->s, 0, "xcr0")); /* CR4 0x6f0: no OSXSAVE */
    /* every fixup says why */
    for (size_t i = 0; i < vmt_snapshot_fixup_count(x->s); i++)
        assert_true(strlen(vmt_snapshot_fixup_at(x->s, i)->how) > 10);
    char why[256];
    assert_int_equal(vmt_snapshot_check(x->s, why, sizeof why), VMT_OK);
}

static void test_reconstruct_without_xd_has_no_nxe(void **state)
{
    fx *x = *state;
    vmt_snapshot_destroy(x->s);
    put_tables(x, 0);
    x->s = open_fx(x);
    assert_int_equal(vmt_snapshot_reconstruct(x->s, NULL, NULL), VMT_OK);
    assert_int_equal(vmt_snapshot_vcpu(x->s, 0)->regs.efer, 0x501);
    assert_non_null(strstr(find_fixup(x->s, 0, "efer")->how, "no XD"));
}

static vmt_status os_layer(void *ctx, vmt_snapshot *s)
{
    int *calls = ctx;
    (*calls)++;
    uint64_t entry;
    /* an OS layer reads guest memory and sets what it found */
    if (vmt_snapshot_read(s, 0x4000, &entry, sizeof entry))
        return VMT_E_NOTFOUND;
    if (vmt_snapshot_fixup_set(s, 0, "lstarr", 1, "typo") != VMT_E_NOTFOUND)
        return VMT_E_INTERNAL;
    if (vmt_snapshot_fixup_set(s, 0, "tsc", 0x123456789ull, "timekeeper: the kernel's last TSC read"))
        return VMT_E_INTERNAL;
    return vmt_snapshot_fixup_set(s, 0, "lstar", 0xffffffff81a00080ull, "kallsyms: entry_SYSCALL_64");
}

static void test_os_layer_hook(void **state)
{
    fx *x = *state;
    int calls = 0;
    assert_int_equal(vmt_snapshot_reconstruct(x->s, os_layer, &calls), VMT_OK);
    assert_int_equal(calls, 1);
    const vmt_vcpu_state *v = vmt_snapshot_vcpu(x->s, 0);
    assert_int_equal(v->lstar, 0xffffffff81a00080ull);
    assert_true(v->known & VMT_VS_SYSCALL);
    assert_true(v->reconstructed & VMT_VS_SYSCALL);
    assert_string_equal(find_fixup(x->s, 0, "lstar")->how, "kallsyms: entry_SYSCALL_64");
    /* the OS layer went first: its TSC stands, no default on top */
    assert_int_equal(v->tsc, 0x123456789ull);
    size_t tsc_fixups = 0;
    for (size_t i = 0; i < vmt_snapshot_fixup_count(x->s); i++)
        if (vmt_snapshot_fixup_at(x->s, i)->vcpu == 0 && !strcmp(vmt_snapshot_fixup_at(x->s, i)->field, "tsc"))
            tsc_fixups++;
    assert_int_equal(tsc_fixups, 1);
    assert_non_null(strstr(find_fixup(x->s, 1, "tsc")->how, "stand still")); /* vCPU 1: no OS value */
    assert_int_equal(vmt_snapshot_fixup_set(x->s, 7, "lstar", 1, "x"), VMT_E_INVAL);
}

/* `info registers -a` text of two vCPUs (QEMU 7.2 layout). */
static void qemu_text(char *t, size_t n, int drop_xmm5, int second_cpu_number)
{
    size_t used = 0;
    for (int c = 0; c < 2; c++) {
        used += (size_t)snprintf(t + used, n - used,
            "CPU#%d\nRAX=0000000000000001 RBX=0000000000000000\n"
            "RIP=ffffffff81a592eb RFL=00000246 [---Z-P-] CPL=0 II=%d A20=1 SMM=0 HLT=%d\n"
            "CR0=80050033 CR2=00000000005794a9 CR3=0000000006320000 CR4=000006f0\n"
            "DR0=0000000000000000 DR1=0000000000000000 DR2=0000000000000000 DR3=0000000000000000 \n"
            "DR6=00000000ffff0ff0 DR7=0000000000000400\nEFER=0000000000000d01\n"
            "FCW=037f FSW=0000 [ST=0] FTW=00 MXCSR=00001f80\n",
            c == 0 ? 0 : second_cpu_number, c, c);
        for (int i = 0; i < 8; i += 2)
            used += (size_t)snprintf(t + used, n - used, "FPR%d=%016llx %04x FPR%d=0000000000000000 0000\n", i,
                                     i == 0 ? 0x8000000000000000ull : 0ull, i == 0 ? 0x3fffu : 0u, i + 1);
        for (int i = 0; i < 16; i += 2) {
            if (!(drop_xmm5 && c == 1 && i == 4))
                used += (size_t)snprintf(t + used, n - used, "XMM%02d=002f3d454d4f48%02x 323d4c564c4853%02x ", i, i, c);
            used += (size_t)snprintf(t + used, n - used, "XMM%02d=0000000000000000 3ff0000000000000\n", i + 1);
        }
    }
}

static void test_sidecar_from_qemu_registers(void **state)
{
    fx *x = *state;
    static char text[16384];
    qemu_text(text, sizeof text, 0, 1);
    char *json = NULL, why[256];
    assert_int_equal(vmt_snapshot_sidecar_from_qemu_registers(text, &json, why, sizeof why), VMT_OK);
    assert_int_equal(vmt_snapshot_apply_sidecar(x->s, json), VMT_OK);
    free(json);
    const vmt_vcpu_state *v0 = vmt_snapshot_vcpu(x->s, 0), *v1 = vmt_snapshot_vcpu(x->s, 1);
    assert_int_equal(v0->regs.efer, 0xd01);
    assert_int_equal(v0->regs.dr6, 0xffff0ff0);
    assert_int_equal(v0->regs.dr7, 0x400);
    assert_false(v0->halted);
    assert_true(v1->halted);
    assert_int_equal(v1->interrupt_shadow, 1);
    assert_true(v0->known & VMT_VS_FPU);
    assert_true(v0->known & VMT_VS_EVENTS);
    const vmt_snapshot_fixup *f = find_fixup(x->s, 1, "fxsave");
    assert_non_null(f);
    assert_string_equal(f->how, "sidecar (QEMU info registers)");
    const uint8_t *fxs = v1->fpu.fxsave;
    assert_int_equal(fxs[0] | fxs[1] << 8, 0x37f);                         /* FCW */
    assert_int_equal(fxs[24] | fxs[25] << 8, 0x1f80);                      /* MXCSR */
    assert_int_equal(fxs[32 + 7], 0x80);                                   /* ST0 mantissa top byte */
    assert_int_equal(fxs[40] | fxs[41] << 8, 0x3fff);                      /* ST0 exponent */
    /* XMM2 = "\0SHLVL=\x01" ..: low qword first in memory, then high */
    static const uint8_t xmm2[16] = { 0x01, 0x53, 0x48, 0x4c, 0x56, 0x4c, 0x3d, 0x32,
                                      0x02, 0x48, 0x4f, 0x4d, 0x45, 0x3d, 0x2f, 0x00 };
    assert_memory_equal(fxs + 160 + 32, xmm2, 16);
    assert_int_equal(fxs[160 + 16 + 7], 0x3f);                             /* XMM1 low = 1.0 */
    assert_int_equal(fxs[160 + 16 + 6], 0xf0);
    /* missing or misnumbered parts are named; nothing is produced */
    qemu_text(text, sizeof text, 1, 1);
    assert_int_equal(vmt_snapshot_sidecar_from_qemu_registers(text, &json, why, sizeof why), VMT_E_FORMAT);
    assert_null(json);
    assert_non_null(strstr(why, "CPU#1 has no readable XMM04"));
    qemu_text(text, sizeof text, 0, 3);
    assert_int_equal(vmt_snapshot_sidecar_from_qemu_registers(text, &json, why, sizeof why), VMT_E_FORMAT);
    assert_non_null(strstr(why, "CPU#3 where CPU#1"));
    assert_int_equal(vmt_snapshot_sidecar_from_qemu_registers("(qemu) info cpus", &json, why, sizeof why),
                     VMT_E_FORMAT);
    /* a value of the wrong width */
    qemu_text(text, sizeof text, 0, 1);
    char *fcw = strstr(text, "FCW=037f");
    fcw[4] = 'x';
    assert_int_equal(vmt_snapshot_sidecar_from_qemu_registers(text, &json, why, sizeof why), VMT_E_FORMAT);
    assert_non_null(strstr(why, "CPU#0 has no readable FCW"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sidecar_fills_what_the_core_lacks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sidecar_refusals_change_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconstruct_efer_from_page_tables, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconstruct_without_xd_has_no_nxe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_os_layer_hook, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sidecar_from_qemu_registers, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
