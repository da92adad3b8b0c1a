/*
 * tests/kvm/kvm_guest.h — helpers for the KVM driver tests: tiny guests
 * from hand-assembled bytes (the assembly is next to each byte array) and a
 * driver made from them. No test logic here.
 */
#ifndef VMT_TESTS_KVM_GUEST_H
#define VMT_TESTS_KVM_GUEST_H

#include <stddef.h>
#include <stdint.h>

#include "vmtrap/driver.h"
#include "vmtrap/image.h"

#define KG_CODE_PA 0x1000ull         /* where every test guest's code starts */
#define KG_RAM (64ull << 20)         /* RAM of the test guests */
#define KG_PORT_REPORT 0x5e1         /* guests report values here */
#define KG_PORT_OTHER 0x5e2

/* A driver running `code` at KG_CODE_PA under the boot protocol (64-bit,
 * CPL0, rdi = RAM size), 64 extra frames. Fails the test (cmocka) on error. */
vmt_driver *kg_driver(const uint8_t *code, size_t len, uint64_t ram_size);

/* Wait for the next event (10 s guard) and fail the test unless it has
 * `kind`; returns it in *ev. */
void kg_expect(vmt_driver *d, vmt_event_kind kind, vmt_event *ev);
/* kg_expect an I/O event, assert the guest sent `value`, and CONTINUE it;
 * *ev keeps the event. */
void kg_expect_io(vmt_driver *d, uint64_t value, vmt_event *ev);
/* The same, also asserting the I/O went to `port`. */
void kg_expect_io_on(vmt_driver *d, uint64_t port, uint64_t value, vmt_event *ev);
/* Respond with a plain CONTINUE (failing the test on error). */
void kg_continue(vmt_driver *d, const vmt_event *ev);
/* Assert vmt_kvm_check(d) holds. */
void kg_check(vmt_driver *d);

#endif
