/*
 * tests/emu/test_emulate.c — the reusable instruction emulator
 * (vmtrap/emulate.h) against a small page-table-free "virtual memory" the
 * test owns: a read-modify-write lands through the write accessor, a short
 * run updates registers, a stack push/pop works, a fault changes nothing,
 * and port I/O / INT3 stop the engine in front of the instruction; code
 * that changes between calls runs as it is now; stop_before ends a run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "vmtrap/emulate.h"

typedef struct vmem {
    uint64_t va[4];
    uint8_t page[4][4096];
    unsigned n;
    unsigned writes;
    unsigned reads;
    vmt_access data_rights;
} vmem;

static uint8_t *find(vmem *m, uint64_t va)
{
    for (unsigned i = 0; i < m->n; i++)
        if (m->va[i] == (va & ~4095ull))
            return m->page[i] + (va & 4095);
    return NULL;
}

static vmt_status rd(void *ctx, vmt_va va, void *buf, size_t len, vmt_access *allowed)
{
    vmem *m = ctx;
    uint8_t *p = find(m, va);
    if (!p || (va & 4095) + len > 4096)
        return VMT_E_NOT_PRESENT;
    memcpy(buf, p, len);
    if ((va & ~4095ull) == m->va[1])
        *allowed = m->data_rights;
    m->reads++;
    return VMT_OK;
}

static vmt_status wrt(void *ctx, vmt_va va, const void *buf, size_t len)
{
    vmem *m = ctx;
    uint8_t *p = find(m, va);
    if (!p || (va & 4095) + len > 4096)
        return VMT_E_NOT_PRESENT;
    memcpy(p, buf, len);
    m->writes++;
    return VMT_OK;
}

#define CODE 0x7f0000001000ull
#define DATA 0x7f0000005000ull
#define STACK 0x7f0000009000ull

static vmem *mk(const uint8_t *code, size_t n)
{
    vmem *m = calloc(1, sizeof *m);
    assert_non_null(m);
    m->va[0] = CODE;
    m->va[1] = DATA;
    m->va[2] = STACK;
    m->n = 3;
    m->data_rights = VMT_ACCESS_RW;
    memcpy(m->page[0], code, n);
    return m;
}

/* Registers all zero but rip. */
static vmt_regs regs_at(uint64_t rip)
{
    vmt_regs r;
    memset(&r, 0, sizeof r);
    r.rip = rip;
    return r;
}

/* vmt_emulate succeeds and the emulator's invariants hold after it. */
static void emulate_ok(vmt_emulator *em, vmt_regs *r, const vmt_emulate_mem *mem, uint64_t max,
                       vmt_emulate_result *res)
{
    assert_int_equal(vmt_emulate(em, r, mem, max, res), VMT_OK);
    assert_int_equal(vmt_emulator_check(em), VMT_OK);
}

static void rmw_and_short_run(void **state)
{
    (void)state;
    /* add [rbx], rax ; inc rcx ; push rcx ; pop rdx */
    static const uint8_t code[] = { 0x48, 0x01, 0x03, 0x48, 0xff, 0xc1, 0x51, 0x5a };
    vmem *m = mk(code, sizeof code);
    uint64_t init = 40;
    memcpy(m->page[1] + 8, &init, 8);
    vmt_emulator *em;
    char why[128];
    assert_int_equal(vmt_emulator_create(&em, why, sizeof why), VMT_OK);
    vmt_regs r = regs_at(CODE);
    r.rax = 2;
    r.rbx = DATA + 8;
    r.rcx = 9;
    r.rsp = STACK + 0x100;
    r.cr3 = 0x1234000; /* passed through */
    vmt_emulate_mem mem = { rd, wrt, m, NULL };
    vmt_emulate_result res;
    emulate_ok(em, &r, &mem, 1, &res);
    assert_int_equal(res.stop, VMT_EMULATE_DONE);
    assert_int_equal(res.instructions, 1);
    assert_int_equal(r.rip, CODE + 3);
    uint64_t v;
    memcpy(&v, m->page[1] + 8, 8);
    assert_int_equal(v, 42);
    emulate_ok(em, &r, &mem, 3, &res);
    assert_int_equal(res.instructions, 3);
    assert_int_equal(r.rcx, 10);
    assert_int_equal(r.rdx, 10);
    assert_int_equal(r.rsp, STACK + 0x100);
    assert_int_equal(r.rip, CODE + sizeof code);
    assert_int_equal(r.cr3, 0x1234000);
    memcpy(&v, m->page[2] + 0xf8, 8);
    assert_int_equal(v, 10); /* the push reached memory */
    vmt_emulator_destroy(em);
    free(m);
}

