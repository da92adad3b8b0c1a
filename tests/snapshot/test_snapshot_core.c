/*
 * tests/snapshot/test_snapshot_core.c — the QEMU dump-guest-memory ELF core
 * loader: memory map (several blocks, holes, above 4 GiB, the BIOS ROM
 * block), vCPU state from the notes, and every corruption the loader must
 * refuse with VMT_E_FORMAT, a one-line message and no handle.
 *
 * Cores are built in the test (core_builder.c) and corrupted field by field.
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
#include "vmtrap/mem.h"
#include "vmtrap/snapshot.h"

static vmt_snapshot *open_ok(const uint8_t *f, size_t len)
{
    vmt_snapshot *s = NULL;
    char why[256] = "";
    vmt_status st = vmt_snapshot_open_mem(f, len, NULL, &s, why, sizeof why);
    if (st)
        fail_msg("open failed: %s", why);
    assert_non_null(s);
    char w[256];
    assert_int_equal(vmt_snapshot_check(s, w, sizeof w), VMT_OK);
    return s;
}

/* Open must fail with FORMAT, no handle, a one-line message containing `word`. */
static void expect_format(const uint8_t *f, size_t len, const char *word)
{
    vmt_snapshot *s = (vmt_snapshot *)1;
    char why[256] = "";
    vmt_status st = vmt_snapshot_open_mem(f, len, NULL, &s, why, sizeof why);
    if (st != VMT_E_FORMAT)
        fail_msg("expected VMT_E_FORMAT mentioning '%s', got %d (%s)", word, st, why);
    assert_null(s);
    assert_null(strchr(why, '\n'));
    if (!strstr(why, word))
        fail_msg("message '%s' does not mention '%s'", why, word);
}

static void test_pc_layout_ram_and_rom(void **state)
{
    (void)state;
    core_spec spec;
    core_default_spec(&spec, 0x200000);
    size_t len;
    uint8_t *f = core_build(&spec, &len, NULL);
    vmt_snapshot *s = open_ok(f, len);
    assert_int_equal(vmt_snapshot_kind_of(s), VMT_SNAPSHOT_QEMU_CORE);
    assert_int_equal(vmt_snapshot_ram_count(s), 2);
    vmt_snapshot_ram r;
    assert_int_equal(vmt_snapshot_ram_at(s, 0, &r), VMT_OK);
    assert_int_equal(r.gpa, 0);
    assert_int_equal(r.size, 0x200000);
    assert_int_equal(vmt_snapshot_ram_at(s, 1, &r), VMT_OK);
    assert_int_equal(r.gpa, 0xfffc0000ull);
    assert_int_equal(r.size, 0x40000);
    assert_int_equal(vmt_snapshot_ram_at(s, 2, &r), VMT_E_RANGE);
    /* bytes come from the file, checked at both ends of each block */
    uint8_t buf[64];
    uint64_t probes[] = { 0, 0x1ffff0, 0xfffc0000ull, 0xffffffc0ull };
    for (size_t i = 0; i < 4; i++) {
        size_t n = probes[i] == 0x1ffff0 ? 16 : sizeof buf;
        assert_int_equal(vmt_snapshot_read(s, probes[i], buf, n), VMT_OK);
        for (size_t k = 0; k < n; k++)
            assert_int_equal(buf[k], core_byte_at(probes[i] + k));
    }
    /* zero copies: the pointer is inside the file */
    const uint8_t *p;
    assert_int_equal(vmt_snapshot_ram_ptr(s, 0x1000, 0x1000, &p), VMT_OK);
    assert_true(p >= f && p < f + len);
    /* a hole is not RAM: nothing is read */
    memset(buf, 0xee, sizeof buf);
    assert_int_equal(vmt_snapshot_read(s, 0x1ffff0, buf, 32), VMT_E_RANGE);
    assert_int_equal(buf[0], 0xee);
    assert_non_null(strstr(vmt_snapshot_error(s), "not RAM"));
    assert_int_equal(vmt_snapshot_ram_ptr(s, 0x300000, 1, &p), VMT_E_RANGE);
    assert_int_equal(vmt_snapshot_read(s, 0xfffffffffffffff0ull, buf, 32), VMT_E_RANGE); /* wraps */
    assert_int_equal(vmt_snapshot_ram_ptr(s, 0x1000, UINT64_MAX, &p), VMT_E_RANGE);
    assert_non_null(strstr(vmt_snapshot_metadata(s), "qemu-core"));
    vmt_snapshot_destroy(s);
    free(f);
}

