/*
 * tests/emu/test_emulate_fast.c — the engine's fast path (one displaced
 * push r64 / mov r,r / mov r,[base+disp] / mov [base+disp],r / nop / endbr performed
 * without Unicorn; pop r64 and ret too) against Unicorn itself (an engine
 * with the fast path off): for every form, on random register states and
 * memory, the one-instruction call (fast path, which must be taken:
 * res.fast_instructions) and Unicorn's run of the same instruction followed
 * by hlt (it stops before hlt) end with equal registers, equal memory and
 * equal accounting; so does a whole short function run ahead (push, mov,
 * pop, ret, then code the fast path leaves to Unicorn), with stop_before. Forms the fast
 * path must leave to Unicorn (a push into a read-only page, a load from an
 * unreadable page, a page-crossing push, a prefixed or other instruction)
 * give Unicorn's result; code that changes at one rip is decoded again.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "vmtrap/emulate.h"

#define CODE 0x7f0000001000ull
#define DATA 0x7f0000005000ull
#define STACK 0x7f0000009000ull

typedef struct vmem {
    uint64_t va[3];
    uint8_t page[3][4096];
    vmt_access rights[3];
    unsigned writes;
} vmem;

static uint8_t *find(vmem *m, uint64_t va, unsigned *idx)
{
    for (unsigned i = 0; i < 3; i++)
        if (m->va[i] == (va & ~4095ull)) {
            if (idx)
                *idx = i;
            return m->page[i] + (va & 4095);
        }
    return NULL;
}

static vmt_status rd(void *ctx, vmt_va va, void *buf, size_t len, vmt_access *allowed)
{
    vmem *m = ctx;
    unsigned i;
    uint8_t *p = find(m, va, &i);
    if (!p || (va & 4095) + len > 4096)
        return VMT_E_NOT_PRESENT;
    memcpy(buf, p, len);
    *allowed = m->rights[i];
    return VMT_OK;
}

static vmt_status wrt(void *ctx, vmt_va va, const void *buf, size_t len)
{
    vmem *m = ctx;
    unsigned i;
    uint8_t *p = find(m, va, &i);
    if (!p || (va & 4095) + len > 4096 || !(m->rights[i] & VMT_ACCESS_W))
        return VMT_E_NOT_PRESENT;
    memcpy(p, buf, len);
    m->writes++;
    return VMT_OK;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void fill(vmem *m, const uint8_t *code, size_t n)
{
    memset(m, 0, sizeof *m);
    m->va[0] = CODE;
    m->va[1] = DATA;
    m->va[2] = STACK;
    m->rights[0] = VMT_ACCESS_RX;
    m->rights[1] = VMT_ACCESS_RW;
    m->rights[2] = VMT_ACCESS_RW;
    for (size_t i = 0; i < 4096; i += 8) {
        uint64_t v = rnd();
        memcpy(m->page[1] + i, &v, 8);
        v = rnd();
        memcpy(m->page[2] + i, &v, 8);
    }
    memset(m->page[0], 0xf4, 4096); /* hlt after the instruction */
    memcpy(m->page[0] + 0x100, code, n);
}

/* Random GPRs; rsp on the stack page (aligned or not); base registers of
 * loads pointed into the data page by the caller. */
static void random_regs(vmt_regs *r)
{
    memset(r, 0, sizeof *r);
    uint64_t *g = &r->rax;
    uint64_t v[16];
    for (int i = 0; i < 16; i++)
        v[i] = rnd();
    memcpy(g, v, sizeof v);
    r->rsp = STACK + 64 + (rnd() % (4096 - 128));
    r->rip = CODE + 0x100;
    r->rflags = 2 | (rnd() & 0x8d5); /* random arithmetic flags: unchanged */
    r->cr3 = 0x1000;
}

static void set_gpr(vmt_regs *r, int idx, uint64_t v)
{
    uint64_t g[16];
    memcpy(g, &r->rax, sizeof g);
    g[idx] = v;
    memcpy(&r->rax, g, sizeof g);
}

/* One instruction both ways on the same state; expect_fast says whether
 * the fast path must take it. */
