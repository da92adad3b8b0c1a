/*
 * tests/core/test_paging.c — the amd64 walker against hand-built tables.
 *
 * Tables live in a host buffer behind a vmt_phys_reader that returns
 * VMT_E_RANGE past its end and counts reads (a walk must never read more
 * than `levels` entries, whatever the tables contain).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "vmtrap/paging.h"

#define MEM_SIZE (64 * 4096)

typedef struct hostmem {
    uint8_t *bytes;
    size_t size;
    unsigned reads;
} hostmem;

static vmt_status host_read(void *ctx, vmt_pa pa, void *buf, size_t len)
{
    hostmem *m = ctx;
    m->reads++;
    if (pa > m->size || len > m->size - pa)
        return VMT_E_RANGE;
    memcpy(buf, m->bytes + pa, len);
    return VMT_OK;
}

static void set_entry(hostmem *m, vmt_pa table, unsigned index, uint64_t value)
{
    memcpy(m->bytes + table + 8 * index, &value, 8);
}

static int setup(void **state)
{
    hostmem *m = calloc(1, sizeof *m);
    m->bytes = calloc(1, MEM_SIZE);
    m->size = MEM_SIZE;
    *state = m;
    return 0;
}

static int teardown(void **state)
{
    hostmem *m = *state;
    free(m->bytes);
    free(m);
    return 0;
}

static vmt_phys_reader reader_of(hostmem *m)
{
    vmt_phys_reader r = { host_read, m };
    return r;
}

#define PRW (VMT_PTE_P | VMT_PTE_RW | VMT_PTE_US)

/* va with the given table indices (5-level order: l5, l4, l3, l2, l1) and offset,
 * sign-extended for `levels`. */
static vmt_va make_va(unsigned levels, unsigned i5, unsigned i4, unsigned i3, unsigned i2, unsigned i1,
                      unsigned off)
{
    uint64_t va = ((uint64_t)i4 << 39) | ((uint64_t)i3 << 30) | ((uint64_t)i2 << 21) | ((uint64_t)i1 << 12) | off;
    unsigned bits = 48;
    if (levels == 5) {
        va |= (uint64_t)i5 << 48;
        bits = 57;
    }
    if (va & (1ULL << (bits - 1)))
        va |= ~((1ULL << bits) - 1);
    return va;
}

static const vmt_paging_config cfg4 = { .levels = 4, .maxphyaddr = 46, .nxe = 1 };
static const vmt_paging_config cfg5 = { .levels = 5, .maxphyaddr = 46, .nxe = 1 };

/* Standard 4-level chain: PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> PT 0x4000 -> 0x9000. */
static vmt_va build_4k_chain(hostmem *m)
{
    set_entry(m, 0x1000, 0x1a3, 0x2000 | PRW);
    set_entry(m, 0x2000, 0x055, 0x3000 | PRW);
    set_entry(m, 0x3000, 0x1f0, 0x4000 | PRW);
    set_entry(m, 0x4000, 0x007, 0x9000 | PRW);
    return make_va(4, 0, 0x1a3, 0x055, 0x1f0, 0x007, 0x123);
}

static void test_canonical(void **state)
{
    (void)state;
    assert_true(vmt_va_is_canonical(0x00007fffffffffffULL, 4));
    assert_true(vmt_va_is_canonical(0xffff800000000000ULL, 4));
    assert_false(vmt_va_is_canonical(0x0000800000000000ULL, 4));
    assert_false(vmt_va_is_canonical(0xff00000000000000ULL, 4));
    assert_true(vmt_va_is_canonical(0x00ffffffffffffffULL, 5));
    assert_true(vmt_va_is_canonical(0xff00000000000000ULL, 5));
    assert_false(vmt_va_is_canonical(0x0100000000000000ULL, 5));
}

