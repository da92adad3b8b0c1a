/*
 * tests/core/test_image.c — ELF and raw images, the JSON CPU state and the
 * boot protocol.
 *
 * ELF files are built byte by byte at test time (header, program headers,
 * segment bytes, .symtab/.strtab/.shstrtab and section headers), so each
 * test controls exactly what is wrong with the file. Boot tables are checked
 * by walking them with the paging walker over the memory they were placed in.
 */
#include <elf.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "vmtrap/image.h"
#include "vmtrap/paging.h"

/* ---- ELF builder ---- */

typedef struct tseg {
    uint64_t paddr, vaddr;
    const uint8_t *bytes;
    uint64_t filesz, memsz;
    uint32_t flags;
} tseg;

typedef struct tsym {
    const char *name;
    uint64_t value, size;
    unsigned bind, type;
    int absolute; /* SHN_ABS (a linker constant), else defined in .text */
} tsym;

typedef struct built_elf {
    uint8_t *bytes;
    size_t len;
    size_t seg_data_end; /* end of the last segment's file bytes */
} built_elf;

static size_t align16(size_t x) { return (x + 15) & ~(size_t)15; }

static built_elf build_elf(const tseg *segs, size_t nseg, uint64_t entry, const tsym *syms, size_t nsym)
{
    built_elf b = { 0 };
    size_t cap = 1 << 16;
    b.bytes = calloc(1, cap);
    size_t off = sizeof(Elf64_Ehdr) + nseg * sizeof(Elf64_Phdr);
    Elf64_Phdr *ph = (Elf64_Phdr *)(b.bytes + sizeof(Elf64_Ehdr));
    for (size_t i = 0; i < nseg; i++) {
        off = align16(off);
        ph[i].p_type = PT_LOAD;
        ph[i].p_flags = segs[i].flags;
        ph[i].p_offset = off;
        ph[i].p_vaddr = segs[i].vaddr;
        ph[i].p_paddr = segs[i].paddr;
        ph[i].p_filesz = segs[i].filesz;
        ph[i].p_memsz = segs[i].memsz;
        ph[i].p_align = 16;
        memcpy(b.bytes + off, segs[i].bytes, segs[i].filesz);
        off += segs[i].filesz;
    }
    b.seg_data_end = off;
    /* .strtab */
    size_t strtab_off = off, strtab_len = 1;
    uint32_t name_at[128];
    assert_true(nsym <= 128);
    for (size_t i = 0; i < nsym; i++) {
        name_at[i] = (uint32_t)strtab_len;
        strcpy((char *)b.bytes + strtab_off + strtab_len, syms[i].name);
        strtab_len += strlen(syms[i].name) + 1;
    }
    off = align16(strtab_off + strtab_len);
    /* .symtab: null symbol + ours */
    size_t symtab_off = off;
    Elf64_Sym *st = (Elf64_Sym *)(b.bytes + symtab_off);
    for (size_t i = 0; i < nsym; i++) {
        st[i + 1].st_name = name_at[i];
        st[i + 1].st_info = (unsigned char)ELF64_ST_INFO(syms[i].bind, syms[i].type);
        st[i + 1].st_shndx = syms[i].absolute ? SHN_ABS : 4;
        st[i + 1].st_value = syms[i].value;
        st[i + 1].st_size = syms[i].size;
    }
    size_t symtab_len = (nsym + 1) * sizeof(Elf64_Sym);
    off = symtab_off + symtab_len;
    /* .shstrtab */
    static const char shstr[] = "\0.symtab\0.strtab\0.shstrtab\0.text";
    size_t shstr_off = off;
    memcpy(b.bytes + off, shstr, sizeof shstr);
    off = align16(off + sizeof shstr);
    /* section headers: null, .symtab (1), .strtab (2), .shstrtab (3), .text (4) */
    Elf64_Shdr *sh = (Elf64_Shdr *)(b.bytes + off);
    sh[1] = (Elf64_Shdr){ .sh_name = 1, .sh_type = SHT_SYMTAB, .sh_offset = symtab_off, .sh_size = symtab_len,
                          .sh_link = 2, .sh_info = 1, .sh_entsize = sizeof(Elf64_Sym), .sh_addralign = 8 };
    sh[2] = (Elf64_Shdr){ .sh_name = 9, .sh_type = SHT_STRTAB, .sh_offset = strtab_off, .sh_size = strtab_len,
                          .sh_addralign = 1 };
    sh[3] = (Elf64_Shdr){ .sh_name = 17, .sh_type = SHT_STRTAB, .sh_offset = shstr_off, .sh_size = sizeof shstr,
                          .sh_addralign = 1 };
    sh[4] = (Elf64_Shdr){ .sh_name = 27, .sh_type = SHT_NOBITS, .sh_addr = 0x100000, .sh_addralign = 16 };
    Elf64_Ehdr *eh = (Elf64_Ehdr *)b.bytes;
    memcpy(eh->e_ident, ELFMAG, SELFMAG);
    eh->e_ident[EI_CLASS] = ELFCLASS64;
    eh->e_ident[EI_DATA] = ELFDATA2LSB;
    eh->e_ident[EI_VERSION] = EV_CURRENT;
    eh->e_type = ET_EXEC;
    eh->e_machine = EM_X86_64;
    eh->e_version = EV_CURRENT;
    eh->e_entry = entry;
    eh->e_phoff = sizeof(Elf64_Ehdr);
    eh->e_shoff = off;
    eh->e_ehsize = sizeof(Elf64_Ehdr);
    eh->e_phentsize = sizeof(Elf64_Phdr);
    eh->e_phnum = (uint16_t)nseg;
    eh->e_shentsize = sizeof(Elf64_Shdr);
    eh->e_shnum = 5;
    eh->e_shstrndx = 3;
    b.len = off + 5 * sizeof(Elf64_Shdr);
    assert_true(b.len < cap);
    return b;
}

