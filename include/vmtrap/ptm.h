/*
 * vmtrap/ptm.h — the page-table monitor.
 *
 * Watches every level of a VA's translation and turns guest page-table
 * writes into page-in / page-out / remap events. (Implementation and full
 * API: src/ptm/; this header is the contract the breakpoint manager and the
 * monitor consume.)
 */
#ifndef VMTRAP_PTM_H
#define VMTRAP_PTM_H

#include <stddef.h>
#include <stdint.h>

#include "vmtrap/access.h"
#include "vmtrap/addr.h"
#include "vmtrap/event.h"
#include "vmtrap/session.h"
#include "vmtrap/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum vmt_ptm_event_kind {
    VMT_PTM_PAGE_IN = 1,  /* the translation became present: new_pa */
    VMT_PTM_PAGE_OUT,     /* it became not present: old_pa was the last frame */
    VMT_PTM_REMAP,        /* present before and after, different frame */
} vmt_ptm_event_kind;

typedef struct vmt_ptm_event {
    vmt_ptm_event_kind kind;
    vmt_addr_ctx ctx;     /* the monitored VA and root */
    vmt_view view;        /* the view it was monitored in */
    uint64_t tag;         /* the tag given to monitor() */
    vmt_pa old_pa;        /* translation of ctx.va before (valid for OUT, REMAP) */
    vmt_pa new_pa;        /* translation after (valid for IN, REMAP) */
    uint64_t page_size;   /* size of the page that now maps va (IN, REMAP) */
    vmt_vcpu vcpu;        /* the vCPU whose write caused it */
} vmt_ptm_event;

#ifdef __cplusplus
}
#endif
#endif
