/*
 * core/image_elf.c — ELF64 x86-64 executables as guest images.
 *
 * Design: the file is untrusted. Before libelf sees it, the header, the
 * program-header table and every PT_LOAD's file range are checked against
 * the file size by hand so the message says exactly what is wrong
 * ("truncated ELF: ...", "wrong ELF class ...", "wrong machine ...");
 * libelf then gives typed access to the program headers and the symbol
 * table. PT_LOAD segments go to their p_paddr (vmt_image_new checks RAM and
 * overlaps); symbols come from .symtab (functions, objects and untyped
 * symbols defined in a section). The section-header table is checked the
 * same way: when it cannot be read the load fails saying so, instead of
 * producing an image without symbols (whose only symptom would later be an
 * "unknown symbol"). Files are mapped (vmt_image_map_file), checked by size
 * first; libelf works on the private mapping, and only vmt_image_new's copy
 * of the segments outlives the load.
 */
#include <gelf.h>
#include <inttypes.h>
#include <libelf.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/errbuf.h"
#include "core/image_internal.h"

#define ELF_FILE_MAX (1ULL << 30)

/* [off, off + size) inside a file of len bytes? */
static int in_file(uint64_t off, uint64_t size, size_t len)
{
    return off <= len && size <= len - off;
}

static vmt_status check_header(const uint8_t *b, size_t len, Elf64_Ehdr *eh, char *why, size_t why_len)
{
    if (len < SELFMAG || memcmp(b, ELFMAG, SELFMAG) != 0) {
        vmt_why(why, why_len, "ELF: not an ELF file (bad magic)");
        return VMT_E_FORMAT;
    }
    if (len < EI_NIDENT) {
        vmt_why(why, why_len, "ELF: truncated ELF: %zu bytes, the identification needs %d", len, EI_NIDENT);
        return VMT_E_FORMAT;
    }
    if (b[EI_CLASS] != ELFCLASS64) {
        vmt_why(why, why_len, "ELF: wrong ELF class %s, need ELF64",
                b[EI_CLASS] == ELFCLASS32 ? "ELF32" : "(invalid)");
        return VMT_E_FORMAT;
    }
    if (b[EI_DATA] != ELFDATA2LSB) {
        vmt_why(why, why_len, "ELF: wrong byte order, need little-endian");
        return VMT_E_FORMAT;
    }
    if (len < sizeof *eh) {
        vmt_why(why, why_len, "ELF: truncated ELF: %zu bytes, the ELF64 header needs %zu", len, sizeof *eh);
        return VMT_E_FORMAT;
    }
    memcpy(eh, b, sizeof *eh);
    if (eh->e_machine != EM_X86_64) {
        vmt_why(why, why_len, "ELF: wrong machine %u, need x86-64 (%u)", eh->e_machine, EM_X86_64);
        return VMT_E_FORMAT;
    }
    if (eh->e_type != ET_EXEC && eh->e_type != ET_DYN) {
        vmt_why(why, why_len, "ELF: file type %u is not an executable", eh->e_type);
        return VMT_E_FORMAT;
    }
    if (eh->e_phnum == 0 || eh->e_phnum == PN_XNUM) {
        vmt_why(why, why_len, "ELF: %s program headers", eh->e_phnum ? "too many (extended numbering)" : "no");
        return VMT_E_FORMAT;
    }
    if (eh->e_phentsize != sizeof(Elf64_Phdr)) {
        vmt_why(why, why_len, "ELF: program header size %u, expected %zu", eh->e_phentsize, sizeof(Elf64_Phdr));
        return VMT_E_FORMAT;
    }
    if (!in_file(eh->e_phoff, (uint64_t)eh->e_phnum * eh->e_phentsize, len)) {
        vmt_why(why, why_len, "ELF: truncated ELF: program headers [0x%" PRIx64 ", +0x%x) past the end of the file "
                "(%zu bytes)", (uint64_t)eh->e_phoff, eh->e_phnum * eh->e_phentsize, len);
        return VMT_E_FORMAT;
    }
    return VMT_OK;
}