static void compare(const uint8_t *code, size_t n, const vmt_regs *start, const vmem *mem0, bool expect_fast,
                    vmt_emulator *fast_em, vmt_emulator *ref_em)
{
    vmem *a = malloc(sizeof *a), *b = malloc(sizeof *b);
    assert_non_null(a);
    assert_non_null(b);
    memcpy(a, mem0, sizeof *a);
    memcpy(b, mem0, sizeof *b);

    assert_memory_equal(mem0->page[0] + 0x100, code, n); /* the instruction under test is there */
    vmt_regs ra = *start, rb = *start;
    vmt_emulate_mem ma = { rd, wrt, a, NULL }, mb = { rd, wrt, b, NULL };
    vmt_emulate_result resa, resb;
    assert_int_equal(vmt_emulate(fast_em, &ra, &ma, 1, &resa), VMT_OK);
    assert_int_equal(vmt_emulate(ref_em, &rb, &mb, 2, &resb), VMT_OK);
    assert_int_equal(vmt_emulator_check(fast_em), VMT_OK);
    assert_int_equal(vmt_emulator_check(ref_em), VMT_OK);
    assert_int_equal(resa.fast_instructions, expect_fast ? 1 : 0);
    assert_int_equal(resb.fast_instructions, 0);
    if (resb.stop == VMT_EMULATE_SPECIAL) { /* Unicorn completed it, then stopped before hlt */
        assert_int_equal(resb.instructions, 1);
        assert_int_equal(resa.stop, VMT_EMULATE_DONE);
        assert_int_equal(resa.instructions, 1);
    } else {
        assert_int_equal(resa.stop, resb.stop);
        assert_int_equal(resa.instructions, resb.instructions);
        assert_int_equal(resa.fault_va, resb.fault_va);
    }
    assert_int_equal(resa.bytes_written, resb.bytes_written);
    assert_memory_equal(&ra, &rb, sizeof ra);
    assert_memory_equal(a->page, b->page, sizeof a->page);
    assert_int_equal(a->writes, b->writes);
    free(a);
    free(b);
}

typedef struct engines {
    vmt_emulator *fast, *ref;
    vmem *m; /* the test's memory, filled afresh before each comparison */
} engines;

/* The low three bits that encode GPR index i (vmt_regs order rax, rbx,
 * rcx, rdx, rsi, rdi, rbp, rsp, r8..r15) in an opcode or ModRM byte. */
static const uint8_t reg_low3[16] = { 0, 3, 1, 2, 6, 7, 5, 4, 0, 1, 2, 3, 4, 5, 6, 7 };

/* `code` placed afresh in *m and run both ways on random registers; the
 * fast path must take it. */
static void compare_on_random_regs(const engines *e, vmem *m, const uint8_t *code, size_t n)
{
    fill(m, code, n);
    vmt_regs r;
    random_regs(&r);
    compare(code, n, &r, m, true, e->fast, e->ref);
}

static int setup(void **state)
{
    engines *e = calloc(1, sizeof *e);
    if (!e || !(e->m = malloc(sizeof *e->m)) || vmt_emulator_create(&e->fast, NULL, 0) != VMT_OK ||
        vmt_emulator_create(&e->ref, NULL, 0) != VMT_OK)
        return -1;
    vmt_emulator_use_fast_path(e->ref, false); /* the reference: Unicorn runs everything */
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    engines *e = *state;
    vmt_emulator_destroy(e->fast);
    vmt_emulator_destroy(e->ref);
    free(e->m);
    free(e);
    return 0;
}

enum { ROUNDS = 12 };

static void push_every_register(void **state)
{
    engines *e = *state;
    vmem *m = e->m;
    for (int reg = 0; reg < 16; reg++) {
        uint8_t code[2];
        size_t n = 0;
        if (reg >= 8)
            code[n++] = 0x41;
        /* vmt_regs order -> opcode reg field */
        code[n++] = (uint8_t)(0x50 + reg_low3[reg]);
        for (int k = 0; k < ROUNDS; k++) {
            compare_on_random_regs(e, m, code, n);
        }
    }
}

static void mov_register_pairs(void **state)
{
    engines *e = *state;
    vmem *m = e->m;
    for (int dst = 0; dst < 16; dst++)
        for (int src = 0; src < 16; src += 3) {
            for (int form = 0; form < 2; form++) { /* 89 /r and 8b /r */
                uint8_t code[3];
                int rm = form ? src : dst, rg = form ? dst : src;
                code[0] = (uint8_t)(0x48 | (rg >= 8 ? 4 : 0) | (rm >= 8 ? 1 : 0));
                code[1] = form ? 0x8b : 0x89;
                code[2] = (uint8_t)(0xc0 | (reg_low3[rg] << 3) | reg_low3[rm]);
                compare_on_random_regs(e, m, code, 3);
            }
        }
}

