/*
 * core/image_raw.c — raw memory images + JSON CPU state, and host file
 * reading for every image source.
 *
 * Design: the CPU state is a flat JSON object whose keys are vmt_regs field
 * names, parsed by json-c. A table maps each name to its offset and width,
 * so every field is settable and an unknown key is refused by name (a typo
 * must not silently leave a register at 0). Values are non-negative integers
 * or strings ("0x1000" hex, "4096" decimal); 16-bit fields reject values
 * that do not fit.
 *
 * Big files (ELF images, raw memory) are mapped, never read into a buffer:
 * their size is checked with fstat before a byte is touched, only the pages
 * the loader reads become resident, and the image's own copy of its
 * segments is the only copy held.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/errbuf.h"
#include "core/image_internal.h"

#define CPU_STATE_MAX (1u << 20)

#define F64(f) { #f, offsetof(vmt_regs, f), 8 }
#define F16(f) { #f, offsetof(vmt_regs, f), 2 }
static const struct reg_field {
    const char *name;
    size_t offset;
    uint8_t width;
} reg_fields[] = {
    F64(rax), F64(rbx), F64(rcx), F64(rdx), F64(rsi), F64(rdi), F64(rbp), F64(rsp),
    F64(r8), F64(r9), F64(r10), F64(r11), F64(r12), F64(r13), F64(r14), F64(r15),
    F64(rip), F64(rflags),
    F64(cr0), F64(cr2), F64(cr3), F64(cr4), F64(cr8), F64(efer),
    F64(fs_base), F64(gs_base), F64(kernel_gs_base),
    F64(gdtr_base), F64(idtr_base),
    F16(gdtr_limit), F16(idtr_limit),
    F16(cs), F16(ss), F16(ds), F16(es), F16(fs), F16(gs),
    F64(dr0), F64(dr1), F64(dr2), F64(dr3), F64(dr6), F64(dr7),
};

/* Open a regular file of at most `max` bytes for reading; its size is
 * checked before anything is read. */
static vmt_status open_bounded(const char *path, uint64_t max, int *fd_out, size_t *len_out, char *why,
                               size_t why_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        vmt_why(why, why_len, "cannot open %s: %s", path, strerror(errno));
        return VMT_E_IO;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        vmt_why(why, why_len, "%s is not a regular file", path);
        close(fd);
        return VMT_E_IO;
    }
    if ((uint64_t)sb.st_size > max) {
        vmt_why(why, why_len, "%s is %" PRIu64 " bytes, more than the limit of %" PRIu64 " (refused unread)", path,
                (uint64_t)sb.st_size, max);
        close(fd);
        return VMT_E_RANGE;
    }
    *fd_out = fd;
    *len_out = (size_t)sb.st_size;
    return VMT_OK;
}

vmt_status vmt_image_read_file(const char *path, uint64_t max, uint8_t **buf_out, size_t *len_out, char *why,
                               size_t why_len)
{
    *buf_out = NULL;
    *len_out = 0;
    int fd;
    size_t len;
    vmt_status st = open_bounded(path, max, &fd, &len, why, why_len);
    if (st != VMT_OK)
        return st;
    uint8_t *buf = malloc(len + 1); /* +1: room for a NUL for text files */
    if (!buf) {
        close(fd);
        vmt_why(why, why_len, "out of memory reading %s", path);
        return VMT_E_NOMEM;
    }
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            vmt_why(why, why_len, "reading %s failed: %s", path, r ? strerror(errno) : "unexpected end of file");
            free(buf);
            close(fd);
            return VMT_E_IO;
        }
        got += (size_t)r;
    }
    close(fd);
    buf[len] = 0;
    *buf_out = buf;
    *len_out = len;
    return VMT_OK;
}

