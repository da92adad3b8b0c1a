/*
 * tests/snapshot/test_snapshot_vmts.c — vmtrap's own snapshot file: a QEMU
 * core (with its reconstructions) and a mem driver's machine survive a save
 * and a load byte for byte (RAM, vCPU states, fixups, platform blob,
 * metadata, clock); every flipped byte and every truncation of a saved
 * file is refused with one clear line; a wrong version is named; a failed
 * save leaves no file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "core_builder.h"
#include "vmtrap/mem.h"
#include "vmtrap/snapshot.h"

static char *tmp_path(const char *tag)
{
    static char buf[4][128];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, 128, "/tmp/vmt_snap_%s_%d.vmts", tag, (int)getpid());
    return p;
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*len);
    assert_int_equal(fread(b, 1, *len, f), *len);
    fclose(f);
    return b;
}

static vmt_snapshot *open_path(const char *path)
{
    vmt_snapshot *s = NULL;
    char why[256] = "";
    if (vmt_snapshot_open(path, NULL, &s, why, sizeof why))
        fail_msg("open %s: %s", path, why);
    char w[256];
    assert_int_equal(vmt_snapshot_check(s, w, sizeof w), VMT_OK);
    return s;
}

static void assert_same_vcpu(const vmt_vcpu_state *a, const vmt_vcpu_state *b)
{
    assert_memory_equal(&a->regs, &b->regs, sizeof a->regs);
    assert_int_equal(a->known, b->known);
    assert_int_equal(a->reconstructed, b->reconstructed);
    assert_memory_equal(&a->tr, &b->tr, sizeof a->tr);
    assert_memory_equal(&a->cs, &b->cs, sizeof a->cs);
    assert_int_equal(a->lstar, b->lstar);
    assert_int_equal(a->apic_base, b->apic_base);
    assert_int_equal(a->tsc, b->tsc);
    assert_int_equal(a->halted, b->halted);
    assert_memory_equal(a->fpu.fxsave, b->fpu.fxsave, 512);
}

static void test_core_round_trip(void **state)
{
    (void)state;
    core_spec spec;
    core_default_spec(&spec, 0x180000);
    spec.nblocks = 3;
    spec.blocks[2] = (core_block){ 0x100000000ull, 0x13000 }; /* above 4 GiB, not a chunk multiple */
    spec.nvcpus = 2;
    core_default_vcpu(&spec.vcpu[1], 1);
    size_t len;
    core_layout lay;
    uint8_t *f = core_build(&spec, &len, &lay);
    memset(f + lay.data[0] + 0x40000, 0, 0x30000); /* all-zero chunks are not stored */
    vmt_snapshot *core = NULL;
    char why[256];
    assert_int_equal(vmt_snapshot_open_mem(f, len, NULL, &core, why, sizeof why), VMT_OK);
    /* a bare core cannot be saved as runnable: EFER unknown */
    const char *path = tmp_path("core");
    assert_int_equal(vmt_snapshot_save(core, NULL, path), VMT_E_INVAL);
    assert_non_null(strstr(vmt_snapshot_error(core), "EFER"));
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(vmt_snapshot_apply_sidecar(core, "{\"tsc_hz\":1000000000,\"vcpus\":[{\"lstar\":\"0xffffffff81a00080\"}]}"),
                     VMT_OK);
    assert_int_equal(vmt_snapshot_reconstruct(core, NULL, NULL), VMT_OK);
    const char blob[] = "platform-state: lapic timer 0xec pending, uart ier 5";
    vmt_snapshot_save_options so = { .platform = blob, .platform_len = sizeof blob,
                                     .metadata_json = "{\"os\":\"linux\",\"kernel\":\"6.1.0-56-amd64\"}" };
    assert_int_equal(vmt_snapshot_save(core, &so, path), VMT_OK);
    vmt_snapshot *s = open_path(path);
    assert_int_equal(vmt_snapshot_kind_of(s), VMT_SNAPSHOT_VMTS);
    /* memory map and every byte */
    size_t n, m;
    const vmt_ram_range *a = vmt_snapshot_ram_ranges(core, &n), *b = vmt_snapshot_ram_ranges(s, &m);
    assert_int_equal(n, m);
    assert_memory_equal(a, b, n * sizeof *a);
    for (size_t i = 0; i < n; i++) {
        const uint8_t *pa, *pb;
        assert_int_equal(vmt_snapshot_ram_ptr(core, a[i].start, a[i].size, &pa), VMT_OK);
        assert_int_equal(vmt_snapshot_ram_ptr(s, b[i].start, b[i].size, &pb), VMT_OK);
        assert_memory_equal(pa, pb, a[i].size);
    }
    /* vCPUs, fixups, platform, metadata, clock */
    assert_int_equal(vmt_snapshot_vcpu_count(s), 2);
    for (uint32_t i = 0; i < 2; i++)
        assert_same_vcpu(vmt_snapshot_vcpu(core, i), vmt_snapshot_vcpu(s, i));
    assert_true(vmt_snapshot_vcpu(s, 0)->regs.efer & 0x500); /* reconstructed LME|LMA, kept */
    assert_int_equal(vmt_snapshot_fixup_count(s), vmt_snapshot_fixup_count(core));
    for (size_t i = 0; i < vmt_snapshot_fixup_count(s); i++) {
        const vmt_snapshot_fixup *x = vmt_snapshot_fixup_at(core, i), *y = vmt_snapshot_fixup_at(s, i);
        assert_string_equal(x->field, y->field);
        assert_string_equal(x->how, y->how);
        assert_int_equal(x->value, y->value);
        assert_int_equal(x->vcpu, y->vcpu);
    }
    size_t plen;
    const void *p = vmt_snapshot_platform(s, &plen);
    assert_int_equal(plen, sizeof blob);
    assert_memory_equal(p, blob, sizeof blob);
    const char *meta = vmt_snapshot_metadata(s);
    assert_non_null(strstr(meta, "\"source\":\"qemu-core\""));
    assert_non_null(strstr(meta, "\"kernel\":\"6.1.0-56-amd64\""));
    assert_non_null(strstr(meta, "\"created\":\"20"));
    vmt_clock_config clk;
    vmt_snapshot_clock(s, &clk);
    assert_int_equal(clk.tsc_hz, 1000000000ull);
    /* compressed: far smaller than the RAM */
    size_t flen;
    free(slurp(path, &flen));
    assert_true(flen < 0x1d3000 / 2);
    vmt_snapshot_destroy(s);
    vmt_snapshot_destroy(core);
    unlink(path);
    free(f);
}