static const uint8_t code_bytes[] = { 0x48, 0x31, 0xc0, 0x90, 0x90, 0xf4, 0xeb, 0xfd, 0xcc, 0xc3 };
static const uint8_t data_bytes[] = { 'h', 'e', 'l', 'l', 'o', 0 };

static tsym test_syms[128] = {
    { "_start", 0x100000, 0, STB_GLOBAL, STT_NOTYPE, 0 },
    { "__image_start", 0x100000, 0, STB_GLOBAL, STT_NOTYPE, 0 }, /* loses to _start */
    { "LOAD_BASE", 0x100000, 0, STB_GLOBAL, STT_NOTYPE, 1 },  /* absolute: not a place */
    { "big", 0x100100, 0x100, STB_GLOBAL, STT_FUNC, 0 },         /* 80 labels inside, below */
    { "main", 0x100010, 0x20, STB_GLOBAL, STT_FUNC, 0 },
    { "helper", 0x100040, 0x10, STB_LOCAL, STT_FUNC, 0 },
    { "greeting", 0x200000, 6, STB_GLOBAL, STT_OBJECT, 0 },
    { "main", 0x100080, 4, STB_LOCAL, STT_FUNC, 0 }, /* a local with the same name loses */
    { "test.c", 0, 0, STB_LOCAL, STT_FILE, 0 },      /* not a code/data symbol */
};

static built_elf standard_elf(void)
{
    uint8_t code[0x100];
    memset(code, 0x90, sizeof code);
    memcpy(code, code_bytes, sizeof code_bytes);
    tseg segs[2] = {
        /* Listed out of address order on purpose. */
        { 0x200000, 0x200000, data_bytes, sizeof data_bytes, 0x3000, PF_R | PF_W },
        { 0x100000, 0x100000, code, sizeof code, sizeof code, PF_R | PF_X },
    };
    static size_t n; /* fixed symbols + 80 labels, appended once */
    static char label_names[80][8];
    if (n == 0) {
        while (test_syms[n].name)
            n++;
        for (size_t i = 0; i < 80; i++, n++) {
            snprintf(label_names[i], sizeof label_names[i], "l%zu", i);
            test_syms[n] = (tsym){ label_names[i], 0x100102 + 3 * i, 0, STB_LOCAL, STT_NOTYPE, 0 };
        }
    }
    return build_elf(segs, 2, 0x100000, test_syms, n);
}

