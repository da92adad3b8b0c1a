/*
 * guests/cpu/cpu.c — the CPU a kernel needs, asserted from inside the guest
 * (KVM-selftests style; the host test is tests/guests/test_cpu_guest.c).
 *
 * It builds a GDT with user segments and a 64-bit TSS (RSP0 + IST1), turns
 * on SYSCALL (STAR/LSTAR/FMASK, KERNEL_GS_BASE for swapgs), NX and SSE, and
 * then checks, in order, with one REPORT per phase:
 *  1. SYSCALL round trips from CPL3 (return values, RFLAGS, CS/SS in user);
 *  2. #PF from user mode: delivered on IST1, error code with U/S and W, CR2;
 *  3. #GP from user mode (cli): delivered on TSS.RSP0, saved CS is user's;
 *  4. NX: a kernel call into an NX page faults (I/D bit), the same frame
 *     mapped executable runs;
 *  5. SMEP: with CR4.SMEP the kernel cannot run a user page; without it can;
 *  6. a PML4 self-map: entries read and written through it;
 *  7. SSE/x87 state across a user -> kernel -> user switch;
 *  8. interrupts from the host's test bus (vector 0x40 at a deadline in
 *     guest time): in kernel mode (spinning), waking HLT (the TSC moved by
 *     at least the deadline), and in user mode (delivered on TSS.RSP0).
 * Test bus (the host test): outl(CPU_BUS_ARM, ns) arms one interrupt ns of
 * guest time from now; inl(CPU_BUS_FIRED) is how many were acknowledged.
 */
#include <stdint.h>

#include "guest/guest.h"
#include "guest/paging.h"
#include "guest/ucall.h"
#include "guest/x86.h"

#define CPU_BUS_ARM 0x510
#define CPU_BUS_FIRED 0x511
#define IRQ_VECTOR 0x40
#define SYS_EXIT 0
#define SYS_ADD1 1
#define SYS_SSE 2
#define PTE_NX (1ULL << 63)
#define USER_DATA 0x00007f0000000000ULL
#define USER_STACK_TOP 0x00007f0000010000ULL
#define UNMAPPED_VA 0x00007f0000200008ULL
#define NX_VA 0xffffc00000001000ULL
#define X_VA 0xffffc00000002000ULL
#define SELFMAP_SLOT 510ULL

/* symbols of cpu_asm.S */
uint64_t enter_user(uint64_t rip, uint64_t rsp, uint64_t rflags, uint64_t data);
void syscall_entry(void);
void irq_stub(void);
extern char user_page[], user_syscalls[], user_pf[], user_pf_resume[], user_gp[], user_spin[], user_sse[],
    user_ret[];

uint64_t kernel_saved_rsp;
uint64_t syscall_dispatch(uint64_t nr, uint64_t arg);
void irq_handler(uint64_t *frame);

static uint8_t kernel_stack[16384] __attribute__((aligned(16)));
static uint8_t ist1_stack[8192] __attribute__((aligned(16)));
static uint8_t rsp0_stack[8192] __attribute__((aligned(16)));
static struct {
    uint64_t kernel_stack;
    uint64_t user_rsp;
} percpu;

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

struct desc_ptr {
    uint16_t limit;
    uint64_t base;
} __attribute__((packed));

static volatile uint64_t irq_count, irq_cs, irq_frame_at;
static volatile uint64_t pf_count, pf_err, pf_cr2, pf_cs, pf_frame_at;
static volatile uint64_t gp_count, gp_cs, gp_frame_at;
static const uint8_t sse_pattern[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };
static const uint8_t sse_kernel[16] = { 0xa5, 0xa5, 0xa5, 0xa5, 0x5a, 0x5a, 0x5a, 0x5a,
                                        0xc3, 0xc3, 0xc3, 0xc3, 0x3c, 0x3c, 0x3c, 0x3c };
