/*
 * vmtrap/machine.h — what a CPU-running driver (emu, kvm) is created from.
 *
 * Design: the same config creates a guest on every driver that runs a CPU,
 * so a test or the CLI can switch drivers with one word. The image is loaded
 * by core (vmtrap/image.h) and placed by the driver into its own RAM.
 *
 * Port I/O: port VMT_PORT_SERIAL (0x3f8) output is collected into lines and
 * given to `serial` (dropped when NULL); every other port access is reported
 * as VMT_EVENT_IO, which is how testbed guests talk to the host (the ucall
 * protocol on VMT_PORT_UCALL, see vmtrap/ucall.h).
 */
#ifndef VMTRAP_MACHINE_H
#define VMTRAP_MACHINE_H

#include <stdint.h>

#include "vmtrap/image.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VMT_PORT_SERIAL 0x3f8
#define VMT_PORT_UCALL  0x5e0

typedef void (*vmt_serial_fn)(void *ctx, const char *line);

typedef struct vmt_machine_config {
    uint64_t ram_size;        /* bytes, multiple of 4 KiB; 0: 64 MiB */
    uint32_t vcpus;           /* 0: 1 */
    const vmt_image *image;   /* required; the driver copies what it needs */
    uint32_t extra_frames;    /* frames for frame_alloc; 0: 65536 */
    uint16_t max_views;       /* 0: driver default */
    vmt_serial_fn serial;     /* serial output lines, may be NULL */
    void *serial_ctx;
} vmt_machine_config;

#ifdef __cplusplus
}
#endif
#endif
