/*
 * vmtrap/event.h — events from the guest and the responses to them.
 *
 * Design: a driver stops a vCPU and reports one vmt_event; the session hands
 * it to a handler, which fills one vmt_response; the driver applies it and
 * resumes. Events are synchronous: the vCPU does not run between the event
 * and the response.
 *
 * Memory-access events are raised BEFORE the access happens (an EPT/altp2m
 * violation) — except on a driver declaring VMT_CAP_WRITE_AFTER (driver.h,
 * e.g. the qemu driver's watchpoints), whose write events come after the
 * store landed and whose CONTINUE just goes on. What the response means for
 * the trapped access:
 *   CONTINUE   the access happens once, in the vCPU's current view, with the
 *              view's rights unchanged (the driver performs it: emulates the
 *              instruction or steps it with the right temporarily granted);
 *   EMULATE    the instruction is performed against the mapping of
 *              `emulate_view` (e.g. the unaltered view 0), then the vCPU goes
 *              on in its current view: one exit;
 *   FAST_STEP  the vCPU executes one instruction in `step_view` and comes
 *              back to its current view, with no second event: two exits;
 *   STEP       the vCPU executes one instruction (in its view after any
 *              SWITCH_VIEW) and then reports a VMT_EVENT_SINGLESTEP;
 *   DENY       the access is skipped: a write is discarded, the instruction
 *              completes.
 * For breakpoint events, rip is the address of the INT3 and CONTINUE resumes
 * at rip (which re-executes whatever byte is there now); REINJECT delivers
 * the #BP to the guest's own IDT as if no monitor existed.
 * SWITCH_VIEW applies before any step; SET_REGS applies before resuming.
 *
 * Write events carry the written value and size when the driver knows them
 * (capability VMT_CAP_WRITE_DATA): emulator memory hooks and KVM read-only
 * memslots do. For a failing `lock cmpxchg` the driver reports nothing or the
 * old value, so "no change" is what the monitor sees.
 */
#ifndef VMTRAP_EVENT_H
#define VMTRAP_EVENT_H

#include <stdbool.h>
#include <stdint.h>

#include "vmtrap/access.h"
#include "vmtrap/addr.h"
#include "vmtrap/regs.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum vmt_event_kind {
    VMT_EVENT_NONE = 0,
    VMT_EVENT_MEM_ACCESS,    /* an access the current view forbids */
    VMT_EVENT_BREAKPOINT,    /* INT3 executed */
    VMT_EVENT_SINGLESTEP,    /* one instruction completed after a STEP response */
    VMT_EVENT_CR_WRITE,      /* a control-register write (CR3: address-space switch) */
    VMT_EVENT_HW_BREAKPOINT, /* a debug-register execute breakpoint */
    VMT_EVENT_IO,            /* port I/O (serial output, the testbed debug port) */
    VMT_EVENT_STOPPED,       /* the guest cannot go on (halt, limit, triple fault, ...) */
    VMT_EVENT_KIND_COUNT
} vmt_event_kind;

const char *vmt_event_kind_name(vmt_event_kind kind);

typedef struct vmt_mem_access_info {
    vmt_pa gpa;
    vmt_va gva;
    bool gva_valid;
    vmt_access access;   /* the kind of the trapped access (one of R, W, X) */
    bool in_pt_walk;     /* the guest's own page walk touched the frame */
    bool has_data;       /* write value/size below are valid */
    uint8_t size;        /* bytes written, 1..8 (wider stores are split) */
    uint64_t value;      /* written value, little-endian, low `size` bytes */
} vmt_mem_access_info;

typedef struct vmt_breakpoint_info {
    vmt_gfn gfn;         /* frame of the INT3 as seen through the current view */
    vmt_pa gpa;
    vmt_va gva;          /* == regs.rip */
    uint8_t insn_len;    /* 1 for 0xCC */
} vmt_breakpoint_info;

typedef struct vmt_cr_write_info {
    uint8_t cr;          /* 0, 3 or 4 */
    uint64_t old_value;
    uint64_t new_value;
} vmt_cr_write_info;

typedef struct vmt_hw_breakpoint_info {
    uint8_t index;       /* 0..3 */
    vmt_va address;
} vmt_hw_breakpoint_info;

typedef struct vmt_io_info {
    uint16_t port;
    uint8_t size;        /* 1, 2 or 4 */
    bool is_write;
    uint32_t value;      /* for writes: the value written */
} vmt_io_info;

typedef enum vmt_stop_reason {
    VMT_STOP_HALT = 1,       /* hlt with interrupts disabled */
    VMT_STOP_TIME_LIMIT,
    VMT_STOP_INSN_LIMIT,
    VMT_STOP_TRIPLE_FAULT,
    VMT_STOP_SHUTDOWN,       /* the guest asked to power off */
    VMT_STOP_GUEST_ERROR,    /* the guest did something the driver cannot run */
    VMT_STOP_DRIVER_ERROR,   /* the hypervisor or emulator failed */
} vmt_stop_reason;

const char *vmt_stop_reason_name(vmt_stop_reason reason);

typedef struct vmt_stop_info {
    vmt_stop_reason reason;
    char message[192];   /* e.g. "internal error at rip 0x... bytes 0f 0b ..." */
} vmt_stop_info;

typedef struct vmt_event {
    vmt_event_kind kind;
    vmt_vcpu vcpu;
    vmt_view view;       /* the vCPU's view when the event happened */
    uint64_t seq;        /* per-driver sequence number, from 1 */
    vmt_regs regs;
    union {
        vmt_mem_access_info mem;
        vmt_breakpoint_info bp;
        vmt_cr_write_info cr;
        vmt_hw_breakpoint_info hwbp;
        vmt_io_info io;
        vmt_stop_info stop;
    } u;
} vmt_event;

/* Response actions: a bit set. CONTINUE is no bit. */
enum {
    VMT_RESP_CONTINUE = 0,
    VMT_RESP_DENY = 1u << 0,
    VMT_RESP_REINJECT = 1u << 1,
    VMT_RESP_STEP = 1u << 2,
    VMT_RESP_FAST_STEP = 1u << 3,
    VMT_RESP_EMULATE = 1u << 4,
    VMT_RESP_SWITCH_VIEW = 1u << 5,
    VMT_RESP_SET_REGS = 1u << 6,
    VMT_RESP_IO_VALUE = 1u << 7,   /* value for a port read */
};

typedef struct vmt_response {
    uint32_t actions;      /* VMT_RESP_* */
    vmt_view step_view;    /* FAST_STEP: view to execute the one instruction in */
    vmt_view emulate_view; /* EMULATE: view whose mapping the instruction sees */
    vmt_view new_view;     /* SWITCH_VIEW */
    vmt_regs regs;         /* SET_REGS */
    uint32_t io_value;     /* IO_VALUE */
} vmt_response;

static inline vmt_response vmt_response_continue(void)
{
    vmt_response r = { 0 };
    return r;
}

#ifdef __cplusplus
}
#endif
#endif
