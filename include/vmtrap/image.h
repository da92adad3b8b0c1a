/*
 * vmtrap/image.h — guest images: what a CPU-running driver boots from.
 *
 * Design: an image is a list of segments (guest-physical address + bytes),
 * an initial register state and, for ELF images, a symbol table. Two
 * sources, both parsed defensively (sizes and offsets from the file are
 * checked against the file size and the guest RAM size before use):
 *   - an ELF64 x86-64 executable: PT_LOAD segments go to their p_paddr;
 *     the entry point is e_entry; symbols come from .symtab (libelf); a
 *     section-header table that cannot be read is an error that says so
 *     (not a silently empty symbol table). Files are mapped, not read: the
 *     size is checked (at most 1 GiB) before anything is read, and only the
 *     image's copy of its segments stays;
 *   - a raw memory image (loaded at gpa 0) + a CPU-state file in JSON
 *     ({"rip": "0x...", "cr3": "0x...", ...}: every field of vmt_regs by
 *     name, numbers or hex strings; an unknown field is an error that names it).
 *     A memory file larger than RAM is refused by its size, unread.
 *
 * The vmtrap boot protocol (images with no CPU state): the loader builds
 * identity page tables for the first min(RAM, 4 GiB) (rounded up to 2 MiB)
 * with 2 MiB pages (P|RW, supervisor, executable) in the top 6 frames of RAM
 * (VMT_BOOT_PT_FRAMES: PML4, PDPT, 4 PDs), and starts the entry point in
 * 64-bit mode at CPL0 with paging on, interrupts off, CR3 = those tables,
 * rsp = just below them (16-byte aligned), rdi = RAM size in bytes, rsi = 0.
 * CR0 = PE|ET|NE|WP|PG, CR4 = PAE, EFER = LME|LMA (NXE clear), RFLAGS = 0x2,
 * CS = VMT_BOOT_CS (64-bit code), SS/DS/ES/FS/GS = VMT_BOOT_DS. A 3-entry GDT
 * (null, code, data) lives inside the PML4 frame at VMT_BOOT_GDT_OFFSET
 * (those PML4 entries read as not present) and GDTR points at it, so the
 * guest can load an IDT and take exceptions without building its own GDT.
 * IDTR is empty. The guest may build its own tables and switch CR3 at any time.
 *
 * Ownership: an image owns copies of every byte it refers to.
 */
#ifndef VMTRAP_IMAGE_H
#define VMTRAP_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "vmtrap/addr.h"
#include "vmtrap/regs.h"
#include "vmtrap/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vmt_image vmt_image;

#define VMT_BOOT_PT_FRAMES 6
#define VMT_BOOT_CS 0x08
#define VMT_BOOT_DS 0x10
#define VMT_BOOT_GDT_OFFSET 0x40   /* byte offset of the GDT inside the PML4 frame */

/* Guest-physical address of the boot tables (the PML4; the stack is below). */
static inline vmt_pa vmt_boot_pt_base(uint64_t ram_size)
{
    return (ram_size & VMT_PAGE_MASK) - VMT_BOOT_PT_FRAMES * VMT_PAGE_SIZE;
}

typedef struct vmt_image_segment {
    vmt_pa pa;
    const uint8_t *data;  /* file bytes (filesz) */
    uint64_t filesz;
    uint64_t memsz;       /* >= filesz; the rest is zero */
} vmt_image_segment;

/* Load an ELF64 executable. ram_size bounds the segments. `why` gets a
 * message naming the problem on failure. */
vmt_status vmt_image_load_elf(const char *path, uint64_t ram_size, vmt_image **out, char *why,
                              size_t why_len);
/* Same from memory (the bytes are copied). */
vmt_status vmt_image_load_elf_mem(const void *bytes, size_t len, uint64_t ram_size, vmt_image **out,
                                  char *why, size_t why_len);
/* Load a raw memory image + a JSON CPU-state file. */
vmt_status vmt_image_load_raw(const char *mem_path, const char *cpu_state_path, uint64_t ram_size,
                              vmt_image **out, char *why, size_t why_len);
/* Build an image from segments already in memory (the bytes are copied;
 * segments with memsz 0 are dropped). regs == NULL: the image has no CPU
 * state and boots with the boot protocol, entry point = segs[0].pa. Checks
 * segments against RAM and each other like the ELF loader. */
vmt_status vmt_image_from_segments(const vmt_image_segment *segs, size_t n, const vmt_regs *regs,
                                   uint64_t ram_size, vmt_image **out, char *why, size_t why_len);
/* Parse a JSON CPU state into regs (fields not named keep their value). */
vmt_status vmt_cpu_state_parse(const char *json_text, vmt_regs *regs, char *why, size_t why_len);

void vmt_image_destroy(vmt_image *img);

size_t vmt_image_segment_count(const vmt_image *img);
const vmt_image_segment *vmt_image_segment_at(const vmt_image *img, size_t i);
/* Initial registers: the CPU-state file for raw images (or the regs given to
 * vmt_image_from_segments); otherwise the boot-protocol state for the RAM
 * size given at load (vmt_image_place() recomputes it for its own size). */
const vmt_regs *vmt_image_regs(const vmt_image *img);
/* 1 when the image brings its own CPU state (raw + CPU state file). */
int vmt_image_has_cpu_state(const vmt_image *img);

/* Symbols (ELF only: function, object and untyped symbols with a name and
 * a section): VMT_E_NOTFOUND for an unknown name; a global symbol wins over
 * a local one of the same name. size may be NULL. */
vmt_status vmt_image_symbol(const vmt_image *img, const char *name, vmt_va *va, uint64_t *size);
/* A symbol a code hook may be placed on: VMT_OK (with *va) when `name` is
 * a function (STT_FUNC), or an untyped symbol whose address lies inside an
 * executable segment (ELF PT_LOAD with PF_X, by virtual address).
 * VMT_E_NOTFOUND for an unknown name; VMT_E_INVAL for a data object
 * (STT_OBJECT) or an untyped symbol outside every executable segment. `why`
 * says which, naming the symbol. */
vmt_status vmt_image_code_symbol(const vmt_image *img, const char *name, vmt_va *va, char *why, size_t why_len);
/* The symbol containing va (value <= va < value + max(size, 1)), for logs;
 * NULL if none. *offset (may be NULL) = va - value. */
const char *vmt_image_symbol_at(const vmt_image *img, vmt_va va, uint64_t *offset);

/* Write the image into guest memory through `write` (segments, zero fill,
 * and for images without CPU state the boot page tables + GDT) and compute
 * the initial registers. Does not clear the rest of RAM (drivers start with
 * zeroed RAM). A segment that overlaps the boot tables is refused. */
typedef vmt_status (*vmt_phys_write_fn)(void *ctx, vmt_pa pa, const void *buf, size_t len);
vmt_status vmt_image_place(vmt_image *img, uint64_t ram_size, vmt_phys_write_fn write, void *ctx,
                           vmt_regs *regs_out, char *why, size_t why_len);

#ifdef __cplusplus
}
#endif
#endif
