/*
 * tests/emu/test_emulate_state.c — every instruction the engine performs
 * writes back ALL the architectural state it changes (issue 14, finding 2):
 * general registers, flags, x87/MMX/SSE registers and control words, and
 * memory. Each instruction class the engine can meet on a hidden read or a
 * displaced instruction (loads and stores of every width and register
 * family, string instructions with REP, xlat, xchg, lock cmpxchg,
 * CMPXCHG8B/16B, MOVNTI/MOVNTDQ/MOVNTDQA, accesses crossing a page
 * boundary, register-only SSE/MMX/x87 arithmetic) runs on random states
 * through vmt_emulate_full and, as the reference, directly on a bare
 * Unicorn instance whose x87/SSE state is loaded and read with the CPU's
 * own FXRSTOR/FXSAVE (independent of the engine's conversion). Registers,
 * the FXSAVE image and both data pages must be equal. vmt_emulate (no
 * vector state) must stop in front of every instruction that uses vector
 * state and change nothing, and still perform the others exactly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <unicorn/unicorn.h>

#include "vmtrap/emulate.h"

#define CODE    0x7f0000001000ull
#define DATA    0x7f0000005000ull /* DATA and DATA2 are adjacent: accesses cross */
#define DATA2   0x7f0000006000ull
#define STACK   0x7f0000009000ull
#define STUB    0x7f000000c000ull /* reference only: fxrstor / fxsave */
#define SCRATCH 0x7f000000e000ull /* reference only: the FXSAVE image */
#define STATES  24                /* random states per instruction */

enum { PG_CODE, PG_DATA, PG_DATA2, PG_STACK, NPAGES };
static const uint64_t page_va[NPAGES] = { CODE, DATA, DATA2, STACK };

typedef struct vmem {
    uint8_t page[NPAGES][4096];
} vmem;

static uint8_t *find(vmem *m, uint64_t va)
{
    for (unsigned i = 0; i < NPAGES; i++)
        if (page_va[i] == (va & ~4095ull))
            return m->page[i] + (va & 4095);
    return NULL;
}

static vmt_status rd(void *ctx, vmt_va va, void *buf, size_t len, vmt_access *allowed)
{
    uint8_t *p = find(ctx, va);
    if (!p || (va & 4095) + len > 4096)
        return VMT_E_NOT_PRESENT;
    memcpy(buf, p, len);
    *allowed = VMT_ACCESS_RWX;
    return VMT_OK;
}

static vmt_status wrt(void *ctx, vmt_va va, const void *buf, size_t len)
{
    uint8_t *p = find(ctx, va);
    if (!p || (va & 4095) + len > 4096)
        return VMT_E_NOT_PRESENT;
    memcpy(p, buf, len);
    return VMT_OK;
}

/* How an instruction's pointers are set up. */
enum ptr_kind {
    P_ANY,     /* rbx anywhere in DATA..DATA2, may cross the page boundary */
    P_ALIGN16, /* rbx 16-byte aligned (movntdqa, movaps, cmpxchg16b, ...) */
    P_STRING,  /* rsi in DATA, rdi in DATA2 (both may sit at page ends), rcx small */
    P_XLAT,    /* rbx + al inside DATA/DATA2 */
};

typedef struct insn_case {
    const char *name;
    uint8_t bytes[8];
    uint8_t len;
    enum ptr_kind ptr;
    bool vector; /* uses x87/MMX/SSE state: vmt_emulate stops in front of it */
} insn_case;