static void test_4level_4k_walk_records_every_step(void **state)
{
    hostmem *m = *state;
    vmt_va va = build_4k_chain(m);
    vmt_phys_reader r = reader_of(m);
    vmt_walk w;
    char why[200];
    assert_int_equal(vmt_paging_walk(&r, &cfg4, 0x1000, va, &w, why, sizeof why), VMT_OK);
    assert_int_equal(w.pa, 0x9123);
    assert_int_equal(w.page_size, 4096);
    assert_int_equal(w.leaf_level, VMT_PT_LEVEL_PT);
    assert_int_equal(w.nsteps, 4);
    assert_int_equal(w.levels, 4);
    assert_int_equal(w.va, va);
    const vmt_pa tables[4] = { 0x1000, 0x2000, 0x3000, 0x4000 };
    const unsigned idx[4] = { 0x1a3, 0x055, 0x1f0, 0x007 };
    const uint64_t vals[4] = { 0x2000 | PRW, 0x3000 | PRW, 0x4000 | PRW, 0x9000 | PRW };
    for (unsigned i = 0; i < 4; i++) {
        assert_int_equal(w.steps[i].level, 4 - i);
        assert_int_equal(w.steps[i].table_pa, tables[i]);
        assert_int_equal(w.steps[i].entry_pa, tables[i] + 8 * idx[i]);
        assert_int_equal(w.steps[i].value, vals[i]);
    }
    assert_int_equal(w.rights, VMT_ACCESS_RWX);
    assert_int_equal(w.user, 1);
    assert_int_equal(m->reads, 4);
}

static void test_root_flag_bits_are_ignored(void **state)
{
    hostmem *m = *state;
    vmt_va va = build_4k_chain(m);
    vmt_phys_reader r = reader_of(m);
    vmt_walk w;
    /* CR3 with PCD/PWT set still walks from 0x1000. */
    assert_int_equal(vmt_paging_walk(&r, &cfg4, 0x1000 | 0x18, va, &w, NULL, 0), VMT_OK);
    assert_int_equal(w.pa, 0x9123);
}

static void test_2m_page(void **state)
{
    hostmem *m = *state;
    set_entry(m, 0x1000, 0, 0x2000 | PRW);
    set_entry(m, 0x2000, 1, 0x3000 | PRW);
    /* PAT bit (12) in a large-page entry is legal. */
    set_entry(m, 0x3000, 5, 0x40000000ULL | (1ULL << 12) | PRW | VMT_PTE_PS);
    vmt_va va = make_va(4, 0, 0, 1, 5, 0x1ab, 0x456);
    vmt_phys_reader r = reader_of(m);
    vmt_walk w;
    assert_int_equal(vmt_paging_walk(&r, &cfg4, 0x1000, va, &w, NULL, 0), VMT_OK);
    assert_int_equal(w.page_size, VMT_SIZE_2M);
    assert_int_equal(w.leaf_level, VMT_PT_LEVEL_PD);
    assert_int_equal(w.nsteps, 3);
    assert_int_equal(w.pa, 0x40000000ULL + 0x1ab456ULL);
}

static void test_1g_page(void **state)
{
    hostmem *m = *state;
    set_entry(m, 0x1000, 300, 0x2000 | PRW);
    set_entry(m, 0x2000, 7, 0x1c0000000ULL | PRW | VMT_PTE_PS);
    vmt_va va = make_va(4, 0, 300, 7, 0x155, 0x0aa, 0xfff);
    vmt_phys_reader r = reader_of(m);
    vmt_walk w;
    assert_int_equal(vmt_paging_walk(&r, &cfg4, 0x1000, va, &w, NULL, 0), VMT_OK);
    assert_int_equal(w.page_size, VMT_SIZE_1G);
    assert_int_equal(w.leaf_level, VMT_PT_LEVEL_PDPT);
    assert_int_equal(w.nsteps, 2);
    assert_int_equal(w.pa, 0x1c0000000ULL + (va & (VMT_SIZE_1G - 1)));
    assert_true(va >> 63); /* upper half: sign extension handled */
}

static void test_la57_walk(void **state)
{
    hostmem *m = *state;
    set_entry(m, 0x5000, 0x0ab, 0x1000 | PRW);
    vmt_va va4 = build_4k_chain(m);
    vmt_va va = make_va(5, 0x0ab, 0x1a3, 0x055, 0x1f0, 0x007, 0x123);
    assert_int_not_equal(va, va4);
    vmt_phys_reader r = reader_of(m);
    vmt_walk w;
    assert_int_equal(vmt_paging_walk(&r, &cfg5, 0x5000, va, &w, NULL, 0), VMT_OK);
    assert_int_equal(w.pa, 0x9123);
    assert_int_equal(w.nsteps, 5);
    assert_int_equal(w.steps[0].level, VMT_PT_LEVEL_PML5);
    assert_int_equal(w.steps[0].entry_pa, 0x5000 + 8 * 0x0ab);
    assert_int_equal(w.steps[1].level, VMT_PT_LEVEL_PML4);
    /* The same va is not canonical under 4-level paging. */
    char why[200] = "";
    assert_int_equal(vmt_paging_walk(&r, &cfg4, 0x1000, va, &w, why, sizeof why), VMT_E_INVAL);
    assert_non_null(strstr(why, "canonical"));
}

