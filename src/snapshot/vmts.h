/*
 * snapshot/vmts.h — vmtrap's own snapshot file ("vmts"), shared by the
 * loader and the writer (internal). The format is documented for users in
 * docs/snapshot.md; this header is its single definition in code.
 *
 * File = header (64 bytes) | section table (count * 32 bytes + 8-byte
 * trailer holding the table's CRC-32) | sections. All integers little
 * endian. Checksums are zlib's CRC-32.
 *
 * Header: magic "VMTSNAP\0", u32 version (1), u32 flags (0), u32
 * header_size (64), u32 section_count, u64 table_offset (64), u64
 * file_size, 16 reserved zero bytes, u32 CRC-32 of bytes 0..55, u32 zero.
 * Table entry: u32 type, u32 flags (0), u64 offset, u64 length, u32 CRC-32
 * of the section bytes, u32 zero.
 */
#ifndef VMT_SNAPSHOT_VMTS_H
#define VMT_SNAPSHOT_VMTS_H

#include <stdint.h>

#include "snapshot/snapshot_internal.h"

#define VMTS_MAGIC "VMTSNAP"     /* 8 bytes with its NUL */
#define VMTS_VERSION 1u
#define VMTS_HEADER_SIZE 64u
#define VMTS_ENTRY_SIZE 32u
#define VMTS_MAX_SECTIONS 32u
#define VMTS_CHUNK_SIZE (64u << 10) /* what the writer uses; the reader takes 4 KiB .. 16 MiB powers of 2 */
#define VMTS_CHUNK_ENTRY 16u        /* u64 offset, u32 csize, u32 flags */
#define VMTS_FIXUP_ENTRY 240u       /* u32 vcpu, u32 group, char[24] field, u64 value, char[200] how */

enum vmts_section {
    VMTS_SEC_META = 1,     /* JSON object text */
    VMTS_SEC_CLOCK = 2,    /* u64 tsc_hz, u64 insns_per_sec, u64 start_ns */
    VMTS_SEC_MEMMAP = 3,   /* u32 block_count, u32 chunk_size, then {u64 gpa, u64 size} per block */
    VMTS_SEC_VCPUS = 4,    /* u32 count, u32 record_size, then records (vmts_vcpu_encode) */
    VMTS_SEC_PLATFORM = 5, /* opaque device state (optional) */
    VMTS_SEC_FIXUPS = 6,   /* u32 count, u32 zero, then VMTS_FIXUP_ENTRY records */
    VMTS_SEC_CHUNKS = 7,   /* VMTS_CHUNK_ENTRY per chunk, blocks in order */
    VMTS_SEC_MEMDATA = 8,  /* zstd frames (with content size and checksum) */
    VMTS_SEC_TYPES = 9
};

const char *vmts_section_name(uint32_t type);

/* One vCPU record: VMTS_VCPU_RECORD bytes. decode refuses invalid booleans
 * (VMT_E_FORMAT). */
#define VMTS_VCPU_RECORD 1356u
void vmts_vcpu_encode(const vmt_vcpu_state *v, uint8_t *out);
vmt_status vmts_vcpu_decode(const uint8_t *in, vmt_vcpu_state *v);

#endif