static void test_vcpu_state_from_notes(void **state)
{
    (void)state;
    core_spec spec;
    core_default_spec(&spec, 0x100000);
    spec.vcpu[0].kernel_gs_base = 0xffff88800f640000ull;
    size_t len;
    uint8_t *f = core_build(&spec, &len, NULL);
    vmt_snapshot *s = open_ok(f, len);
    assert_int_equal(vmt_snapshot_vcpu_count(s), 1);
    assert_null(vmt_snapshot_vcpu(s, 1));
    const vmt_vcpu_state *v = vmt_snapshot_vcpu(s, 0);
    assert_int_equal(v->known, VMT_VS_REGS | VMT_VS_SEGMENTS);
    assert_int_equal(v->reconstructed, 0);
    assert_int_equal(v->regs.rip, spec.vcpu[0].rip);
    assert_int_equal(v->regs.rsp, spec.vcpu[0].rsp);
    assert_int_equal(v->regs.rax, spec.vcpu[0].rax);
    assert_int_equal(v->regs.r15, spec.vcpu[0].r15);
    assert_int_equal(v->regs.rflags, 0x246);
    assert_int_equal(v->regs.cr0, 0x80050033);
    assert_int_equal(v->regs.cr2, spec.vcpu[0].cr2);
    assert_int_equal(v->regs.cr3, 0x2000);
    assert_int_equal(v->regs.cr4, 0x6f0);
    assert_int_equal(v->regs.efer, 0); /* not in a core */
    assert_int_equal(v->regs.kernel_gs_base, 0xffff88800f640000ull);
    assert_int_equal(v->regs.cs, 0x10);
    assert_int_equal(v->cs.selector, 0x10);
    assert_int_equal(v->cs.attrib, 0xa09b); /* P DPL0 code, L, G */
    assert_true(v->cs.attrib & VMT_SEG_ATTR_L);
    assert_int_equal(v->ss.attrib, 0xc093);
    assert_int_equal(v->regs.ss, 0x18);
    assert_int_equal(v->tr.selector, 0x40);
    assert_int_equal(v->tr.base, 0xfffffe0000003000ull);
    assert_int_equal(v->tr.limit, 0x4087);
    assert_int_equal(v->tr.attrib, 0x8b);
    assert_int_equal(v->ldtr.attrib, 0x82);
    assert_int_equal(v->regs.gs_base, 0xffff88800f600000ull);
    assert_int_equal(v->gs.base, v->regs.gs_base);
    assert_int_equal(v->regs.gdtr_base, 0xfffffe0000001000ull);
    assert_int_equal(v->regs.gdtr_limit, 0x7f);
    assert_int_equal(v->regs.idtr_base, 0xfffffe0000000000ull);
    assert_int_equal(v->regs.idtr_limit, 0xfff);
    /* a bare core cannot be applied before EFER is known */
    vmt_machine_config cfg;
    memset(&cfg, 0, sizeof cfg);
    vmt_snapshot_machine_config(s, &cfg);
    assert_int_equal(cfg.ram_range_count, 2);
    assert_int_equal(cfg.ram_size, 0x100000000ull);
    assert_int_equal(cfg.vcpus, 1);
    assert_ptr_equal(cfg.vcpu_state, v);
    vmt_snapshot_destroy(s);
    free(f);
}