static vmt_driver *mem_machine(uint64_t frames)
{
    vmt_mem_config cfg = { .ram_frames = frames };
    vmt_driver *d = NULL;
    char why[256];
    assert_int_equal(vmt_mem_driver_create(&cfg, &d, why, sizeof why), VMT_OK);
    return d;
}

static void kernel_state(vmt_vcpu_state *v)
{
    vmt_vcpu_state_init(v);
    v->known = VMT_VS_REGS | VMT_VS_SEGMENTS | VMT_VS_SYSCALL | VMT_VS_TSC | VMT_VS_EVENTS;
    v->regs.rip = 0xffffffff81000100ull;
    v->regs.cr0 = 0x80050033;
    v->regs.cr3 = 0x5000;
    v->regs.cr4 = 0x6f0;
    v->regs.efer = 0xd01;
    v->regs.cs = v->cs.selector = 0x10;
    v->cs.attrib = 0xa09b;
    v->lstar = 0xffffffff81a00080ull;
    v->tsc = 777;
    v->halted = true;
}

/* Save a small mem machine: 40 frames (3 chunks, one all zero). */
static const char *save_small(void)
{
    vmt_driver *d = mem_machine(40);
    uint8_t page[4096];
    for (int g = 0; g < 16; g++) {
        memset(page, 0x10 + g, sizeof page);
        assert_int_equal(vmt_drv_write_phys(d, (uint64_t)g * 4096, page, sizeof page), VMT_OK);
    }
    memset(page, 0xab, sizeof page);
    assert_int_equal(vmt_drv_write_phys(d, 39 * 4096, page, sizeof page), VMT_OK);
    vmt_vcpu_state v;
    kernel_state(&v);
    assert_int_equal(vmt_drv_set_vcpu_state(d, 0, &v), VMT_OK);
    const char *path = tmp_path("small");
    char why[256];
    vmt_snapshot_save_options so = { .platform = "dev", .platform_len = 3,
                                     .clock = { .tsc_hz = 2600000000ull, .start_ns = 5000 } };
    assert_int_equal(vmt_snapshot_save_driver(d, &so, path, why, sizeof why), VMT_OK);
    vmt_driver_destroy(d);
    return path;
}