static const insn_case cases[] = {
    { "mov al,[rbx]", { 0x8a, 0x03 }, 2, P_ANY, false },
    { "mov ax,[rbx]", { 0x66, 0x8b, 0x03 }, 3, P_ANY, false },
    { "mov eax,[rbx]", { 0x8b, 0x03 }, 2, P_ANY, false },
    { "mov rax,[rbx]", { 0x48, 0x8b, 0x03 }, 3, P_ANY, false },
    { "mov [rbx],cl", { 0x88, 0x0b }, 2, P_ANY, false },
    { "mov [rbx],cx", { 0x66, 0x89, 0x0b }, 3, P_ANY, false },
    { "mov [rbx],ecx", { 0x89, 0x0b }, 2, P_ANY, false },
    { "mov [rbx],rcx", { 0x48, 0x89, 0x0b }, 3, P_ANY, false },
    { "movdqu xmm0,[rbx]", { 0xf3, 0x0f, 0x6f, 0x03 }, 4, P_ANY, true },
    { "movdqu [rbx],xmm1", { 0xf3, 0x0f, 0x7f, 0x0b }, 4, P_ANY, true },
    { "movups xmm2,[rbx]", { 0x0f, 0x10, 0x13 }, 3, P_ANY, true },
    { "movq xmm3,[rbx]", { 0xf3, 0x0f, 0x7e, 0x1b }, 4, P_ANY, true },
    { "movd xmm4,[rbx]", { 0x66, 0x0f, 0x6e, 0x23 }, 4, P_ANY, true },
    { "movdqa xmm8,[rbx]", { 0x66, 0x44, 0x0f, 0x6f, 0x03 }, 5, P_ALIGN16, true },
    { "movaps [rbx],xmm7", { 0x0f, 0x29, 0x3b }, 3, P_ALIGN16, true },
    { "movq mm0,[rbx]", { 0x0f, 0x6f, 0x03 }, 3, P_ANY, true },
    { "movq [rbx],mm1", { 0x0f, 0x7f, 0x0b }, 3, P_ANY, true },
    { "fld qword [rbx]", { 0xdd, 0x03 }, 2, P_ANY, true },
    { "fld tword [rbx]", { 0xdb, 0x2b }, 2, P_ANY, true },
    { "fstp qword [rbx]", { 0xdd, 0x1b }, 2, P_ANY, true },
    { "fild dword [rbx]", { 0xdb, 0x03 }, 2, P_ANY, true },
    { "movntdqa xmm5,[rbx]", { 0x66, 0x0f, 0x38, 0x2a, 0x2b }, 5, P_ALIGN16, true },
    { "movnti [rbx],rcx", { 0x48, 0x0f, 0xc3, 0x0b }, 4, P_ANY, false },
    { "pause", { 0xf3, 0x90 }, 2, P_ANY, false },
    { "mfence", { 0x0f, 0xae, 0xf0 }, 3, P_ANY, false },
    { "movntdq [rbx],xmm6", { 0x66, 0x0f, 0xe7, 0x33 }, 4, P_ALIGN16, true },
    { "rep movsb", { 0xf3, 0xa4 }, 2, P_STRING, false },
    { "rep movsq", { 0xf3, 0x48, 0xa5 }, 3, P_STRING, false },
    { "rep stosb", { 0xf3, 0xaa }, 2, P_STRING, false },
    { "rep stosq", { 0xf3, 0x48, 0xab }, 3, P_STRING, false },
    { "repe cmpsb", { 0xf3, 0xa6 }, 2, P_STRING, false },
    { "lodsq", { 0x48, 0xad }, 2, P_STRING, false },
    { "repne scasb", { 0xf2, 0xae }, 2, P_STRING, false },
    { "xlat", { 0xd7 }, 1, P_XLAT, false },
    { "xchg [rbx],rax", { 0x48, 0x87, 0x03 }, 3, P_ANY, false },
    { "lock cmpxchg [rbx],rcx", { 0xf0, 0x48, 0x0f, 0xb1, 0x0b }, 5, P_ANY, false },
    { "lock cmpxchg8b [rbx]", { 0xf0, 0x0f, 0xc7, 0x0b }, 4, P_ANY, false },
    { "lock cmpxchg16b [rbx]", { 0xf0, 0x48, 0x0f, 0xc7, 0x0b }, 5, P_ALIGN16, false },
    { "addps xmm0,xmm1", { 0x0f, 0x58, 0xc1 }, 3, P_ANY, true },
    { "pxor mm0,mm1", { 0x0f, 0xef, 0xc1 }, 3, P_ANY, true },
    { "fadd st0,st1", { 0xd8, 0xc1 }, 2, P_ANY, true },
};

