/*
 * vmtrap/addr.h — guest addresses.
 *
 * Design: three address spaces, each a distinct typedef so signatures say
 * which one they take:
 *   vmt_gfn  guest frame number (guest-physical address >> 12)
 *   vmt_pa   guest-physical address
 *   vmt_va   guest-virtual address (canonical 48- or 57-bit)
 * An address context (vmt_addr_ctx) names a virtual address under one
 * translation root (the CR3 value with flag bits masked), which is what a
 * breakpoint or a monitored translation is keyed by.
 *
 * Guest values are never trusted: anything derived from guest memory is
 * range-checked by the code that uses it.
 */
#ifndef VMTRAP_ADDR_H
#define VMTRAP_ADDR_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint64_t vmt_gfn;
typedef uint64_t vmt_pa;
typedef uint64_t vmt_va;
typedef uint32_t vmt_vcpu;

#define VMT_PAGE_SHIFT 12
#define VMT_PAGE_SIZE  4096ULL
#define VMT_PAGE_MASK  (~(VMT_PAGE_SIZE - 1))
#define VMT_SIZE_2M    (1ULL << 21)
#define VMT_SIZE_1G    (1ULL << 30)

/* All vCPUs, where a call accepts one vCPU or all of them. */
#define VMT_VCPU_ALL UINT32_MAX

/* A virtual address under a translation root (root = CR3 & VMT_CR3_ADDR_MASK). */
typedef struct vmt_addr_ctx {
    vmt_va va;
    vmt_pa root;
} vmt_addr_ctx;

#define VMT_CR3_ADDR_MASK 0x000ffffffffff000ULL

static inline vmt_gfn vmt_pa_to_gfn(vmt_pa pa) { return pa >> VMT_PAGE_SHIFT; }
static inline vmt_pa vmt_gfn_to_pa(vmt_gfn gfn) { return gfn << VMT_PAGE_SHIFT; }
static inline uint64_t vmt_page_offset(uint64_t addr) { return addr & (VMT_PAGE_SIZE - 1); }
static inline vmt_addr_ctx vmt_addr_ctx_make(vmt_va va, vmt_pa root)
{
    vmt_addr_ctx c = { va, root & VMT_CR3_ADDR_MASK };
    return c;
}
static inline bool vmt_addr_ctx_eq(vmt_addr_ctx a, vmt_addr_ctx b)
{
    return a.va == b.va && a.root == b.root;
}

#ifdef __cplusplus
}
#endif
#endif
