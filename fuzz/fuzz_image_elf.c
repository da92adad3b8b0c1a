/*
 * fuzz/fuzz_image_elf.c — the ELF image loader against hostile files.
 *
 * Input: the file. It is loaded from memory for a 16 MiB guest; a loaded
 * image must keep the loader's promises (segments inside RAM, sorted, no
 * overlap, filesz <= memsz), answer symbol queries for every name it holds
 * and any address without reading out of bounds, and place itself through
 * a writer that checks every write lies inside RAM. Any refusal must come
 * with a message.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmtrap/image.h"

#define RAM (16ULL << 20)

static vmt_status bounded_write(void *ctx, vmt_pa pa, const void *buf, size_t len)
{
    (void)buf;
    uint64_t *written = ctx;
    if (pa > RAM || len > RAM - pa)
        abort(); /* the image wrote outside guest RAM */
    *written += len;
    return VMT_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vmt_image *img = NULL;
    char why[256] = "";
    vmt_status st = vmt_image_load_elf_mem(data, size, RAM, &img, why, sizeof why);
    if (!memchr(why, 0, sizeof why))
        abort();
    if (st != VMT_OK) {
        if (img || why[0] == 0)
            abort(); /* a refusal has no image and a message */
        return 0;
    }
    size_t n = vmt_image_segment_count(img);
    for (size_t i = 0; i < n; i++) {
        const vmt_image_segment *g = vmt_image_segment_at(img, i);
        if (g->memsz == 0 || g->filesz > g->memsz || g->pa >= RAM || g->memsz > RAM - g->pa)
            abort();
        if (i && vmt_image_segment_at(img, i - 1)->pa + vmt_image_segment_at(img, i - 1)->memsz > g->pa)
            abort();
        volatile uint8_t sink = 0;
        for (uint64_t k = 0; k < g->filesz; k += 512)
            sink ^= g->data[k]; /* the image owns its bytes */
        if (g->filesz)
            sink ^= g->data[g->filesz - 1];
        (void)sink;
    }
    /* Symbols: every address near the segments and a few odd ones. */
    vmt_va probes[] = { 0, 1, 0x100000, 0x401000, UINT64_MAX, UINT64_MAX - 1, 0xffffffff80000000ULL };
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        uint64_t off = 0;
        const char *name = vmt_image_symbol_at(img, probes[i], &off);
        if (name) {
            vmt_va va = 0;
            if (strlen(name) == 0 || vmt_image_symbol(img, name, &va, NULL) != VMT_OK)
                abort(); /* a name found by address is found by name */
            char w2[200];
            vmt_status cs = vmt_image_code_symbol(img, name, &va, w2, sizeof w2);
            if (cs != VMT_OK && cs != VMT_E_INVAL)
                abort();
        }
    }
    char w3[200];
    if (vmt_image_code_symbol(img, "no such symbol", NULL, w3, sizeof w3) != VMT_E_NOTFOUND)
        abort();
    uint64_t written = 0;
    vmt_regs regs;
    char w4[200];
    (void)vmt_image_place(img, RAM, bounded_write, &written, &regs, w4, sizeof w4);
    vmt_image_destroy(img);
    return 0;
}
