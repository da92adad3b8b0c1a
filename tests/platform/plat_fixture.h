/*
 * tests/platform/plat_fixture.h — a platform under test, driven the way a
 * CPU driver drives it (through its vmt_bus), with the invariant checker
 * run after every step and the serial lines and interrupts it produced
 * recorded in order (for the determinism and save/load tests).
 */
#ifndef VMT_PLAT_FIXTURE_H
#define VMT_PLAT_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtrap/platform.h"

typedef struct pfx {
    vmt_platform *p;
    vmt_bus bus;
    char log[65536];          /* "L:<line>\n" serial lines, "I:<vcpu>:<vector>\n" interrupts taken */
    size_t log_len;
    unsigned lines;
    char last_line[1100];
} pfx;

/* Create with `cfg` (NULL: defaults, all devices). Fails the test on error. */
void pfx_init(pfx *f, const vmt_platform_config *cfg);
void pfx_free(pfx *f);
/* Assert the platform's invariants hold. */
void pfx_check(pfx *f);

void pfx_outb(pfx *f, uint16_t port, uint8_t v);
uint8_t pfx_inb(pfx *f, uint16_t port);
void pfx_out(pfx *f, uint16_t port, unsigned size, uint32_t v);
uint32_t pfx_in(pfx *f, uint16_t port, unsigned size);
void pfx_w32(pfx *f, uint64_t gpa, uint32_t v);
uint32_t pfx_r32(pfx *f, uint64_t gpa);
void pfx_w64(pfx *f, uint64_t gpa, uint64_t v);
uint64_t pfx_r64(pfx *f, uint64_t gpa);
void pfx_wrmsr(pfx *f, unsigned vcpu, uint32_t msr, uint64_t v);
uint64_t pfx_rdmsr(pfx *f, unsigned vcpu, uint32_t msr);
/* Advance virtual time; returns the next deadline. */
uint64_t pfx_advance(pfx *f, uint64_t now_ns);
/* The vector vCPU would take, or -1. */
int pfx_pending(pfx *f, unsigned vcpu);
/* Take the pending interrupt (ack it, log it); returns the vector or -1. */
int pfx_take(pfx *f, unsigned vcpu);

/* xAPIC helpers for vCPU 0 */
#define LAPIC 0xfee00000ull
void pfx_lapic_enable(pfx *f);       /* SVR = 0x1ff */
void pfx_eoi(pfx *f);
/* IOAPIC: route pin to vector (edge or level), unmasked, to APIC 0. */
void pfx_ioapic_route(pfx *f, unsigned pin, uint8_t vector, bool level);

#endif
