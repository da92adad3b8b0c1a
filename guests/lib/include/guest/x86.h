/*
 * guest/x86.h — the few privileged x86-64 instructions the testbed guests use,
 * as inline functions. Every asm statement that touches memory or paging
 * state carries a "memory" clobber so the compiler never reorders guest
 * memory accesses around it.
 */
#ifndef GUEST_X86_H
#define GUEST_X86_H

#include <stdint.h>

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port) : "memory"); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port) : "memory"); }
static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port) : "memory");
    return v;
}

static inline uint64_t read_cr0(void) { uint64_t v; __asm__ volatile("mov %%cr0, %0" : "=r"(v)); return v; }
static inline uint64_t read_cr2(void) { uint64_t v; __asm__ volatile("mov %%cr2, %0" : "=r"(v)); return v; }
static inline uint64_t read_cr3(void) { uint64_t v; __asm__ volatile("mov %%cr3, %0" : "=r"(v)); return v; }
static inline uint64_t read_cr4(void) { uint64_t v; __asm__ volatile("mov %%cr4, %0" : "=r"(v)); return v; }
static inline void write_cr3(uint64_t v) { __asm__ volatile("mov %0, %%cr3" : : "r"(v) : "memory"); }
static inline void invlpg(uint64_t va) { __asm__ volatile("invlpg (%0)" : : "r"(va) : "memory"); }
static inline void reload_cr3(void) { write_cr3(read_cr3()); }

static inline uint64_t read_rflags(void)
{
    uint64_t v;
    __asm__ volatile("pushfq; popq %0" : "=r"(v) : : "memory");
    return v;
}

#define DEFINE_DR_ACCESS(n)                                                               \
    static inline uint64_t read_dr##n(void)                                               \
    {                                                                                     \
        uint64_t v;                                                                       \
        __asm__ volatile("mov %%dr" #n ", %0" : "=r"(v));                                 \
        return v;                                                                         \
    }                                                                                     \
    static inline void write_dr##n(uint64_t v) { __asm__ volatile("mov %0, %%dr" #n : : "r"(v)); }
DEFINE_DR_ACCESS(0)
DEFINE_DR_ACCESS(1)
DEFINE_DR_ACCESS(2)
DEFINE_DR_ACCESS(3)
DEFINE_DR_ACCESS(6)
DEFINE_DR_ACCESS(7)
#undef DEFINE_DR_ACCESS

/* lock cmpxchg on a 64-bit entry: returns the value found (== expected on success). */
static inline uint64_t cmpxchg64(volatile uint64_t *p, uint64_t expected, uint64_t desired)
{
    uint64_t prev = expected;
    __asm__ volatile("lock cmpxchgq %2, %1" : "+a"(prev), "+m"(*p) : "r"(desired) : "memory");
    return prev;
}

__attribute__((noreturn)) static inline void cpu_halt_forever(void)
{
    for (;;)
        __asm__ volatile("cli; hlt" : : : "memory");
}

#endif