static void loads_from_base_plus_disp(void **state)
{
    engines *e = *state;
    vmem *m = e->m;
    for (int base = 0; base < 16; base++)
        for (int k = 0; k < ROUNDS / 2; k++) {
            int dst = (int)(rnd() % 16);
            int32_t disp = (int32_t)(rnd() % 512) - 256;
            uint8_t code[8];
            size_t n = 0;
            code[n++] = (uint8_t)(0x48 | (dst >= 8 ? 4 : 0) | (base >= 8 ? 1 : 0));
            code[n++] = 0x8b;
            code[n++] = (uint8_t)(0x80 | (reg_low3[dst] << 3) | reg_low3[base]); /* [base + disp32] */
            if (reg_low3[base] == 4)
                code[n++] = 0x24; /* SIB: base only (rsp/r12) */
            memcpy(code + n, &disp, 4);
            n += 4;
            fill(m, code, n);
            vmt_regs r;
            random_regs(&r);
            set_gpr(&r, base, DATA + 512 + rnd() % 2048 - (uint64_t)(int64_t)disp);
            compare(code, n, &r, m, true, e->fast, e->ref);
        }
    /* rip-relative: mov rax, [rip + disp] into the data page */
    uint8_t code[7] = { 0x48, 0x8b, 0x05 };
    int32_t disp = (int32_t)(DATA + 0x80 - (CODE + 0x100 + 7));
    memcpy(code + 3, &disp, 4);
    compare_on_random_regs(e, m, code, 7);
}

static void pop_every_register_and_ret(void **state)
{
    engines *e = *state;
    vmem *m = e->m;
    for (int reg = 0; reg < 16; reg++)
        for (int k = 0; k < ROUNDS; k++) {
            uint8_t code[2];
            size_t n = 0;
            if (reg >= 8)
                code[n++] = 0x41;
            code[n++] = (uint8_t)(0x58 + reg_low3[reg]);
            compare_on_random_regs(e, m, code, n);
        }
    static const uint8_t ret[] = { 0xc3 };
    for (int k = 0; k < ROUNDS; k++) {
        fill(m, ret, 1);
        vmt_regs r;
        random_regs(&r);
        uint64_t to = CODE + 0x200 + rnd() % 0xe00; /* lands on hlt, past the ret */
        memcpy(m->page[2] + (r.rsp & 4095), &to, 8);
        compare(ret, 1, &r, m, true, e->fast, e->ref);
    }
}

static bool stop_at_0x800(void *ctx, vmt_va rip)
{
    (void)ctx;
    return (rip & 4095) == 0x800;
}

/* A short function run ahead: push rbp; mov rbp,rsp; mov rax,rdi; pop rbp;
 * ret to code where the fast path stops (add: flags), then Unicorn goes on
 * until hlt, or stop_before stops the run at the return address. */
static void function_run_ahead(void **state)
{
    engines *e = *state;
    vmem *a = malloc(sizeof *a), *b = malloc(sizeof *b);
    assert_non_null(a);
    assert_non_null(b);
    static const uint8_t fn[] = { 0x55, 0x48, 0x89, 0xe5, 0x48, 0x89, 0xf8, 0x5d, 0xc3 };
    static const uint8_t after[] = { 0x48, 0x01, 0xd8, 0x48, 0x89, 0xc1 }; /* add rax,rbx; mov rcx,rax */
    for (int with_stop = 0; with_stop < 2; with_stop++)
        for (int k = 0; k < ROUNDS; k++) {
            fill(a, fn, sizeof fn);
            memcpy(a->page[0] + 0x800, after, sizeof after);
            memcpy(b, a, sizeof *a);
            vmt_regs ra;
            random_regs(&ra);
            uint64_t to = CODE + 0x800;
            memcpy(a->page[2] + (ra.rsp & 4095), &to, 8);
            memcpy(b->page[2] + (ra.rsp & 4095), &to, 8);
            vmt_regs rb = ra;
            vmt_emulate_mem ma = { rd, wrt, a, with_stop ? stop_at_0x800 : NULL };
            vmt_emulate_mem mb = { rd, wrt, b, with_stop ? stop_at_0x800 : NULL };
            vmt_emulate_result resa, resb;
            assert_int_equal(vmt_emulate(e->fast, &ra, &ma, 100, &resa), VMT_OK);
            assert_int_equal(vmt_emulate(e->ref, &rb, &mb, 100, &resb), VMT_OK);
            assert_int_equal(vmt_emulator_check(e->fast), VMT_OK);
            assert_int_equal(resa.fast_instructions, 5);
            assert_int_equal(resb.fast_instructions, 0);
            assert_int_equal(resa.stop, with_stop ? VMT_EMULATE_STOP_REQUESTED : VMT_EMULATE_SPECIAL);
            assert_int_equal(resb.stop, resa.stop);
            assert_int_equal(resa.instructions, with_stop ? 5 : 7);
            assert_int_equal(resb.instructions, resa.instructions);
            assert_int_equal(resa.bytes_written, resb.bytes_written);
            assert_memory_equal(&ra, &rb, sizeof ra);
            assert_memory_equal(a->page, b->page, sizeof a->page);
        }
    free(a);
    free(b);
}