vmt_status vmt_image_map_file(const char *path, uint64_t max, bool writable, void **map_out, size_t *len_out,
                              char *why, size_t why_len)
{
    *map_out = NULL;
    *len_out = 0;
    int fd;
    size_t len;
    vmt_status st = open_bounded(path, max, &fd, &len, why, why_len);
    if (st != VMT_OK)
        return st;
    if (len == 0) {
        close(fd);
        return VMT_OK; /* an empty file: no mapping, len 0 */
    }
    /* MAP_PRIVATE: a parser that writes (libelf may) gets copy-on-write
     * pages; the file never changes. */
    void *m = mmap(NULL, len, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    close(fd);
    if (m == MAP_FAILED) {
        vmt_why(why, why_len, "cannot map %s (%zu bytes): %s", path, len, strerror(err));
        return VMT_E_IO;
    }
    *map_out = m;
    *len_out = len;
    return VMT_OK;
}

void vmt_image_unmap_file(void *map, size_t len)
{
    if (map && len)
        munmap(map, len);
}

static vmt_status json_u64(const char *key, json_object *v, uint64_t *out, char *why, size_t why_len)
{
    if (json_object_is_type(v, json_type_int)) {
        if (json_object_get_int64(v) < 0) {
            vmt_why(why, why_len, "CPU state: field \"%s\" is negative", key);
            return VMT_E_FORMAT;
        }
        *out = json_object_get_uint64(v);
        return VMT_OK;
    }
    if (json_object_is_type(v, json_type_string)) {
        const char *s = json_object_get_string(v);
        int hex = s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
        const char *digits = hex ? s + 2 : s;
        char *end = NULL;
        errno = 0;
        unsigned long long x = strtoull(digits, &end, hex ? 16 : 10);
        if (!digits[0] || digits[0] == '-' || digits[0] == '+' || digits[0] == ' ' || *end || errno == ERANGE) {
            vmt_why(why, why_len, "CPU state: field \"%s\" has value \"%.40s\", not a 64-bit number", key, s);
            return VMT_E_FORMAT;
        }
        *out = x;
        return VMT_OK;
    }
    vmt_why(why, why_len, "CPU state: field \"%s\" must be an integer or a \"0x...\" string", key);
    return VMT_E_FORMAT;
}

vmt_status vmt_cpu_state_parse(const char *json_text, vmt_regs *regs, char *why, size_t why_len)
{
    if (!json_text || !regs) {
        vmt_why(why, why_len, "CPU state: text and regs are required");
        return VMT_E_INVAL;
    }
    enum json_tokener_error jerr = json_tokener_success;
    json_object *root = json_tokener_parse_verbose(json_text, &jerr);
    if (!root) {
        vmt_why(why, why_len, "CPU state: not valid JSON: %s", json_tokener_error_desc(jerr));
        return VMT_E_FORMAT;
    }
    vmt_status st = VMT_OK;
    if (!json_object_is_type(root, json_type_object)) {
        vmt_why(why, why_len, "CPU state: the top level must be an object of register names");
        st = VMT_E_FORMAT;
        goto done;
    }
    /* Parse into a copy: on failure regs stays untouched. */
    vmt_regs tmp = *regs;
    json_object_object_foreach(root, key, val)
    {
        const struct reg_field *f = NULL;
        for (size_t i = 0; i < sizeof reg_fields / sizeof reg_fields[0]; i++) {
            if (strcmp(reg_fields[i].name, key) == 0) {
                f = &reg_fields[i];
                break;
            }
        }
        if (!f) {
            vmt_why(why, why_len, "CPU state: unknown field \"%.60s\"", key);
            st = VMT_E_FORMAT;
            goto done;
        }
        uint64_t x;
        if ((st = json_u64(key, val, &x, why, why_len)))
            goto done;
        if (f->width == 2) {
            if (x > UINT16_MAX) {
                vmt_why(why, why_len, "CPU state: field \"%s\" is 16 bits wide, 0x%" PRIx64 " does not fit", key, x);
                st = VMT_E_FORMAT;
                goto done;
            }
            uint16_t v16 = (uint16_t)x;
            memcpy((uint8_t *)&tmp + f->offset, &v16, 2);
        } else {
            memcpy((uint8_t *)&tmp + f->offset, &x, 8);
        }
    }
    *regs = tmp;
done:
    json_object_put(root);
    return st;
}

vmt_status vmt_image_load_raw(const char *mem_path, const char *cpu_state_path, uint64_t ram_size, vmt_image **out,
                              char *why, size_t why_len)
{
    if (!mem_path || !cpu_state_path || !out) {
        vmt_why(why, why_len, "raw image: memory path, CPU-state path and out are required");
        return VMT_E_INVAL;
    }
    *out = NULL;
    char inner[200];
    uint8_t *text = NULL;
    size_t text_len;
    vmt_regs regs = { 0 };
    vmt_status st = vmt_image_read_file(cpu_state_path, CPU_STATE_MAX, &text, &text_len, inner, sizeof inner);
    if (st) {
        vmt_why(why, why_len, "raw image: %s", inner);
        return st;
    }
    if (strlen((char *)text) != text_len) {
        vmt_why(why, why_len, "raw image: %s: CPU state contains a NUL byte", cpu_state_path);
        free(text);
        return VMT_E_FORMAT;
    }
    st = vmt_cpu_state_parse((char *)text, &regs, inner, sizeof inner);
    free(text);
    if (st) {
        vmt_why(why, why_len, "raw image: %s: %s", cpu_state_path, inner);
        return st;
    }
    void *mem = NULL;
    size_t mem_len = 0;
    if ((st = vmt_image_map_file(mem_path, ram_size, false, &mem, &mem_len, inner, sizeof inner))) {
        vmt_why(why, why_len, "raw image: memory image larger than RAM or unreadable: %s", inner);
        return st;
    }
    vmt_image_segment seg = { .pa = 0, .data = mem, .filesz = mem_len, .memsz = mem_len };
    st = vmt_image_from_segments(&seg, mem_len ? 1 : 0, &regs, ram_size, out, inner, sizeof inner);
    vmt_image_unmap_file(mem, mem_len);
    if (st)
        vmt_why(why, why_len, "raw image: %s: %s", mem_path, inner);
    return st;
}