static void test_not_present_at_each_level(void **state)
{
    hostmem *m = *state;
    vmt_phys_reader r = reader_of(m);
    for (unsigned levels = 4; levels <= 5; levels++) {
        const vmt_paging_config *cfg = levels == 5 ? &cfg5 : &cfg4;
        for (unsigned missing = levels; missing >= 1; missing--) {
            memset(m->bytes, 0, m->size);
            set_entry(m, 0x5000, 0x0ab, 0x1000 | PRW);
            build_4k_chain(m);
            vmt_va va = make_va(levels, 0x0ab, 0x1a3, 0x055, 0x1f0, 0x007, 0x123);
            vmt_pa root = levels == 5 ? 0x5000 : 0x1000;
            const vmt_pa tables[6] = { 0, 0x4000, 0x3000, 0x2000, 0x1000, 0x5000 };
            const unsigned idx[6] = { 0, 0x007, 0x1f0, 0x055, 0x1a3, 0x0ab };
            vmt_pa entry = tables[missing] + 8 * idx[missing];
            /* Not present, with every other bit set: other bits must not matter. */
            uint64_t v = ~VMT_PTE_P;
            memcpy(m->bytes + entry, &v, 8);
            vmt_walk w;
            char why[200] = "";
            assert_int_equal(vmt_paging_walk(&r, cfg, root, va, &w, why, sizeof why), VMT_E_NOT_PRESENT);
            assert_int_equal(w.fault_level, missing);
            assert_int_equal(w.fault_entry_pa, entry);
            assert_int_equal(w.nsteps, levels - missing + 1);
            assert_int_equal(w.steps[w.nsteps - 1].entry_pa, entry);
            assert_int_equal(w.steps[w.nsteps - 1].value, v);
            assert_non_null(strstr(why, "not present"));
        }
    }
}

static void test_effective_rights(void **state)
{
    hostmem *m = *state;
    vmt_va va = build_4k_chain(m);
    vmt_phys_reader r = reader_of(m);
    vmt_walk w;
    /* Read-only at the PD level, NX at the PT level, supervisor at PML4. */
    set_entry(m, 0x3000, 0x1f0, 0x4000 | VMT_PTE_P | VMT_PTE_US);
    set_entry(m, 0x4000, 0x007, 0x9000 | PRW | VMT_PTE_NX);
    set_entry(m, 0x1000, 0x1a3, 0x2000 | VMT_PTE_P | VMT_PTE_RW);
    assert_int_equal(vmt_paging_walk(&r, &cfg4, 0x1000, va, &w, NULL, 0), VMT_OK);
    assert_int_equal(w.rights, VMT_ACCESS_R);
    assert_int_equal(w.user, 0);
    /* Without EFER.NXE bit 63 is reserved. */
    vmt_paging_config no_nx = cfg4;
    no_nx.nxe = 0;
    char why[200] = "";
    assert_int_equal(vmt_paging_walk(&r, &no_nx, 0x1000, va, &w, why, sizeof why), VMT_E_BAD_PT);
    assert_non_null(strstr(why, "reserved"));
    assert_int_equal(w.nsteps, 4);
    set_entry(m, 0x4000, 0x007, 0x9000 | PRW);
    assert_int_equal(vmt_paging_walk(&r, &no_nx, 0x1000, va, &w, NULL, 0), VMT_OK);
    assert_int_equal(w.rights, VMT_ACCESS_RX);
}

static void expect_bad(hostmem *m, const vmt_paging_config *cfg, vmt_pa root, vmt_va va, unsigned nsteps,
                       const char *words)
{
    vmt_phys_reader r = reader_of(m);
    vmt_walk w;
    char why[200] = "";
    assert_int_equal(vmt_paging_walk(&r, cfg, root, va, &w, why, sizeof why), VMT_E_BAD_PT);
    assert_int_equal(w.nsteps, nsteps);
    assert_non_null(strstr(why, words));
}

