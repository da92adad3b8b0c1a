/*
 * tests/qemu/fake_stub.h — a scripted stand-in for QEMU's gdbstub on a unix
 * socket (one client, one thread), for testing the GDB client and the qemu
 * driver without QEMU, including hostile and dead stubs.
 *
 * The fake machine: 64 KiB of "physical memory", registers laid out by a
 * small target description (GPRs, rip, eflags, selectors, bases, CRs,
 * efer; fetched through an xi:include like QEMU's). 'c' jumps rip to the
 * first breakpoint set (Z0) and reports T05 (or T02 on 0x03 when none is
 * set), after performing the scripted stores (watch hits, see below); 's'
 * adds 1 to rip. Every packet received is logged.
 */
#ifndef VMT_TESTS_QEMU_FAKE_STUB_H
#define VMT_TESTS_QEMU_FAKE_STUB_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum fake_mode {
    FAKE_OK = 0,
    FAKE_SILENT_AFTER,    /* stop answering (no ack, no reply) after `after` packets */
    FAKE_CLOSE_AFTER,     /* close the connection after `after` packets */
    FAKE_GARBAGE_AFTER,   /* answer junk bytes after `after` packets */
    FAKE_BADSUM_AFTER,    /* answer with a wrong checksum after `after` packets */
    FAKE_SHORT_G,         /* 'g' answers too few bytes */
    FAKE_SHORT_M,         /* 'm' answers fewer bytes than asked */
    FAKE_BAD_STOP,        /* 'c' answers something that is not a stop reply */
    FAKE_EXIT_ON_CONT,    /* 'c' answers W00 and closes (QEMU quit) */
    FAKE_NO_PHYS,         /* Qqemu.PhyMemMode is unsupported (empty reply) */
    FAKE_HOSTILE_XML,     /* the target description includes "../../etc/passwd" */
    FAKE_STOP_ON_CONNECT, /* a stop reply nobody asked for as the client connects (QEMU stopping a running VM) */
};

#define FAKE_MEM 65536
#define FAKE_LOG 256

typedef struct fake_stub {
    char dir[48], path[96];
    int lfd, cfd;
    pthread_t thread;
    bool running;
    enum fake_mode mode;
    unsigned after;
    uint8_t mem[FAKE_MEM];
    uint64_t gpr[16], rip, cr3;
    uint32_t eflags;
    uint64_t bps[16];
    unsigned nbps;
    /* Z2 watchpoints the client set (start, length). */
    uint64_t watch_va[64], watch_len[64];
    unsigned nwatches;
    /* Scripted guest stores, done one by one at each 'c' (before any
     * breakpoint): the bytes land in mem at va - map_base; when a watch
     * covers va (or `report_anyway`), 'c' answers "T05...watch:START;" with
     * the watch's start (QEMU 7.2's form; report_anyway without a watch
     * reports va itself), else the next store follows. */
    struct fake_store {
        uint64_t va;
        uint8_t len;
        uint8_t bytes[16];
        bool report_anyway;
    } stores[16];
    unsigned nstores, next_store;
    uint64_t map_base;
    unsigned packets;
    char log[FAKE_LOG][64];
    unsigned nlog;
    pthread_mutex_t lock;
} fake_stub;

/* Create the socket and start serving. Returns 0 on success. */
int fake_stub_start(fake_stub *s, enum fake_mode mode, unsigned after);
/* Stop serving, join, remove the socket. */
void fake_stub_stop(fake_stub *s);
/* Script a store of len bytes (1..16) of value (little-endian; bytes past 8 from hi). */
void fake_stub_store(fake_stub *s, uint64_t va, unsigned len, uint64_t value, uint64_t hi, bool report_anyway);
/* Number of logged packets starting with prefix. */
unsigned fake_stub_count(fake_stub *s, const char *prefix);

#endif
