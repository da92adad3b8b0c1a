/*
 * tools/elfbytes.c — bytes of an ELF file at a virtual address (host side).
 *
 * Design: the CLI checks what the guest reports it read (the workload's
 * d1.<service> hashes of its entry bytes) against the ELF file itself, the
 * ground truth no monitor can alter. libelf maps a VA to a PT_LOAD segment
 * (p_vaddr .. p_vaddr + p_filesz) and the bytes are read from the file at
 * p_offset; every offset is checked against the file size. The same
 * segments give a variable's physical address for `--set` (p_paddr).
 */
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* The PT_LOAD segment that holds [va, va + len) in memory (p_memsz). */
static int find_segment(Elf *e, uint64_t va, size_t len, GElf_Phdr *out)
{
    size_t nph = 0;
    if (elf_getphdrnum(e, &nph) != 0)
        return -1;
    for (size_t i = 0; i < nph; i++) {
        GElf_Phdr ph;
        if (!gelf_getphdr(e, (int)i, &ph) || ph.p_type != PT_LOAD)
            continue;
        if (va < ph.p_vaddr || va - ph.p_vaddr > ph.p_memsz || len > ph.p_memsz - (va - ph.p_vaddr))
            continue;
        *out = ph;
        return 0;
    }
    return -1;
}

int cli_elf_va_to_pa(const char *path, uint64_t va, size_t len, uint64_t *pa)
{
    if (elf_version(EV_CURRENT) == EV_NONE)
        return -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = -1;
    Elf *e = elf_begin(fd, ELF_C_READ, NULL);
    GElf_Phdr ph;
    if (e && find_segment(e, va, len, &ph) == 0) {
        *pa = ph.p_paddr + (va - ph.p_vaddr);
        rc = 0;
    }
    if (e)
        elf_end(e);
    close(fd);
    return rc;
}

int cli_elf_read_va(const char *path, uint64_t va, void *buf, size_t len)
{
    if (elf_version(EV_CURRENT) == EV_NONE)
        return -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = -1;
    Elf *e = elf_begin(fd, ELF_C_READ, NULL);
    size_t nph = 0, fsize = 0;
    char *raw = e ? elf_rawfile(e, &fsize) : NULL;
    if (raw && elf_getphdrnum(e, &nph) == 0) {
        for (size_t i = 0; i < nph; i++) {
            GElf_Phdr ph;
            if (!gelf_getphdr(e, (int)i, &ph) || ph.p_type != PT_LOAD)
                continue;
            if (va < ph.p_vaddr || va - ph.p_vaddr > ph.p_filesz || len > ph.p_filesz - (va - ph.p_vaddr))
                continue;
            uint64_t off = ph.p_offset + (va - ph.p_vaddr);
            if (off > fsize || len > fsize - off)
                break;
            memcpy(buf, raw + off, len);
            rc = 0;
            break;
        }
    }
    if (e)
        elf_end(e);
    close(fd);
    return rc;
}

