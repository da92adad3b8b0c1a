/*
 * guests/pcid/pcid.c — process-context identifiers asserted from inside the
 * guest (KVM-selftests style; the host test is tests/guests/test_pcid.c).
 *
 * Two address spaces: root A (the boot tables) under PCID 1 and root B (a
 * copy of A's top level) under PCID 2 map TEST_VA to different frames; a
 * global page (GLOBAL_VA, CR4.PGE) lives in tables both roots share. When
 * CPUID offers PCID and INVPCID, the guest checks, in order, with one
 * REPORT per phase:
 *  1. cpuid.pcid / cpuid.invpcid as CPUID reports them;
 *  2. pcide.gp: setting CR4.PCIDE with CR3[11:0] != 0 raises #GP; with 0
 *     it sets; reserved CR3 bits raise #GP;
 *  3. switch.ok: MOV to CR3 with and without bit 63 between A and B, each
 *     access sees its own frame, CR3 reads back without bit 63;
 *  4. the ping-pong loops the host measures (STEP pingpong <mode> begin /
 *     end, PINGPONG_ROUNDS switches each): bit 63 set, then clear;
 *  5. inval.<how>: B's PTE of TEST_VA changed while A runs, then INVPCID
 *     type 0 / 1 / 2 / 3 (or, for INVLPG, while B runs) and the new frame is
 *     what B sees afterwards; the global page retargeted + INVLPG from the
 *     other PCID;
 *  6. the host's measurement of dropped PCIDs (STEP inactive <mode>);
 *  7. invpcid.faults: type 4, descriptor bits 63:12, non-canonical address,
 *     INVPCID and INVLPG at CPL3 (a user page, back through the #GP
 *     handler): #GP(0);
 *     (PCID != 0 with PCIDE=0: phase 9);
 *  8. state: the host reads and writes back the vCPU state at STEP state
 *     (PCIDE and PCID 2 in it), the mapping is the same after;
 *  9. pcide.clear: clearing CR4.PCIDE keeps running on root A.
 * Without PCID in CPUID (qemu64): setting CR4.PCIDE raises #GP and INVPCID
 * raises #UD (REPORT nopcid.gp / noinvpcid.ud).
 */
#include <stdint.h>

#include "guest/guest.h"
#include "guest/paging.h"
#include "guest/ucall.h"
#include "guest/x86.h"

#define CR4_PGE (1ULL << 7)
#define CR4_PCIDE (1ULL << 17)
#define CR3_NOFLUSH (1ULL << 63)
#define PCID_A 1ULL
#define PCID_B 2ULL
#define TEST_VA 0x0000100000000000ULL   /* PML4 slot 32: its own tables per root */
#define GLOBAL_VA 0x0000180000000000ULL /* PML4 slot 48: shared by both roots */
#define PINGPONG_ROUNDS 64
#define INACTIVE_ROUNDS 16
#define NO_FAULT 0xffu

static volatile uint64_t fixup_rip, fixup_rsp, fault_vector, fault_error, fault_cs;

static void write_cr4(uint64_t v) { __asm__ volatile("mov %0, %%cr4" : : "r"(v) : "memory"); }

static int on_fault(struct trap_frame *f)
{
    if (!fixup_rip)
        return 0;
    fault_vector = f->vector;
    fault_error = f->error;
    fault_cs = f->cs;
    f->rip = fixup_rip;
    fixup_rip = 0;
    if (f->cs & 3) { /* from user mode: back to the kernel where user_try left */
        f->cs = 0x08;
        f->ss = 0x10;
        f->rsp = fixup_rsp;
        f->rflags = 0x2;
    }
    return 1;
}

/* Each try_* runs one instruction and returns the vector it raised (NO_FAULT). */
static uint64_t try_write_cr4(uint64_t v)
{
    fault_vector = NO_FAULT;
    __asm__ volatile("lea 1f(%%rip), %%rcx\n\tmov %%rcx, fixup_rip(%%rip)\n\tmov %0, %%cr4\n\t"
                     "movq $0, fixup_rip(%%rip)\n1:"
                     : : "r"(v) : "rcx", "memory");
    return fault_vector;
}

