/*
 * core/image_internal.h — the image structure shared by the image sources
 * (image_elf.c, image_raw.c) and the common part (image.c).
 *
 * Invariants (vmt_image_check_layout()): segments are sorted by pa, have
 * 0 < memsz, filesz <= memsz, lie inside RAM and do not overlap; every
 * segment's data is owned by the image (NULL only when filesz is 0);
 * syms is sorted by value (then rank), syms_by_name by name (then rank,
 * highest first); reach[] is the running maximum of symbol ends.
 */
#ifndef VMT_CORE_IMAGE_INTERNAL_H
#define VMT_CORE_IMAGE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtrap/image.h"

typedef struct vmt_image_sym {
    char *name;
    uint64_t value;
    uint64_t size;
    uint8_t type;    /* ELF STT_FUNC, STT_OBJECT or STT_NOTYPE */
    uint8_t rank;    /* preference among symbols at one address or of one
                        name: 4 = not a "__" name, 2 = function/object,
                        1 = global/weak; higher wins */
} vmt_image_sym;

/* A virtual address range [start, end) of an executable ELF segment. */
typedef struct vmt_image_range {
    uint64_t start;
    uint64_t end;
} vmt_image_range;

struct vmt_image {
    vmt_image_segment *segs;   /* owned, each data owned */
    size_t nsegs;
    vmt_regs regs;
    int has_cpu_state;
    vmt_va entry;              /* boot-protocol entry point */
    uint64_t ram_size;         /* as given at load */
    vmt_image_sym *syms;       /* sorted by value, then rank; owns the names */
    uint64_t *reach;           /* reach[i] = max end (value + max(size,1)) of syms[0..i] */
    size_t nsyms;
    const vmt_image_sym **syms_by_name; /* sorted by name */
    vmt_image_range *exec;     /* PF_X PT_LOAD segments by vaddr (ELF only) */
    size_t nexec;
};

/* Allocate an image with copies of `segs` (memsz 0 dropped), validated and
 * sorted; names the offending segment on failure ("segment 2 ..."). */
vmt_status vmt_image_new(const vmt_image_segment *segs, size_t n, uint64_t ram_size, vmt_image **out,
                         char *why, size_t why_len);
/* Take ownership of syms (sorted and indexed here). */
vmt_status vmt_image_set_symbols(vmt_image *img, vmt_image_sym *syms, size_t n, char *why, size_t why_len);
/* Compute the boot-protocol registers for ram_size into regs. */
void vmt_image_boot_regs(vmt_va entry, uint64_t ram_size, vmt_regs *regs);
/* Check segment layout against ram_size. */
vmt_status vmt_image_check_layout(const vmt_image *img, uint64_t ram_size, char *why, size_t why_len);

/* Read a whole host file of at most max bytes (VMT_E_RANGE if larger) into
 * a malloc'ed buffer with a NUL after the last byte. */
vmt_status vmt_image_read_file(const char *path, uint64_t max, uint8_t **buf_out, size_t *len_out, char *why,
                               size_t why_len);

/* Map a whole host file of at most max bytes (VMT_E_RANGE, unread, if
 * larger) privately; *map_out is NULL for an empty file. Unmap with
 * vmt_image_unmap_file. writable: pages may be written (copy-on-write). */
vmt_status vmt_image_map_file(const char *path, uint64_t max, bool writable, void **map_out, size_t *len_out,
                              char *why, size_t why_len);
void vmt_image_unmap_file(void *map, size_t len);

#endif