/* ---- random states ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

typedef struct state {
    vmt_regs regs;
    vmt_fpu_state fpu;
    vmem mem;
} state;

static void random_state(const insn_case *c, state *s)
{
    memset(s, 0, sizeof *s);
    uint64_t *g = &s->regs.rax;
    for (int i = 0; i < 16; i++)
        g[i] = rnd();
    s->regs.rsp = STACK + 0x800;
    /* arithmetic flags and DF random; TF/IF clear */
    s->regs.rflags = 0x2 | (rnd() & 0x8d5) | ((rnd() & 1) ? 0x400 : 0);
    s->regs.rip = CODE;
    uint64_t off;
    switch (c->ptr) {
    case P_ANY: /* near the DATA/DATA2 boundary half of the time: crossing accesses */
        off = (rnd() & 1) ? 4096 - 1 - (rnd() % 16) : rnd() % (8192 - 64);
        s->regs.rbx = DATA + off;
        break;
    case P_ALIGN16:
        s->regs.rbx = DATA + ((rnd() % (8192 - 64)) & ~15ull);
        break;
    case P_STRING:
        s->regs.rcx = rnd() % 24;
        s->regs.rsi = DATA + 4096 - 256 + rnd() % 256; /* descending or ascending, stays inside */
        s->regs.rdi = DATA2 + 512 + rnd() % 256;
        if (rnd() % 4 == 0) { /* the destination crosses back into DATA */
            s->regs.rdi = DATA + 4096 - 24 + rnd() % 48;
            s->regs.rsi = DATA2 + 1024 + rnd() % 256;
        }
        break;
    case P_XLAT:
        s->regs.rbx = DATA + 4096 - 128 + rnd() % 64;
        break;
    }
    uint8_t *fx = s->fpu.fxsave;
    fx[0] = 0x7f, fx[1] = 0x03;                 /* FCW: all exceptions masked */
    uint16_t top = (uint16_t)(rnd() % 8);
    uint16_t fsw = (uint16_t)((top << 11) | (rnd() & 0x3f));
    fx[2] = (uint8_t)fsw, fx[3] = (uint8_t)(fsw >> 8);
    fx[4] = (uint8_t)rnd();                      /* abridged tags: random valid/empty */
    uint32_t mxcsr = 0x1f80 | (uint32_t)(rnd() & 0x3f);
    memcpy(fx + 24, &mxcsr, 4);
    for (int i = 0; i < 8; i++) { /* ST: 64-bit mantissa with the integer bit, sane exponent */
        uint64_t mant = rnd() | (1ull << 63);
        uint16_t exp = (uint16_t)(0x3fff - 40 + rnd() % 80) | (uint16_t)((rnd() & 1) << 15);
        memcpy(fx + 32 + 16 * i, &mant, 8);
        memcpy(fx + 32 + 16 * i + 8, &exp, 2);
    }
    for (int i = 0; i < 16 * 16; i++)
        fx[160 + i] = (uint8_t)rnd();
    for (int i = 0; i < 16; i++)
        memset(s->fpu.ymm_hi[i], 0x40 + i, 16);
    for (int p = PG_DATA; p <= PG_STACK; p++)
        for (int i = 0; i < 4096; i++)
            s->mem.page[p][i] = (uint8_t)rnd();
    memset(s->mem.page[PG_CODE], 0x90, 4096);
    memcpy(s->mem.page[PG_CODE], c->bytes, c->len);
}

/* ---- the reference: one bare Unicorn instruction ---- */

