/*
 * guests/workload/workload.h — the workload guest's pieces: services
 * (svc.c, svc_asm.S), the memory manager that moves their pages (mm.c) and
 * the stealth detectors (detectors.c).
 *
 * Parameters the host may patch in guest memory before the first
 * instruction (at the symbol's physical address = VA - KERNEL_VMA); the
 * guest REPORTs the values it used:
 *   workload_iterations   loop iterations (default 32, clamped to 1..100000)
 *   workload_skip         bit n set: skip detector n (1..16); bit 17: detector 9
 *                         leaves ICEBP out (default 0)
 */
#ifndef WORKLOAD_H
#define WORKLOAD_H

#include <stdint.h>

enum { SVC_OPEN, SVC_WRITE, SVC_SPAWN, SVC_EXIT, SVC_COUNT };

extern volatile uint32_t workload_iterations;
extern volatile uint32_t workload_skip;

/* Services: each alone in its own 4 KiB page of the .pages region. */
int64_t svc_open(const char *path);
int64_t svc_write(int64_t fd, const void *buf, uint64_t len);
int64_t svc_spawn(const char *name);
int64_t svc_exit(int64_t pid); /* asm: starts with pushfq (detector 6) */
/* Calls the workload made to each service (main loop + detectors). */
extern volatile uint64_t workload_calls[SVC_COUNT];
/* Calls each service received (the services count themselves). */
extern volatile uint64_t svc_served[SVC_COUNT];
/* svc_exit calls that saw TF set in their own pushfq. */
extern volatile uint64_t svc_tf_leaks;
/* In svc_exit's page: `mov $imm32, %eax; ret` (detector 4 rewrites imm32). */
int smc_target(void);
extern char smc_target_imm[];
/* In svc_write's page: `int3; ret` (detector 5). */
void int3_in_service_page(void);

extern const char *const svc_names[SVC_COUNT];
uint64_t svc_va(unsigned svc);

/* Memory manager (mm.c). */
void mm_init(void);
/* One memory-manager operation, chosen by the iteration number. */
void mm_step(uint32_t iteration);
/* Page out the data page holding the strings in workload_user_page: the
 * next service that reads them faults it back in (at another frame). */
void mm_page_out_user(void);
/* A page-aligned data page: "/paged/out/path.txt" at 0, a message at 64. */
extern char workload_user_page[];
#define USER_PATH (workload_user_page)
#define USER_MESSAGE (workload_user_page + 64)
/* The #PF handler mm_init installs (demand paging); detectors that take
 * faults of their own put it back afterwards. */
struct trap_frame;
int mm_page_fault(struct trap_frame *f);
/* Bring every service page back to its home frame under 4 KiB pages. */
void mm_settle(void);
void mm_report(void);

/* Detectors (detectors.c). */
void detectors_baseline(void);
/* Runs detectors 1..16; returns how many failed. */
unsigned detectors_run(uint64_t ram_size);
/* detectors_more.c: detectors 9..16 (skip: workload_skip bits). */
unsigned detectors_more_run(uint64_t ram_size, unsigned skip);

#endif
