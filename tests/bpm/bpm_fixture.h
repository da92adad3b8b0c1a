/*
 * tests/bpm/bpm_fixture.h — a mem driver + session + breakpoint manager with
 * hand-built 4-level page tables, shared by the bpm tests.
 *
 * RAM layout (256 frames): code/data frames 0x10..0x7f (tests pick), page
 * tables allocated from 0x80 upwards. View 1 (default RWX) is the
 * breakpoint view.
 */
#ifndef VMT_TEST_BPM_FIXTURE_H
#define VMT_TEST_BPM_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtrap/bpm.h"
#include "vmtrap/mem.h"
#include "vmtrap/session.h"

#define FX_ROOT_A 0x80000ULL /* gfn 0x80 */
#define FX_ROOT_B 0x81000ULL /* gfn 0x81 */

typedef struct fx {
    vmt_driver *d;
    vmt_session *s;
    vmt_bpm *b;
    vmt_view view;
    uint64_t next_table; /* next free page-table gfn */
} fx;

/* mc may be NULL (defaults); ctl = controller to force (AUTO: choose). */
void fx_init(fx *f, const vmt_mem_config *mc, vmt_bpm_controller ctl);
void fx_free(fx *f);
/* 4 KiB mapping va -> pa under root (tables created as needed). */
void fx_map(fx *f, vmt_pa root, vmt_va va, vmt_pa pa);
void fx_unmap(fx *f, vmt_pa root, vmt_va va);
/* Fill a RAM frame with a recognisable pattern (byte i = seed + i, never 0xCC). */
void fx_fill(fx *f, vmt_gfn gfn, uint8_t seed);
uint8_t fx_byte(fx *f, vmt_pa pa);
void fx_page(fx *f, vmt_gfn gfn, uint8_t *out);
/* The breakpoint spec. */
vmt_bpm_bp fx_bp(fx *f, vmt_va va, vmt_pa root, uint32_t key, uint64_t tag, bool global);
/* Assert vmt_bpm_check and vmt_mem_check pass. */
void fx_check(fx *f);
/* Events */
vmt_event fx_int3(fx *f, vmt_va va, vmt_pa pa, vmt_pa root);
vmt_event fx_mem(fx *f, vmt_va va, vmt_pa pa, vmt_access acc, vmt_pa root);
/* Index of the first logged call of op at or after `from`, or -1. */
long fx_find_call(fx *f, vmt_mem_op op, size_t from);
/* Access and backing of gfn in the breakpoint view. */
void fx_view_state(fx *f, vmt_gfn gfn, vmt_access *acc, vmt_gfn *backing);

#endif