static uint64_t try_write_cr3(uint64_t v)
{
    fault_vector = NO_FAULT;
    __asm__ volatile("lea 1f(%%rip), %%rcx\n\tmov %%rcx, fixup_rip(%%rip)\n\tmov %0, %%cr3\n\t"
                     "movq $0, fixup_rip(%%rip)\n1:"
                     : : "r"(v) : "rcx", "memory");
    return fault_vector;
}

struct invpcid_desc {
    uint64_t pcid;
    uint64_t addr;
} __attribute__((aligned(16)));

static uint64_t try_invpcid(uint64_t type, uint64_t pcid, uint64_t addr)
{
    struct invpcid_desc d = { pcid, addr };
    fault_vector = NO_FAULT;
    __asm__ volatile("lea 1f(%%rip), %%rcx\n\tmov %%rcx, fixup_rip(%%rip)\n\tinvpcid %0, %1\n\t"
                     "movq $0, fixup_rip(%%rip)\n1:"
                     : : "m"(d), "r"(type) : "rcx", "memory");
    return fault_vector;
}

static void invpcid(uint64_t type, uint64_t pcid, uint64_t addr)
{
    GUEST_ASSERT_EQ(try_invpcid(type, pcid, addr), NO_FAULT);
}

/* ---- user mode, for INVPCID at CPL3 ---- */
#define USER_VA 0x0000200000000000ULL /* PML4 slot 64, root A only */
struct tss64 {
    uint32_t reserved0;
    uint64_t rsp[3];
    uint64_t reserved1;
    uint64_t ist[7];
    uint64_t reserved2;
    uint16_t reserved3, iomap;
} __attribute__((packed));
static struct tss64 tss __attribute__((aligned(16)));
static uint64_t gdt[7];
static uint8_t rsp0_stack[8192] __attribute__((aligned(16)));

/* GDT with user segments (0x1b data, 0x23 code) and a TSS whose RSP0 takes
 * exceptions from user mode; a user page at USER_VA holding
 * `invpcid (%rax), %rcx; ud2`, at +USER_INVLPG `invlpg (%rax); ud2` and a
 * descriptor at +0x800. */
#define USER_INVLPG 0x100
static void setup_user(uint64_t root)
{
    uint64_t t = (uint64_t)(uintptr_t)&tss;
    gdt[1] = 0x00209a0000000000ULL;
    gdt[2] = 0x0000920000000000ULL;
    gdt[3] = 0x0000f20000000000ULL;
    gdt[4] = 0x0020fa0000000000ULL;
    gdt[5] = (sizeof tss - 1) | (t & 0xffffff) << 16 | 0x89ULL << 40 | ((t >> 24) & 0xff) << 56;
    gdt[6] = t >> 32;
    tss.rsp[0] = (uint64_t)(uintptr_t)(rsp0_stack + sizeof rsp0_stack);
    tss.iomap = sizeof tss;
    struct {
        uint16_t limit;
        uint64_t base;
    } __attribute__((packed)) p = { sizeof gdt - 1, (uint64_t)(uintptr_t)gdt };
    __asm__ volatile("lgdt %0\n\tmov $0x28, %%ax\n\tltr %%ax" : : "m"(p) : "rax", "memory");
    uint64_t f = pmm_alloc();
    static const uint8_t code[] = { 0x66, 0x0f, 0x38, 0x82, 0x08, 0x0f, 0x0b };
    static const uint8_t code2[] = { 0x0f, 0x01, 0x38, 0x0f, 0x0b };
    memcpy(phys_ptr(f), code, sizeof code);
    memcpy((uint8_t *)phys_ptr(f) + USER_INVLPG, code2, sizeof code2);
    pt_map_4k(root, USER_VA, f, PTE_LEAF | PTE_US);
    for (unsigned level = 4; level >= 2; level--)
        *pt_entry(root, USER_VA, level, 0) |= PTE_US;
}

/* Run the user page at `entry` with rax = its descriptor, rcx = type; the
 * vector raised (its handler brings the CPU back here at CPL0). */