/* mov [base+disp32], r and mov r, [base+disp32] in 64- and 32-bit forms,
 * mov r32, r32: every base and size, random source/destination. */
static void stores_and_32bit_forms(void **state)
{
    engines *e = *state;
    vmem *m = e->m;
    for (int base = 0; base < 16; base++)
        for (int k = 0; k < ROUNDS / 2; k++) {
            int reg = (int)(rnd() % 16), wide = (int)(rnd() % 2), store = (int)(rnd() % 2);
            if (store && reg == base)
                reg = (reg + 1) % 16; /* the value would be the address */
            int32_t disp = (int32_t)(rnd() % 512) - 256;
            uint8_t code[9];
            size_t n = 0;
            uint8_t rex = (uint8_t)((wide ? 8 : 0) | (reg >= 8 ? 4 : 0) | (base >= 8 ? 1 : 0));
            if (rex)
                code[n++] = (uint8_t)(0x40 | rex);
            code[n++] = store ? 0x89 : 0x8b;
            code[n++] = (uint8_t)(0x80 | (reg_low3[reg] << 3) | reg_low3[base]);
            if (reg_low3[base] == 4)
                code[n++] = 0x24;
            memcpy(code + n, &disp, 4);
            n += 4;
            fill(m, code, n);
            vmt_regs r;
            random_regs(&r);
            set_gpr(&r, base, DATA + 512 + rnd() % 2048 - (uint64_t)(int64_t)disp);
            compare(code, n, &r, m, true, e->fast, e->ref);
        }
    for (int k = 0; k < 2 * ROUNDS; k++) { /* mov r32, r32 (89 /r) */
        int dst = (int)(rnd() % 16), src = (int)(rnd() % 16);
        uint8_t code[3];
        size_t n = 0;
        if (dst >= 8 || src >= 8)
            code[n++] = (uint8_t)(0x40 | (src >= 8 ? 4 : 0) | (dst >= 8 ? 1 : 0));
        code[n++] = 0x89;
        code[n++] = (uint8_t)(0xc0 | (reg_low3[src] << 3) | reg_low3[dst]);
        compare_on_random_regs(e, m, code, n);
    }
    /* a store into a read-only page, and one crossing the page end: Unicorn's */
    static const uint8_t st[] = { 0x48, 0x89, 0x03 }; /* mov [rbx], rax */
    fill(m, st, 3);
    m->rights[1] = VMT_ACCESS_R;
    vmt_regs r;
    random_regs(&r);
    r.rbx = DATA + 0x100;
    compare(st, 3, &r, m, false, e->fast, e->ref);
    fill(m, st, 3);
    random_regs(&r);
    r.rbx = DATA + 4093;
    compare(st, 3, &r, m, false, e->fast, e->ref);
}

static void nops_and_endbr(void **state)
{
    engines *e = *state;
    vmem *m = e->m;
    static const uint8_t forms[][8] = {
        { 1, 0x90 },                               /* nop */
        { 4, 0xf3, 0x0f, 0x1e, 0xfa },             /* endbr64 */
        { 5, 0x0f, 0x1f, 0x44, 0x00, 0x00 },       /* nop dword [rax+rax] (no access) */
        { 4, 0x0f, 0x1f, 0x40, 0x00 },             /* nop dword [rax] */
    };
    for (size_t f = 0; f < sizeof forms / sizeof forms[0]; f++)
        for (int k = 0; k < 4; k++) {
            fill(m, forms[f] + 1, forms[f][0]);
            vmt_regs r;
            random_regs(&r);
            compare(forms[f] + 1, forms[f][0], &r, m, true, e->fast, e->ref);
        }
}