static void test_reserved_bits(void **state)
{
    hostmem *m = *state;
    vmt_va va = build_4k_chain(m);
    /* A table address above maxphyaddr (46). */
    set_entry(m, 0x2000, 0x055, (1ULL << 47) | 0x3000 | PRW);
    expect_bad(m, &cfg4, 0x1000, va, 2, "PDPT entry at pa 0x22a8");
    /* With maxphyaddr 52 the same bit is a valid address: it is then past memory. */
    vmt_paging_config wide = cfg4;
    wide.maxphyaddr = 0;
    vmt_phys_reader r = reader_of(m);
    vmt_walk w;
    assert_int_equal(vmt_paging_walk(&r, &wide, 0x1000, va, &w, NULL, 0), VMT_E_RANGE);
    build_4k_chain(m);
    /* PS in a PML4 entry. */
    set_entry(m, 0x1000, 0x1a3, 0x2000 | PRW | VMT_PTE_PS);
    expect_bad(m, &cfg4, 0x1000, va, 1, "PML4 entry");
    build_4k_chain(m);
    /* Reserved low bits of a 2 MiB page (bit 13). */
    set_entry(m, 0x3000, 0x1f0, 0x200000 | (1ULL << 13) | PRW | VMT_PTE_PS);
    expect_bad(m, &cfg4, 0x1000, va, 3, "PD entry");
    /* Reserved low bits of a 1 GiB page (bit 21). */
    set_entry(m, 0x2000, 0x055, 0x40000000 | (1ULL << 21) | PRW | VMT_PTE_PS);
    expect_bad(m, &cfg4, 0x1000, va, 2, "PDPT entry");
    /* PS in a PML5 entry. */
    set_entry(m, 0x5000, 0x0ab, 0x1000 | PRW | VMT_PTE_PS);
    expect_bad(m, &cfg5, 0x5000, make_va(5, 0x0ab, 0x1a3, 0x055, 0x1f0, 0x007, 0), 1, "PML5 entry");
    /* A leaf frame above maxphyaddr. */
    build_4k_chain(m);
    set_entry(m, 0x4000, 0x007, (1ULL << 50) | PRW);
    expect_bad(m, &cfg4, 0x1000, va, 4, "PT entry");
}

static void test_self_referencing_entry(void **state)
{
    hostmem *m = *state;
    /* PML4[511] -> PML4: the classic self-map. */
    set_entry(m, 0x1000, 511, 0x1000 | PRW);
    vmt_va va = make_va(4, 0, 511, 511, 511, 511, 0x8 * 5);
    expect_bad(m, &cfg4, 0x1000, va, 1, "loop");
    /* Allowed: the walk reads PML4[511] four times and lands on the PML4 itself. */
    vmt_paging_config rec = cfg4;
    rec.flags = VMT_WALK_ALLOW_RECURSIVE;
    vmt_phys_reader r = reader_of(m);
    vmt_walk w;
    m->reads = 0;
    assert_int_equal(vmt_paging_walk(&r, &rec, 0x1000, va, &w, NULL, 0), VMT_OK);
    assert_int_equal(w.pa, 0x1000 + 8 * 5);
    assert_int_equal(m->reads, 4);
    /* A loop two levels deep: PD entry points back at the PDPT. */
    memset(m->bytes, 0, m->size);
    va = build_4k_chain(m);
    set_entry(m, 0x3000, 0x1f0, 0x2000 | PRW);
    expect_bad(m, &cfg4, 0x1000, va, 3, "already used as the PDPT table");
}

static void test_table_past_end_of_memory(void **state)
{
    hostmem *m = *state;
    vmt_va va = build_4k_chain(m);
    set_entry(m, 0x2000, 0x055, 0x7fff0000ULL | PRW); /* RAM is 256 KiB */
    vmt_phys_reader r = reader_of(m);
    vmt_walk w;
    char why[200] = "";
    assert_int_equal(vmt_paging_walk(&r, &cfg4, 0x1000, va, &w, why, sizeof why), VMT_E_RANGE);
    assert_int_equal(w.nsteps, 2);
    assert_non_null(strstr(why, "PD entry"));
    /* A root past the end. */
    assert_int_equal(vmt_paging_walk(&r, &cfg4, 0x10000000, va, &w, NULL, 0), VMT_E_RANGE);
    assert_int_equal(w.nsteps, 0);
}