static char *write_temp(const void *bytes, size_t len)
{
    char *path = strdup("/tmp/vmt-test-image-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, bytes, len), (ssize_t)len);
    close(fd);
    return path;
}

static void remove_temp(char *path)
{
    unlink(path);
    free(path);
}

#define RAM (8ULL << 20)

/* ---- ELF tests ---- */

static void test_elf_segments_and_symbols(void **state)
{
    (void)state;
    built_elf b = standard_elf();
    char *path = write_temp(b.bytes, b.len);
    vmt_image *img = NULL;
    char why[256] = "";
    assert_int_equal(vmt_image_load_elf(path, RAM, &img, why, sizeof why), VMT_OK);
    assert_int_equal(vmt_image_segment_count(img), 2);
    const vmt_image_segment *s0 = vmt_image_segment_at(img, 0), *s1 = vmt_image_segment_at(img, 1);
    assert_int_equal(s0->pa, 0x100000); /* sorted by address */
    assert_int_equal(s0->filesz, 0x100);
    assert_memory_equal(s0->data, code_bytes, sizeof code_bytes);
    assert_int_equal(s1->pa, 0x200000);
    assert_int_equal(s1->filesz, sizeof data_bytes);
    assert_int_equal(s1->memsz, 0x3000);
    assert_null(vmt_image_segment_at(img, 2));
    assert_false(vmt_image_has_cpu_state(img));
    assert_int_equal(vmt_image_regs(img)->rip, 0x100000);

    vmt_va va = 0;
    uint64_t size = 0;
    assert_int_equal(vmt_image_symbol(img, "main", &va, &size), VMT_OK);
    assert_int_equal(va, 0x100010);
    assert_int_equal(size, 0x20);
    assert_int_equal(vmt_image_symbol(img, "helper", &va, NULL), VMT_OK);
    assert_int_equal(va, 0x100040);
    assert_int_equal(vmt_image_symbol(img, "greeting", &va, &size), VMT_OK);
    assert_int_equal(va, 0x200000);
    assert_int_equal(vmt_image_symbol(img, "nope", &va, &size), VMT_E_NOTFOUND);
    assert_int_equal(vmt_image_symbol(img, "test.c", &va, &size), VMT_E_NOTFOUND);

    uint64_t off = 99;
    assert_string_equal(vmt_image_symbol_at(img, 0x100015, &off), "main");
    assert_int_equal(off, 5);
    assert_string_equal(vmt_image_symbol_at(img, 0x10004f, &off), "helper");
    assert_int_equal(off, 0xf);
    assert_string_equal(vmt_image_symbol_at(img, 0x100000, &off), "_start");
    assert_int_equal(off, 0);
    assert_int_equal(vmt_image_symbol(img, "LOAD_BASE", &va, &size), VMT_E_NOTFOUND);
    assert_int_equal(vmt_image_symbol(img, "__image_start", &va, &size), VMT_OK);
    /* Many zero-size labels inside a function do not hide it. */
    assert_string_equal(vmt_image_symbol_at(img, 0x1001f8, &off), "big");
    assert_int_equal(off, 0xf8);
    assert_string_equal(vmt_image_symbol_at(img, 0x100105, &off), "l1");
    assert_null(vmt_image_symbol_at(img, 0x100200, &off));
    assert_null(vmt_image_symbol_at(img, 0x100035, &off)); /* between main and helper */
    assert_null(vmt_image_symbol_at(img, 0x100050, &off)); /* just past helper */
    assert_null(vmt_image_symbol_at(img, 0xfff, &off));
    vmt_image_destroy(img);
    remove_temp(path);
    free(b.bytes);
}

static void expect_elf_error(const void *bytes, size_t len, uint64_t ram, vmt_status want, const char *words)
{
    vmt_image *img = (vmt_image *)&img; /* must be reset to NULL */
    char why[256] = "";
    assert_int_equal(vmt_image_load_elf_mem(bytes, len, ram, &img, why, sizeof why), want);
    assert_null(img);
    if (!strstr(why, words))
        fail_msg("message \"%s\" does not contain \"%s\"", why, words);
}

static void test_elf_truncated(void **state)
{
    (void)state;
    built_elf b = standard_elf();
    expect_elf_error(b.bytes, 2, RAM, VMT_E_FORMAT, "not an ELF file");
    expect_elf_error(b.bytes, 10, RAM, VMT_E_FORMAT, "truncated ELF");
    expect_elf_error(b.bytes, 40, RAM, VMT_E_FORMAT, "truncated ELF: 40 bytes");
    expect_elf_error(b.bytes, 100, RAM, VMT_E_FORMAT, "truncated ELF: program headers");
    expect_elf_error(b.bytes, b.seg_data_end - 1, RAM, VMT_E_FORMAT, "truncated ELF: segment");
    /* Every prefix: a clear error or a consistent image, never a crash or leak. */
    for (size_t len = 0; len < b.len; len++) {
        vmt_image *img = NULL;
        char why[256] = "";
        vmt_status st = vmt_image_load_elf_mem(b.bytes, len, RAM, &img, why, sizeof why);
        if (len < b.seg_data_end) {
            assert_int_equal(st, VMT_E_FORMAT);
            assert_non_null(strstr(why, "ELF"));
        }
        if (st == VMT_OK)
            assert_int_equal(vmt_image_segment_count(img), 2);
        vmt_image_destroy(img);
    }
    /* From a file, the message names the file. */
    char *path = write_temp(b.bytes, 100);
    vmt_image *img = NULL;
    char why[256] = "";
    assert_int_equal(vmt_image_load_elf(path, RAM, &img, why, sizeof why), VMT_E_FORMAT);
    assert_non_null(strstr(why, path));
    assert_non_null(strstr(why, "truncated ELF"));
    remove_temp(path);
    assert_int_equal(vmt_image_load_elf("/nonexistent/guest.elf", RAM, &img, why, sizeof why), VMT_E_IO);
    assert_non_null(strstr(why, "/nonexistent/guest.elf"));
    free(b.bytes);
}

static void test_elf_wrong_class_and_machine(void **state)
{
    (void)state;
    built_elf b = standard_elf();
    b.bytes[EI_CLASS] = ELFCLASS32;
    expect_elf_error(b.bytes, b.len, RAM, VMT_E_FORMAT, "wrong ELF class ELF32");
    b.bytes[EI_CLASS] = ELFCLASS64;
    ((Elf64_Ehdr *)b.bytes)->e_machine = EM_386;
    expect_elf_error(b.bytes, b.len, RAM, VMT_E_FORMAT, "wrong machine 3");
    ((Elf64_Ehdr *)b.bytes)->e_machine = EM_X86_64;
    ((Elf64_Ehdr *)b.bytes)->e_entry = 0x200000; /* data segment: not executable */
    expect_elf_error(b.bytes, b.len, RAM, VMT_E_FORMAT, "entry point 0x200000");
    free(b.bytes);
}

static void test_elf_segment_outside_ram(void **state)
{
    (void)state;
    built_elf b = standard_elf();
    /* 2 MiB of RAM: the data segment at 2 MiB is outside. */
    expect_elf_error(b.bytes, b.len, 2ULL << 20, VMT_E_RANGE, "segment 0 [0x200000, +0x3000) lies outside RAM");
    /* A segment whose end wraps around 2^64. */
    tseg wrap = { 0xfffffffffffff000ULL, 0x100000, code_bytes, sizeof code_bytes, 0x2000, PF_R | PF_X };
    built_elf w = build_elf(&wrap, 1, 0x100000, NULL, 0);
    expect_elf_error(w.bytes, w.len, RAM, VMT_E_RANGE, "outside RAM");
    free(w.bytes);
    free(b.bytes);
}

static void test_elf_overlapping_segments(void **state)
{
    (void)state;
    tseg segs[3] = {
        { 0x100000, 0x100000, code_bytes, sizeof code_bytes, 0x1000, PF_R | PF_X },
        { 0x300000, 0x300000, data_bytes, sizeof data_bytes, 0x10, PF_R },
        { 0x100800, 0x100800, data_bytes, sizeof data_bytes, 0x1000, PF_R | PF_W },
    };
    built_elf b = build_elf(segs, 3, 0x100000, NULL, 0);
    expect_elf_error(b.bytes, b.len, RAM, VMT_E_FORMAT, "segments 0 [0x100000, 0x101000) and 2 [0x100800");
    free(b.bytes);
    /* filesz > memsz */
    tseg bad = { 0x100000, 0x100000, code_bytes, sizeof code_bytes, 4, PF_R | PF_X };
    b = build_elf(&bad, 1, 0x100000, NULL, 0);
    expect_elf_error(b.bytes, b.len, RAM, VMT_E_FORMAT, "larger than its memory size");
    free(b.bytes);
}

static void test_elf_corrupt_symbols(void **state)
{
    (void)state;
    built_elf b = standard_elf();
    Elf64_Ehdr *eh = (Elf64_Ehdr *)b.bytes;
    Elf64_Shdr *sh = (Elf64_Shdr *)(b.bytes + eh->e_shoff);
    Elf64_Sym *sym = (Elf64_Sym *)(b.bytes + sh[1].sh_offset);
    uint32_t saved = sym[2].st_name;
    sym[2].st_name = 0x7fffffff;
    expect_elf_error(b.bytes, b.len, RAM, VMT_E_FORMAT, "outside its string table");
    sym[2].st_name = saved;
    sh[1].sh_size = 0x100000; /* symbol table past the end of the file */
    expect_elf_error(b.bytes, b.len, RAM, VMT_E_FORMAT, "truncated ELF: symbol table");
    free(b.bytes);
}

/* A corrupt e_shoff: the loader says the section headers are unreadable
 * (from memory and from a file) instead of loading an image without
 * symbols whose only symptom would be "unknown symbol" later. */
static void test_elf_section_headers_unreadable(void **state)
{
    (void)state;
    built_elf b = standard_elf();
    Elf64_Ehdr *eh = (Elf64_Ehdr *)b.bytes;
    uint64_t saved = eh->e_shoff;
    eh->e_shoff = 0x7fff0000;
    expect_elf_error(b.bytes, b.len, RAM, VMT_E_FORMAT, "section headers unreadable");
    char *path = write_temp(b.bytes, b.len);
    vmt_image *img = NULL;
    char why[256] = "";
    assert_int_equal(vmt_image_load_elf(path, RAM, &img, why, sizeof why), VMT_E_FORMAT);
    assert_non_null(strstr(why, path));
    assert_non_null(strstr(why, "section headers unreadable"));
    assert_null(strstr(why, "symbol '"));
    remove_temp(path);
    eh->e_shoff = saved;
    eh->e_shentsize = 12;
    expect_elf_error(b.bytes, b.len, RAM, VMT_E_FORMAT, "section headers unreadable: entry size 12");
    eh->e_shentsize = sizeof(Elf64_Shdr);
    /* No section table at all (stripped to the bone) is fine: no symbols. */
    eh->e_shoff = 0;
    eh->e_shnum = 0;
    assert_int_equal(vmt_image_load_elf_mem(b.bytes, b.len, RAM, &img, why, sizeof why), VMT_OK);
    vmt_va va;
    assert_int_equal(vmt_image_code_symbol(img, "main", &va, why, sizeof why), VMT_E_NOTFOUND);
    assert_non_null(strstr(why, "no symbol table"));
    vmt_image_destroy(img);
    free(b.bytes);
}

/* Hooks go on code: a data object, or a symbol outside every executable
 * segment, is refused with a message naming it. */
static void test_elf_code_symbols(void **state)
{
    (void)state;
    built_elf b = standard_elf();
    vmt_image *img = NULL;
    char why[256] = "";
    assert_int_equal(vmt_image_load_elf_mem(b.bytes, b.len, RAM, &img, why, sizeof why), VMT_OK);
    vmt_va va = 0;
    assert_int_equal(vmt_image_code_symbol(img, "main", &va, why, sizeof why), VMT_OK);
    assert_int_equal(va, 0x100010);
    assert_int_equal(vmt_image_code_symbol(img, "_start", &va, why, sizeof why), VMT_OK); /* untyped, in .text */
    assert_int_equal(vmt_image_code_symbol(img, "helper", &va, why, sizeof why), VMT_OK);
    assert_int_equal(vmt_image_code_symbol(img, "l3", &va, why, sizeof why), VMT_E_INVAL); /* past .text's end */
    assert_int_equal(vmt_image_code_symbol(img, "greeting", &va, why, sizeof why), VMT_E_INVAL);
    assert_non_null(strstr(why, "'greeting'"));
    assert_non_null(strstr(why, "STT_OBJECT"));
    assert_int_equal(vmt_image_code_symbol(img, "nosuch", &va, why, sizeof why), VMT_E_NOTFOUND);
    assert_non_null(strstr(why, "unknown symbol 'nosuch'"));
    vmt_image_destroy(img);
    /* The same function symbol in a segment without PF_X: not code. */
    Elf64_Phdr *ph = (Elf64_Phdr *)(b.bytes + sizeof(Elf64_Ehdr));
    for (unsigned i = 0; i < 2; i++)
        if (ph[i].p_vaddr == 0x200000)
            ph[i].p_flags |= PF_X; /* data segment executable... */
    assert_int_equal(vmt_image_load_elf_mem(b.bytes, b.len, RAM, &img, why, sizeof why), VMT_OK);
    assert_int_equal(vmt_image_code_symbol(img, "greeting", &va, why, sizeof why), VMT_E_INVAL); /* still data */
    vmt_image_destroy(img);
    for (unsigned i = 0; i < 2; i++)
        if (ph[i].p_vaddr == 0x100000)
            ph[i].p_flags &= ~(Elf64_Word)PF_X; /* ...code segment not */
    /* the entry point must be executable: make the data segment hold it */
    Elf64_Ehdr *eh = (Elf64_Ehdr *)b.bytes;
    eh->e_entry = 0x200000;
    assert_int_equal(vmt_image_load_elf_mem(b.bytes, b.len, RAM, &img, why, sizeof why), VMT_OK);
    /* An untyped label there is not code any more; a function still says
     * it is (symbol-only images put functions outside their segments). */
    assert_int_equal(vmt_image_code_symbol(img, "_start", &va, why, sizeof why), VMT_E_INVAL);
    assert_non_null(strstr(why, "not inside an executable segment"));
    assert_int_equal(vmt_image_code_symbol(img, "main", &va, why, sizeof why), VMT_OK);
    vmt_image_destroy(img);
    free(b.bytes);
}

/* A file far larger than RAM whose segment does not fit is refused without
 * being read whole: it is mapped, so a sparse 1 GiB file costs nothing. */
static void test_elf_big_file_refused_unread(void **state)
{
    (void)state;
    built_elf b = standard_elf();
    char *path = write_temp(b.bytes, b.len);
    assert_int_equal(truncate(path, (off_t)(1ULL << 30)), 0); /* sparse: 1 GiB */
    vmt_image *img = NULL;
    char why[256] = "";
    /* Within the limit: loads (only the headers and segments are touched). */
    assert_int_equal(vmt_image_load_elf(path, RAM, &img, why, sizeof why), VMT_OK);
    vmt_image_destroy(img);
    /* Past the limit: refused by its size. */
    assert_int_equal(truncate(path, (off_t)(1ULL << 30) + 1), 0);
    assert_int_equal(vmt_image_load_elf(path, RAM, &img, why, sizeof why), VMT_E_RANGE);
    assert_non_null(strstr(why, "refused unread"));
    remove_temp(path);
    free(b.bytes);
}

static void test_elf_random_corruption(void **state)
{
    (void)state;
    built_elf b = standard_elf();
    uint8_t *copy = malloc(b.len);
    uint64_t x = 12345;
    int ok = 0;
    for (int round = 0; round < 400; round++) {
        memcpy(copy, b.bytes, b.len);
        for (int k = 0; k < 4; k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            /* Mostly hit the headers, where damage matters. */
            size_t at = (x >> 8) % ((x & 1) ? b.len : 0x100);
            copy[at] = (uint8_t)(x >> 40);
        }
        vmt_image *img = NULL;
        char why[256] = "";
        vmt_status st = vmt_image_load_elf_mem(copy, b.len, RAM, &img, why, sizeof why);
        if (st == VMT_OK) {
            ok++;
            for (size_t i = 0; i < vmt_image_segment_count(img); i++) {
                const vmt_image_segment *g = vmt_image_segment_at(img, i);
                assert_true(g->pa + g->memsz <= RAM && g->filesz <= g->memsz);
            }
        } else {
            assert_true(why[0] != 0);
        }
        vmt_image_destroy(img);
    }
    (void)ok;
    free(copy);
    free(b.bytes);
}

/* ---- CPU state ---- */

static void test_cpu_state_every_field(void **state)
{
    (void)state;
    static const char *const names[] = {
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
        "r15", "rip", "rflags", "cr0", "cr2", "cr3", "cr4", "cr8", "efer", "fs_base", "gs_base", "kernel_gs_base",
        "gdtr_base", "idtr_base", "dr0", "dr1", "dr2", "dr3", "dr6", "dr7",
    };
    const size_t n = sizeof names / sizeof names[0];
    char json[4096];
    size_t at = 0;
    at += (size_t)snprintf(json + at, sizeof json - at, "{");
    for (size_t i = 0; i < n; i++)
        at += (size_t)snprintf(json + at, sizeof json - at, "\"%s\": \"0x%zx00000000000%zx\", ", names[i], i + 1, i);
    at += (size_t)snprintf(json + at, sizeof json - at,
                           "\"gdtr_limit\": 1, \"idtr_limit\": \"0xfff\", \"cs\": 8, \"ss\": \"16\", \"ds\": 17, "
                           "\"es\": 18, \"fs\": 19, \"gs\": 65535}");
    vmt_regs r;
    memset(&r, 0xee, sizeof r);
    char why[256] = "";
    assert_int_equal(vmt_cpu_state_parse(json, &r, why, sizeof why), VMT_OK);
    const uint64_t *as_u64[] = {
        &r.rax, &r.rbx, &r.rcx, &r.rdx, &r.rsi, &r.rdi, &r.rbp, &r.rsp, &r.r8, &r.r9, &r.r10, &r.r11, &r.r12,
        &r.r13, &r.r14, &r.r15, &r.rip, &r.rflags, &r.cr0, &r.cr2, &r.cr3, &r.cr4, &r.cr8, &r.efer, &r.fs_base,
        &r.gs_base, &r.kernel_gs_base, &r.gdtr_base, &r.idtr_base, &r.dr0, &r.dr1, &r.dr2, &r.dr3, &r.dr6, &r.dr7,
    };
    for (size_t i = 0; i < n; i++) {
        char want[40];
        snprintf(want, sizeof want, "%zx00000000000%zx", i + 1, i);
        assert_int_equal(*as_u64[i], strtoull(want, NULL, 16));
    }
    assert_int_equal(r.gdtr_limit, 1);
    assert_int_equal(r.idtr_limit, 0xfff);
    assert_int_equal(r.cs, 8);
    assert_int_equal(r.ss, 16);
    assert_int_equal(r.ds, 17);
    assert_int_equal(r.es, 18);
    assert_int_equal(r.fs, 19);
    assert_int_equal(r.gs, 65535);
    /* Fields not named keep their value; large numbers survive. */
    assert_int_equal(vmt_cpu_state_parse("{\"rax\": 18446744073709551615}", &r, why, sizeof why), VMT_OK);
    assert_int_equal(r.rax, UINT64_MAX);
    assert_int_equal(r.cs, 8);
}

static void expect_cpu_error(const char *json, const char *words)
{
    vmt_regs r;
    memset(&r, 0x5a, sizeof r);
    vmt_regs before = r;
    char why[256] = "";
    assert_int_equal(vmt_cpu_state_parse(json, &r, why, sizeof why), VMT_E_FORMAT);
    if (!strstr(why, words))
        fail_msg("message \"%s\" does not contain \"%s\"", why, words);
    assert_memory_equal(&r, &before, sizeof r); /* untouched on failure */
}

static void test_cpu_state_errors(void **state)
{
    (void)state;
    expect_cpu_error("{\"rip\": 1, \"rpi\": 2}", "unknown field \"rpi\"");
    expect_cpu_error("{\"rip\": -1}", "\"rip\" is negative");
    expect_cpu_error("{\"rip\": \"0xZZ\"}", "\"rip\" has value \"0xZZ\"");
    expect_cpu_error("{\"rip\": \"0x\"}", "\"rip\" has value");
    expect_cpu_error("{\"rip\": \"-5\"}", "\"rip\" has value");
    expect_cpu_error("{\"rip\": \"0x10000000000000000\"}", "not a 64-bit number");
    expect_cpu_error("{\"rip\": 1.5}", "must be an integer");
    expect_cpu_error("{\"rip\": true}", "must be an integer");
    expect_cpu_error("{\"cs\": 65536}", "16 bits wide");
    expect_cpu_error("[1, 2]", "top level must be an object");
    expect_cpu_error("{\"rip\": ", "not valid JSON");
}

/* ---- raw images ---- */

static void test_raw_image(void **state)
{
    (void)state;
    uint8_t mem[3 * 4096];
    for (size_t i = 0; i < sizeof mem; i++)
        mem[i] = (uint8_t)(i * 7);
    char *mem_path = write_temp(mem, sizeof mem);
    const char *json = "{\"rip\": \"0x1000\", \"cr3\": 8192, \"cs\": \"0x8\"}";
    char *cpu_path = write_temp(json, strlen(json));
    vmt_image *img = NULL;
    char why[256] = "";
    assert_int_equal(vmt_image_load_raw(mem_path, cpu_path, RAM, &img, why, sizeof why), VMT_OK);
    assert_true(vmt_image_has_cpu_state(img));
    assert_int_equal(vmt_image_segment_count(img), 1);
    assert_int_equal(vmt_image_segment_at(img, 0)->pa, 0);
    assert_memory_equal(vmt_image_segment_at(img, 0)->data, mem, sizeof mem);
    assert_int_equal(vmt_image_regs(img)->rip, 0x1000);
    assert_int_equal(vmt_image_regs(img)->cr3, 0x2000);
    assert_int_equal(vmt_image_regs(img)->cs, 8);
    vmt_image_destroy(img);
    /* Memory image bigger than RAM. */
    assert_int_equal(vmt_image_load_raw(mem_path, cpu_path, 8192, &img, why, sizeof why), VMT_E_RANGE);
    assert_null(img);
    assert_non_null(strstr(why, "larger than RAM"));
    remove_temp(cpu_path);
    /* Unknown field in the CPU-state file: named, with the file. */
    const char *bad = "{\"rip\": 1, \"cr9\": 0}";
    cpu_path = write_temp(bad, strlen(bad));
    assert_int_equal(vmt_image_load_raw(mem_path, cpu_path, RAM, &img, why, sizeof why), VMT_E_FORMAT);
    assert_non_null(strstr(why, "unknown field \"cr9\""));
    assert_non_null(strstr(why, cpu_path));
    remove_temp(cpu_path);
    remove_temp(mem_path);
}

/* ---- placing and the boot protocol ---- */

typedef struct hostram {
    uint8_t *bytes;
    uint64_t size;
    unsigned writes;
    int fail_at; /* fail the Nth write (1-based), 0: never */
} hostram;

static vmt_status ram_write(void *ctx, vmt_pa pa, const void *buf, size_t len)
{
    hostram *m = ctx;
    if (++m->writes == (unsigned)m->fail_at)
        return VMT_E_INJECTED;
    if (pa > m->size || len > m->size - pa)
        return VMT_E_RANGE;
    memcpy(m->bytes + pa, buf, len);
    return VMT_OK;
}

static vmt_status ram_read(void *ctx, vmt_pa pa, void *buf, size_t len)
{
    hostram *m = ctx;
    if (pa > m->size || len > m->size - pa)
        return VMT_E_RANGE;
    memcpy(buf, m->bytes + pa, len);
    return VMT_OK;
}

static void test_boot_tables_translate(void **state)
{
    (void)state;
    built_elf b = standard_elf();
    vmt_image *img = NULL;
    char why[256] = "";
    assert_int_equal(vmt_image_load_elf_mem(b.bytes, b.len, RAM, &img, why, sizeof why), VMT_OK);
    hostram m = { malloc(RAM), RAM, 0, 0 };
    memset(m.bytes, 0xaa, RAM);
    vmt_regs r;
    assert_int_equal(vmt_image_place(img, RAM, ram_write, &m, &r, why, sizeof why), VMT_OK);
    /* Segments and zero fill. */
    assert_memory_equal(m.bytes + 0x100000, code_bytes, sizeof code_bytes);
    assert_memory_equal(m.bytes + 0x200000, data_bytes, sizeof data_bytes);
    for (uint64_t i = sizeof data_bytes; i < 0x3000; i++)
        assert_int_equal(m.bytes[0x200000 + i], 0);
    assert_int_equal(m.bytes[0x203000], 0xaa); /* nothing past memsz */
    /* Registers. */
    vmt_pa base = RAM - VMT_BOOT_PT_FRAMES * 4096;
    assert_int_equal(vmt_boot_pt_base(RAM), base);
    assert_int_equal(r.rip, 0x100000);
    assert_int_equal(r.cr3, base);
    assert_int_equal(r.rsp, base);
    assert_int_equal(r.rsp % 16, 0);
    assert_int_equal(r.rdi, RAM);
    assert_int_equal(r.rsi, 0);
    assert_int_equal(r.cs, VMT_BOOT_CS);
    assert_int_equal(r.ss, VMT_BOOT_DS);
    assert_true(r.cr0 & VMT_CR0_PE && r.cr0 & VMT_CR0_PG && r.cr0 & VMT_CR0_WP);
    assert_true(r.cr4 & VMT_CR4_PAE);
    assert_false(r.cr4 & VMT_CR4_LA57);
    assert_int_equal(r.efer & (VMT_EFER_LME | VMT_EFER_LMA), VMT_EFER_LME | VMT_EFER_LMA);
    assert_false(r.rflags & VMT_RFLAGS_IF);
    assert_memory_equal(&r, vmt_image_regs(img), sizeof r);
    /* The tables identity-map all of RAM, including themselves and the stack. */
    vmt_phys_reader rd = { ram_read, &m };
    vmt_paging_config cfg = { .levels = 4, .maxphyaddr = 40, .nxe = 0 };
    for (vmt_va va = 0; va < RAM; va += 0x1000 * 61 + 8) {
        vmt_walk w;
        assert_int_equal(vmt_paging_walk(&rd, &cfg, r.cr3, va, &w, why, sizeof why), VMT_OK);
        assert_int_equal(w.pa, va);
        assert_int_equal(w.page_size, VMT_SIZE_2M);
        assert_int_equal(w.rights, VMT_ACCESS_RWX);
    }
    vmt_walk w;
    assert_int_equal(vmt_paging_walk(&rd, &cfg, r.cr3, r.rsp - 8, &w, NULL, 0), VMT_OK);
    assert_int_equal(w.pa, r.rsp - 8);
    /* Beyond the mapped range: not present at the PD level. */
    assert_int_equal(vmt_paging_walk(&rd, &cfg, r.cr3, RAM + VMT_SIZE_2M, &w, NULL, 0), VMT_E_NOT_PRESENT);
    assert_int_equal(w.fault_level, VMT_PT_LEVEL_PD);
    /* GDT: 64-bit code at 0x8, writable data at 0x10, entries are not-present PTEs. */
    assert_int_equal(r.gdtr_base, base + VMT_BOOT_GDT_OFFSET);
    assert_int_equal(r.gdtr_limit, 23);
    uint64_t gdt[3];
    memcpy(gdt, m.bytes + r.gdtr_base, sizeof gdt);
    assert_int_equal(gdt[0], 0);
    assert_true(gdt[1] & (1ULL << 47)); /* present */
    assert_true(gdt[1] & (1ULL << 53)); /* long mode */
    assert_true(gdt[1] & (1ULL << 43)); /* code */
    assert_true(gdt[2] & (1ULL << 47));
    assert_false(gdt[2] & (1ULL << 43)); /* data */
    assert_false(gdt[1] & VMT_PTE_P);
    assert_false(gdt[2] & VMT_PTE_P);
    vmt_image_destroy(img);
    free(m.bytes);
    free(b.bytes);
}

/* A writer that keeps only the top of a huge RAM (where the boot tables go). */
typedef struct top_ram {
    uint64_t size;
    uint8_t top[VMT_BOOT_PT_FRAMES * 4096];
} top_ram;

static vmt_status top_write(void *ctx, vmt_pa pa, const void *buf, size_t len)
{
    top_ram *t = ctx;
    vmt_pa lo = t->size - sizeof t->top;
    if (pa >= lo && pa + len <= t->size)
        memcpy(t->top + (pa - lo), buf, len);
    return VMT_OK;
}

static vmt_status top_read(void *ctx, vmt_pa pa, void *buf, size_t len)
{
    top_ram *t = ctx;
    vmt_pa lo = t->size - sizeof t->top;
    if (pa < lo || pa + len > t->size)
        return VMT_E_RANGE;
    memcpy(buf, t->top + (pa - lo), len);
    return VMT_OK;
}

static void test_boot_tables_cover_4g_of_big_ram(void **state)
{
    (void)state;
    uint8_t code[16] = { 0xf4 };
    vmt_image_segment seg = { 0x1000, code, sizeof code, sizeof code };
    uint64_t ram = 5ULL << 30;
    vmt_image *img = NULL;
    char why[256] = "";
    assert_int_equal(vmt_image_from_segments(&seg, 1, NULL, ram, &img, why, sizeof why), VMT_OK);
    assert_false(vmt_image_has_cpu_state(img));
    top_ram *t = calloc(1, sizeof *t);
    t->size = ram;
    vmt_regs r;
    assert_int_equal(vmt_image_place(img, ram, top_write, t, &r, why, sizeof why), VMT_OK);
    assert_int_equal(r.rip, 0x1000);
    assert_int_equal(r.rdi, ram);
    vmt_phys_reader rd = { top_read, t };
    vmt_paging_config cfg = { .levels = 4, .maxphyaddr = 40 };
    vmt_walk w;
    const vmt_va probes[] = { 0, 0x1000, 0x3fffffff, 0x40000000, 0xc0001234, 0xffffffff };
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        assert_int_equal(vmt_paging_walk(&rd, &cfg, r.cr3, probes[i], &w, why, sizeof why), VMT_OK);
        assert_int_equal(w.pa, probes[i]);
    }
    /* Only the first 4 GiB are mapped. */
    assert_int_equal(vmt_paging_walk(&rd, &cfg, r.cr3, 0x100000000ULL, &w, NULL, 0), VMT_E_NOT_PRESENT);
    assert_int_equal(w.fault_level, VMT_PT_LEVEL_PDPT);
    free(t);
    vmt_image_destroy(img);
}

