/*
 * guests/lib/start.c — from crt0 to guest_main: GDT, IDT, the guest's own
 * page tables, and exception dispatch.
 *
 * GDT: null, 64-bit code (0x08), data (0x10); no TSS (the guests stay at
 * CPL0 and use no IST). IDT: vectors 0..31 go to the stubs in crt0.S; a
 * guest can claim a vector with trap_set_handler(). An exception nobody
 * handles is reported as ASSERT_FAIL ("unexpected exception ...") with the
 * vector, error code, rip and cr2, and the guest halts: a fault can never
 * loop silently.
 */
#include <stdint.h>

#include "guest/guest.h"
#include "guest/paging.h"
#include "guest/ucall.h"
#include "guest/x86.h"

struct idt_entry {
    uint16_t off_lo;
    uint16_t sel;
    uint8_t ist;
    uint8_t type_attr;
    uint16_t off_mid;
    uint32_t off_hi;
    uint32_t zero;
} __attribute__((packed));

struct desc_ptr {
    uint16_t limit;
    uint64_t base;
} __attribute__((packed));

static const uint64_t gdt[3] = {
    0,
    0x00209a0000000000ULL, /* code: P, DPL0, S, exec/read, L */
    0x0000920000000000ULL, /* data: P, DPL0, S, read/write */
};
static struct idt_entry idt[256];
static trap_handler_fn trap_handlers[32];

extern char trap_stubs_begin[];
void guest_start(uint64_t ram_size);
void trap_dispatch(struct trap_frame *f);

void gdt_init(void)
{
    struct desc_ptr p = { sizeof(gdt) - 1, (uint64_t)(uintptr_t)gdt };
    __asm__ volatile("lgdt %0\n\t"
                     "pushq $0x08\n\t"
                     "leaq 1f(%%rip), %%rax\n\t"
                     "pushq %%rax\n\t"
                     "lretq\n"
                     "1:\n\t"
                     "movl $0x10, %%eax\n\t"
                     "movl %%eax, %%ds\n\t"
                     "movl %%eax, %%es\n\t"
                     "movl %%eax, %%ss\n\t"
                     "movl %%eax, %%fs\n\t"
                     "movl %%eax, %%gs\n\t"
                     :
                     : "m"(p)
                     : "rax", "memory");
}

void idt_init(void)
{
    for (unsigned v = 0; v < 32; v++) {
        uint64_t h = (uint64_t)(uintptr_t)(trap_stubs_begin + 16 * v);
        idt[v].off_lo = (uint16_t)h;
        idt[v].sel = 0x08;
        idt[v].ist = 0;
        /* 0x8e: interrupt gate (IF cleared on entry), DPL0; #BP gets DPL3 too */
        idt[v].type_attr = v == 3 ? 0xee : 0x8e;
        idt[v].off_mid = (uint16_t)(h >> 16);
        idt[v].off_hi = (uint32_t)(h >> 32);
        idt[v].zero = 0;
    }
    struct desc_ptr p = { sizeof(idt) - 1, (uint64_t)(uintptr_t)idt };
    __asm__ volatile("lidt %0" : : "m"(p) : "memory");
}

void trap_set_handler(unsigned vector, trap_handler_fn fn)
{
    if (vector < 32)
        trap_handlers[vector] = fn;
}

static const char *const exception_names[32] = {
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "CSO", "#TS", "#NP", "#SS",
    "#GP", "#PF", "r15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP",
};

void trap_dispatch(struct trap_frame *f)
{
    unsigned v = (unsigned)f->vector;
    if (v < 32 && trap_handlers[v] && trap_handlers[v](f))
        return;
    char expr[VMT_UCALL_TEXT_LEN];
    snprintf(expr, sizeof(expr), "unexpected exception %s (%u) at rip 0x%lx error 0x%lx cr2 0x%lx",
             v < 32 && exception_names[v] ? exception_names[v] : "?", v, f->rip, f->error,
             read_cr2());
    serial_printf("guest: %s\n", expr);
    ucall_assert_fail("exception", 0, expr, 4, (uint64_t)v, f->error, f->rip, read_cr2());
}

void guest_halt(void)
{
    cpu_halt_forever();
}

void guest_start(uint64_t ram_size)
{
    gdt_init();
    idt_init();
    pmm_init(ram_size);
    write_cr3(kpt_build(ram_size));
    int rc = guest_main(ram_size);
    ucall_done((uint64_t)(int64_t)rc);
    guest_halt();
}
