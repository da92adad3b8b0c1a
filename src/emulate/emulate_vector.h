/*
 * emulate/emulate_vector.h — x87/MMX/SSE state for the engine (internal):
 * which instructions use it, and loading / reading it in FXSAVE layout.
 * Stateless helpers; see emulate_vector.c.
 */
#ifndef VMT_EMULATE_VECTOR_H
#define VMT_EMULATE_VECTOR_H

#include <stdbool.h>

#include <capstone/capstone.h>
#include <unicorn/unicorn.h>

#include "vmtrap/vcpu_state.h"

/* The instruction reads or writes x87, MMX, SSE or AVX registers or
 * control words (needs detail on). */
bool emul_uses_vector_state(const cs_insn *in);
/* fxsave image (+ ymm_hi untouched) -> Unicorn, and back. */
void emul_fpu_load(uc_engine *uc, const vmt_fpu_state *f);
void emul_fpu_save(uc_engine *uc, vmt_fpu_state *f);

#endif
