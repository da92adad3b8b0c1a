/*
 * drivers/kvm/kvm_internal.h — state shared by the KVM driver's files.
 *
 * Files: kvm_driver.c (create/destroy, ops table, caps, stats, checker),
 * kvm_vcpu.c (registers, long-mode setup, guest debug), kvm_mem.c (RAM,
 * memslots, views, frames, dirty log), kvm_run.c (the run loop, exits,
 * events, timer), kvm_respond.c (responses), kvm_emulate.c (instructions
 * performed in the monitor by the reusable engine), kvm_bus.c (the bus,
 * guest clock and interrupt link), kvm_plat.c (irqchip, IRQ lines, TSC
 * hiding behind an injectable ioctl), kvm_state.c (VCPU_STATE).
 *
 * Memory layout: one memfd holds guest RAM (frames 0 .. ram_frames-1) followed
 * by the extra frames (gfn ram_frames + i, at file offset gfn * 4 KiB).
 * `direct` maps the whole memfd for read_phys/write_phys (a frame's own
 * bytes); `gmem` maps the RAM part again and is what the memslots point at:
 * it shows the current view (a remapped gfn's page of gmem is the backing
 * frame's memfd page, mapped MAP_FIXED).
 *
 * Invariants (kvm_check): `slots` is sorted and covers exactly the RAM
 * frames whose state is not KVM_SLOT_NONE, each slot's `ro` matching the
 * state of all its frames; state[g] follows the current view's rights (no
 * slot when R is denied, read-only when W is) of layout_view, which is the
 * current view or, lazily, any view while the vCPU is in view 0 (view 0
 * allows everything, so extra traps are served silently); temporary execute slots
 * exist only during a step; gmem page g maps backing(cur, g);
 * extra_refs[i] is the number of (view, gfn) pairs backed by extra frame i;
 * gmem shows map_view, which differs from cur_view only inside wait_event
 * while a FAST_STEP runs (the step's stores to frames cur_view protects but
 * the step view does not are written through by the driver).
 */
#ifndef VMT_KVM_INTERNAL_H
#define VMT_KVM_INTERNAL_H

#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "core/errbuf.h"
#include "vmtrap/driver.h"
#include "vmtrap/kvm.h"
#include "vmtrap/machine.h"
#include "drivers/kvm/kvm_plat.h"

#define KVM_EXIT_REASONS 64
#define KVM_SERIAL_LINE 256
#define KVM_EXEC_SLOTS 2
#define KVM_LAZY_RUNS 64   /* runs in view 0 before its exact memslot layout is built */

/* Memslot state of a RAM frame in the current view. */
enum { KVM_SLOT_RW = 0, KVM_SLOT_RO = 1, KVM_SLOT_NONE = 2 };

typedef struct kvm_view {
    bool used;
    vmt_access dflt;
    uint8_t *access;     /* per RAM gfn */
    uint32_t *backing;   /* per RAM gfn */
    uint64_t nremap;     /* gfns with backing != gfn: the first nremap of `remapped` */
    uint32_t *remapped;  /* those gfns, unordered (capacity remap_cap) */
    uint64_t remap_cap;
    uint64_t nprot;      /* gfns without R or W */
} kvm_view;

typedef struct kvm_slot {
    uint64_t gfn, npages;
    uint32_t id;
    uint8_t ro;
} kvm_slot;

/* Where a breakpoint event came from: decides how REINJECT works. */
typedef enum kvm_bp_source { BP_FROM_DEBUG_EXIT = 1, BP_FROM_EMULATION_EXIT } kvm_bp_source;

/* A single-step the driver is carrying out (for STEP, FAST_STEP, or to get
 * past a hardware breakpoint, since RF is not honoured on kvm_pvm). */
typedef struct kvm_step {
    bool active;
    bool report;          /* user STEP: report VMT_EVENT_SINGLESTEP when done */
    bool hw_off;          /* hardware breakpoints disabled for this step */
    bool complete;        /* the stepped instruction has already completed */
    vmt_view fast_view;   /* FAST_STEP: view whose mapping the step runs in (VMT_VIEW_INVALID: none) */
} kvm_step;

