/*
 * guests/smap/smap.c — SMEP, SMAP and CR4's reserved bits, asserted from
 * inside the guest (the host test is tests/guests/test_smap.c).
 *
 * On every CPU: CR4 bits the CPU does not have raise #GP(0) and leave CR4
 * as it was (PKE, UMIP, VMXE, SMXE, bits 15, 19, 23, 24: REPORT
 * reserved.gp = how many did); CPUID.7 as the guest sees it (cpuid.smap,
 * cpuid.smep, cpuid.pku).
 * Without SMAP: setting CR4.SMAP raises #GP (nosmap.gp), STAC raises #UD
 * (nosmap.stac_ud); without SMEP the same for CR4.SMEP (nosmep.gp).
 * With SMAP (CR4.SMEP|SMAP on, STEP "smap_on" for the host's checks):
 *  - a kernel read and a kernel write of a user page with AC = 0 raise #PF,
 *    error code 1 / 3 (present, read/write, supervisor), CR2 = the address,
 *    the saved RFLAGS.AC = 0 (smap.read_pf, smap.write_pf);
 *  - after STAC both succeed and the write lands (smap.stac_ok);
 *  - after CLAC the read faults again although the page was just used
 *    with AC = 1 (a translation cached for AC = 1 must not serve AC = 0:
 *    smap.clac_pf); then SMAP_ROUNDS rounds of STAC / CLAC / POPF with AC
 *    set / POPF with AC clear, each followed by a read (smap.rounds);
 *  - a kernel call into a user page faults with SMEP (error 0x11), with
 *    AC = 1 too (smep.fetch_pf); with SMEP off and SMAP on it runs: SMAP
 *    does not apply to fetches (smap.fetch_ok); there, a page written with
 *    AC = 1 and then run with AC = 0 (two of Unicorn's TLBs, different
 *    rights) is write-protected by the host in a view (STEP protect, arg:
 *    the frame) and written again with AC = 1 (STEP protected: the host
 *    counts the write event);
 *  - smap_hooked_read(p), alone in its page, whose first instruction reads
 *    *p: with AC = 0 it faults at that instruction (the #PF handler returns
 *    to the caller), with AC = 1 it returns the value (hooked.pf,
 *    hooked.ok). The host hooks it with a hidden breakpoint: the monitor's
 *    way of performing the hooked instruction must fault the same way.
 * Parameter smap_idt_user (host-patchable, default 0): 1 ends the SMAP part
 * with the IDT copied into a user page (implicit supervisor accesses): with
 * AC = 1 at CPL0 an exception is still delivered (SDM: AC lifts SMAP below
 * CPL3, implicit accesses included; REPORT idt_user.ac1), with AC = 0 its
 * delivery cannot read the gate, nor can #DF's: the CPU shuts down
 * (triple fault; the host checks the stop). No DONE in that mode.
 */
#include <stdint.h>

#include "guest/guest.h"
#include "guest/paging.h"
#include "guest/ucall.h"
#include "guest/x86.h"

#define CR4_UMIP (1ULL << 11)
#define CR4_VMXE (1ULL << 13)
#define CR4_SMXE (1ULL << 14)
#define CR4_SMEP (1ULL << 20)
#define CR4_SMAP (1ULL << 21)
#define CR4_PKE (1ULL << 22)
#define RFLAGS_AC (1ULL << 18)
#define PTE_NX (1ULL << 63)
#define DATA_VA 0x00007f0000000000ULL
#define CODE_VA 0x00007f0000001000ULL
#define DATA_MAGIC 0x5a5a0123456789a5ULL
#define FAULTED 0xfa017edfa017edULL
#define NO_FAULT 0xffu
#define SMAP_ROUNDS 32
#define IDT_VA 0x00007f0000002000ULL

__attribute__((section(".data"))) volatile uint32_t smap_idt_user = 0;

struct desc_ptr {
    uint16_t limit;
    uint64_t base;
} __attribute__((packed));

uint64_t smap_hooked_read(const volatile uint64_t *p);
/* alone in its 4 KiB page; its first instruction reads *p */
__asm__(".pushsection .page_text.smap_hooked_read,\"ax\",@progbits\n"
        ".balign 4096\n"
        ".globl smap_hooked_read\n"
        ".type smap_hooked_read, @function\n"
        "smap_hooked_read:\n"
        "\tmovq (%rdi), %rax\n"
        "\tret\n"
        ".size smap_hooked_read, .-smap_hooked_read\n"
        ".popsection\n");

static volatile uint64_t fixup_rip, fault_vector, fault_error, fault_cr2, fault_rflags;
static volatile int fault_returns; /* a fault in a called function: return to its caller, rax = FAULTED */