static uint64_t user_try(uint64_t entry, uint64_t type)
{
    fault_vector = NO_FAULT;
    __asm__ volatile("lea 1f(%%rip), %%r8\n\tmov %%r8, fixup_rip(%%rip)\n\tmov %%rsp, fixup_rsp(%%rip)\n\t"
                     "pushq $0x1b\n\tpushq %0\n\tpushq $0x2\n\tpushq $0x23\n\tpushq %1\n\tiretq\n1:"
                     : : "r"(USER_VA + 0xff0), "r"(entry), "a"(USER_VA + 0x800), "c"(type) : "r8", "memory");
    return fault_vector;
}

static void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

static uint64_t root_a, root_b;

static uint64_t peek(uint64_t va) { return *(volatile uint64_t *)va; }

/* A frame holding `marker` in its first word. */
static uint64_t marked_frame(uint64_t marker)
{
    uint64_t f = pmm_alloc();
    *(volatile uint64_t *)phys_ptr(f) = marker;
    return f;
}

static volatile uint64_t *leaf(uint64_t root, uint64_t va)
{
    volatile uint64_t *e = pt_entry(root, va, 1, 0);
    GUEST_ASSERT(e);
    return e;
}

static void setup_roots(void)
{
    root_a = read_cr3() & PTE_ADDR;
    /* the global page first: its tables are shared by the copy */
    pt_map_4k(root_a, GLOBAL_VA, marked_frame(0x6001), PTE_LEAF | PTE_G);
    root_b = pmm_alloc();
    memcpy(phys_ptr(root_b), phys_ptr(root_a), PAGE_SIZE);
    pt_map_4k(root_a, TEST_VA, marked_frame(0xa001), PTE_LEAF);
    pt_map_4k(root_b, TEST_VA, marked_frame(0xb001), PTE_LEAF);
    write_cr4(read_cr4() | CR4_PGE);
    reload_cr3();
}

static void test_enable_pcide(void)
{
    write_cr3(root_a | PCID_A); /* with PCIDE=0 the low bits are PWT/PCD/ignored */
    GUEST_ASSERT_EQ(try_write_cr4(read_cr4() | CR4_PCIDE), 13);
    GUEST_ASSERT_EQ(fault_error, 0);
    GUEST_ASSERT_EQ(read_cr4() & CR4_PCIDE, 0);
    GUEST_ASSERT_EQ(try_write_cr3(root_a | CR3_NOFLUSH), 13); /* bit 63 is reserved without PCIDE */
    write_cr3(root_a);
    GUEST_ASSERT_EQ(try_write_cr4(read_cr4() | CR4_PCIDE), NO_FAULT);
    GUEST_ASSERT(read_cr4() & CR4_PCIDE);
    GUEST_ASSERT_EQ(try_write_cr3(root_a | (1ULL << 62)), 13); /* reserved above MAXPHYADDR */
    GUEST_ASSERT_EQ(read_cr3(), root_a);
    ucall_report("pcide.gp", 1);
}

static void switch_to(uint64_t root, uint64_t pcid, int noflush)
{
    write_cr3(root | pcid | (noflush ? CR3_NOFLUSH : 0));
}

static void test_switches(void)
{
    for (int noflush = 0; noflush <= 1; noflush++) {
        switch_to(root_a, PCID_A, noflush);
        GUEST_ASSERT_EQ(read_cr3(), root_a | PCID_A); /* bit 63 never reads back */
        GUEST_ASSERT_EQ(peek(TEST_VA), 0xa001);
        GUEST_ASSERT_EQ(peek(GLOBAL_VA), 0x6001);
        switch_to(root_b, PCID_B, noflush);
        GUEST_ASSERT_EQ(read_cr3(), root_b | PCID_B);
        GUEST_ASSERT_EQ(peek(TEST_VA), 0xb001);
        GUEST_ASSERT_EQ(peek(GLOBAL_VA), 0x6001);
    }
    /* the same root under another PCID, then back with bit 63 */
    switch_to(root_a, 3, 0);
    GUEST_ASSERT_EQ(peek(TEST_VA), 0xa001);
    switch_to(root_b, PCID_B, 1);
    GUEST_ASSERT_EQ(peek(TEST_VA), 0xb001);
    switch_to(root_a, PCID_A, 1);
    GUEST_ASSERT_EQ(peek(TEST_VA), 0xa001);
    ucall_report("switch.ok", 1);
}

