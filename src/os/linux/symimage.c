/*
 * os/linux/symimage.c — kernel symbols as a vmt_image, so everything that
 * resolves hooks through an image (vmt_monitor_hook) can hook kernel
 * functions by name with no vmlinux: an in-memory ELF64 whose .symtab holds
 * the chosen kallsyms functions (value = runtime address, size = distance
 * to the next symbol, at most 1 MiB) and one 1-byte PT_LOAD so the ELF
 * loader accepts it. The image is for symbols only: it is never placed
 * into guest memory (its segment says nothing about the guest).
 */
#include "os/linux/os_internal.h"

#include <elf.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmtrap/image.h"

static uint64_t symbol_size(const vmt_os *os, uint32_t idx)
{
    /* The next higher address in address order. */
    const ksym_table *t = &os->ks;
    int64_t pos = -1;
    size_t lo = 0, hi = t->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t->addr[t->by_addr[mid]] <= t->addr[idx])
            lo = mid + 1;
        else
            hi = mid;
    }
    pos = (int64_t)lo;
    if ((size_t)pos >= t->count)
        return 1;
    uint64_t d = t->addr[t->by_addr[pos]] - t->addr[idx];
    return d && d <= (1u << 20) ? d : 1;
}

vmt_status vmt_os_symbols_image(vmt_os *os, const char *const *names, size_t n, uint64_t ram_size, vmt_image **out,
                                char *why, size_t why_len)
{
    *out = NULL;
    if (n == 0 || n > 65536) {
        vmt_why(why, why_len, "os: a symbol image needs 1..65536 names");
        return VMT_E_INVAL;
    }
    size_t strsz = 1;
    for (size_t i = 0; i < n; i++) {
        if (!names[i] || ksym_by_name(&os->ks, names[i]) < 0) {
            vmt_why(why, why_len, "os: kallsyms has no symbol '%s'", names[i] ? names[i] : "(null)");
            return VMT_E_NOTFOUND;
        }
        strsz += strlen(names[i]) + 1;
    }
    static const char shstr[] = "\0.symtab\0.strtab\0.shstrtab\0.text";
    size_t off_text = sizeof(Elf64_Ehdr) + sizeof(Elf64_Phdr);
    size_t off_sym = (off_text + 1 + 7) & ~(size_t)7;
    size_t symsz = (n + 1) * sizeof(Elf64_Sym);
    size_t off_str = off_sym + symsz;
    size_t off_shstr = off_str + strsz;
    size_t off_sh = (off_shstr + sizeof shstr + 7) & ~(size_t)7;
    size_t total = off_sh + 5 * sizeof(Elf64_Shdr);
    uint8_t *b = calloc(1, total);
    if (!b) {
        vmt_why(why, why_len, "os: no memory for a symbol image");
        return VMT_E_NOMEM;
    }
    Elf64_Ehdr *eh = (Elf64_Ehdr *)b;
    memcpy(eh->e_ident, ELFMAG, SELFMAG);
    eh->e_ident[EI_CLASS] = ELFCLASS64;
    eh->e_ident[EI_DATA] = ELFDATA2LSB;
    eh->e_ident[EI_VERSION] = EV_CURRENT;
    eh->e_type = ET_EXEC;
    eh->e_machine = EM_X86_64;
    eh->e_version = EV_CURRENT;
    eh->e_entry = 0x1000;
    eh->e_phoff = sizeof(Elf64_Ehdr);
    eh->e_shoff = off_sh;
    eh->e_ehsize = sizeof(Elf64_Ehdr);
    eh->e_phentsize = sizeof(Elf64_Phdr);
    eh->e_phnum = 1;
    eh->e_shentsize = sizeof(Elf64_Shdr);
    eh->e_shnum = 5;
    eh->e_shstrndx = 4;
    Elf64_Phdr *ph = (Elf64_Phdr *)(b + eh->e_phoff);
    ph->p_type = PT_LOAD;
    ph->p_flags = PF_R | PF_X;
    ph->p_offset = off_text;
    ph->p_vaddr = ph->p_paddr = 0x1000;
    ph->p_filesz = ph->p_memsz = 1;
    ph->p_align = 1;
    b[off_text] = 0xc3; /* ret */
    Elf64_Sym *sym = (Elf64_Sym *)(b + off_sym);
    char *str = (char *)(b + off_str);
    size_t so = 1;
    for (size_t i = 0; i < n; i++) {
        uint32_t idx = (uint32_t)ksym_by_name(&os->ks, names[i]);
        Elf64_Sym *s = &sym[i + 1];
        s->st_name = (uint32_t)so;
        s->st_info = ELF64_ST_INFO(STB_GLOBAL, STT_FUNC);
        s->st_shndx = 1;
        s->st_value = os->ks.addr[idx];
        s->st_size = symbol_size(os, idx);
        size_t l = strlen(names[i]) + 1;
        memcpy(str + so, names[i], l);
        so += l;
    }
    memcpy(b + off_shstr, shstr, sizeof shstr);
    Elf64_Shdr *sh = (Elf64_Shdr *)(b + off_sh);
    /* 1 .text, 2 .symtab, 3 .strtab, 4 .shstrtab */
    sh[1] = (Elf64_Shdr){ .sh_name = 27, .sh_type = SHT_PROGBITS, .sh_flags = SHF_ALLOC | SHF_EXECINSTR,
                          .sh_addr = 0x1000, .sh_offset = off_text, .sh_size = 1, .sh_addralign = 1 };
    sh[2] = (Elf64_Shdr){ .sh_name = 1, .sh_type = SHT_SYMTAB, .sh_offset = off_sym, .sh_size = symsz,
                          .sh_link = 3, .sh_info = 1, .sh_addralign = 8, .sh_entsize = sizeof(Elf64_Sym) };
    sh[3] = (Elf64_Shdr){ .sh_name = 9, .sh_type = SHT_STRTAB, .sh_offset = off_str, .sh_size = strsz,
                          .sh_addralign = 1 };
    sh[4] = (Elf64_Shdr){ .sh_name = 17, .sh_type = SHT_STRTAB, .sh_offset = off_shstr, .sh_size = sizeof shstr,
                          .sh_addralign = 1 };
    vmt_status st = vmt_image_load_elf_mem(b, total, ram_size, out, why, why_len);
    free(b);
    return st;
}
