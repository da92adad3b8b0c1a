/*
 * drivers/qemu/qemu_internal.h — state shared by the qemu driver's files
 * (see include/vmtrap/qemu.h for what the driver does).
 *
 * Run state: the guest runs only inside wait_event(). Between calls QEMU is
 * stopped; `event_pending` is set from an event until its respond();
 * `paused` by the pause op. A breakpoint table entry is either one of the 4
 * contract slots (index 0..3) or an extra (VMT_QEMU_BP_INDEX); each is one
 * gdbstub breakpoint (Z0, or Z1 under KVM).
 */
#ifndef VMT_DRIVERS_QEMU_INTERNAL_H
#define VMT_DRIVERS_QEMU_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "drivers/qemu/gdb_client.h"
#include "drivers/qemu/gdb_proto.h"
#include "drivers/qemu/qmp_client.h"
#include "vmtrap/driver.h"
#include "vmtrap/qemu.h"

#define QEMU_SLOTS 4

typedef struct qemu_bp {
    vmt_va va;
    uint8_t index;          /* 0..3 or VMT_QEMU_BP_INDEX */
    bool pa_known;          /* pa below was translated (at the first hit) */
    vmt_pa pa;
} qemu_bp;

/* A write watchpoint. When the range is at most QEMU_WATCH_SHADOW_MAX bytes
 * and translated when set, `shadow` holds its bytes and `page_pa` the frame
 * of each page it spans: a hit is diffed against the shadow to find the
 * written word (QEMU reports only the watchpoint's start address). */
typedef struct qemu_watch {
    vmt_va va;
    uint64_t len;
    uint8_t *shadow;
    vmt_pa *page_pa;
    size_t npages;
    bool frame;             /* set by view_set_access (a write-protected frame), else vmt_qemu_watch */
} qemu_watch;

/* Watch hits waiting to be reported: one store changed several words. */
#define QEMU_QUEUE_MAX 512

#define QEMU_WATCH_SHADOW_MAX (1u << 20)

/* Where each vmt_regs field lives in the 'g' reply (-1: not offered). */
typedef struct qemu_regmap {
    const char *gdb_name;
    size_t field_off;       /* offsetof(vmt_regs, field) */
    uint8_t field_size;     /* 2 or 8 */
    int td_index;           /* index in the target description, or -1 */
} qemu_regmap;

#define QEMU_NREGMAP 35

typedef struct qemu_drv {
    gdb_client gdb;
    qmp_client qmp;
    bool have_gdb, have_qmp;
    gdb_tdesc td;
    qemu_regmap map[QEMU_NREGMAP];
    uint64_t ram_bytes;
    int kvm;                /* 1 KVM, 0 TCG, -1 unknown (no QMP) */
    int was_running;        /* QMP status at attach: 1 running, 0 not, -1 unknown */
    /* launch */
    bool launched;
    pid_t pid;
    bool icount;
    char tmpdir[128];
    char log_path[256];
    bool own_log;
    /* breakpoints and watchpoints */
    qemu_bp *bps;
    size_t nbps, capbps;
    qemu_watch *watches;
    size_t nwatches, capwatches;
    vmt_va map_base;        /* linear map for frame watches (0: no VIEW_PERM) */
    unsigned nframes;       /* watches with .frame */
    vmt_event *queue;       /* further words changed by the last watch hit */
    size_t qhead, qlen;
    uint64_t stale_watch_hits;
    uint64_t watch_words;
    /* run state */
    bool paused;
    bool event_pending;
    bool step_next;         /* a STEP response: the next wait_event steps */
    bool gone;              /* QEMU is gone: every call fails */
    uint64_t seq;
    vmt_event last;
    vmt_regs regs;          /* cached while stopped */
    bool regs_valid;
    vmt_driver_stats stats;
    uint64_t t_stop_ns;     /* when the guest last stopped */
    char *scratch;          /* packet building */
    size_t scratch_cap;
    uint8_t *gbuf;          /* decoded 'g' reply */
    uintptr_t cs_handle;    /* Capstone handle (0: none) for the NOP fast path */
    uint64_t nop_skips;     /* hits resumed by moving rip past a NOP */
    bool no_nop_skip;
} qemu_drv;

static inline qemu_drv *qemu_of(vmt_driver *d)
{
    return vmt_driver_impl(d);
}

uint64_t qemu_now_ns(void);
/* Report a gdb/qmp client failure on the driver (the client's message). */
vmt_status qemu_gdb_fail(vmt_driver *d, vmt_status st, const char *what);
vmt_status qemu_qmp_fail(vmt_driver *d, vmt_status st, const char *what);

/* qemu_regs.c */
vmt_status qemu_regs_setup(vmt_driver *d);
vmt_status qemu_fetch_regs(vmt_driver *d);   /* fills q->regs from 'g' if not valid */
vmt_status qemu_get_regs(vmt_driver *d, vmt_vcpu vcpu, vmt_regs *regs);
vmt_status qemu_set_regs(vmt_driver *d, vmt_vcpu vcpu, const vmt_regs *regs);
void qemu_regs_missing(const qemu_drv *q, char *out, size_t len);

/* qemu_run.c */
vmt_status qemu_wait_event(vmt_driver *d, int timeout_ms, vmt_event *ev);
vmt_status qemu_respond(vmt_driver *d, const vmt_event *ev, const vmt_response *resp);
vmt_status qemu_pause(vmt_driver *d);
vmt_status qemu_resume(vmt_driver *d);
qemu_bp *qemu_bp_find(qemu_drv *q, vmt_va va);
vmt_status qemu_bp_insert(vmt_driver *d, vmt_va va, int insert);

/* qemu_nop.c: 1 when the instruction at breakpoint bp (at rip) is a NOP,
 * with its length; 0 when not (or unknown: no Capstone, unreadable). */
int qemu_nop_at(vmt_driver *d, qemu_bp *bp, unsigned *len);
void qemu_nop_init(qemu_drv *q);
void qemu_nop_fini(qemu_drv *q);

/* qemu_watch.c */
void qemu_watch_free(qemu_watch *w);
/* Fill a MEM_ACCESS event's address and data for a hit reported at
 * watch_addr; further changed words go to the queue. 0: a hit for a watch
 * the driver no longer has (nothing to report). */
int qemu_watch_hit(vmt_driver *d, vmt_va watch_addr, vmt_event *ev);
/* The write-only VIEW_PERM ops (view 0, frames through q->map_base). */
vmt_status qemu_view_set_access(vmt_driver *d, vmt_view view, vmt_gfn gfn, vmt_access allowed);
vmt_status qemu_view_get_access(vmt_driver *d, vmt_view view, vmt_gfn gfn, vmt_access *allowed, vmt_gfn *backing);
/* The caps record for the driver's state (map_base decides VIEW_PERM). */
void qemu_caps(const qemu_drv *q, vmt_caps *c);

/* qemu_launch.c */
vmt_status qemu_launch(qemu_drv *q, const vmt_qemu_config *cfg, char *why, size_t why_len);
void qemu_launch_stop(qemu_drv *q);
/* Exit description of a launched QEMU that is gone (non-blocking), or "". */
void qemu_launch_exit_text(qemu_drv *q, char *out, size_t len);

#endif
