/*
 * fuzz/fuzz_image_raw.c — raw memory images + JSON CPU-state files.
 *
 * Input: 2 bytes (length L of the CPU-state part, little-endian), L bytes
 * of CPU state (JSON text, possibly hostile), the rest is the raw memory
 * image. The JSON is parsed directly (vmt_cpu_state_parse) and both parts
 * go through the file loader (vmt_image_load_raw) via in-memory files
 * (memfd), for a guest whose RAM is 64 KiB: a memory file larger than RAM
 * must be refused by its size, a loaded image is one segment at pa 0 that
 * fits RAM and carries exactly the registers the parser produced.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vmtrap/image.h"

#define RAM (64ULL << 10)

static int put_file(int *fd, const char *name, const uint8_t *bytes, size_t len)
{
    if (*fd < 0)
        *fd = memfd_create(name, MFD_CLOEXEC);
    if (*fd < 0 || ftruncate(*fd, 0) != 0)
        return -1;
    if (len && pwrite(*fd, bytes, len, 0) != (ssize_t)len)
        return -1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* One pair of in-memory files per process, reused for every input. */
    static int state_fd = -1, mem_fd = -1;
    if (size < 2)
        return 0;
    size_t json_len = (size_t)data[0] | (size_t)data[1] << 8;
    if (json_len > size - 2)
        json_len = size - 2;
    const uint8_t *json = data + 2, *mem = data + 2 + json_len;
    size_t mem_len = size - 2 - json_len;

    char *text = malloc(json_len + 1);
    if (!text)
        return 0;
    memcpy(text, json, json_len);
    text[json_len] = 0;
    vmt_regs parsed;
    memset(&parsed, 0, sizeof parsed);
    char why[256] = "";
    vmt_status pst = vmt_cpu_state_parse(text, &parsed, why, sizeof why);
    if (!memchr(why, 0, sizeof why) || (pst != VMT_OK && why[0] == 0))
        abort();
    bool has_nul = strlen(text) != json_len;
    free(text);

    if (put_file(&state_fd, "cpu-state", json, json_len) || put_file(&mem_fd, "memory", mem, mem_len))
        return 0;
    char state_path[64], mem_path[64];
    snprintf(state_path, sizeof state_path, "/proc/self/fd/%d", state_fd);
    snprintf(mem_path, sizeof mem_path, "/proc/self/fd/%d", mem_fd);
    vmt_image *img = NULL;
    vmt_status st = vmt_image_load_raw(mem_path, state_path, RAM, &img, why, sizeof why);
    if (!memchr(why, 0, sizeof why))
        abort();
    if (st != VMT_OK) {
        if (img || why[0] == 0)
            abort();
        return 0;
    }
    /* Loaded: the parse must have succeeded on the same text, the memory
     * file fit RAM, and the image says exactly that. */
    if (pst != VMT_OK || has_nul || mem_len > RAM || !vmt_image_has_cpu_state(img))
        abort();
    const vmt_regs *r = vmt_image_regs(img);
    if (r->rip != parsed.rip || r->rsp != parsed.rsp || r->cr3 != parsed.cr3 || r->cr0 != parsed.cr0 ||
        r->efer != parsed.efer || r->cs != parsed.cs || r->dr7 != parsed.dr7 || r->rflags != parsed.rflags)
        abort();
    size_t n = vmt_image_segment_count(img);
    if (n != (mem_len ? 1u : 0u))
        abort();
    if (n) {
        const vmt_image_segment *g = vmt_image_segment_at(img, 0);
        if (g->pa != 0 || g->filesz != mem_len || memcmp(g->data, mem, mem_len) != 0)
            abort();
    }
    vmt_image_destroy(img);
    return 0;
}