typedef struct kvm_drv {
    vmt_driver *d;
    int kvm_fd, vm_fd, vcpu_fd;
    struct kvm_run *run;
    size_t run_size;

    /* memory */
    int memfd;
    uint8_t *direct, *gmem;
    uint64_t ram_size, ram_frames, extra_frames, mem_size;
    bool have_ro_slots;
    kvm_slot *slots;
    uint32_t nslots, slots_cap, max_slots;
    uint32_t *free_ids;
    uint32_t nfree_ids;
    uint8_t *state;       /* per RAM gfn: KVM_SLOT_* of the current layout */
    vmt_access trap_access;/* what the host lets the driver trap (R|W with read-only slots) */
    uint64_t exec_gfn[KVM_EXEC_SLOTS]; /* no-slot frames mapped for one step to run code there */
    uint32_t exec_id[KVM_EXEC_SLOTS];
    uint32_t nexec;
    uint64_t *dirty_acc;  /* per RAM gfn, accumulated dirty bits */
    uint64_t *dirty_tmp;
    uint8_t *extra_used;
    uint32_t *extra_refs;

    /* views */
    kvm_view *views;
    uint16_t max_views;
    vmt_view cur_view;    /* the vCPU's view: rights (memslots) and, normally, mapping */
    vmt_view map_view;    /* the view gmem shows: cur_view except during a FAST_STEP */
    vmt_view layout_view; /* the view whose rights the memslots encode: cur_view, or
                           * any view while cur_view is 0 (see kvm_switch_view) */
    uint32_t lazy_runs;   /* guest runs in view 0 on another view's layout */

    /* debug state */
    uint64_t hwbp_addr[4];
    uint8_t hwbp_on;      /* bit i: breakpoint i enabled */
    uint32_t dbg_applied; /* control last given to KVM_SET_GUEST_DEBUG (0: never) */
    bool inject_bp_once;
    kvm_step step;

    /* run state */
    bool in_event;        /* an event awaits its response */
    vmt_event ev;         /* the last event reported */
    uint64_t seq;
    kvm_bp_source bp_source;
    bool exit_pending;    /* run->exit_reason holds an exit not handled yet */
    bool need_completion; /* an IO/MMIO exit completes on the next KVM_RUN */
    bool queued_event;    /* ev (kind set) is ready to report without running */
    uint32_t io_index;    /* element of a string I/O exit being reported */
    bool stopped;         /* fatal stop: no more running */
    bool paused;          /* pause(): wait_event does not run the guest */
    vmt_stop_info stop;

    /* serial */
    char line[KVM_SERIAL_LINE];
    size_t line_len;
    vmt_serial_fn serial;
    void *serial_ctx;

    /* timer and limit */
    int sig;
    bool timer_ok;
    timer_t timer;
    pthread_t thread;          /* the thread the timer signals (rebound if another thread runs) */
    uint64_t limit_guest_ns;   /* stop when stats.ns_guest reaches this; 0 = none */

    /* stats */
    vmt_driver_stats stats;
    uint64_t exit_counts[KVM_EXIT_REASONS];
    uint64_t t_last_exit;      /* monotonic ns of the last KVM_RUN return, 0 = none */
    uint64_t timer_expiry;     /* absolute monotonic ns the timer is armed for, 0 = disarmed */
    bool sync_regs;            /* KVM_CAP_SYNC_REGS: regs/sregs come with each exit */
    /* reusable engine (kvm_emulate.c): created on first use; one instance for
     * EMULATE's view and one for the current view, so neither sees its code
     * pages change from call to call (Unicorn re-translates changed code) */
    struct vmt_emulator *engine[2];
    bool no_engine;            /* not built, or it could not start: always step */
    uint64_t engine_insns;     /* instructions it performed */
    bool regs_fresh;           /* run->s.regs holds this exit's regs/sregs */

    /* platform (kvm_bus.c): with a bus, KVM's irqchip + PIT and the bus for
     * the rest; guest time = host monotonic time since creation minus the
     * time stopped for the monitor (the TSC hides the same time) */
    kvm_host host;
    vmt_bus bus;               /* ops NULL: no bus (ucall/serial behaviour) */
    bool irqchip;              /* KVM_CREATE_IRQCHIP + PIT2 done */
    kvm_irq_fwd irq;
    kvm_tsc tsc;
    uint64_t t0;               /* monotonic ns at creation */
    uint64_t start_ns;         /* guest time at creation (cfg->clock.start_ns) */
    uint64_t stopped_ns;       /* time stopped for the monitor, hidden from the guest */
    uint64_t t_event;          /* monotonic ns a stop for an event began, 0 = none outstanding */
    uint64_t t_run;            /* monotonic ns of the last kvm_before_run (end of the last hidden stop) */
    uint64_t bus_deadline;     /* guest ns the bus asked to be advanced at (UINT64_MAX: none) */
} kvm_drv;

uint64_t kvm_now_ns(void);

/* kvm_vcpu.c */
vmt_status kvm_setup_vcpu(kvm_drv *k, const vmt_regs *boot, char *why, size_t why_len);
vmt_status kvm_get_regs(kvm_drv *k, vmt_regs *r);
vmt_status kvm_set_regs(kvm_drv *k, const vmt_regs *r);
vmt_status kvm_regs_flush(kvm_drv *k); /* pending sync registers -> KVM_SET_REGS */
vmt_status kvm_apply_debug(kvm_drv *k);
vmt_status kvm_hw_breakpoint(vmt_driver *d, vmt_vcpu vcpu, unsigned index, vmt_va va, int enable);
vmt_status kvm_inject(vmt_driver *d, vmt_vcpu vcpu, const vmt_injection *inj);
vmt_status kvm_reinject_bp(kvm_drv *k);
vmt_status kvm_translate(kvm_drv *k, uint64_t va, uint64_t *pa);