static void fault_changes_nothing(void **state)
{
    (void)state;
    /* mov [rbx], rax (ok) ; mov rcx, [rdx] (rdx unmapped) */
    static const uint8_t code[] = { 0x48, 0x89, 0x03, 0x48, 0x8b, 0x0a };
    vmem *m = mk(code, sizeof code);
    vmt_emulator *em;
    assert_int_equal(vmt_emulator_create(&em, NULL, 0), VMT_OK);
    vmt_regs r = regs_at(CODE);
    r.rax = 0x77;
    r.rbx = DATA;
    r.rdx = 0x7f00000f0000ull;
    vmt_emulate_mem mem = { rd, wrt, m, NULL };
    vmt_emulate_result res;
    emulate_ok(em, &r, &mem, 2, &res);
    assert_int_equal(res.stop, VMT_EMULATE_FAULT);
    assert_int_equal(res.fault_va, 0x7f00000f0000ull);
    assert_int_equal(res.instructions, 1);
    assert_int_equal(r.rip, CODE + 3); /* on the faulting instruction */
    assert_int_equal(r.rcx, 0);
    assert_int_equal(m->writes, 1);
    vmt_emulator_destroy(em);
    free(m);
}

static void stops_before_special(void **state)
{
    (void)state;
    /* inc rax ; out dx, al ; int3 */
    static const uint8_t code[] = { 0x48, 0xff, 0xc0, 0xee, 0xcc };
    vmem *m = mk(code, sizeof code);
    vmt_emulator *em;
    assert_int_equal(vmt_emulator_create(&em, NULL, 0), VMT_OK);
    vmt_regs r = regs_at(CODE);
    vmt_emulate_mem mem = { rd, wrt, m, NULL };
    vmt_emulate_result res;
    emulate_ok(em, &r, &mem, 10, &res);
    assert_int_equal(res.stop, VMT_EMULATE_SPECIAL);
    assert_int_equal(res.instructions, 1);
    assert_int_equal(r.rip, CODE + 3);
    assert_int_equal(r.rax, 1);
    r.rip = CODE + 4;
    emulate_ok(em, &r, &mem, 10, &res);
    assert_int_equal(res.stop, VMT_EMULATE_SPECIAL);
    assert_int_equal(r.rip, CODE + 4);
    assert_int_equal(vmt_emulate(em, &r, &mem, 0, &res), VMT_E_INVAL);
    assert_int_equal(vmt_emulator_check(em), VMT_OK);
    assert_non_null(strstr(vmt_emulator_error(em), "1..1000"));
    vmt_emulator_destroy(em);
    free(m);
}

/* Rights from the accessor are enforced; pages kept between calls are
 * re-read, so a change of the caller's memory is seen. */
static void rights_and_kept_pages(void **state)
{
    (void)state;
    /* mov [rbx], rax ; mov rcx, [rbx] */
    static const uint8_t code[] = { 0x48, 0x89, 0x03, 0x48, 0x8b, 0x0b };
    vmem *m = mk(code, sizeof code);
    vmt_emulator *em;
    assert_int_equal(vmt_emulator_create(&em, NULL, 0), VMT_OK);
    vmt_emulate_mem mem = { rd, wrt, m, NULL };
    vmt_emulate_result res;
    vmt_regs r = regs_at(CODE);
    r.rax = 5;
    r.rbx = DATA;
    m->data_rights = VMT_ACCESS_R; /* the store is not allowed */
    emulate_ok(em, &r, &mem, 1, &res);
    assert_int_equal(res.stop, VMT_EMULATE_FAULT);
    assert_int_equal(res.fault_access, VMT_ACCESS_W);
    assert_int_equal(res.fault_va, DATA);
    assert_int_equal(r.rip, CODE);
    assert_int_equal(m->writes, 0);
    m->data_rights = VMT_ACCESS_RW;
    assert_int_equal(vmt_emulate(em, &r, &mem, 1, &res), VMT_OK); /* the kept page gets W now */
    assert_int_equal(res.stop, VMT_EMULATE_DONE);
    assert_int_equal(m->writes, 1);
    uint64_t v = 77;
    memcpy(m->page[1], &v, 8); /* the caller changes memory between calls */
    emulate_ok(em, &r, &mem, 1, &res);
    assert_int_equal(r.rcx, 77);
    /* the code changes too: the kept code page is re-read */
    m->page[0][3] = 0x90; /* nop */
    r.rip = CODE + 3;
    r.rcx = 0;
    emulate_ok(em, &r, &mem, 1, &res);
    assert_int_equal(r.rip, CODE + 4);
    assert_int_equal(r.rcx, 0);
    vmt_emulator_destroy(em);
    free(m);
}