static void test_place_refusals(void **state)
{
    (void)state;
    uint8_t code[16] = { 0xf4 };
    char why[256] = "";
    vmt_image *img = NULL;
    /* A segment reaching into the boot tables. */
    vmt_image_segment seg = { RAM - 0x8000, code, sizeof code, 0x4000 };
    assert_int_equal(vmt_image_from_segments(&seg, 1, NULL, RAM, &img, why, sizeof why), VMT_OK);
    hostram m = { calloc(1, RAM), RAM, 0, 0 };
    vmt_regs r;
    assert_int_equal(vmt_image_place(img, RAM, ram_write, &m, &r, why, sizeof why), VMT_E_RANGE);
    assert_non_null(strstr(why, "overlaps the boot page tables"));
    /* Placing into a smaller RAM than loaded for. */
    assert_int_equal(vmt_image_place(img, 1 << 20, ram_write, &m, &r, why, sizeof why), VMT_E_RANGE);
    assert_non_null(strstr(why, "outside RAM"));
    vmt_image_destroy(img);
    /* With registers: no boot tables are written, the writer failure is reported. */
    vmt_regs given = { .rip = 0x1234, .cr3 = 0x5000 };
    vmt_image_segment segs[2] = { { 0x1000, code, sizeof code, 0x1000 }, { RAM * 2, NULL, 0, 0 } };
    assert_int_equal(vmt_image_from_segments(segs, 2, &given, RAM, &img, why, sizeof why), VMT_OK);
    assert_int_equal(vmt_image_segment_count(img), 1); /* the empty segment is dropped, wherever it is */
    m.writes = 0;
    assert_int_equal(vmt_image_place(img, RAM, ram_write, &m, &r, why, sizeof why), VMT_OK);
    assert_int_equal(r.rip, 0x1234);
    assert_int_equal(r.cr3, 0x5000);
    assert_int_equal(m.writes, 2); /* file bytes + one zero-fill chunk */
    m.writes = 0;
    m.fail_at = 2;
    assert_int_equal(vmt_image_place(img, RAM, ram_write, &m, &r, why, sizeof why), VMT_E_INJECTED);
    assert_non_null(strstr(why, "zero-filling pa 0x1010"));
    vmt_image_destroy(img);
    /* Bad arguments. */
    assert_int_equal(vmt_image_from_segments(NULL, 0, NULL, RAM, &img, why, sizeof why), VMT_E_INVAL);
    assert_int_equal(vmt_image_from_segments(&seg, 1, NULL, RAM + 5, &img, why, sizeof why), VMT_E_INVAL);
    assert_non_null(strstr(why, "multiple of 4 KiB"));
    vmt_image_segment nodata = { 0x1000, NULL, 16, 16 };
    assert_int_equal(vmt_image_from_segments(&nodata, 1, NULL, RAM, &img, why, sizeof why), VMT_E_INVAL);
    assert_null(img);
    free(m.bytes);
}