static void test_driver_round_trip(void **state)
{
    (void)state;
    const char *path = save_small();
    vmt_snapshot *s = open_path(path);
    assert_non_null(strstr(vmt_snapshot_metadata(s), "\"source\":\"mem\""));
    vmt_clock_config clk;
    vmt_snapshot_clock(s, &clk);
    assert_int_equal(clk.start_ns, 5000);
    vmt_driver *d = mem_machine(40);
    assert_int_equal(vmt_snapshot_apply(s, d), VMT_OK);
    uint8_t page[4096];
    for (int g = 0; g < 40; g++) {
        assert_int_equal(vmt_drv_read_phys(d, (uint64_t)g * 4096, page, sizeof page), VMT_OK);
        uint8_t want = g < 16 ? (uint8_t)(0x10 + g) : g == 39 ? 0xab : 0;
        assert_int_equal(page[0], want);
        assert_int_equal(page[4095], want);
    }
    vmt_vcpu_state got, want;
    kernel_state(&want);
    assert_int_equal(vmt_drv_get_vcpu_state(d, 0, &got), VMT_OK);
    assert_int_equal(got.regs.rip, want.regs.rip);
    assert_int_equal(got.lstar, want.lstar);
    assert_int_equal(got.tsc, 777);
    assert_true(got.halted);
    vmt_driver_destroy(d);
    vmt_snapshot_destroy(s);
    unlink(path);
}

/* A machine resumed from a core and saved again keeps the core's fixups. */
static void test_driver_save_keeps_fixups(void **state)
{
    (void)state;
    core_spec spec;
    core_default_spec(&spec, 0x10000);
    spec.nblocks = 1;
    size_t len;
    uint8_t *f = core_build(&spec, &len, NULL);
    vmt_snapshot *core = NULL;
    char why[256];
    assert_int_equal(vmt_snapshot_open_mem(f, len, NULL, &core, why, sizeof why), VMT_OK);
    assert_int_equal(vmt_snapshot_reconstruct(core, NULL, NULL), VMT_OK);
    vmt_driver *d = mem_machine(16);
    assert_int_equal(vmt_snapshot_apply(core, d), VMT_OK);
    const char *path = tmp_path("fixups");
    vmt_snapshot_save_options so = { .fixups_from = core };
    assert_int_equal(vmt_snapshot_save_driver(d, &so, path, why, sizeof why), VMT_OK);
    vmt_snapshot *s = open_path(path);
    assert_int_equal(vmt_snapshot_fixup_count(s), vmt_snapshot_fixup_count(core));
    assert_string_equal(vmt_snapshot_fixup_at(s, 0)->how, vmt_snapshot_fixup_at(core, 0)->how);
    assert_int_equal(vmt_snapshot_vcpu(s, 0)->regs.efer, vmt_snapshot_vcpu(core, 0)->regs.efer);
    vmt_snapshot_destroy(s);
    unlink(path);
    vmt_driver_destroy(d);
    vmt_snapshot_destroy(core);
    free(f);
}