/* The same instruction address alternates between two encodings from call
 * to call (what a caller sees when it shows two views of one page): every
 * call executes the bytes the accessor gives now, although only the
 * changed bytes are rewritten into the engine. */
static void changed_code_runs_each_time(void **state)
{
    (void)state;
    /* inc rax (48 ff c0) / dec rax (48 ff c8) */
    static const uint8_t code[] = { 0x48, 0xff, 0xc0 };
    vmem *m = mk(code, sizeof code);
    vmt_emulator *em;
    assert_int_equal(vmt_emulator_create(&em, NULL, 0), VMT_OK);
    vmt_emulate_mem mem = { rd, wrt, m, NULL };
    vmt_emulate_result res;
    vmt_regs r;
    memset(&r, 0, sizeof r);
    r.rax = 10;
    for (int i = 0; i < 6; i++) {
        m->page[0][2] = i % 2 ? 0xc8 : 0xc0;
        r.rip = CODE;
        emulate_ok(em, &r, &mem, 1, &res);
        assert_int_equal(res.stop, VMT_EMULATE_DONE);
        assert_int_equal(r.rax, i % 2 ? 10 : 11);
    }
    /* a data page written by the engine and changed by the caller too */
    static const uint8_t store_load[] = { 0x48, 0x89, 0x03, 0x48, 0x8b, 0x0b }; /* mov [rbx],rax; mov rcx,[rbx] */
    memcpy(m->page[0], store_load, sizeof store_load);
    r.rip = CODE;
    r.rax = 5;
    r.rbx = DATA + 16;
    emulate_ok(em, &r, &mem, 1, &res);
    uint64_t v = 99;
    memcpy(m->page[1] + 16, &v, 8);
    emulate_ok(em, &r, &mem, 1, &res);
    assert_int_equal(r.rcx, 99);
    vmt_emulator_destroy(em);
    free(m);
}

static bool stop_at_code_plus_6(void *ctx, vmt_va rip)
{
    (void)ctx;
    return rip == CODE + 6;
}

/* stop_before ends a run in front of the instruction it names. */
static void stop_before_ends_run(void **state)
{
    (void)state;
    /* inc rax x4 */
    static const uint8_t code[] = { 0x48, 0xff, 0xc0, 0x48, 0xff, 0xc0, 0x48, 0xff, 0xc0, 0x48, 0xff, 0xc0 };
    vmem *m = mk(code, sizeof code);
    vmt_emulator *em;
    assert_int_equal(vmt_emulator_create(&em, NULL, 0), VMT_OK);
    vmt_emulate_mem mem = { rd, wrt, m, stop_at_code_plus_6 };
    vmt_emulate_result res;
    vmt_regs r = regs_at(CODE);
    emulate_ok(em, &r, &mem, 10, &res);
    assert_int_equal(res.stop, VMT_EMULATE_STOP_REQUESTED);
    assert_int_equal(res.instructions, 2);
    assert_int_equal(r.rip, CODE + 6);
    assert_int_equal(r.rax, 2);
    /* never asked for the first instruction: a run can start there */
    emulate_ok(em, &r, &mem, 10, &res);
    assert_int_equal(res.instructions, 2);
    assert_int_equal(r.rax, 4);
    vmt_emulator_destroy(em);
    free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rmw_and_short_run),
        cmocka_unit_test(fault_changes_nothing),
        cmocka_unit_test(stops_before_special),
        cmocka_unit_test(rights_and_kept_pages),
        cmocka_unit_test(changed_code_runs_each_time),
        cmocka_unit_test(stop_before_ends_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
