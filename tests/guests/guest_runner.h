/*
 * tests/guests/guest_runner.h — run a testbed guest ELF to DONE on a
 * CPU-running driver with no monitoring, collecting everything it says
 * (ucalls in order, serial lines, the stop reason). Test helper only.
 *
 * The handler answers every event the way "no monitor" must: ucalls are
 * decoded and recorded; a guest INT3 is handed back to the guest's own IDT
 * (REINJECT), everything else continues. The run ends at DONE, when the
 * guest stops (halt after ASSERT_FAIL, triple fault, ...), on a malformed
 * ucall, or at the time limit.
 */
#ifndef GUEST_RUNNER_H
#define GUEST_RUNNER_H

#include <stddef.h>
#include <stdint.h>

#include "vmtrap/bus.h"
#include "vmtrap/driver.h"
#include "vmtrap/event.h"
#include "vmtrap/machine.h"
#include "vmtrap/status.h"
#include "vmtrap/ucall.h"

/* A 32-bit guest parameter written at a symbol before the first instruction. */
typedef struct guest_param {
    const char *symbol;
    uint32_t value;
} guest_param;

typedef struct guest_run {
    uint64_t ram_size;
    vmt_ucall *calls;
    size_t ncalls, cap;
    char **serial;
    size_t nserial;
    int done;               /* DONE received */
    int64_t exit_code;      /* its argument */
    int stopped;            /* VMT_EVENT_STOPPED seen */
    vmt_stop_info stop;
    uint64_t reinjected_bps;/* guest INT3s handed back to the guest */
    uint64_t caps_flags;    /* the driver's VMT_CAP_* */
    char error[512];        /* harness-level failure (bad ucall, driver error) */
    const struct guest_run_config *cfg; /* what it runs with (during the run) */
} guest_run;

#define GUEST_KERNEL_VMA 0xffffffff80000000ULL

/* driver: "emu" or "kvm". VMT_E_NOTSUP (with out->error) when that driver is
 * not built or not usable here: the test should skip. */
vmt_status guest_run_elf(const char *driver, const char *elf_path, uint64_t ram_size,
                         const guest_param *params, size_t nparams, double time_limit_s,
                         guest_run *out);
/* The same with devices behind the CPU (bus) and a virtual clock (NULL:
 * none / the driver's defaults). */
vmt_status guest_run_elf_machine(const char *driver, const char *elf_path, uint64_t ram_size, const vmt_bus *bus,
                                 const vmt_clock_config *clock, const guest_param *params, size_t nparams,
                                 double time_limit_s, guest_run *out);
/* The same with a callback once the driver exists, before the guest
 * parameters are written and the first instruction runs (e.g. to attach the
 * KVM driver's interrupt link, or to set a parameter from what the driver
 * offers: `params` is read after it). A failure ends the run with it. */
typedef vmt_status (*guest_driver_fn)(void *ctx, vmt_driver *d);
vmt_status guest_run_elf_hooked(const char *driver, const char *elf_path, uint64_t ram_size, const vmt_bus *bus,
                                const vmt_clock_config *clock, const guest_param *params, size_t nparams,
                                double time_limit_s, guest_driver_fn on_driver, void *on_driver_ctx,
                                guest_run *out);
/* Everything the entry points above take, plus (emu only) driver options
 * and a callback at every ucall as it arrives, with the driver (to read its
 * counters or vCPU state at that point of the guest). NULL/0: none. */
struct vmt_emu_options;
typedef void (*guest_ucall_fn)(void *ctx, vmt_driver *d, const vmt_ucall *uc);
typedef struct guest_run_config {
    const char *driver;
    const char *elf_path;
    uint64_t ram_size;
    const vmt_bus *bus;
    const vmt_clock_config *clock;
    const guest_param *params;
    size_t nparams;
    double time_limit_s;
    guest_driver_fn on_driver;
    void *on_driver_ctx;
    const struct vmt_emu_options *emu_options;
    guest_ucall_fn on_ucall;
    void *on_ucall_ctx;
} guest_run_config;
vmt_status guest_run_config_elf(const guest_run_config *c, guest_run *out);
void guest_run_free(guest_run *r);

/* The i-th ucall with this command (and name, when name is not NULL), or NULL. */
const vmt_ucall *guest_run_find(const guest_run *r, vmt_ucall_cmd cmd, const char *name, size_t nth);
size_t guest_run_count(const guest_run *r, vmt_ucall_cmd cmd, const char *name);
/* The value of REPORT key; 0 when absent (*found says which). */
uint64_t guest_run_report(const guest_run *r, const char *key, int *found);
/* Print every ucall and serial line (for failing tests). */
void guest_run_dump(const guest_run *r);

/* FNV-1a 64 of len bytes at a symbol's address in the ELF's loaded image
 * (what the guest's detector 1 hashes); 0 and a message on failure. */
vmt_status guest_elf_symbol_hash(const char *elf_path, const char *symbol, size_t len, uint64_t *hash,
                                 char *why, size_t why_len);

#endif
