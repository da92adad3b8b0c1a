/*
 * vmtrap/qemu.h — the qemu driver: watch a live QEMU virtual machine, every
 * device real, through QEMU's gdbstub (our own GDB remote protocol client)
 * and QMP.
 *
 * Design: QEMU runs the machine; the driver is a client. Two ways in:
 *  - attach: cfg.gdb_socket (QEMU started with -gdb unix:PATH,server=on,wait=off)
 *    and optionally cfg.qmp_socket (-qmp unix:PATH,server=on,wait=off);
 *  - launch: cfg.qemu_argv (program and arguments); the driver adds
 *    -gdb/-qmp unix sockets in a private temp dir, -S (nothing runs before
 *    we are attached) and -icount (cfg.icount, default "shift=auto,sleep=off":
 *    guest time advances only with executed instructions, idle time is
 *    skipped, so time the guest spends stopped for us is invisible to it)
 *    unless cfg.no_icount or the arguments already have -icount. Measured on
 *    QEMU 7.2: a state saved without -icount resumed (-incoming) under
 *    "-icount shift=auto" (sleep=on) never runs the guest again, with
 *    sleep=off it runs. At destroy QEMU is told to quit (then killed).
 * The guest runs only inside wait_event() (as on the emulator): the driver
 * continues QEMU, waits for a stop reply, and stops QEMU again (interrupt)
 * when the timeout passes, so memory and registers can always be read
 * between calls. Connecting the gdbstub stops the VM (QEMU's behaviour);
 * destroy removes every breakpoint and watchpoint and detaches: an attached
 * VM is left in the run state it had when the driver attached (running, or
 * stopped again through QMP; without QMP it runs on, QEMU's detach).
 *
 * What it declares (vmt_driver_caps), honestly:
 *  - READ_PHYS/WRITE_PHYS through Qqemu.PhyMemMode:1 (m/M packets address
 *    guest-physical memory); guest RAM is gfn 0 .. below-4G RAM size (QMP
 *    query-memory-size-summary; without QMP, cfg.ram_bytes must be given);
 *    QEMU itself does not fail on unassigned addresses, the driver refuses
 *    anything past RAM with VMT_E_RANGE.
 *  - REGS_GET/REGS_SET for what the target description (i386-64bit.xml in
 *    QEMU 7.2) has: GPRs, rip, eflags, selectors, fs_base, gs_base,
 *    k_gs_base, cr0, cr2, cr3, cr4, cr8, efer. It has no GDTR/IDTR and no
 *    debug registers: those read as 0 and a set that changes them is
 *    VMT_E_NOTSUP.
 *  - PAUSE, EVENTS, SINGLESTEP (qqemu.sstep=0x7: interrupts and timers off
 *    while stepping), HW_BREAKPOINTS (4, the contract's maximum) as gdbstub
 *    Z0 breakpoints reported as VMT_EVENT_HW_BREAKPOINT: under TCG they
 *    change no guest byte (invisible) and QEMU takes any number of them
 *    (vmt_qemu_breakpoint() sets more than 4); under KVM (query-kvm) QEMU's
 *    Z0 would write INT3 into guest memory, so the driver uses Z1 (debug
 *    registers, at most 4) there and vmt_qemu_breakpoint() is refused.
 *  - no VIEWS, no FRAMES, no BREAKPOINT_EVENTS (a guest INT3 goes to the
 *    guest's own IDT), no EMULATE/FAST_STEP, no INJECT, no DETERMINISTIC.
 *  - with a linear map (cfg.map_base or vmt_qemu_set_map_base(), Linux:
 *    page_offset_base) a WRITE-ONLY permission control on view 0, for the
 *    page-table monitor: VIEW_PERM with trap_access W alone (max_views 1,
 *    still no VIEWS/REMAP/FRAMES), WRITE_DATA and WRITE_AFTER.
 *    view_set_access(0, gfn, rights without W) sets a Z2 watch on
 *    map_base + gfn*4096 (4096 bytes; refused with VMT_E_RANGE when
 *    map_base + gfn*4096 does not translate to gfn*4096 under the current
 *    CR3); rights with W remove it; view_get_access answers from the
 *    driver's own table (rights RX or RWX, backing = gfn). A hit is
 *    VMT_EVENT_MEM_ACCESS, access W, gpa of the 8-byte entry that changed,
 *    has_data with the value memory now holds, size 8 — AFTER the store
 *    (VMT_CAP_WRITE_AFTER: CONTINUE goes on, DENY is impossible). A store
 *    that changed several entries (a 16-byte store, rep movs) is reported
 *    as one event per changed entry, lowest first, the guest not running
 *    between them; a store of the same value as one event without data at
 *    the page start; a hit for a watch the driver no longer has (removed
 *    meanwhile) is dropped and counted (info.stale_watch_hits). Limits:
 *    only stores through that linear alias are seen (Linux writes its
 *    tables through the direct map; a store through another alias, DMA, or
 *    the CPU's own A/D-bit updates are not), and QEMU 7.2 flushes its
 *    translated code at every watch insertion and removal. Without a map
 *    base the driver declares none of this.
 * Write watchpoints (vmt_qemu_watch, gdbstub Z2 on guest-virtual addresses,
 * any length) are reported as VMT_EVENT_MEM_ACCESS with access W AFTER the
 * write happened (QEMU reports after the instruction, and only the
 * watchpoint's start address: the driver diffs a shadow copy of the range
 * to name the 8-byte word written and its new value, see qemu_watch.c).
 * A physical page-table frame is watched through a virtual address that
 * maps it, e.g. Linux's direct map:
 * vmt_qemu_watch_phys(d, pa, 4096, page_offset_base).
 * CONTINUE on a breakpoint event resumes at rip executing the original
 * instruction: past a NOP (Linux's ftrace entry NOP) by moving rip, else
 * by stepping over the breakpoint with it removed.
 *
 * Cost (measured on QEMU 7.2, see bench/bench_qemu.c): every stop for a
 * breakpoint, watchpoint or step flushes QEMU's whole translation cache
 * (gdbstub's RUN_STATE_DEBUG handling; so do breakpoint insertion/removal
 * and switching single-step on or off), so the guest re-translates its hot
 * code after each hit: on the Linux snapshot one hit costs about 0.1-0.3 s
 * of wall time, whatever the driver does. Stops by interrupt (timeouts,
 * pause) do not flush. Hooks on hot functions are therefore slow on this
 * driver; use the emulator driver for those.
 *
 * Failure: a dead or hung QEMU, a closed socket, a malformed packet give a
 * clear error (vmt_driver_error) — every exchange has a deadline
 * (cfg.timeout_ms); after a protocol error the connection is not trusted
 * again and every call fails with that first error.
 *
 * Threading: one thread at a time.
 */