static void test_every_flipped_byte_and_cut_is_refused(void **state)
{
    (void)state;
    const char *path = save_small();
    size_t len;
    uint8_t *f = slurp(path, &len);
    vmt_snapshot *s = NULL;
    char why[256];
    assert_int_equal(vmt_snapshot_open_mem(f, len, NULL, &s, why, sizeof why), VMT_OK);
    vmt_snapshot_destroy(s);
    for (size_t i = 0; i < len; i++) {
        f[i] ^= 0xff;
        s = (vmt_snapshot *)1;
        why[0] = 0;
        vmt_status st = vmt_snapshot_open_mem(f, len, NULL, &s, why, sizeof why);
        if (st != VMT_E_FORMAT || s)
            fail_msg("byte %zu of %zu flipped: status %d, handle %p", i, len, st, (void *)s);
        if (strlen(why) < 20 || strchr(why, '\n'))
            fail_msg("byte %zu: message '%s'", i, why);
        f[i] ^= 0xff;
    }
    for (size_t cut = 0; cut < len; cut += (cut < 4096 ? 1 : 97)) {
        s = (vmt_snapshot *)1;
        if (vmt_snapshot_open_mem(f, cut, NULL, &s, why, sizeof why) != VMT_E_FORMAT || s)
            fail_msg("cut at %zu accepted", cut);
    }
    /* a future version is named as such (header checksum made valid) */
    f[8] = 2;
    uint32_t c = (uint32_t)crc32(crc32(0, Z_NULL, 0), f, 56);
    core_put32(f + 56, c);
    assert_int_equal(vmt_snapshot_open_mem(f, len, NULL, &s, why, sizeof why), VMT_E_FORMAT);
    assert_non_null(strstr(why, "version 2"));
    f[8] = 1;
    /* bytes outside every section, even with a consistent header, are refused */
    uint8_t *g = malloc(len + 16);
    memcpy(g, f, len);
    memset(g + len, 0, 16);
    core_put64(g + 32, len + 16);
    core_put32(g + 56, (uint32_t)crc32(crc32(0, Z_NULL, 0), g, 56));
    assert_int_equal(vmt_snapshot_open_mem(g, len + 16, NULL, &s, why, sizeof why), VMT_E_FORMAT);
    assert_non_null(strstr(why, "in no section"));
    free(g);
    free(f);
    unlink(path);
}

static void test_failed_save_leaves_nothing(void **state)
{
    (void)state;
    vmt_driver *d = mem_machine(8);
    char why[256];
    vmt_status st = vmt_snapshot_save_driver(d, NULL, "/nonexistent-dir/x.vmts", why, sizeof why);
    assert_int_equal(st, VMT_E_IO);
    assert_non_null(strstr(why, "/nonexistent-dir/x.vmts.tmp"));
    const char *path = tmp_path("fail");
    vmt_snapshot_save_options so = { .metadata_json = "[1,2]" };
    assert_int_equal(vmt_snapshot_save_driver(d, &so, path, why, sizeof why), VMT_E_INVAL);
    assert_non_null(strstr(why, "JSON object"));
    assert_int_equal(access(path, F_OK), -1);
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_equal(access(tmp, F_OK), -1);
    /* a failing RAM read midway */
    vmt_mem_fail_nth(d, VMT_MEM_OP_READ_PHYS, 1);
    assert_int_equal(vmt_snapshot_save_driver(d, NULL, path, why, sizeof why), VMT_E_INJECTED);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(access(tmp, F_OK), -1);
    vmt_driver_destroy(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_core_round_trip),
        cmocka_unit_test(test_driver_round_trip),
        cmocka_unit_test(test_driver_save_keeps_fixups),
        cmocka_unit_test(test_every_flipped_byte_and_cut_is_refused),
        cmocka_unit_test(test_failed_save_leaves_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