static void pingpong(const char *mode, int noflush)
{
    uint64_t sum = 0;
    ucall_step("pingpong", mode, 1, (uint64_t)PINGPONG_ROUNDS);
    for (int i = 0; i < PINGPONG_ROUNDS; i++) {
        switch_to(root_b, PCID_B, noflush);
        sum += peek(TEST_VA);
        switch_to(root_a, PCID_A, noflush);
        sum += peek(TEST_VA);
    }
    ucall_step("pingpong", "end", 1, (uint64_t)PINGPONG_ROUNDS);
    GUEST_ASSERT_EQ(sum, (uint64_t)PINGPONG_ROUNDS * (0xa001 + 0xb001));
}

/* Retarget B's TEST_VA while A runs, invalidate with `how`, then B sees it. */
static uint64_t next_marker = 0xb100;

static void retarget_b(void)
{
    volatile uint64_t *pte = leaf(root_b, TEST_VA);
    uint64_t old = *pte & PTE_ADDR;
    *pte = marked_frame(++next_marker) | PTE_LEAF;
    pmm_free(old);
}

static void test_invalidations(void)
{
    static const char *const names[4] = { "inval.type0", "inval.type1", "inval.type2", "inval.type3" };
    for (uint64_t type = 0; type < 4; type++) {
        switch_to(root_b, PCID_B, 1);
        GUEST_ASSERT_EQ(peek(TEST_VA), next_marker == 0xb100 ? 0xb001 : next_marker);
        switch_to(root_a, PCID_A, 1);
        retarget_b();
        invpcid(type, PCID_B, TEST_VA);
        GUEST_ASSERT_EQ(peek(TEST_VA), 0xa001);
        switch_to(root_b, PCID_B, 1);
        GUEST_ASSERT_EQ(peek(TEST_VA), next_marker);
        switch_to(root_a, PCID_A, 1);
        ucall_report(names[type], 1);
    }
    /* INVLPG acts on the current PCID: retarget B's page while B runs */
    switch_to(root_b, PCID_B, 1);
    GUEST_ASSERT_EQ(peek(TEST_VA), next_marker);
    retarget_b();
    invlpg(TEST_VA);
    GUEST_ASSERT_EQ(peek(TEST_VA), next_marker);
    /* ... and on global translations of any PCID: GLOBAL_VA was used under
     * B; retarget it (shared tables) and INVLPG it from A */
    GUEST_ASSERT_EQ(peek(GLOBAL_VA), 0x6001);
    switch_to(root_a, PCID_A, 1);
    volatile uint64_t *g = leaf(root_a, GLOBAL_VA);
    *g = marked_frame(0x6002) | PTE_LEAF | PTE_G;
    invlpg(GLOBAL_VA);
    GUEST_ASSERT_EQ(peek(GLOBAL_VA), 0x6002);
    switch_to(root_b, PCID_B, 1);
    GUEST_ASSERT_EQ(peek(GLOBAL_VA), 0x6002);
    switch_to(root_a, PCID_A, 1);
    ucall_report("inval.invlpg", 1);
}

/* The host counts guest walks: B's translations dropped by INVPCID (type 1
 * for PCID 2) while A runs must be walked again when B comes back with bit
 * 63 set; without the INVPCID they come from what was kept. */
static void inactive(const char *mode, int drop)
{
    uint64_t sum = 0;
    ucall_step("inactive", mode, 1, (uint64_t)INACTIVE_ROUNDS);
    for (int i = 0; i < INACTIVE_ROUNDS; i++) {
        if (drop)
            invpcid(1, PCID_B, 0);
        switch_to(root_b, PCID_B, 1);
        sum += peek(TEST_VA);
        switch_to(root_a, PCID_A, 1);
        sum += peek(TEST_VA);
    }
    ucall_step("inactive", "end", 1, (uint64_t)INACTIVE_ROUNDS);
    GUEST_ASSERT_EQ(sum, (uint64_t)INACTIVE_ROUNDS * (0xa001 + next_marker));
}