/* Collect PT_LOAD segments (pointing into buf) and check the entry point. */
/* The section-header table must be readable when the header says there is
 * one: otherwise the symbols would silently be missing. */
static vmt_status check_section_table(const Elf64_Ehdr *eh, size_t len, char *why, size_t why_len)
{
    if (eh->e_shoff != 0) {
        /* e_shnum 0 with a table: extended numbering, the count is in
         * section 0, which must be readable. */
        uint64_t count = eh->e_shnum ? eh->e_shnum : 1;
        if (eh->e_shentsize != sizeof(Elf64_Shdr)) {
            vmt_why(why, why_len, "ELF: section headers unreadable: entry size %u, expected %zu (symbols cannot be "
                    "read)", eh->e_shentsize, sizeof(Elf64_Shdr));
            return VMT_E_FORMAT;
        }
        if (!in_file(eh->e_shoff, count * sizeof(Elf64_Shdr), len)) {
            vmt_why(why, why_len, "ELF: section headers unreadable: table [0x%" PRIx64 ", +0x%" PRIx64 ") past the "
                    "end of the file (%zu bytes; e_shoff corrupt or file truncated), symbols cannot be read",
                    (uint64_t)eh->e_shoff, count * sizeof(Elf64_Shdr), len);
            return VMT_E_FORMAT;
        }
    }
    return VMT_OK;
}

/* Record the executable PT_LOADs' virtual ranges (where code symbols live). */
static vmt_status collect_exec_ranges(Elf *elf, const Elf64_Ehdr *eh, vmt_image *img, char *why, size_t why_len)
{
    img->exec = calloc(eh->e_phnum, sizeof *img->exec);
    if (!img->exec) {
        vmt_why(why, why_len, "ELF: out of memory");
        return VMT_E_NOMEM;
    }
    for (size_t i = 0; i < eh->e_phnum; i++) {
        GElf_Phdr ph;
        if (!gelf_getphdr(elf, (int)i, &ph) || ph.p_type != PT_LOAD || !(ph.p_flags & PF_X) || ph.p_memsz == 0)
            continue;
        uint64_t end = ph.p_vaddr + ph.p_memsz < ph.p_vaddr ? UINT64_MAX : ph.p_vaddr + ph.p_memsz;
        img->exec[img->nexec].start = ph.p_vaddr;
        img->exec[img->nexec].end = end;
        img->nexec++;
    }
    return VMT_OK;
}

static vmt_status collect_segments(Elf *elf, const Elf64_Ehdr *eh, const uint8_t *buf, size_t len,
                                   vmt_image_segment **segs_out, size_t *n_out, char *why, size_t why_len)
{
    vmt_image_segment *segs = calloc(eh->e_phnum, sizeof *segs);
    if (!segs) {
        vmt_why(why, why_len, "ELF: out of memory");
        return VMT_E_NOMEM;
    }
    size_t n = 0;
    int entry_found = 0;
    for (size_t i = 0; i < eh->e_phnum; i++) {
        GElf_Phdr ph;
        if (!gelf_getphdr(elf, (int)i, &ph)) {
            vmt_why(why, why_len, "ELF: program header %zu: %s", i, elf_errmsg(-1));
            free(segs);
            return VMT_E_FORMAT;
        }
        if (ph.p_type != PT_LOAD)
            continue;
        if (!in_file(ph.p_offset, ph.p_filesz, len)) {
            vmt_why(why, why_len, "ELF: truncated ELF: segment %zu (program header %zu) has file bytes [0x%" PRIx64
                    ", +0x%" PRIx64 ") past the end of the file (%zu bytes)", n, i, (uint64_t)ph.p_offset,
                    (uint64_t)ph.p_filesz, len);
            free(segs);
            return VMT_E_FORMAT;
        }
        if (eh->e_entry >= ph.p_vaddr && eh->e_entry - ph.p_vaddr < ph.p_memsz && (ph.p_flags & PF_X))
            entry_found = 1;
        segs[n].pa = ph.p_paddr;
        segs[n].data = ph.p_filesz ? buf + ph.p_offset : NULL;
        segs[n].filesz = ph.p_filesz;
        segs[n].memsz = ph.p_memsz;
        n++;
    }
    if (n == 0 || !entry_found) {
        vmt_why(why, why_len, n ? "ELF: entry point 0x%" PRIx64 " is not inside an executable PT_LOAD segment"
                                : "ELF: no PT_LOAD segments (entry 0x%" PRIx64 ")", (uint64_t)eh->e_entry);
        free(segs);
        return VMT_E_FORMAT;
    }
    *segs_out = segs;
    *n_out = n;
    return VMT_OK;
}