static void test_blocks_holes_above_4g_any_order(void **state)
{
    (void)state;
    core_spec spec;
    core_default_spec(&spec, 0xa0000);
    spec.nblocks = 4;
    spec.blocks[0] = (core_block){ 0x100000000ull, 0x20000 }; /* above 4 GiB, first in the file */
    spec.blocks[1] = (core_block){ 0, 0xa0000 };
    spec.blocks[2] = (core_block){ 0x100000, 0x300000 };
    spec.blocks[3] = (core_block){ 0xfffc0000ull, 0x40000 };
    spec.nvcpus = 2;
    core_default_vcpu(&spec.vcpu[1], 1);
    spec.qemu_size = 432;
    size_t len;
    uint8_t *f = core_build(&spec, &len, NULL);
    vmt_snapshot *s = open_ok(f, len);
    size_t n;
    const vmt_ram_range *rr = vmt_snapshot_ram_ranges(s, &n);
    assert_int_equal(n, 4);
    uint64_t want[4][2] = { { 0, 0xa0000 }, { 0x100000, 0x300000 }, { 0xfffc0000ull, 0x40000 },
                            { 0x100000000ull, 0x20000 } };
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(rr[i].start, want[i][0]);
        assert_int_equal(rr[i].size, want[i][1]);
    }
    uint8_t b[8];
    assert_int_equal(vmt_snapshot_read(s, 0x10001fff8ull, b, 8), VMT_OK);
    for (int k = 0; k < 8; k++)
        assert_int_equal(b[k], core_byte_at(0x10001fff8ull + k));
    assert_int_equal(vmt_snapshot_read(s, 0xa0000, b, 1), VMT_E_RANGE); /* VGA hole */
    assert_int_equal(vmt_snapshot_read(s, 0x9fffc, b, 8), VMT_E_RANGE); /* runs into it */
    assert_int_equal(vmt_snapshot_vcpu_count(s), 2);
    assert_int_equal(vmt_snapshot_vcpu(s, 1)->regs.rip, spec.vcpu[1].rip);
    assert_int_equal(vmt_snapshot_vcpu(s, 1)->regs.cr3, 0x3000);
    assert_int_equal(vmt_snapshot_vcpu(s, 1)->tr.base, 0xfffffe0000004000ull);
    assert_int_equal(vmt_snapshot_vcpu(s, 0)->regs.kernel_gs_base, 0); /* 432-byte note has none */
    vmt_snapshot_destroy(s);
    free(f);
}

/* ---- corruptions ---- */

typedef struct corrupt_fixture {
    core_spec spec;
    core_layout lay;
    uint8_t *f;
    size_t len;
} corrupt_fixture;

static int setup_core(void **state)
{
    corrupt_fixture *c = calloc(1, sizeof *c);
    core_default_spec(&c->spec, 0x40000);
    c->spec.nblocks = 3;
    c->spec.blocks[2] = (core_block){ 0x100000, 0x10000 };
    c->f = core_build(&c->spec, &c->len, &c->lay);
    *state = c;
    return 0;
}

static int teardown_core(void **state)
{
    corrupt_fixture *c = *state;
    free(c->f);
    free(c);
    return 0;
}

static void test_truncated_everywhere(void **state)
{
    corrupt_fixture *c = *state;
    vmt_snapshot *s = open_ok(c->f, c->len);
    vmt_snapshot_destroy(s);
    size_t cuts[] = { 0, 3, 40, c->lay.phoff + 20, c->lay.prstatus[0] + 100, c->lay.qemu[0] + 200,
                      c->lay.data[0] + 1, c->lay.data[2] + 0x8000, c->len - 1 };
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        vmt_snapshot *t = (vmt_snapshot *)1;
        char why[256] = "";
        vmt_status st = vmt_snapshot_open_mem(c->f, cuts[i], NULL, &t, why, sizeof why);
        if (st != VMT_E_FORMAT)
            fail_msg("cut at %zu: status %d (%s)", cuts[i], st, why);
        assert_null(t);
        assert_true(strlen(why) > 10);
    }
    expect_format(c->f, c->len - 1, "past the end");
}