static volatile uint64_t sse_kernel_saw_pattern;

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
static uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (uint64_t)hi << 32 | lo;
}
static void write_cr0(uint64_t v) { __asm__ volatile("mov %0, %%cr0" : : "r"(v) : "memory"); }
static void write_cr4(uint64_t v) { __asm__ volatile("mov %0, %%cr4" : : "r"(v) : "memory"); }
static uint32_t inl(uint16_t port)
{
    uint32_t v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

uint64_t syscall_dispatch(uint64_t nr, uint64_t arg)
{
    uint16_t cs;
    __asm__ volatile("mov %%cs, %0" : "=r"(cs));
    GUEST_ASSERT_EQ(cs, 0x08); /* the kernel side runs at CPL0 */
    if (nr == SYS_ADD1)
        return arg + 1;
    if (nr == SYS_SSE) {
        uint8_t got[16];
        __asm__ volatile("movdqu %%xmm0, %0" : "=m"(got) : : "memory");
        sse_kernel_saw_pattern = memcmp(got, sse_pattern, 16) == 0;
        __asm__ volatile("movdqu %0, %%xmm1" : : "m"(sse_kernel) : "memory");
        return 0;
    }
    return (uint64_t)-1;
}

void irq_handler(uint64_t *frame)
{
    irq_count++;
    irq_cs = frame[1];
    irq_frame_at = (uint64_t)(uintptr_t)frame;
    (*(volatile uint64_t *)(USER_DATA + 0x100))++;
}

static int on_pf(struct trap_frame *f)
{
    pf_count++;
    pf_err = f->error;
    pf_cr2 = read_cr2();
    pf_cs = f->cs;
    pf_frame_at = (uint64_t)(uintptr_t)f;
    if (f->cs & 3) {
        f->rip = (uint64_t)(uintptr_t)user_pf_resume;
    } else { /* a kernel call into a page it may not run: return to the caller */
        f->rip = *(uint64_t *)(uintptr_t)f->rsp;
        f->rsp += 8;
    }
    return 1;
}

static int on_gp(struct trap_frame *f)
{
    if (!(f->cs & 3))
        return 0;
    gp_count++;
    gp_cs = f->cs;
    gp_frame_at = (uint64_t)(uintptr_t)f;
    f->rip += 1; /* skip the cli */
    return 1;
}

static int within(uint64_t p, const void *base, uint64_t size)
{
    uint64_t b = (uint64_t)(uintptr_t)base;
    return p >= b && p < b + size;
}

static void set_idt(unsigned vector, uint64_t handler, unsigned ist)
{
    struct desc_ptr p;
    __asm__ volatile("sidt %0" : "=m"(p));
    uint8_t *g = (uint8_t *)(uintptr_t)p.base + 16 * vector;
    if (handler) {
        g[0] = (uint8_t)handler;
        g[1] = (uint8_t)(handler >> 8);
        g[2] = 0x08;
        g[3] = 0;
        g[5] = 0x8e;
        g[6] = (uint8_t)(handler >> 16);
        g[7] = (uint8_t)(handler >> 24);
        for (int i = 0; i < 4; i++)
            g[8 + i] = (uint8_t)(handler >> (32 + 8 * i));
    }
    g[4] = (uint8_t)ist;
    if (p.limit < 16 * vector + 15) {
        p.limit = (uint16_t)(16 * vector + 15);
        __asm__ volatile("lidt %0" : : "m"(p));
    }
}

static void setup_cpu(void)
{
    uint64_t t = (uint64_t)(uintptr_t)&tss;
    gdt[0] = 0;
    gdt[1] = 0x00209a0000000000ULL; /* 0x08 kernel code */
    gdt[2] = 0x0000920000000000ULL; /* 0x10 kernel data */
    gdt[3] = 0x0000f20000000000ULL; /* 0x1b user data */
    gdt[4] = 0x0020fa0000000000ULL; /* 0x23 user code */
    gdt[5] = (sizeof tss - 1) | (t & 0xffffff) << 16 | 0x89ULL << 40 | ((t >> 24) & 0xff) << 56;
    gdt[6] = t >> 32;
    tss.rsp[0] = (uint64_t)(uintptr_t)(rsp0_stack + sizeof rsp0_stack);
    tss.ist[0] = (uint64_t)(uintptr_t)(ist1_stack + sizeof ist1_stack);
    tss.iomap = sizeof tss;
    struct desc_ptr p = { sizeof gdt - 1, (uint64_t)(uintptr_t)gdt };
    __asm__ volatile("lgdt %0\n\tmov $0x28, %%ax\n\tltr %%ax" : : "m"(p) : "rax", "memory");
    percpu.kernel_stack = (uint64_t)(uintptr_t)(kernel_stack + sizeof kernel_stack);
    wrmsr(0xc0000080, rdmsr(0xc0000080) | 1 /* SCE */ | (1 << 11) /* NXE */);
    wrmsr(0xc0000081, (0x10ULL << 48) | (0x08ULL << 32));
    wrmsr(0xc0000082, (uint64_t)(uintptr_t)syscall_entry);
    wrmsr(0xc0000084, 0x700); /* TF IF DF */
    wrmsr(0xc0000102, (uint64_t)(uintptr_t)&percpu);
    GUEST_ASSERT_EQ(rdmsr(0xc0000081), (0x10ULL << 48) | (0x08ULL << 32));
    write_cr0((read_cr0() & ~(1ULL << 2)) | (1ULL << 1)); /* EM off, MP on */
    write_cr4(read_cr4() | (1ULL << 9) | (1ULL << 10));  /* OSFXSR, OSXMMEXCPT */
    trap_set_handler(14, on_pf);
    trap_set_handler(13, on_gp);
    set_idt(14, 0, 1); /* #PF on IST1 */
    set_idt(IRQ_VECTOR, (uint64_t)(uintptr_t)irq_stub, 0);
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

static void setup_user(uint64_t root)
{
    make_user(root, (uint64_t)(uintptr_t)user_page);
    for (uint64_t va = USER_DATA; va < USER_STACK_TOP; va += PAGE_SIZE) {
        pt_map_4k(root, va, pmm_alloc(), PTE_LEAF | PTE_US | PTE_NX);
        make_user(root, va);
    }
}

static uint64_t run_user(const char *entry)
{
    return enter_user((uint64_t)(uintptr_t)entry, USER_STACK_TOP, 0x202, USER_DATA);
}

static void test_syscalls(void)
{
    volatile uint64_t *d = (volatile uint64_t *)USER_DATA;
    GUEST_ASSERT_EQ(run_user(user_syscalls), 10);
    GUEST_ASSERT_EQ(d[0], 42);
    GUEST_ASSERT_EQ(d[1], 43);
    GUEST_ASSERT_EQ(d[2] & 0x200, 0x200); /* IF back on after sysret */
    GUEST_ASSERT_EQ(d[3], 0x23);
    GUEST_ASSERT_EQ(d[4], 0x1b);
    ucall_report("syscall.ok", 1);
}

static void test_user_faults(void)
{
    uint64_t before = pf_count;
    uint64_t rc = run_user(user_pf);
    GUEST_ASSERT_EQ(rc, 11);
    GUEST_ASSERT_EQ(pf_count, before + 1);
    GUEST_ASSERT_EQ(pf_err, 0x6); /* not present, write, user */
    GUEST_ASSERT_EQ(pf_cr2, UNMAPPED_VA);
    GUEST_ASSERT_EQ(pf_cs, 0x23);
    GUEST_ASSERT(within(pf_frame_at, ist1_stack, sizeof ist1_stack));
    ucall_report("user_pf.ist", 1);
    GUEST_ASSERT_EQ(run_user(user_gp), 12);
    GUEST_ASSERT_EQ(gp_count, 1);
    GUEST_ASSERT_EQ(gp_cs, 0x23);
    GUEST_ASSERT(within(gp_frame_at, rsp0_stack, sizeof rsp0_stack));
    ucall_report("user_gp.rsp0", 1);
}

static void test_nx_smep(uint64_t root)
{
    uint64_t f = pmm_alloc();
    *(volatile uint8_t *)phys_ptr(f) = 0xc3; /* ret */
    pt_map_4k(root, NX_VA, f, PTE_LEAF | PTE_NX);
    pt_map_4k(root, X_VA, f, PTE_LEAF);
    uint64_t before = pf_count;
    ((void (*)(void))(uintptr_t)X_VA)();
    GUEST_ASSERT_EQ(pf_count, before);
    ((void (*)(void))(uintptr_t)NX_VA)();
    GUEST_ASSERT_EQ(pf_count, before + 1);
    GUEST_ASSERT_EQ(pf_err, 0x11); /* present, instruction fetch */
    GUEST_ASSERT_EQ(pf_cr2, NX_VA);
    ucall_report("nx.fault", 1);
    ((void (*)(void))(uintptr_t)user_ret)(); /* no SMEP: the kernel may run it */
    GUEST_ASSERT_EQ(pf_count, before + 1);
    write_cr4(read_cr4() | (1ULL << 20));
    ((void (*)(void))(uintptr_t)user_ret)();
    GUEST_ASSERT_EQ(pf_count, before + 2);
    GUEST_ASSERT_EQ(pf_err, 0x11);
    GUEST_ASSERT_EQ(pf_cr2, (uint64_t)(uintptr_t)user_ret);
    write_cr4(read_cr4() & ~(1ULL << 20));
    ucall_report("smep.fault", 1);
}

static uint64_t selfmap_va(unsigned level, uint64_t va)
{
    /* the entry of `va` at `level` through PML4[SELFMAP_SLOT] */
    uint64_t s = SELFMAP_SLOT, a = 0xffff000000000000ULL | s << 39;
    if (level >= 2)
        a |= s << 30;
    if (level >= 3)
        a |= s << 21;
    if (level >= 4)
        a |= s << 12;
    uint64_t idx = (va & 0x0000ffffffffffffULL) >> (12 + 9 * (level - 1));
    uint64_t span_bits = 9 * (5 - level);
    return a | (idx & ((1ULL << span_bits) - 1)) << 3;
}

static void test_selfmap(uint64_t root)
{
    volatile uint64_t *pml4 = phys_ptr(root);
    pml4[SELFMAP_SLOT] = root | PTE_P | PTE_RW | PTE_A;
    reload_cr3();
    uint64_t va = (uint64_t)(uintptr_t)&irq_count;
    for (unsigned level = 1; level <= 4; level++) {
        volatile uint64_t *e = pt_entry(root, va, level, 0);
        GUEST_ASSERT(e);
        GUEST_ASSERT_EQ(*(volatile uint64_t *)selfmap_va(level, va), *e);
    }
    /* write a PTE through the self-map: map a page, then retarget it */
    uint64_t a = pmm_alloc(), b = pmm_alloc();
    *(volatile uint64_t *)phys_ptr(a) = 0xaaaa;
    *(volatile uint64_t *)phys_ptr(b) = 0xbbbb;
    const uint64_t V = 0xffffc00000003000ULL;
    pt_map_4k(root, V, a, PTE_LEAF);
    GUEST_ASSERT_EQ(*(volatile uint64_t *)V, 0xaaaa);
    *(volatile uint64_t *)selfmap_va(1, V) = b | PTE_LEAF;
    invlpg(V);
    GUEST_ASSERT_EQ(*(volatile uint64_t *)V, 0xbbbb);
    pml4[SELFMAP_SLOT] = 0;
    reload_cr3();
    ucall_report("selfmap.ok", 1);
}

static void test_sse(void)
{
    uint8_t *d = (uint8_t *)USER_DATA;
    memcpy(d, sse_pattern, 16);
    GUEST_ASSERT_EQ(run_user(user_sse), 14);
    GUEST_ASSERT_EQ(sse_kernel_saw_pattern, 1);
    GUEST_ASSERT_EQ(memcmp(d + 16, sse_pattern, 16), 0);
    GUEST_ASSERT_EQ(memcmp(d + 32, sse_kernel, 16), 0);
    GUEST_ASSERT_EQ(*(volatile uint64_t *)(d + 48), 0x3ff0000000000000ULL); /* 1.0 */
    ucall_report("sse.ok", 1);
}

static void test_interrupts(void)
{
    /* kernel mode, spinning */
    outl(CPU_BUS_ARM, 100000);
    __asm__ volatile("sti");
    for (uint64_t i = 0; i < 100000000 && irq_count == 0; i++)
        __asm__ volatile("" ::: "memory");
    __asm__ volatile("cli");
    GUEST_ASSERT_EQ(irq_count, 1);
    GUEST_ASSERT_EQ(irq_cs, 0x08);
    GUEST_ASSERT(!within(irq_frame_at, rsp0_stack, sizeof rsp0_stack)); /* no stack switch at CPL0 */
    ucall_report("irq.kernel", 1);
    /* HLT sleeps until the deadline in guest time */
    uint64_t t0 = rdtsc();
    outl(CPU_BUS_ARM, 5000000);
    __asm__ volatile("sti; hlt; cli" ::: "memory");
    uint64_t t1 = rdtsc();
    GUEST_ASSERT_EQ(irq_count, 2);
    ucall_report("hlt.tsc_delta", t1 - t0);
    /* user mode: user_spin waits on the counter at USER_DATA + 0x100 */
    *(volatile uint64_t *)(USER_DATA + 0x100) = 0;
    outl(CPU_BUS_ARM, 200000);
    uint64_t rc = run_user(user_spin + 0);
    __asm__ volatile("cli");
    GUEST_ASSERT_EQ(rc, 13);
    GUEST_ASSERT_EQ(irq_count, 3);
    GUEST_ASSERT_EQ(irq_cs, 0x23);
    GUEST_ASSERT(within(irq_frame_at, rsp0_stack, sizeof rsp0_stack));
    GUEST_ASSERT_EQ(inl(CPU_BUS_FIRED), 3);
    ucall_report("irq.user", 1);
}

int guest_main(uint64_t ram_size)
{
    (void)ram_size;
    uint64_t root = read_cr3() & ~0xfffULL;
    setup_cpu();
    setup_user(root);
    test_syscalls();
    test_user_faults();
    test_nx_smep(root);
    test_selfmap(root);
    test_sse();
    test_interrupts();
    return 0;
}