static void test_same_table_from_all_entries(void **state)
{
    hostmem *m = *state;
    vmt_phys_reader r = reader_of(m);
    /* Every PML4 entry -> one PDPT whose every entry is a 1 GiB page: legal, every va maps. */
    for (unsigned i = 0; i < 512; i++) {
        set_entry(m, 0x1000, i, 0x2000 | PRW);
        set_entry(m, 0x2000, i, ((uint64_t)i << 30) | PRW | VMT_PTE_PS);
    }
    for (unsigned i = 0; i < 512; i += 37) {
        vmt_va va = make_va(4, 0, i, 511 - i, 3, 4, 5);
        vmt_walk w;
        m->reads = 0;
        assert_int_equal(vmt_paging_walk(&r, &cfg4, 0x1000, va, &w, NULL, 0), VMT_OK);
        assert_int_equal(w.pa, ((uint64_t)(511 - i) << 30) | (3ULL << 21) | (4ULL << 12) | 5);
        assert_int_equal(m->reads, 2);
    }
    /* Every PML4 entry -> the PML4 itself: every walk is refused, in one step. */
    for (unsigned i = 0; i < 512; i++)
        set_entry(m, 0x1000, i, 0x1000 | PRW);
    for (unsigned i = 0; i < 512; i += 37) {
        vmt_walk w;
        m->reads = 0;
        assert_int_equal(vmt_paging_walk(&r, &cfg4, 0x1000, make_va(4, 0, i, i, i, i, 0), &w, NULL, 0),
                         VMT_E_BAD_PT);
        assert_int_equal(m->reads, 1);
    }
}

static void test_bad_arguments(void **state)
{
    hostmem *m = *state;
    vmt_phys_reader r = reader_of(m);
    vmt_walk w;
    vmt_paging_config bad = cfg4;
    bad.levels = 3;
    assert_int_equal(vmt_paging_walk(&r, &bad, 0x1000, 0, &w, NULL, 0), VMT_E_INVAL);
    bad = cfg4;
    bad.maxphyaddr = 60;
    assert_int_equal(vmt_paging_walk(&r, &bad, 0x1000, 0, &w, NULL, 0), VMT_E_INVAL);
    assert_int_equal(vmt_paging_walk(&r, &cfg4, 0x1000, 0x0000800000000000ULL, &w, NULL, 0), VMT_E_INVAL);
    assert_int_equal(vmt_paging_walk(&r, &cfg4, 1ULL << 47, 0, &w, NULL, 0), VMT_E_BAD_PT);
    assert_int_equal(vmt_paging_walk(NULL, &cfg4, 0x1000, 0, &w, NULL, 0), VMT_E_INVAL);
}

/* Random memory as page tables: whatever the bytes, a walk ends in at most
 * `levels` reads with a defined status, and a translation stays inside
 * 2^maxphyaddr. */
static void test_random_tables_never_misbehave(void **state)
{
    hostmem *m = *state;
    vmt_phys_reader r = reader_of(m);
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (int round = 0; round < 4000; round++) {
        if (round % 500 == 0) {
            for (size_t i = 0; i < m->size; i += 8) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                /* Keep many entries pointing inside memory so walks go deep. */
                uint64_t v = (x & 1) ? (x & (MEM_SIZE - 1) & ~0xfffULL) | (x & 0x8000000000000fffULL) : x;
                memcpy(m->bytes + i, &v, 8);
            }
        }
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        const vmt_paging_config cfg = { .levels = (uint8_t)(4 + (x & 1)), .maxphyaddr = (uint8_t)(36 + (x >> 3) % 17),
                                        .nxe = (uint8_t)((x >> 9) & 1), .flags = (uint32_t)((x >> 10) & 1) };
        vmt_va va = x >> 11;
        vmt_pa root = (x >> 20) & (MEM_SIZE - 1) & ~0xfffULL;
        if (!vmt_va_is_canonical(va, cfg.levels))
            va = (uint64_t)((int64_t)(va << 16) >> 16);
        vmt_walk w;
        m->reads = 0;
        vmt_status st = vmt_paging_walk(&r, &cfg, root, va, &w, NULL, 0);
        assert_true(m->reads <= cfg.levels);
        assert_true(w.nsteps <= cfg.levels);
        assert_true(st == VMT_OK || st == VMT_E_NOT_PRESENT || st == VMT_E_BAD_PT || st == VMT_E_RANGE ||
                    st == VMT_E_INVAL);
        if (st == VMT_OK)
            assert_true(w.pa < (1ULL << cfg.maxphyaddr));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_canonical),
        cmocka_unit_test_setup_teardown(test_4level_4k_walk_records_every_step, setup, teardown),
        cmocka_unit_test_setup_teardown(test_root_flag_bits_are_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_2m_page, setup, teardown),
        cmocka_unit_test_setup_teardown(test_1g_page, setup, teardown),
        cmocka_unit_test_setup_teardown(test_la57_walk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_present_at_each_level, setup, teardown),
        cmocka_unit_test_setup_teardown(test_effective_rights, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reserved_bits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_self_referencing_entry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_table_past_end_of_memory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_table_from_all_entries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_tables_never_misbehave, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