static void test_pt_load_past_eof(void **state)
{
    corrupt_fixture *c = *state;
    core_put64(c->f + c->lay.load_phdr[1] + 8, c->len - 0x1000); /* offset: the ROM runs past EOF */
    expect_format(c->f, c->len, "past the end");
    core_put64(c->f + c->lay.load_phdr[1] + 8, UINT64_MAX - 10); /* offset overflow */
    expect_format(c->f, c->len, "PT_LOAD 2");
}

static void test_overlapping_blocks(void **state)
{
    corrupt_fixture *c = *state;
    core_put64(c->f + c->lay.load_phdr[2] + 24, 0x30000); /* 0x30000+0x10000 overlaps [0, 0x40000) */
    expect_format(c->f, c->len, "overlap");
    /* paging=true cores map the same RAM once per virtual range: say so */
    core_put64(c->f + c->lay.load_phdr[2] + 16, 0xffff888000030000ull);
    expect_format(c->f, c->len, "paging=true");
}

static void test_absurd_sizes(void **state)
{
    corrupt_fixture *c = *state;
    uint8_t *ph = c->f + c->lay.load_phdr[0];
    core_put64(ph + 32, 1ull << 62);
    core_put64(ph + 40, 1ull << 62);
    expect_format(c->f, c->len, "past the end");
    core_put64(ph + 32, 0x40000);
    core_put64(ph + 40, 0x40000);
    core_put64(ph + 24, 0xfffffffffff00000ull); /* paddr near 2^64 */
    expect_format(c->f, c->len, "2^52");
    core_put64(ph + 24, 0);
    core_put64(ph + 40, 0x80000); /* memsz != filesz */
    expect_format(c->f, c->len, "p_memsz");
    core_put64(ph + 40, 0x40000);
    core_put64(ph + 24, 0x800); /* not page aligned */
    expect_format(c->f, c->len, "aligned");
    core_put64(ph + 24, 0);
    /* e_phnum huge: headers past the file */
    c->f[56] = 0xff;
    c->f[57] = 0xff;
    expect_format(c->f, c->len, "program header");
}

static void test_wrong_note_sizes_and_versions(void **state)
{
    corrupt_fixture *c = *state;
    uint8_t saved[4];
    /* NT_PRSTATUS descsz */
    uint8_t *pr = c->f + c->lay.prstatus[0];
    memcpy(saved, pr + 4, 4);
    core_put32(pr + 4, 332);
    expect_format(c->f, c->len, "NT_PRSTATUS");
    memcpy(pr + 4, saved, 4);
    /* QEMU version */
    uint8_t *q = c->f + c->lay.qemu[0];
    core_put32(q + 20, 2);
    expect_format(c->f, c->len, "version 2");
    core_put32(q + 20, 1);
    /* QEMU size field disagreeing with the note */
    core_put32(q + 24, 432);
    expect_format(c->f, c->len, "size 432");
    core_put32(q + 24, 440);
    /* descsz running past the note segment */
    core_put32(q + 4, 0x100000);
    expect_format(c->f, c->len, "malformed note");
    core_put32(q + 4, 440);
    /* QEMU note missing: renamed to something unknown */
    memcpy(q + 12, "QEMX", 4);
    expect_format(c->f, c->len, "QEMU CPU notes");
    memcpy(q + 12, "QEMU", 4);
    /* the pair disagrees */
    uint8_t *rip = c->f + c->lay.prstatus[0] + 20 + 112 + 16 * 8;
    memcpy(saved, rip, 4);
    rip[0] ^= 0x40;
    expect_format(c->f, c->len, "disagree");
    memcpy(rip, saved, 4);
    /* PT_NOTE past the file */
    core_put64(c->f + c->lay.note_phdr + 8, c->len);
    expect_format(c->f, c->len, "PT_NOTE");
}