static void free_syms(vmt_image_sym *syms, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(syms[i].name);
    free(syms);
}

/* Read .symtab into img (no symbol table is fine). */
static vmt_status load_symbols(Elf *elf, vmt_image *img, size_t len, char *why, size_t why_len)
{
    size_t nsections = 0;
    if (elf_getshdrnum(elf, &nsections) != 0) {
        vmt_why(why, why_len, "ELF: section headers unreadable: %s (symbols cannot be read)", elf_errmsg(-1));
        return VMT_E_FORMAT;
    }
    Elf_Scn *scn = NULL;
    while ((scn = elf_nextscn(elf, scn)) != NULL) {
        GElf_Shdr sh;
        if (!gelf_getshdr(scn, &sh)) {
            vmt_why(why, why_len, "ELF: section header: %s", elf_errmsg(-1));
            return VMT_E_FORMAT;
        }
        if (sh.sh_type != SHT_SYMTAB)
            continue;
        if (!in_file(sh.sh_offset, sh.sh_size, len)) {
            vmt_why(why, why_len, "ELF: truncated ELF: symbol table [0x%" PRIx64 ", +0x%" PRIx64
                    ") past the end of the file (%zu bytes)", (uint64_t)sh.sh_offset, (uint64_t)sh.sh_size, len);
            return VMT_E_FORMAT;
        }
        if (sh.sh_entsize != sizeof(Elf64_Sym)) {
            vmt_why(why, why_len, "ELF: symbol table entry size %" PRIu64 ", expected %zu", (uint64_t)sh.sh_entsize,
                    sizeof(Elf64_Sym));
            return VMT_E_FORMAT;
        }
        Elf_Scn *strscn = elf_getscn(elf, sh.sh_link);
        GElf_Shdr strsh;
        if (!strscn || !gelf_getshdr(strscn, &strsh) || strsh.sh_type != SHT_STRTAB ||
            !in_file(strsh.sh_offset, strsh.sh_size, len)) {
            vmt_why(why, why_len, "ELF: the symbol table's string table (section %u) is missing or truncated",
                    (unsigned)sh.sh_link);
            return VMT_E_FORMAT;
        }
        Elf_Data *data = elf_getdata(scn, NULL);
        if (!data) {
            vmt_why(why, why_len, "ELF: symbol table: %s", elf_errmsg(-1));
            return VMT_E_FORMAT;
        }
        size_t count = sh.sh_size / sizeof(Elf64_Sym);
        vmt_image_sym *syms = calloc(count ? count : 1, sizeof *syms);
        if (!syms) {
            vmt_why(why, why_len, "ELF: out of memory for %zu symbols", count);
            return VMT_E_NOMEM;
        }
        size_t n = 0;
        for (size_t i = 0; i < count; i++) {
            GElf_Sym s;
            if (!gelf_getsym(data, (int)i, &s))
                break;
            unsigned type = GELF_ST_TYPE(s.st_info), bind = GELF_ST_BIND(s.st_info);
            /* Undefined and absolute symbols (linker constants) are not places in the image. */
            if (s.st_shndx == SHN_UNDEF || s.st_shndx == SHN_ABS || s.st_name == 0 ||
                (type != STT_FUNC && type != STT_OBJECT && type != STT_NOTYPE))
                continue;
            const char *name = elf_strptr(elf, sh.sh_link, s.st_name);
            if (!name) {
                vmt_why(why, why_len, "ELF: symbol %zu has a name offset 0x%x outside its string table", i,
                        (unsigned)s.st_name);
                free_syms(syms, n);
                return VMT_E_FORMAT;
            }
            if (!name[0])
                continue;
            if (!(syms[n].name = strdup(name))) {
                free_syms(syms, n);
                vmt_why(why, why_len, "ELF: out of memory for symbol names");
                return VMT_E_NOMEM;
            }
            syms[n].value = s.st_value;
            syms[n].size = s.st_size;
            syms[n].type = (uint8_t)type;
            syms[n].rank = (uint8_t)((strncmp(name, "__", 2) != 0) * 4 + (type != STT_NOTYPE) * 2 +
                                     (bind == STB_GLOBAL || bind == STB_WEAK));
            n++;
        }
        return vmt_image_set_symbols(img, syms, n, why, why_len);
    }
    return VMT_OK;
}