/* The project's own testbed guests (built by guests/), when present. */
static void test_real_guest_elfs(void **state)
{
    (void)state;
    static const char *const names[] = { "smoke.elf", "workload.elf" };
    int found = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", VMT_GUEST_DIR, names[i]);
        if (access(path, R_OK) != 0)
            continue;
        found++;
        const uint64_t ram = 64ULL << 20;
        vmt_image *img = NULL;
        char why[256] = "";
        if (vmt_image_load_elf(path, ram, &img, why, sizeof why) != VMT_OK)
            fail_msg("%s", why);
        const vmt_regs *r0 = vmt_image_regs(img);
        vmt_va start;
        assert_int_equal(vmt_image_symbol(img, "_start", &start, NULL), VMT_OK);
        assert_int_equal(start, r0->rip);
        uint64_t off;
        assert_string_equal(vmt_image_symbol_at(img, r0->rip, &off), "_start");
        hostram m = { calloc(1, ram), ram, 0, 0 };
        vmt_regs r;
        assert_int_equal(vmt_image_place(img, ram, ram_write, &m, &r, why, sizeof why), VMT_OK);
        vmt_phys_reader rd = { ram_read, &m };
        vmt_paging_config cfg = { .levels = 4, .maxphyaddr = 40 };
        vmt_walk w;
        assert_int_equal(vmt_paging_walk(&rd, &cfg, r.cr3, r.rip, &w, why, sizeof why), VMT_OK);
        /* The entry's bytes in RAM are the ELF's bytes. */
        const vmt_image_segment *g = NULL;
        for (size_t k = 0; k < vmt_image_segment_count(img); k++) {
            const vmt_image_segment *c = vmt_image_segment_at(img, k);
            if (w.pa >= c->pa && w.pa < c->pa + c->filesz)
                g = c;
        }
        assert_non_null(g);
        assert_memory_equal(m.bytes + w.pa, g->data + (w.pa - g->pa), g->filesz - (w.pa - g->pa));
        free(m.bytes);
        vmt_image_destroy(img);
    }
    if (!found)
        skip();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_elf_segments_and_symbols),
        cmocka_unit_test(test_elf_truncated),
        cmocka_unit_test(test_elf_wrong_class_and_machine),
        cmocka_unit_test(test_elf_segment_outside_ram),
        cmocka_unit_test(test_elf_overlapping_segments),
        cmocka_unit_test(test_elf_corrupt_symbols),
        cmocka_unit_test(test_elf_section_headers_unreadable),
        cmocka_unit_test(test_elf_code_symbols),
        cmocka_unit_test(test_elf_big_file_refused_unread),
        cmocka_unit_test(test_elf_random_corruption),
        cmocka_unit_test(test_cpu_state_every_field),
        cmocka_unit_test(test_cpu_state_errors),
        cmocka_unit_test(test_raw_image),
        cmocka_unit_test(test_boot_tables_translate),
        cmocka_unit_test(test_boot_tables_cover_4g_of_big_ram),
        cmocka_unit_test(test_place_refusals),
        cmocka_unit_test(test_real_guest_elfs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