/* kvm_mem.c */
vmt_status kvm_mem_init(kvm_drv *k, char *why, size_t why_len);
void kvm_mem_fini(kvm_drv *k);
uint64_t kvm_backing(const kvm_drv *k, vmt_view v, uint64_t gfn);
vmt_status kvm_switch_view(kvm_drv *k, vmt_view v, bool exact);
vmt_status kvm_layout_to(kvm_drv *k, vmt_view v);
vmt_status kvm_map_view(kvm_drv *k, vmt_view v);
vmt_status kvm_exec_map(kvm_drv *k, uint64_t gfn);
vmt_status kvm_exec_unmap_all(kvm_drv *k);
bool kvm_exec_mapped(const kvm_drv *k, uint64_t gfn);
vmt_status kvm_mem_check(kvm_drv *k);
void kvm_mark_dirty(kvm_drv *k, uint64_t gfn);
/* Guest-physical access as view v maps it (bytes past RAM: writes dropped, reads 0xff). */
void kvm_write_through(kvm_drv *k, vmt_view v, uint64_t gpa, const uint8_t *data, unsigned size);
void kvm_read_through(kvm_drv *k, vmt_view v, uint64_t gpa, uint8_t *data, unsigned size);
vmt_status kvm_read_phys(vmt_driver *d, vmt_pa pa, void *buf, size_t len);
vmt_status kvm_write_phys(vmt_driver *d, vmt_pa pa, const void *buf, size_t len);
vmt_status kvm_view_create(vmt_driver *d, vmt_access default_access, vmt_view *out);
vmt_status kvm_view_destroy(vmt_driver *d, vmt_view view);
vmt_status kvm_view_switch(vmt_driver *d, vmt_vcpu vcpu, vmt_view view);
vmt_status kvm_view_current(vmt_driver *d, vmt_vcpu vcpu, vmt_view *out);
vmt_status kvm_view_remap(vmt_driver *d, vmt_view view, vmt_gfn gfn, vmt_gfn backing);
vmt_status kvm_view_set_access(vmt_driver *d, vmt_view view, vmt_gfn gfn, vmt_access allowed);
vmt_status kvm_view_get_access(vmt_driver *d, vmt_view view, vmt_gfn gfn, vmt_access *allowed, vmt_gfn *backing);
vmt_status kvm_frame_alloc(vmt_driver *d, vmt_gfn *out);
vmt_status kvm_frame_free(vmt_driver *d, vmt_gfn gfn);
vmt_status kvm_collect_dirty(kvm_drv *k);

/* kvm_emulate.c: true when the engine did the work (registers set, no step
 * needed); false leaves everything as it was (take the step path). */
bool kvm_engine_emulate(kvm_drv *k, vmt_view v);       /* EMULATE of the event's instruction */
bool kvm_engine_run_unfetchable(kvm_drv *k);           /* code in frames without a memslot */
bool kvm_unfetchable_int3(kvm_drv *k, uint64_t *gpa); /* rip on an INT3 in a frame without a memslot (at *gpa) */
void kvm_engine_fini(kvm_drv *k);
vmt_status kvm_engine_check(kvm_drv *k);              /* the engines' invariants (kvm_check) */

/* kvm_bus.c */
vmt_status kvm_bus_pre_vcpu(kvm_drv *k, const vmt_machine_config *cfg, char *why, size_t why_len);
void kvm_bus_post_vcpu(kvm_drv *k, const vmt_machine_config *cfg);
uint64_t kvm_guest_now(const kvm_drv *k);
uint64_t kvm_bus_advance(kvm_drv *k);  /* guest now -> bus; the next deadline as absolute monotonic ns (0: none) */
void kvm_event_delivered(kvm_drv *k);
void kvm_before_run(kvm_drv *k);       /* account and hide the time stopped since the last event */
/* A port/MMIO access through the bus: VMT_E_NOTFOUND when it is not the
 * bus's; VMT_E_STOPPED / others with *msg set. `data` as in kvm_run. */
vmt_status kvm_bus_pio(kvm_drv *k, uint16_t port, unsigned size, bool write, uint8_t *data, const char **msg);
vmt_status kvm_bus_mmio(kvm_drv *k, uint64_t gpa, unsigned len, bool write, uint8_t *data, const char **msg);
vmt_status kvm_bus_check(kvm_drv *k);

/* kvm_run.c */
vmt_status kvm_timer_init(kvm_drv *k, char *why, size_t why_len);
void kvm_timer_fini(kvm_drv *k);
vmt_status kvm_wait_event(vmt_driver *d, int timeout_ms, vmt_event *ev);
vmt_status kvm_respond(vmt_driver *d, const vmt_event *ev, const vmt_response *resp);
vmt_status kvm_complete_pending(kvm_drv *k, bool *exited);
void kvm_io_event(kvm_drv *k);
static inline uint8_t *kvm_io_data(kvm_drv *k) { return (uint8_t *)k->run + k->run->io.data_offset; }
void kvm_serial_fini(kvm_drv *k);

#endif
