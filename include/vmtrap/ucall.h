/*
 * vmtrap/ucall.h — the testbed guests' call protocol to the host ("ucall").
 *
 * Design (after Linux's KVM selftests): a guest fills one vmt_ucall_wire
 * record in its own memory and writes the record's guest-PHYSICAL address
 * (below 4 GiB) to port VMT_PORT_UCALL with a 4-byte `out dx, eax`. The
 * driver reports that as a VMT_EVENT_IO; the host reads the record from guest
 * RAM and decodes it with vmt_ucall_decode(). The vCPU does not run between
 * the `out` and the response, so the record is stable while it is decoded.
 *
 * The layout below is the wire format: fixed sizes, explicit padding, a magic,
 * a version and the record size, identical for the guest (freestanding
 * gcc) and the host. Commands and what their fields carry:
 *   PRINT        text = message
 *   REPORT       name = key, args[0] = value
 *   ASSERT_FAIL  name = file, args[0] = line, text = expression,
 *                args[1..nargs-1] = values the guest chose to show
 *   STEP         name = step name, args[0..nargs-1] = its numbers
 *                (memory-manager steps: va, old frame, new frame), text = words
 *   DETECTOR     args[0] = detector id, args[1] = 1 pass / 0 fail,
 *                name = detector name, text = detail
 *   DONE         args[0] = exit code (0 = success)
 *
 * The guest is an adversary: the decoder checks the port and access size,
 * that the whole record lies inside guest RAM, the magic, version, size,
 * command and argument count, and that every string is NUL-terminated inside
 * its fixed buffer. Nothing from the record is trusted before those checks.
 */
#ifndef VMTRAP_UCALL_H
#define VMTRAP_UCALL_H

#include <stddef.h>
#include <stdint.h>

#include "vmtrap/event.h"
#include "vmtrap/paging.h"
#include "vmtrap/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* FNV-1a 64, the hash the guest's stealth detectors report (entry bytes of
 * hooked functions, code pages) and the host recomputes over the ELF file's
 * bytes: one definition, so both sides compute the same function. */
static inline uint64_t vmt_ucall_fnv1a(const void *p, size_t n)
{
    const unsigned char *b = (const unsigned char *)p;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

#define VMT_UCALL_MAGIC    0x4c414355u /* "UCAL" little-endian */
#define VMT_UCALL_VERSION  1u
#define VMT_UCALL_MAX_ARGS 6u
#define VMT_UCALL_NAME_LEN 64u
#define VMT_UCALL_TEXT_LEN 256u

typedef enum vmt_ucall_cmd {
    VMT_UCALL_PRINT = 1,
    VMT_UCALL_REPORT = 2,
    VMT_UCALL_ASSERT_FAIL = 3,
    VMT_UCALL_STEP = 4,
    VMT_UCALL_DETECTOR = 5,
    VMT_UCALL_DONE = 6,
} vmt_ucall_cmd;

/* The record in guest memory (wire format, little-endian). */
typedef struct vmt_ucall_wire {
    uint32_t magic;                     /* VMT_UCALL_MAGIC */
    uint16_t version;                   /* VMT_UCALL_VERSION */
    uint16_t cmd;                       /* vmt_ucall_cmd */
    uint32_t size;                      /* sizeof(vmt_ucall_wire) */
    uint32_t nargs;                     /* valid entries of args, <= VMT_UCALL_MAX_ARGS */
    uint64_t seq;                       /* the guest's ucall counter, from 1 */
    uint64_t args[VMT_UCALL_MAX_ARGS];
    char name[VMT_UCALL_NAME_LEN];      /* NUL-terminated */
    char text[VMT_UCALL_TEXT_LEN];      /* NUL-terminated */
} vmt_ucall_wire;

_Static_assert(sizeof(vmt_ucall_wire) == 392, "ucall wire size");
_Static_assert(offsetof(vmt_ucall_wire, seq) == 16, "ucall wire layout");
_Static_assert(offsetof(vmt_ucall_wire, args) == 24, "ucall wire layout");
_Static_assert(offsetof(vmt_ucall_wire, name) == 72, "ucall wire layout");
_Static_assert(offsetof(vmt_ucall_wire, text) == 136, "ucall wire layout");

/* A decoded, validated ucall (host side). */
typedef struct vmt_ucall {
    vmt_ucall_cmd cmd;
    uint32_t nargs;
    uint64_t seq;
    uint64_t pa;                        /* where the record was */
    uint64_t args[VMT_UCALL_MAX_ARGS];  /* entries past nargs are 0 */
    char name[VMT_UCALL_NAME_LEN];
    char text[VMT_UCALL_TEXT_LEN];
} vmt_ucall;

/* "print", "report", ... ("?" for an unknown value). */
const char *vmt_ucall_cmd_name(int cmd);

/* 1 when ev is a 4-byte write to VMT_PORT_UCALL (a ucall to decode). */
int vmt_ucall_is_ucall(const vmt_event *ev);

/* Decode the ucall announced by io_event. `mem` reads guest-physical memory
 * (e.g. vmt_session_reader()), ram_size bounds the record. On failure out is
 * zeroed and `why` says what was wrong:
 *   VMT_E_INVAL   not a ucall event (wrong kind, port, direction, size), NULL args
 *   VMT_E_RANGE   the record is not entirely inside guest RAM, or unreadable
 *   VMT_E_FORMAT  bad magic, version, size, command, nargs, unterminated string */
vmt_status vmt_ucall_decode(const vmt_phys_reader *mem, uint64_t ram_size, const vmt_event *io_event,
                            vmt_ucall *out, char *why, size_t why_len);

/* One line for logs, e.g. "step pageout va=0x... 0x1 0x2" (always terminated). */
void vmt_ucall_format(const vmt_ucall *uc, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