static void test_wrong_identity_and_state(void **state)
{
    corrupt_fixture *c = *state;
    c->f[18] = 3; /* EM_386 */
    expect_format(c->f, c->len, "e_machine");
    c->f[18] = 62;
    c->f[16] = 2; /* ET_EXEC */
    expect_format(c->f, c->len, "e_type");
    c->f[16] = 4;
    c->f[4] = 1; /* ELFCLASS32 */
    expect_format(c->f, c->len, "ELFCLASS64");
    c->f[4] = 2;
    /* CR0.PG without PE is not a state a CPU can be in */
    uint8_t *cr0 = c->f + c->lay.qemu[0] + 20 + 392;
    core_put64(cr0, 0x80000000);
    expect_format(c->f, c->len, "PG without PE");
    core_put64(cr0, 0x80050033);
    /* selector wider than 16 bits */
    core_put32(c->f + c->lay.qemu[0] + 20 + 152, 0x10010);
    expect_format(c->f, c->len, "16 bits");
    core_put32(c->f + c->lay.qemu[0] + 20 + 152, 0x10);
    /* not an ELF at all */
    expect_format((const uint8_t *)"hello world, not a core", 23, "magic");
    expect_format((const uint8_t *)"KDUMP   \x06\x00\x00\x00 rest of a diskdump header", 40, "--format elf");
    /* and the untouched file still loads */
    vmt_snapshot_destroy(open_ok(c->f, c->len));
}

static void test_no_load_no_vcpu(void **state)
{
    corrupt_fixture *c = *state;
    for (int i = 0; i < 3; i++)
        core_put32(c->f + c->lay.load_phdr[i], 6); /* PT_PHDR: no RAM left */
    expect_format(c->f, c->len, "no PT_LOAD");
    for (int i = 0; i < 3; i++)
        core_put32(c->f + c->lay.load_phdr[i], 1);
    core_put32(c->f + c->lay.prstatus[0] + 8, 3); /* not NT_PRSTATUS any more */
    expect_format(c->f, c->len, "no NT_PRSTATUS");
}

static void test_open_file_maps_it(void **state)
{
    (void)state;
    core_spec spec;
    core_default_spec(&spec, 0x80000);
    size_t len;
    uint8_t *f = core_build(&spec, &len, NULL);
    char path[] = "/tmp/vmt_core_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, f, len), (ssize_t)len);
    close(fd);
    vmt_snapshot *s = NULL;
    char why[256] = "";
    assert_int_equal(vmt_snapshot_open(path, NULL, &s, why, sizeof why), VMT_OK);
    uint8_t b[16];
    assert_int_equal(vmt_snapshot_read(s, 0x7fff0, b, 16), VMT_OK);
    for (int k = 0; k < 16; k++)
        assert_int_equal(b[k], core_byte_at(0x7fff0 + k));
    vmt_snapshot_destroy(s);
    /* truncated on disk: the path is in the message */
    assert_int_equal(truncate(path, (off_t)(len - 0x2000)), 0);
    s = (vmt_snapshot *)1;
    assert_int_equal(vmt_snapshot_open(path, NULL, &s, why, sizeof why), VMT_E_FORMAT);
    assert_null(s);
    assert_non_null(strstr(why, path));
    unlink(path);
    assert_int_equal(vmt_snapshot_open(path, NULL, &s, why, sizeof why), VMT_E_IO);
    free(f);
}

