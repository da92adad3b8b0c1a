/*
 * tools/coreload.c — see coreload.h (temporary RAM-only core loader).
 */
#include "coreload.h"

#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmtrap/mem.h"

#define ROM_LO 0xfe000000ull
#define ROM_HI 0x100000000ull
#define RAM_MAX (1ull << 40)

static int in_rom(const GElf_Phdr *ph)
{
    return ph->p_paddr >= ROM_LO && ph->p_paddr < ROM_HI;
}

int cli_core_load(const char *path, vmt_driver **out, char *err, size_t err_len)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, err_len, "cannot open core '%s'", path);
        return -1;
    }
    struct stat sb;
    elf_version(EV_CURRENT);
    Elf *e = fstat(fd, &sb) == 0 ? elf_begin(fd, ELF_C_READ, NULL) : NULL;
    size_t n = 0;
    int rc = -1;
    vmt_driver *d = NULL;
    uint8_t *chunk = NULL;
    if (!e || elf_kind(e) != ELF_K_ELF || elf_getphdrnum(e, &n) != 0) {
        snprintf(err, err_len, "'%s' is not an ELF core", path);
        goto out;
    }
    uint64_t ram_end = 0;
    for (size_t i = 0; i < n; i++) {
        GElf_Phdr ph;
        if (!gelf_getphdr(e, (int)i, &ph) || ph.p_type != PT_LOAD || in_rom(&ph))
            continue;
        if (ph.p_offset > (uint64_t)sb.st_size || ph.p_filesz > (uint64_t)sb.st_size - ph.p_offset ||
            ph.p_paddr > RAM_MAX || ph.p_memsz > RAM_MAX - ph.p_paddr) {
            snprintf(err, err_len, "core '%s': PT_LOAD %zu is outside the file or too large", path, i);
            goto out;
        }
        if (ph.p_paddr + ph.p_memsz > ram_end)
            ram_end = ph.p_paddr + ph.p_memsz;
    }
    if (ram_end == 0) {
        snprintf(err, err_len, "core '%s' has no RAM (no PT_LOAD)", path);
        goto out;
    }
    vmt_mem_config cfg = { .ram_frames = (ram_end + 4095) / 4096, .maxphyaddr = 46, .log_limit = 64 };
    char why[256];
    if (vmt_mem_driver_create(&cfg, &d, why, sizeof why) != VMT_OK) {
        snprintf(err, err_len, "core '%s': %s", path, why);
        goto out;
    }
    const size_t CH = 4u << 20;
    chunk = malloc(CH);
    if (!chunk) {
        snprintf(err, err_len, "no memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        GElf_Phdr ph;
        if (!gelf_getphdr(e, (int)i, &ph) || ph.p_type != PT_LOAD || in_rom(&ph))
            continue;
        for (uint64_t o = 0; o < ph.p_filesz; o += CH) {
            size_t len = ph.p_filesz - o < CH ? (size_t)(ph.p_filesz - o) : CH;
            if (pread(fd, chunk, len, (off_t)(ph.p_offset + o)) != (ssize_t)len ||
                vmt_drv_write_phys(d, ph.p_paddr + o, chunk, len) != VMT_OK) {
                snprintf(err, err_len, "core '%s': cannot load PT_LOAD %zu at offset 0x%llx", path, i,
                         (unsigned long long)o);
                goto out;
            }
        }
    }
    *out = d;
    d = NULL;
    rc = 0;
out:
    free(chunk);
    if (d)
        vmt_driver_destroy(d);
    if (e)
        elf_end(e);
    close(fd);
    return rc;
}