/* What the fast path must leave to Unicorn: the same outcome either way. */
static void left_to_the_engine(void **state)
{
    engines *e = *state;
    vmem *m = e->m;
    vmt_regs r;
    static const uint8_t push_rbp[] = { 0x55 };
    /* a push into a read-only stack page: Unicorn reports the fault */
    fill(m, push_rbp, 1);
    m->rights[2] = VMT_ACCESS_R;
    random_regs(&r);
    compare(push_rbp, 1, &r, m, false, e->fast, e->ref);
    /* a push crossing into an unmapped page below the stack page */
    fill(m, push_rbp, 1);
    random_regs(&r);
    r.rsp = STACK + 4;
    compare(push_rbp, 1, &r, m, false, e->fast, e->ref);
    /* a load from a page without read rights */
    static const uint8_t load[] = { 0x48, 0x8b, 0x03 }; /* mov rax, [rbx] */
    fill(m, load, 3);
    m->rights[1] = VMT_ACCESS_W;
    random_regs(&r);
    r.rbx = DATA + 0x40;
    compare(load, 3, &r, m, false, e->fast, e->ref);
    /* pause (f3 90), a 16-bit push, sub rsp: not fast forms */
    static const uint8_t pause[] = { 0xf3, 0x90 }, push16[] = { 0x66, 0x55 }, sub[] = { 0x48, 0x83, 0xec, 0x28 };
    fill(m, pause, 2);
    random_regs(&r);
    compare(pause, 2, &r, m, false, e->fast, e->ref);
    fill(m, push16, 2);
    random_regs(&r);
    compare(push16, 2, &r, m, false, e->fast, e->ref);
    fill(m, sub, 4);
    random_regs(&r);
    compare(sub, 4, &r, m, false, e->fast, e->ref);
    /* a ret to a non-canonical address (#GP) */
    static const uint8_t ret[] = { 0xc3 };
    fill(m, ret, 1);
    random_regs(&r);
    uint64_t bad = 0x0000900000000000ull;
    memcpy(m->page[2] + (r.rsp & 4095), &bad, 8);
    compare(ret, 1, &r, m, false, e->fast, e->ref);
    /* a pop from a stack page without read rights */
    static const uint8_t pop_rbp[] = { 0x5d };
    fill(m, pop_rbp, 1);
    m->rights[2] = VMT_ACCESS_W;
    random_regs(&r);
    compare(pop_rbp, 1, &r, m, false, e->fast, e->ref);
    /* code without execute rights */
    fill(m, push_rbp, 1);
    m->rights[0] = VMT_ACCESS_R;
    random_regs(&r);
    compare(push_rbp, 1, &r, m, false, e->fast, e->ref);
}

/* One rip, changing bytes: each call performs what is there now. */
static void changed_code_is_decoded_again(void **state)
{
    engines *e = *state;
    vmem *m = e->m;
    static const uint8_t push_rbp[] = { 0x55 }, push_rbx[] = { 0x53 }, mov_rbp_rsp[] = { 0x48, 0x89, 0xe5 };
    const uint8_t *seq[] = { push_rbp, push_rbx, mov_rbp_rsp, push_rbp };
    const size_t len[] = { 1, 1, 3, 1 };
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 4; i++) {
            fill(m, seq[i], len[i]);
            vmt_regs r;
            random_regs(&r);
            compare(seq[i], len[i], &r, m, true, e->fast, e->ref);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(push_every_register, setup, teardown),
        cmocka_unit_test_setup_teardown(mov_register_pairs, setup, teardown),
        cmocka_unit_test_setup_teardown(loads_from_base_plus_disp, setup, teardown),
        cmocka_unit_test_setup_teardown(pop_every_register_and_ret, setup, teardown),
        cmocka_unit_test_setup_teardown(function_run_ahead, setup, teardown),
        cmocka_unit_test_setup_teardown(stores_and_32bit_forms, setup, teardown),
        cmocka_unit_test_setup_teardown(nops_and_endbr, setup, teardown),
        cmocka_unit_test_setup_teardown(left_to_the_engine, setup, teardown),
        cmocka_unit_test_setup_teardown(changed_code_is_decoded_again, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