/* The read-only driver view: what the OS layer reads a dump through. */
static void test_driver_view_reads_without_copy(void **state)
{
    (void)state;
    core_spec spec;
    core_default_spec(&spec, 0x100000);
    size_t len;
    uint8_t *f = core_build(&spec, &len, NULL);
    vmt_snapshot *s = open_ok(f, len);
    vmt_driver *d = NULL;
    char why[256];
    assert_int_equal(vmt_snapshot_driver_create(s, &d, why, sizeof why), VMT_OK);
    assert_string_equal(vmt_driver_name(d), "snapshot");
    assert_true(vmt_driver_has(d, VMT_CAP_READ_PHYS | VMT_CAP_REGS_GET));
    assert_false(vmt_driver_has(d, VMT_CAP_WRITE_PHYS));
    assert_int_equal(vmt_driver_caps(d)->ram_frames, 0x100000);
    uint8_t b[32];
    assert_int_equal(vmt_drv_read_phys(d, 0xffff0, b, 16), VMT_OK);
    for (int k = 0; k < 16; k++)
        assert_int_equal(b[k], core_byte_at(0xffff0 + k));
    assert_int_equal(vmt_drv_read_phys(d, 0xffff0, b, 32), VMT_E_RANGE); /* into the hole */
    assert_non_null(strstr(vmt_driver_error(d), "not RAM"));
    assert_int_equal(vmt_drv_write_phys(d, 0, b, 1), VMT_E_NOTSUP);
    vmt_regs r;
    assert_int_equal(vmt_drv_get_regs(d, 0, &r), VMT_OK);
    assert_int_equal(r.rip, spec.vcpu[0].rip);
    assert_int_equal(r.cr3, spec.vcpu[0].cr3);
    assert_int_equal(vmt_drv_get_regs(d, 1, &r), VMT_E_INVAL);
    vmt_driver_destroy(d);
    vmt_snapshot_destroy(s);
    free(f);
}

typedef struct progress_log {
    uint64_t calls, last_done, total;
    int backwards;
} progress_log;

static void on_progress(void *ctx, uint64_t done, uint64_t total)
{
    progress_log *p = ctx;
    if (done < p->last_done)
        p->backwards = 1;
    p->calls++;
    p->last_done = done;
    p->total = total;
}

/* Big copies report progress to the caller's callback, ending at the total. */
static void test_apply_reports_progress(void **state)
{
    (void)state;
    core_spec spec;
    core_default_spec(&spec, 0x2400000); /* 36 MiB: three 16 MiB steps */
    spec.nblocks = 1;
    size_t len;
    uint8_t *f = core_build(&spec, &len, NULL);
    progress_log log = { 0 };
    vmt_snapshot_options o = { .progress = on_progress, .progress_ctx = &log };
    vmt_snapshot *s = NULL;
    char why[256];
    assert_int_equal(vmt_snapshot_open_mem(f, len, &o, &s, why, sizeof why), VMT_OK);
    assert_int_equal(vmt_snapshot_reconstruct(s, NULL, NULL), VMT_OK);
    vmt_driver *d = NULL;
    vmt_mem_config mc = { .ram_frames = 0x2400 };
    assert_int_equal(vmt_mem_driver_create(&mc, &d, why, sizeof why), VMT_OK);
    assert_int_equal(vmt_snapshot_apply(s, d), VMT_OK);
    assert_int_equal(log.calls, 3);
    assert_int_equal(log.total, 0x2400000);
    assert_int_equal(log.last_done, log.total);
    assert_false(log.backwards);
    vmt_driver_destroy(d);
    vmt_snapshot_destroy(s);
    free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pc_layout_ram_and_rom),
        cmocka_unit_test(test_vcpu_state_from_notes),
        cmocka_unit_test(test_blocks_holes_above_4g_any_order),
        cmocka_unit_test_setup_teardown(test_truncated_everywhere, setup_core, teardown_core),
        cmocka_unit_test_setup_teardown(test_pt_load_past_eof, setup_core, teardown_core),
        cmocka_unit_test_setup_teardown(test_overlapping_blocks, setup_core, teardown_core),
        cmocka_unit_test_setup_teardown(test_absurd_sizes, setup_core, teardown_core),
        cmocka_unit_test_setup_teardown(test_wrong_note_sizes_and_versions, setup_core, teardown_core),
        cmocka_unit_test_setup_teardown(test_wrong_identity_and_state, setup_core, teardown_core),
        cmocka_unit_test_setup_teardown(test_no_load_no_vcpu, setup_core, teardown_core),
        cmocka_unit_test(test_open_file_maps_it),
        cmocka_unit_test(test_driver_view_reads_without_copy),
        cmocka_unit_test(test_apply_reports_progress),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