static void wrmsr(uint32_t msr, uint64_t v)
{
    __asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)) : "memory");
}

static uint64_t rdmsr(uint32_t msr)
{
    uint32_t lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return (uint64_t)hi << 32 | lo;
}

static void write_cr4(uint64_t v) { __asm__ volatile("mov %0, %%cr4" : : "r"(v) : "memory"); }
static void stac(void) { __asm__ volatile("stac" ::: "memory", "cc"); }
static void clac(void) { __asm__ volatile("clac" ::: "memory", "cc"); }

static void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

static int on_fault(struct trap_frame *f)
{
    if (!fixup_rip && !fault_returns)
        return 0;
    fault_vector = f->vector;
    fault_error = f->error;
    fault_cr2 = f->vector == 14 ? read_cr2() : 0;
    fault_rflags = f->rflags;
    if (fault_returns) {
        f->rip = *(uint64_t *)(uintptr_t)f->rsp;
        f->rsp += 8;
        f->rax = FAULTED;
        fault_returns = 0;
    } else {
        f->rip = fixup_rip;
        fixup_rip = 0;
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

static uint64_t try_read(uint64_t va, uint64_t *out)
{
    uint64_t v = 0;
    fault_vector = NO_FAULT;
    __asm__ volatile("lea 1f(%%rip), %%rcx\n\tmov %%rcx, fixup_rip(%%rip)\n\tmov (%1), %0\n\t"
                     "movq $0, fixup_rip(%%rip)\n1:"
                     : "+r"(v) : "r"(va) : "rcx", "memory");
    *out = v;
    return fault_vector;
}

static uint64_t try_write(uint64_t va, uint64_t v)
{
    fault_vector = NO_FAULT;
    __asm__ volatile("lea 1f(%%rip), %%rcx\n\tmov %%rcx, fixup_rip(%%rip)\n\tmov %0, (%1)\n\t"
                     "movq $0, fixup_rip(%%rip)\n1:"
                     : : "r"(v), "r"(va) : "rcx", "memory");
    return fault_vector;
}

static uint64_t try_stac(void)
{
    fault_vector = NO_FAULT;
    __asm__ volatile("lea 1f(%%rip), %%rcx\n\tmov %%rcx, fixup_rip(%%rip)\n\tstac\n\t"
                     "movq $0, fixup_rip(%%rip)\n1:"
                     : : : "rcx", "memory", "cc");
    return fault_vector;
}

/* Call fn; a fault inside returns FAULTED (fault_* say which). */
static uint64_t try_call(uint64_t (*fn)(const volatile uint64_t *), const volatile uint64_t *arg)
{
    fault_vector = NO_FAULT;
    fault_returns = 1;
    uint64_t r = fn(arg);
    fault_returns = 0;
    return r;
}

static void set_ac_popf(int on)
{
    if (on)
        __asm__ volatile("pushfq\n\torq $0x40000, (%%rsp)\n\tpopfq" ::: "memory", "cc");
    else
        __asm__ volatile("pushfq\n\tandq $~0x40000, (%%rsp)\n\tpopfq" ::: "memory", "cc");
}

/* Make va's translation user-accessible at every level. */
static void make_user(uint64_t root, uint64_t va)
{
    for (unsigned level = 4; level >= 1; level--) {
        volatile uint64_t *e = pt_entry(root, va, level, 0);
        GUEST_ASSERT(e && (*e & PTE_P));
        *e |= PTE_US;
    }
    invlpg(va);
}

static void expect_pf(uint64_t vector, uint64_t error, uint64_t cr2)
{
    GUEST_ASSERT_EQ(vector, 14);
    GUEST_ASSERT_EQ(fault_error, error);
    GUEST_ASSERT_EQ(fault_cr2, cr2);
    GUEST_ASSERT_EQ(fault_rflags & RFLAGS_AC, 0);
}

static unsigned reserved_bits_fault(void)
{
    static const uint64_t bits[] = { CR4_PKE, CR4_UMIP, CR4_VMXE, CR4_SMXE, 1ULL << 15, 1ULL << 19, 1ULL << 23,
                                     1ULL << 24 };
    unsigned n = 0;
    uint64_t cr4 = read_cr4();
    for (unsigned i = 0; i < sizeof bits / sizeof bits[0]; i++) {
        if (try_write_cr4(cr4 | bits[i]) == 13)
            n++;
        GUEST_ASSERT_EQ(read_cr4(), cr4);
    }
    return n;
}

static uint64_t try_ud2(void)
{
    fault_vector = NO_FAULT;
    __asm__ volatile("lea 1f(%%rip), %%rcx\n\tmov %%rcx, fixup_rip(%%rip)\n\tud2\n\t"
                     "movq $0, fixup_rip(%%rip)\n1:"
                     : : : "rcx", "memory");
    return fault_vector;
}

/* The IDT in a user page: its reads during delivery are implicit
 * supervisor accesses. Does not return (triple fault at the end). */
static void idt_in_user_page(uint64_t root)
{
    struct desc_ptr p;
    __asm__ volatile("sidt %0" : "=m"(p));
    GUEST_ASSERT(p.limit < PAGE_SIZE);
    uint64_t f = pmm_alloc();
    memcpy(phys_ptr(f), (void *)(uintptr_t)p.base, (size_t)p.limit + 1);
    pt_map_4k(root, IDT_VA, f, PTE_LEAF | PTE_US | PTE_NX);
    make_user(root, IDT_VA);
    struct desc_ptr u = { p.limit, IDT_VA };
    stac();
    __asm__ volatile("lidt %0" : : "m"(u) : "memory");
    GUEST_ASSERT_EQ(try_ud2(), 6); /* AC = 1 at CPL0: the gate is read */
    __asm__ volatile("lidt %0" : : "m"(p) : "memory");
    ucall_report("idt_user.ac1", 1);
    __asm__ volatile("lidt %0" : : "m"(u) : "memory");
    clac();
    (void)try_ud2(); /* AC = 0: neither #UD's nor #DF's gate can be read */
    __asm__ volatile("lidt %0" : : "m"(p) : "memory");
    GUEST_ASSERT(0 && "the #UD with the IDT in a user page was delivered");
}

static void test_smap(uint64_t root)
{
    uint64_t cr4 = read_cr4(), v = 0;
    wrmsr(0xc0000080, rdmsr(0xc0000080) | (1 << 11)); /* EFER.NXE: the data page is NX */
    uint64_t df = pmm_alloc(), cf = pmm_alloc();
    *(volatile uint64_t *)phys_ptr(df) = DATA_MAGIC;
    *(volatile uint8_t *)phys_ptr(cf) = 0xc3; /* ret */
    pt_map_4k(root, DATA_VA, df, PTE_LEAF | PTE_US | PTE_NX);
    pt_map_4k(root, CODE_VA, cf, PTE_LEAF | PTE_US);
    make_user(root, DATA_VA);
    make_user(root, CODE_VA);
    volatile uint64_t *data = (volatile uint64_t *)DATA_VA;

    /* before SMAP the kernel reads user pages freely (and Unicorn caches it) */
    GUEST_ASSERT_EQ(try_read(DATA_VA, &v), NO_FAULT);
    GUEST_ASSERT_EQ(v, DATA_MAGIC);
    GUEST_ASSERT_EQ(try_write_cr4(cr4 | CR4_SMEP | CR4_SMAP), NO_FAULT);
    GUEST_ASSERT_EQ(read_cr4() & (CR4_SMEP | CR4_SMAP), CR4_SMEP | CR4_SMAP);
    ucall_step("smap_on", "", 1, read_cr4());

    clac();
    GUEST_ASSERT_EQ(try_read(DATA_VA + 8, &v), 14);
    expect_pf(fault_vector, 0x1, DATA_VA + 8);
    ucall_report("smap.read_pf", 1);
    GUEST_ASSERT_EQ(try_write(DATA_VA + 16, 7), 14);
    expect_pf(fault_vector, 0x3, DATA_VA + 16);
    ucall_report("smap.write_pf", 1);

    stac();
    GUEST_ASSERT_EQ(try_read(DATA_VA, &v), NO_FAULT);
    GUEST_ASSERT_EQ(v, DATA_MAGIC);
    GUEST_ASSERT_EQ(try_read(DATA_VA + 16, &v), NO_FAULT);
    GUEST_ASSERT_EQ(v, 0); /* the faulting write changed nothing */
    GUEST_ASSERT_EQ(try_write(DATA_VA + 16, 0x1234), NO_FAULT);
    GUEST_ASSERT_EQ(data[2], 0x1234);
    ucall_report("smap.stac_ok", 1);

    clac(); /* the page was just used with AC = 1 */
    GUEST_ASSERT_EQ(try_read(DATA_VA + 24, &v), 14);
    expect_pf(fault_vector, 0x1, DATA_VA + 24);
    ucall_report("smap.clac_pf", 1);

    unsigned ok = 0;
    for (unsigned i = 0; i < SMAP_ROUNDS; i++) {
        unsigned good = 0;
        stac();
        good += try_read(DATA_VA, &v) == NO_FAULT && v == DATA_MAGIC;
        clac();
        good += try_read(DATA_VA, &v) == 14 && fault_error == 1;
        set_ac_popf(1);
        good += try_write(DATA_VA + 32, i) == NO_FAULT && data[4] == i;
        set_ac_popf(0);
        good += try_write(DATA_VA + 32, ~0ULL) == 14 && fault_error == 3;
        ok += good == 4;
    }
    GUEST_ASSERT_EQ(ok, SMAP_ROUNDS);
    ucall_report("smap.rounds", ok);

    /* SMEP: no kernel fetch from a user page, whatever AC says */
    typedef uint64_t (*fn_t)(const volatile uint64_t *);
    GUEST_ASSERT_EQ(try_call((fn_t)CODE_VA, 0), FAULTED);
    GUEST_ASSERT_EQ(fault_vector, 14);
    GUEST_ASSERT_EQ(fault_error, 0x11);
    GUEST_ASSERT_EQ(fault_cr2, CODE_VA);
    stac();
    GUEST_ASSERT_EQ(try_call((fn_t)CODE_VA, 0), FAULTED);
    GUEST_ASSERT_EQ(fault_error, 0x11);
    clac();
    ucall_report("smep.fetch_pf", 1);
    write_cr4(read_cr4() & ~CR4_SMEP); /* SMAP alone: fetches are not data accesses */
    (void)try_call((fn_t)CODE_VA, 0);
    GUEST_ASSERT_EQ(fault_vector, NO_FAULT);
    /* the same page written with AC = 1 and run with AC = 0: Unicorn's two
     * kernel TLBs hold it with different rights; the host write-protects
     * its frame in a view (STEP protect, arg: the frame), and the next
     * write with AC = 1 must reach the host (STEP protected) */
    reload_cr3(); /* Unicorn's TLBs start empty: the fetch below is the page's last fill */
    stac();
    *(volatile uint8_t *)(CODE_VA + 0x100) = 1;
    clac();
    (void)try_call((fn_t)CODE_VA, 0);
    GUEST_ASSERT_EQ(fault_vector, NO_FAULT);
    ucall_step("protect", "", 1, cf);
    stac();
    *(volatile uint8_t *)(CODE_VA + 0x100) = 2;
    clac();
    ucall_step("protected", "", 0);
    write_cr4(read_cr4() | CR4_SMEP);
    ucall_report("smap.fetch_ok", 1);

    /* the hooked function's first instruction reads the user page */
    GUEST_ASSERT_EQ(try_call(smap_hooked_read, data), FAULTED);
    expect_pf(fault_vector, 0x1, DATA_VA);
    ucall_report("hooked.pf", 1);
    stac();
    GUEST_ASSERT_EQ(try_call(smap_hooked_read, data), DATA_MAGIC);
    GUEST_ASSERT_EQ(fault_vector, NO_FAULT);
    clac();
    ucall_report("hooked.ok", 1);

    if (smap_idt_user)
        idt_in_user_page(root);
    write_cr4(cr4);
    GUEST_ASSERT_EQ(try_read(DATA_VA, &v), NO_FAULT); /* SMAP off: allowed again */
    GUEST_ASSERT_EQ(v, DATA_MAGIC);
}

int guest_main(uint64_t ram_size)
{
    (void)ram_size;
    trap_set_handler(6, on_fault);
    trap_set_handler(13, on_fault);
    trap_set_handler(14, on_fault);
    uint32_t r[4];
    cpuid(0, 0, r);
    unsigned smap = 0, smep = 0, pku = 0;
    if (r[0] >= 7) {
        cpuid(7, 0, r);
        smap = r[1] >> 20 & 1;
        smep = r[1] >> 7 & 1;
        pku = r[2] >> 3 & 1;
    }
    ucall_report("cpuid.smap", smap);
    ucall_report("cpuid.smep", smep);
    ucall_report("cpuid.pku", pku);
    ucall_report("reserved.gp", reserved_bits_fault());

    uint64_t cr4 = read_cr4();
    if (!smep) {
        GUEST_ASSERT_EQ(try_write_cr4(cr4 | CR4_SMEP), 13);
        GUEST_ASSERT_EQ(read_cr4(), cr4);
        ucall_report("nosmep.gp", 1);
    }
    if (!smap) {
        GUEST_ASSERT_EQ(try_write_cr4(cr4 | CR4_SMAP), 13);
        GUEST_ASSERT_EQ(read_cr4(), cr4);
        ucall_report("nosmap.gp", 1);
        GUEST_ASSERT_EQ(try_stac(), 6);
        ucall_report("nosmap.stac_ud", 1);
        return 0;
    }
    test_smap(kpt_root());
    return 0;
}