/* Load from a buffer libelf may use in place (malloc'ed or a private
 * mapping: page-aligned, writable, not shared with the caller). */
static vmt_status load_elf_buffer(char *buf, size_t len, uint64_t ram_size, vmt_image **out, char *why,
                                  size_t why_len)
{
    Elf64_Ehdr eh;
    vmt_status st = check_header((const uint8_t *)buf, len, &eh, why, why_len);
    if (st)
        return st;
    elf_version(EV_CURRENT);
    Elf *elf = elf_memory(buf, len);
    vmt_image_segment *segs = NULL;
    size_t nsegs = 0;
    vmt_image *img = NULL;
    if (!elf || elf_kind(elf) != ELF_K_ELF) {
        vmt_why(why, why_len, "ELF: libelf cannot read the file: %s", elf_errmsg(-1));
        st = VMT_E_FORMAT;
        goto done;
    }
    if ((st = collect_segments(elf, &eh, (const uint8_t *)buf, len, &segs, &nsegs, why, why_len)))
        goto done;
    if ((st = vmt_image_new(segs, nsegs, ram_size, &img, why, why_len)))
        goto done;
    img->entry = eh.e_entry;
    vmt_image_boot_regs(img->entry, ram_size, &img->regs);
    if ((st = check_section_table(&eh, len, why, why_len)) || (st = collect_exec_ranges(elf, &eh, img, why, why_len)) ||
        (st = load_symbols(elf, img, len, why, why_len))) {
        vmt_image_destroy(img);
        img = NULL;
        goto done;
    }
    *out = img;
done:
    free(segs);
    if (elf)
        elf_end(elf);
    return st;
}

vmt_status vmt_image_load_elf_mem(const void *bytes, size_t len, uint64_t ram_size, vmt_image **out, char *why,
                                  size_t why_len)
{
    if (!out || (!bytes && len)) {
        vmt_why(why, why_len, "ELF: bytes and out are required");
        return VMT_E_INVAL;
    }
    *out = NULL;
    Elf64_Ehdr eh;
    vmt_status st = check_header(bytes, len, &eh, why, why_len);
    if (st)
        return st;
    /* libelf gets a private, aligned copy (the caller's bytes are const). */
    char *copy = malloc(len);
    if (!copy) {
        vmt_why(why, why_len, "ELF: out of memory (%zu bytes)", len);
        return VMT_E_NOMEM;
    }
    memcpy(copy, bytes, len);
    st = load_elf_buffer(copy, len, ram_size, out, why, why_len);
    free(copy);
    return st;
}

vmt_status vmt_image_load_elf(const char *path, uint64_t ram_size, vmt_image **out, char *why, size_t why_len)
{
    if (!path || !out) {
        vmt_why(why, why_len, "ELF: path and out are required");
        return VMT_E_INVAL;
    }
    *out = NULL;
    void *map;
    size_t len;
    char inner[240];
    vmt_status st = vmt_image_map_file(path, ELF_FILE_MAX, true, &map, &len, inner, sizeof inner);
    if (st) {
        vmt_why(why, why_len, "ELF: %s", inner);
        return st;
    }
    st = len ? load_elf_buffer(map, len, ram_size, out, inner, sizeof inner)
             : check_header((const uint8_t *)"", 0, &(Elf64_Ehdr){ 0 }, inner, sizeof inner);
    vmt_image_unmap_file(map, len);
    if (st)
        vmt_why(why, why_len, "%s: %s", path, inner);
    return st;
}