static const int gpr_ids[18] = { UC_X86_REG_RAX, UC_X86_REG_RBX, UC_X86_REG_RCX, UC_X86_REG_RDX,
                                 UC_X86_REG_RSI, UC_X86_REG_RDI, UC_X86_REG_RBP, UC_X86_REG_RSP,
                                 UC_X86_REG_R8,  UC_X86_REG_R9,  UC_X86_REG_R10, UC_X86_REG_R11,
                                 UC_X86_REG_R12, UC_X86_REG_R13, UC_X86_REG_R14, UC_X86_REG_R15,
                                 UC_X86_REG_RIP, UC_X86_REG_RFLAGS };

static void ref_gprs(uc_engine *uc, vmt_regs *r, bool write)
{
    uint64_t *g = &r->rax;
    for (int i = 0; i < 16; i++)
        write ? uc_reg_write(uc, gpr_ids[i], &g[i]) : uc_reg_read(uc, gpr_ids[i], &g[i]);
    write ? uc_reg_write(uc, UC_X86_REG_RIP, &r->rip) : uc_reg_read(uc, UC_X86_REG_RIP, &r->rip);
    write ? uc_reg_write(uc, UC_X86_REG_RFLAGS, &r->rflags) : uc_reg_read(uc, UC_X86_REG_RFLAGS, &r->rflags);
}

/* rax = SCRATCH, run the stub at STUB + off (fxrstor64/fxsave64 [rax]). */
static void ref_stub(uc_engine *uc, unsigned off)
{
    uint64_t a = SCRATCH, ip = STUB + off;
    uc_reg_write(uc, UC_X86_REG_RAX, &a);
    uc_err err = uc_emu_start(uc, ip, ip + 4, 0, 1);
    if (err != UC_ERR_OK)
        fail_msg("reference %s: %s", off ? "fxsave" : "fxrstor", uc_strerror(err));
}

/* UC_ERR_OK, or UC_ERR_INSN_INVALID when the CPU model lacks the
 * instruction (movntdqa is SSE4.1): then out = in. */
static uc_err reference(const state *in, state *out)
{
    *out = *in;
    uc_engine *uc;
    assert_int_equal(uc_open(UC_ARCH_X86, UC_MODE_64, &uc), UC_ERR_OK);
    for (int p = 0; p < NPAGES; p++) {
        assert_int_equal(uc_mem_map(uc, page_va[p], 4096, UC_PROT_ALL), UC_ERR_OK);
        uc_mem_write(uc, page_va[p], in->mem.page[p], 4096);
    }
    static const uint8_t stub[8] = { 0x48, 0x0f, 0xae, 0x08, /* fxrstor64 [rax] */
                                     0x48, 0x0f, 0xae, 0x00 }; /* fxsave64 [rax] */
    uc_mem_map(uc, STUB, 4096, UC_PROT_ALL);
    uc_mem_write(uc, STUB, stub, sizeof stub);
    uc_mem_map(uc, SCRATCH, 4096, UC_PROT_ALL);
    uc_mem_write(uc, SCRATCH, in->fpu.fxsave, 512);
    uint64_t cr4 = 0;
    uc_reg_read(uc, UC_X86_REG_CR4, &cr4);
    cr4 |= 1u << 9; /* OSFXSR: FXSAVE/FXRSTOR include MXCSR and the XMM registers */
    uc_reg_write(uc, UC_X86_REG_CR4, &cr4);
    ref_stub(uc, 0);
    vmt_regs r = in->regs;
    ref_gprs(uc, &r, true);
    uc_err err = uc_emu_start(uc, CODE, CODE + 4096, 0, 1);
    if (err == UC_ERR_INSN_INVALID) {
        uc_close(uc);
        return err;
    }
    if (err != UC_ERR_OK)
        fail_msg("reference run of %02x %02x %02x: %s", in->mem.page[PG_CODE][0], in->mem.page[PG_CODE][1],
                 in->mem.page[PG_CODE][2], uc_strerror(err));
    ref_gprs(uc, &out->regs, false);
    ref_stub(uc, 4);
    uc_mem_read(uc, SCRATCH, out->fpu.fxsave, 512);
    for (int p = 0; p < NPAGES; p++)
        uc_mem_read(uc, page_va[p], out->mem.page[p], 4096);
    uc_close(uc);
    return UC_ERR_OK;
}