#ifndef VMTRAP_QEMU_H
#define VMTRAP_QEMU_H

#include <stddef.h>
#include <stdint.h>

#include "vmtrap/addr.h"
#include "vmtrap/driver.h"
#include "vmtrap/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vmt_qemu_config {
    /* attach */
    const char *gdb_socket;        /* path of QEMU's -gdb unix socket */
    const char *qmp_socket;        /* path of QEMU's -qmp unix socket, or NULL */
    uint64_t ram_bytes;            /* guest RAM size when there is no QMP (0: ask QMP) */
    /* launch (used when qemu_argv is non-NULL; gdb_socket/qmp_socket are then ignored) */
    const char *const *qemu_argv;  /* NULL-terminated: program, arguments */
    int no_icount;                 /* do not add -icount */
    const char *icount;            /* -icount value (NULL: "shift=auto,sleep=off") */
    const char *qemu_log;          /* QEMU's stdout+stderr (NULL: a file in the private temp dir) */
    int start_timeout_ms;          /* wait for QEMU's sockets (0: 30000) */
    /* both */
    int timeout_ms;                /* deadline of one exchange (0: 5000) */
    int no_nop_skip;               /* always resume from a breakpoint by a gdbstub step (for comparisons) */
    vmt_va map_base;               /* a linear map of all guest RAM (Linux: page_offset_base); 0: none,
                                    * no write-protection of frames (see VIEW_PERM above) */
} vmt_qemu_config;

