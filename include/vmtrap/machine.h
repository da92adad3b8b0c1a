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

#include "vmtrap/bus.h"
#include "vmtrap/image.h"
#include "vmtrap/vcpu_state.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VMT_PORT_SERIAL 0x3f8
#define VMT_PORT_UCALL  0x5e0

typedef void (*vmt_serial_fn)(void *ctx, const char *line);

/* One block of guest RAM in the physical memory map. */
typedef struct vmt_ram_range {
    vmt_pa start;             /* 4 KiB aligned */
    uint64_t size;            /* bytes, multiple of 4 KiB */
} vmt_ram_range;

/* Virtual time (vmtrap/bus.h): guest ns = retired instructions * 1e9 /
 * insns_per_sec, plus the time skipped over HLT; TSC = tsc_start + ns *
 * tsc_hz / 1e9. Zero fields take the driver's defaults. */
typedef struct vmt_clock_config {
    uint64_t insns_per_sec;
    uint64_t tsc_hz;
    uint64_t start_ns;        /* guest time at creation (a restored machine's) */
} vmt_clock_config;

typedef struct vmt_machine_config {
    uint64_t ram_size;        /* bytes, multiple of 4 KiB; 0: 64 MiB */
    uint32_t vcpus;           /* 0: 1 */
    const vmt_image *image;   /* required; the driver copies what it needs */
    uint32_t extra_frames;    /* frames for frame_alloc; 0: 65536 */
    uint16_t max_views;       /* 0: driver default */
    vmt_serial_fn serial;     /* serial output lines, may be NULL */
    void *serial_ctx;
    /* Physical memory map: RAM blocks in increasing order, not overlapping
     * (NULL: one block 0..ram_size). Frames outside every block are holes:
     * accesses go to the bus as MMIO. caps.ram_frames is then the end of
     * the highest block. */
    const vmt_ram_range *ram_ranges;
    size_t ram_range_count;
    /* Full initial state of vCPU 0 (a snapshot); NULL: the image's regs. */
    const vmt_vcpu_state *vcpu_state;
    vmt_bus bus;              /* devices; {NULL, NULL}: none */
    vmt_clock_config clock;
} vmt_machine_config;

#ifdef __cplusplus
}
#endif
#endif
