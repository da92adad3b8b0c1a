/*
 * vmtrap/image.h — guest images: what a CPU-running driver boots from.
 *
 * Design: an image is a list of segments (guest-physical address + bytes),
 * an initial register state and, for ELF images, a symbol table. Two
 * sources, both parsed defensively (sizes and offsets from the file are
 * checked against the file size and the guest RAM size before use):
 *   - an ELF64 x86-64 executable: PT_LOAD segments go to their p_paddr;
 *     the entry point is e_entry; symbols come from .symtab (libelf);
 *   - a raw memory image (loaded at gpa 0) + a CPU-state file in JSON
 *     ({"rip": "0x...", "cr3": "0x...", ...}: every field of vmt_regs by
 *     name, numbers or hex strings; an unknown field is an error that names it).
 *
 * The vmtrap boot protocol (ELF images with no CPU state): the loader builds
 * identity page tables for the first min(RAM, 4 GiB) with 2 MiB pages in the
 * top 6 frames of RAM (VMT_BOOT_PT_FRAMES), and starts the entry point in
 * 64-bit mode at CPL0 with paging on, interrupts off, CR3 = those tables,
 * rsp = just below them, rdi = RAM size in bytes, rsi = 0. The guest may
 * build its own tables and switch CR3 at any time.
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
/* Parse a JSON CPU state into regs (fields not named keep their value). */
vmt_status vmt_cpu_state_parse(const char *json_text, vmt_regs *regs, char *why, size_t why_len);

void vmt_image_destroy(vmt_image *img);

size_t vmt_image_segment_count(const vmt_image *img);
const vmt_image_segment *vmt_image_segment_at(const vmt_image *img, size_t i);
/* Initial registers. For ELF images this is the boot-protocol state once
 * vmt_image_boot_state() has been called; for raw images the CPU-state file. */
const vmt_regs *vmt_image_regs(const vmt_image *img);
/* 1 when the image brings its own CPU state (raw + CPU state file). */
int vmt_image_has_cpu_state(const vmt_image *img);

/* Symbols (ELF only): VMT_E_NOTFOUND for an unknown name. */
vmt_status vmt_image_symbol(const vmt_image *img, const char *name, vmt_va *va, uint64_t *size);
/* The symbol containing va, for logs (NULL if none). */
const char *vmt_image_symbol_at(const vmt_image *img, vmt_va va, uint64_t *offset);

/* Write the image into guest memory through `write` (segments, zero fill,
 * and for ELF images without CPU state the boot page tables) and compute the
 * initial registers. */
typedef vmt_status (*vmt_phys_write_fn)(void *ctx, vmt_pa pa, const void *buf, size_t len);
vmt_status vmt_image_place(vmt_image *img, uint64_t ram_size, vmt_phys_write_fn write, void *ctx,
                           vmt_regs *regs_out, char *why, size_t why_len);

#ifdef __cplusplus
}
#endif
#endif
