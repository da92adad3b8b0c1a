/*
 * tests/core/fake_driver.h — a tiny scripted driver for core tests.
 *
 * Test scaffolding, not a product driver: RAM is a host buffer, events come
 * from a script the test fills, every view call is logged so tests can
 * assert exactly what the session told the driver, and a few ops can be
 * made to fail. (The full in-memory driver lives in src/drivers/mem.)
 */
#ifndef VMT_TEST_FAKE_DRIVER_H
#define VMT_TEST_FAKE_DRIVER_H

#include <stddef.h>
#include <stdint.h>

#include "vmtrap/driver.h"

#define FAKE_MAX_EVENTS 32
#define FAKE_MAX_LOG 128

typedef enum fake_op { FAKE_SET_ACCESS = 1, FAKE_REMAP } fake_op;

typedef struct fake_call {
    fake_op op;
    vmt_view view;
    vmt_gfn gfn;
    uint64_t arg; /* rights or backing */
} fake_call;

typedef struct fake_driver {
    uint8_t *ram;
    uint64_t ram_frames;
    vmt_regs regs0;
    unsigned reads, writes;
    /* events */
    vmt_event script[FAKE_MAX_EVENTS];
    size_t nscript, next;
    unsigned timeouts_before_each; /* TIMEOUTs before each scripted event */
    unsigned timeouts_given;
    unsigned waits;
    int last_timeout_ms;
    uint64_t seq;
    int awaiting_response;
    unsigned responds;
    vmt_response last_resp;
    vmt_status fail_respond;
    /* views */
    fake_call log[FAKE_MAX_LOG];
    size_t nlog;
    unsigned fail_set_access; /* fail the next N set_access calls */
    int destroyed;
} fake_driver;

/* Create a fake with `frames` of RAM and the given capability flags (ops for
 * every capability the fake knows are present). The driver owns nothing of f. */
vmt_driver *fake_driver_create(fake_driver *f, uint64_t frames, uint64_t caps);
void fake_driver_release(fake_driver *f);
void fake_push(fake_driver *f, const vmt_event *ev);
void fake_push_kind(fake_driver *f, vmt_event_kind kind);
void fake_clear_log(fake_driver *f);

#endif
