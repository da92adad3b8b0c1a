/*
 * vmtrap/access.h — views and access rights.
 *
 * Design: a view is a second-level translation of guest-physical memory
 * (Xen altp2m semantics). View 0 (VMT_VIEW_DEFAULT) is the unaltered memory.
 * In any other view a gfn can be backed by another frame (a remap) and given
 * any subset of R/W/X; an access outside that subset traps as a memory-access
 * event *before* it happens. Remapping a gfn resets its rights to the view's
 * default, so rights are set after the remap (core's access arbiter does this).
 */
#ifndef VMTRAP_ACCESS_H
#define VMTRAP_ACCESS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint16_t vmt_view;
#define VMT_VIEW_DEFAULT ((vmt_view)0)
#define VMT_VIEW_INVALID ((vmt_view)0xffff)

/* A set of access kinds. */
typedef uint8_t vmt_access;
#define VMT_ACCESS_NONE ((vmt_access)0)
#define VMT_ACCESS_R    ((vmt_access)1)
#define VMT_ACCESS_W    ((vmt_access)2)
#define VMT_ACCESS_X    ((vmt_access)4)
#define VMT_ACCESS_RW   ((vmt_access)(VMT_ACCESS_R | VMT_ACCESS_W))
#define VMT_ACCESS_RX   ((vmt_access)(VMT_ACCESS_R | VMT_ACCESS_X))
#define VMT_ACCESS_WX   ((vmt_access)(VMT_ACCESS_W | VMT_ACCESS_X))
#define VMT_ACCESS_RWX  ((vmt_access)(VMT_ACCESS_R | VMT_ACCESS_W | VMT_ACCESS_X))

/* "rwx", "r-x", "---": writes 4 bytes including the NUL into buf. */
const char *vmt_access_str(vmt_access access, char buf[4]);

#ifdef __cplusplus
}
#endif
#endif