static void test_invpcid_faults(void)
{
    GUEST_ASSERT_EQ(try_invpcid(4, 0, 0), 13);
    GUEST_ASSERT_EQ(fault_error, 0);
    GUEST_ASSERT_EQ(try_invpcid(0, 1ULL << 12, TEST_VA), 13);      /* descriptor bits 63:12 */
    GUEST_ASSERT_EQ(try_invpcid(0, PCID_B, 0x0000800000000000ULL), 13); /* non-canonical */
    GUEST_ASSERT_EQ(try_invpcid(3, 0, 0), NO_FAULT);
    /* at CPL3: #GP(0), taken on TSS.RSP0 with the user CS in the frame */
    setup_user(root_a);
    GUEST_ASSERT_EQ(user_try(USER_VA, 3), 13);
    GUEST_ASSERT_EQ(fault_error, 0);
    GUEST_ASSERT_EQ(fault_cs, 0x23);
    GUEST_ASSERT_EQ(user_try(USER_VA + USER_INVLPG, 0), 13); /* INVLPG too (Unicorn checks it) */
    GUEST_ASSERT_EQ(fault_cs, 0x23);
    ucall_report("invpcid.faults", 1);
}

static void test_state(void)
{
    switch_to(root_b, PCID_B, 1);
    ucall_step("state", "", 2, root_b | PCID_B, read_cr4());
    GUEST_ASSERT_EQ(read_cr3(), root_b | PCID_B);
    GUEST_ASSERT(read_cr4() & CR4_PCIDE);
    GUEST_ASSERT_EQ(peek(TEST_VA), next_marker);
    switch_to(root_a, PCID_A, 1);
    GUEST_ASSERT_EQ(peek(TEST_VA), 0xa001);
    ucall_report("state.ok", 1);
}

static void test_clear_pcide(void)
{
    switch_to(root_a, 0, 0);
    write_cr4(read_cr4() & ~CR4_PCIDE);
    GUEST_ASSERT_EQ(read_cr4() & CR4_PCIDE, 0);
    GUEST_ASSERT_EQ(peek(TEST_VA), 0xa001);
    /* PCID != 0 in a descriptor is refused without PCIDE (types 0 and 1) */
    GUEST_ASSERT_EQ(try_invpcid(1, PCID_B, 0), 13);
    GUEST_ASSERT_EQ(try_invpcid(2, 0, 0), NO_FAULT);
    write_cr3(root_b);
    GUEST_ASSERT_EQ(peek(TEST_VA), next_marker);
    write_cr3(root_a);
    ucall_report("pcide.clear", 1);
}

int guest_main(uint64_t ram_size)
{
    (void)ram_size;
    trap_set_handler(6, on_fault);
    trap_set_handler(13, on_fault);
    uint32_t r[4];
    cpuid(1, 0, r);
    uint64_t has_pcid = (r[2] >> 17) & 1;
    cpuid(7, 0, r);
    uint64_t has_invpcid = (r[1] >> 10) & 1;
    ucall_report("cpuid.pcid", has_pcid);
    ucall_report("cpuid.invpcid", has_invpcid);
    setup_roots();
    if (!has_pcid) {
        GUEST_ASSERT_EQ(try_write_cr4(read_cr4() | CR4_PCIDE), 13);
        ucall_report("nopcid.gp", 1);
    }
    if (!has_invpcid) {
        GUEST_ASSERT_EQ(try_invpcid(2, 0, 0), 6);
        ucall_report("noinvpcid.ud", 1);
    }
    if (!has_pcid || !has_invpcid)
        return 0;
    test_enable_pcide();
    test_switches();
    pingpong("noflush", 1);
    pingpong("flush", 0);
    test_invalidations();
    inactive("kept", 0);
    inactive("dropped", 1);
    test_invpcid_faults();
    test_state();
    test_clear_pcide();
    return 0;
}