vmt_status vmt_qemu_driver_create(const vmt_qemu_config *cfg, vmt_driver **out, char *why, size_t why_len);

/* 1 when d was made by vmt_qemu_driver_create(). */
int vmt_qemu_is_qemu(const vmt_driver *d);

/* An execution breakpoint at a guest-virtual address, beyond the 4 of the
 * HW_BREAKPOINTS contract (TCG only). Hits are VMT_EVENT_HW_BREAKPOINT with
 * index VMT_QEMU_BP_INDEX and address = va. VMT_E_EXISTS / VMT_E_NOTFOUND
 * for a second set / a clear of an unknown va. */
#define VMT_QEMU_BP_INDEX 0xff
vmt_status vmt_qemu_breakpoint(vmt_driver *d, vmt_va va, int enable);

/* A write watchpoint over [va, va+len) (guest-virtual, through the current
 * address space). Hits are VMT_EVENT_MEM_ACCESS (W, gva, gpa when the
 * translation is known, after the write). */
vmt_status vmt_qemu_watch(vmt_driver *d, vmt_va va, uint64_t len, int enable);
/* Watch physical [pa, pa+len) through the linear map at map_base (e.g.
 * Linux's page_offset_base): a watch on map_base + pa. */
vmt_status vmt_qemu_watch_phys(vmt_driver *d, vmt_pa pa, uint64_t len, vmt_va map_base, int enable);

/* Set (or with 0 clear) the linear map after create — e.g. once the OS
 * layer found Linux's page_offset_base in the attached VM — and declare (or
 * withdraw) the write-only VIEW_PERM control. VMT_E_BUSY while frames are
 * write-protected through the old map base. */
vmt_status vmt_qemu_set_map_base(vmt_driver *d, vmt_va map_base);

typedef struct vmt_qemu_info {
    int launched;                  /* the driver started QEMU */
    int pid;                       /* QEMU's pid when launched, else 0 */
    int kvm;                       /* QEMU runs with KVM (breakpoints would not be invisible) */
    int icount;                    /* -icount was added by the driver */
    uint64_t ram_bytes;            /* below-4G guest RAM the driver exposes */
    unsigned breakpoints;          /* gdbstub breakpoints set (incl. the 4 slots) */
    unsigned watchpoints;
    uint64_t packets;              /* gdb packets sent */
    uint64_t nop_skips;            /* breakpoint hits resumed by moving rip past a NOP */
    char qemu_version[48];         /* from QMP (empty without QMP) */
    char regs_missing[128];        /* vmt_regs fields the target description lacks */
    vmt_va map_base;               /* the linear map used for frame watches (0: none) */
    unsigned protected_frames;     /* frames write-protected through view_set_access */
    uint64_t stale_watch_hits;     /* hits for a watch the driver no longer had (dropped) */
    uint64_t watch_words;          /* changed 8-byte words reported by watch hits */
} vmt_qemu_info;
vmt_status vmt_qemu_get_info(vmt_driver *d, vmt_qemu_info *out);

/* dump-guest-memory (paging=false: an ELF core of guest-physical memory,
 * what vmtrap's image loader and the session read) into path. Needs QMP. */
vmt_status vmt_qemu_dump(vmt_driver *d, const char *path);

/* Write what the gdbstub knows and a dump-guest-memory core lacks as a
 * snapshot sidecar (docs/snapshot.md): vcpus[0] efer, cr8, kernel_gs_base,
 * and fcw/mxcsr when the target description has them. With the core from
 * vmt_qemu_dump(), `vmtrap snapshot convert CORE OUT.vmts --state PATH`
 * makes a live VM a replayable snapshot. */
vmt_status vmt_qemu_write_state(vmt_driver *d, const char *path);

/* Invariant checker: the breakpoint table agrees with the slots, the
 * protocol clients are consistent, the run state is one of the known ones.
 * VMT_E_INTERNAL with a message (vmt_driver_error) when one fails. */
vmt_status vmt_qemu_check(vmt_driver *d);

#ifdef __cplusplus
}
#endif
#endif
