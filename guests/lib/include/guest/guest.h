/*
 * guest/guest.h — the testbed guests' runtime (guests/lib).
 *
 * Memory model: the image is linked at KERNEL_VMA + load address
 * (guest.ld) and runs on the guest's own 4-level tables, built at start by
 * the library: guest RAM identity-mapped with 2 MiB pages (so a physical
 * address is also a usable pointer, phys_ptr()), plus the image mapped at
 * KERNEL_VMA with 4 KiB pages. Every entry is written with A (and D for
 * leaves) already set, because some drivers never set them.
 *
 * Start: crt0 -> guest_start(ram_size) (GDT, IDT, tables) -> guest_main().
 * guest_main's return value becomes a DONE ucall; the guest then halts.
 */
#ifndef GUEST_GUEST_H
#define GUEST_GUEST_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtrap/ucall.h"

#define KERNEL_VMA 0xffffffff80000000ULL
#define PAGE_SIZE 4096ULL
#define SIZE_2M 0x200000ULL

/* Put a function alone in its own 4 KiB-aligned page(s) of the .pages
 * region (2 MiB-aligned), never inlined, so its page can be paged out,
 * moved and hooked independently. */
#define GUEST_PAGE_FUNC(tag) \
    __attribute__((section(".page_text." #tag), aligned(4096), noinline, noclone, used))

/* Linker symbols (guest.ld). */
extern char __kernel_start[], __kernel_end[], __text_start[], __text_end[];
extern char __pages_start[], __pages_end[], __bss_start[], __bss_end[];

static inline uint64_t kva_to_pa(const void *p) { return (uint64_t)(uintptr_t)p - KERNEL_VMA; }
static inline void *pa_to_kva(uint64_t pa) { return (void *)(uintptr_t)(pa + KERNEL_VMA); }
/* Identity map: a physical address of RAM as a pointer. */
static inline void *phys_ptr(uint64_t pa) { return (void *)(uintptr_t)pa; }

/* Provided by each guest. */
int guest_main(uint64_t ram_size);

/* Stop for good (interrupts off, hlt loop). */
__attribute__((noreturn)) void guest_halt(void);

/* Exceptions: the frame the common stub builds (see crt0.S). */
struct trap_frame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
    uint64_t rbp, rdi, rsi, rdx, rcx, rbx, rax;
    uint64_t vector, error;
    uint64_t rip, cs, rflags, rsp, ss;
};
/* A handler returns 1 when it handled the exception (the frame, possibly
 * changed, is resumed), 0 to fall back to the default: report and halt. */
typedef int (*trap_handler_fn)(struct trap_frame *f);
void trap_set_handler(unsigned vector, trap_handler_fn fn);
void idt_init(void);
void gdt_init(void);

/* Freestanding C library subset (guests/lib/string.c). */
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
size_t strnlen(const char *s, size_t max);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
/* Copies at most size-1 bytes, always terminates (size > 0). Returns strlen(src). */
size_t strlcpy(char *dst, const char *src, size_t size);
/* printf subset: %d %i %u %x %X %p %s %c %%, flags '0' '-', width, l/ll/z. */
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* FNV-1a 64-bit. */
/* The detectors' hash: the definition the host uses too (vmtrap/ucall.h). */
static inline uint64_t hash_bytes(const void *p, size_t n) { return vmt_ucall_fnv1a(p, n); }

/* Serial console on VMT_PORT_SERIAL (one `out` per byte). */
void serial_write(const char *s);
void serial_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
