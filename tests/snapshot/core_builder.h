/*
 * tests/snapshot/core_builder.h — synthetic QEMU dump-guest-memory ELF cores
 * for tests, benchmarks and fuzz seeds, built byte by byte (the layout
 * QEMU writes: ELF header, program headers, one PT_NOTE with an
 * NT_PRSTATUS note per vCPU then a "QEMU" note per vCPU, PT_LOADs), so
 * tests can corrupt any field afterwards through the offsets recorded in
 * core_layout.
 *
 * RAM contents are a function of the address (core_byte_at), so a test can
 * check any byte it reads back.
 */
#ifndef TESTS_SNAPSHOT_CORE_BUILDER_H
#define TESTS_SNAPSHOT_CORE_BUILDER_H

#include <stddef.h>
#include <stdint.h>

#define CORE_MAX_BLOCKS 8
#define CORE_MAX_VCPUS 4

typedef struct core_block {
    uint64_t gpa, size;
} core_block;

typedef struct core_vcpu {
    uint64_t rip, rsp, rax, r15, rflags;
    uint64_t cr0, cr2, cr3, cr4;
    uint64_t kernel_gs_base;
} core_vcpu;

typedef struct core_spec {
    size_t nblocks;
    core_block blocks[CORE_MAX_BLOCKS];  /* in file order */
    unsigned nvcpus;
    core_vcpu vcpu[CORE_MAX_VCPUS];
    unsigned qemu_size;                  /* 432 or 440 */
} core_spec;

typedef struct core_layout {
    size_t phoff;                        /* program headers */
    size_t note_phdr;                    /* the PT_NOTE's program header */
    size_t load_phdr[CORE_MAX_BLOCKS];   /* each PT_LOAD's program header */
    size_t prstatus[CORE_MAX_VCPUS];     /* start of each NT_PRSTATUS note header */
    size_t qemu[CORE_MAX_VCPUS];         /* start of each QEMU note header */
    size_t data[CORE_MAX_BLOCKS];        /* file offset of each block's bytes */
    size_t notes_end;
} core_layout;

/* A 64-bit Linux-like kernel state: long-mode CS, TR, CR0 0x80050033,
 * CR4 0x6f0, RIP in the kernel's text. */
void core_default_vcpu(core_vcpu *v, unsigned index);
/* Two blocks like QEMU's pc machine: RAM at 0 (ram bytes) + BIOS ROM at
 * 0xfffc0000 (0x40000 bytes), one vCPU, 440-byte QEMU notes. */
void core_default_spec(core_spec *s, uint64_t ram);
/* Build the core (malloc'ed, *len bytes); layout may be NULL. */
uint8_t *core_build(const core_spec *s, size_t *len, core_layout *layout);
/* The byte the builder put at guest-physical address gpa. */
uint8_t core_byte_at(uint64_t gpa);

/* Field access for corruption. */
void core_put64(uint8_t *p, uint64_t v);
void core_put32(uint8_t *p, uint32_t v);

#endif