/* FXSAVE bytes both sides define: FCW, FSW, FTW; MXCSR; ST0-7 (10 bytes
 * each); XMM0-15. (FOP/FIP/FDP: Unicorn's FXSAVE writes zeros there.) */
static void assert_fx_equal(const char *what, const uint8_t *a, const uint8_t *b)
{
    static const struct {
        unsigned off, len;
    } parts[] = { { 0, 5 }, { 24, 4 } };
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        if (memcmp(a + parts[i].off, b + parts[i].off, parts[i].len))
            fail_msg("%s: FXSAVE bytes %u..%u differ", what, parts[i].off, parts[i].off + parts[i].len - 1);
    for (unsigned i = 0; i < 8; i++)
        if (memcmp(a + 32 + 16 * i, b + 32 + 16 * i, 10))
            fail_msg("%s: ST%u differs", what, i);
    for (unsigned i = 0; i < 16; i++)
        if (memcmp(a + 160 + 16 * i, b + 160 + 16 * i, 16))
            fail_msg("%s: XMM%u differs", what, i);
}

static void assert_state_equal(const char *what, const state *got, const state *want)
{
    const uint64_t *g = &got->regs.rax, *w = &want->regs.rax;
    static const char *const names[16] = { "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
                                           "r8",  "r9",  "r10", "r11", "r12", "r13", "r14", "r15" };
    for (int i = 0; i < 16; i++)
        if (g[i] != w[i])
            fail_msg("%s: %s = 0x%llx, Unicorn 0x%llx", what, names[i], (unsigned long long)g[i],
                     (unsigned long long)w[i]);
    if (got->regs.rip != want->regs.rip || got->regs.rflags != want->regs.rflags)
        fail_msg("%s: rip/rflags 0x%llx/0x%llx, Unicorn 0x%llx/0x%llx", what, (unsigned long long)got->regs.rip,
                 (unsigned long long)got->regs.rflags, (unsigned long long)want->regs.rip,
                 (unsigned long long)want->regs.rflags);
    for (int p = 0; p < NPAGES; p++)
        for (int i = 0; i < 4096; i++)
            if (got->mem.page[p][i] != want->mem.page[p][i])
                fail_msg("%s: memory at 0x%llx is 0x%02x, Unicorn 0x%02x", what,
                         (unsigned long long)(page_va[p] + (uint64_t)i), got->mem.page[p][i], want->mem.page[p][i]);
}

static void each_instruction_writes_back_everything(void **st)
{
    (void)st;
    vmt_emulator *em;
    char why[128];
    assert_int_equal(vmt_emulator_create(&em, why, sizeof why), VMT_OK);
    static state in, want, got;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (int k = 0; k < STATES; k++) {
            random_state(&cases[c], &in);
            uc_err ref = reference(&in, &want);
            got = in;
            vmt_emulate_mem mem = { rd, wrt, &got.mem, NULL };
            vmt_emulate_result res;
            char what[96];
            snprintf(what, sizeof what, "%s (state %d)", cases[c].name, k);
            vmt_status est = vmt_emulate_full(em, &got.regs, &got.fpu, &mem, 1, &res);
            if (ref == UC_ERR_INSN_INVALID) { /* not in this CPU model: refused, nothing changed */
                assert_true(est != VMT_OK || res.stop == VMT_EMULATE_EXCEPTION);
                assert_int_equal(res.instructions, 0);
                assert_state_equal(what, &got, &in);
                assert_memory_equal(got.fpu.fxsave, in.fpu.fxsave, 512);
                continue;
            }
            if (est != VMT_OK)
                fail_msg("%s: %s", what, vmt_emulator_error(em));
            if (res.stop != VMT_EMULATE_DONE || res.instructions != 1)
                fail_msg("%s: stopped (%d) after %llu instructions", what, (int)res.stop,
                         (unsigned long long)res.instructions);
            assert_int_equal(vmt_emulator_check(em), VMT_OK);
            assert_state_equal(what, &got, &want);
            assert_fx_equal(what, got.fpu.fxsave, want.fpu.fxsave);
            /* the YMM upper halves are passed through: SSE leaves them */
            assert_memory_equal(got.fpu.ymm_hi, in.fpu.ymm_hi, sizeof in.fpu.ymm_hi);
        }
    }
    vmt_emulator_destroy(em);
}

/* Without the vector state the engine must not run an instruction that
 * uses it on its own registers (the xmm0 of issue 14): it stops in front
 * of it with nothing changed; everything else is performed exactly. */
static void without_vector_state_it_stops_before(void **st)
{
    (void)st;
    vmt_emulator *em;
    char why[128];
    assert_int_equal(vmt_emulator_create(&em, why, sizeof why), VMT_OK);
    static state in, want, got;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (int k = 0; k < 4; k++) {
            random_state(&cases[c], &in);
            got = in;
            vmt_emulate_mem mem = { rd, wrt, &got.mem, NULL };
            vmt_emulate_result res;
            char what[96];
            snprintf(what, sizeof what, "%s (state %d, no vector state)", cases[c].name, k);
            if (vmt_emulate(em, &got.regs, &mem, 1, &res) != VMT_OK)
                fail_msg("%s: %s", what, vmt_emulator_error(em));
            if (cases[c].vector) {
                if (res.stop != VMT_EMULATE_SPECIAL || res.instructions != 0)
                    fail_msg("%s: performed without the guest's vector registers", what);
                assert_state_equal(what, &got, &in);
            } else {
                assert_int_equal(reference(&in, &want), UC_ERR_OK);
                assert_int_equal(res.instructions, 1);
                assert_state_equal(what, &got, &want);
            }
            assert_int_equal(vmt_emulator_check(em), VMT_OK);
        }
    }
    state *null_fpu = &got;
    vmt_emulate_mem mem = { rd, wrt, &null_fpu->mem, NULL };
    vmt_emulate_result res;
    assert_int_equal(vmt_emulate_full(em, &null_fpu->regs, NULL, &mem, 1, &res), VMT_E_INVAL);
    vmt_emulator_destroy(em);
}

/* A faulting vector load (its second page is missing) changes no register. */
static void faulting_vector_load_changes_nothing(void **st)
{
    (void)st;
    vmt_emulator *em;
    char why[128];
    assert_int_equal(vmt_emulator_create(&em, why, sizeof why), VMT_OK);
    static state in, got;
    random_state(&cases[8], &in); /* movdqu xmm0,[rbx] */
    in.regs.rbx = DATA2 + 4096 - 8; /* crosses into a page that is not there */
    got = in;
    vmt_emulate_mem mem = { rd, wrt, &got.mem, NULL };
    vmt_emulate_result res;
    assert_int_equal(vmt_emulate_full(em, &got.regs, &got.fpu, &mem, 1, &res), VMT_OK);
    assert_int_equal(res.stop, VMT_EMULATE_FAULT);
    assert_int_equal(res.instructions, 0);
    assert_state_equal("faulting movdqu", &got, &in);
    assert_memory_equal(got.fpu.fxsave, in.fpu.fxsave, 512);
    assert_int_equal(vmt_emulator_check(em), VMT_OK);
    vmt_emulator_destroy(em);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(each_instruction_writes_back_everything),
        cmocka_unit_test(without_vector_state_it_stops_before),
        cmocka_unit_test(faulting_vector_load_changes_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
