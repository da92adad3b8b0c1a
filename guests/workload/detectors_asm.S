/*
 * guests/workload/detectors_asm.S — instructions the extended detectors
 * (detectors_more.c) need exactly, which C compiled with
 * -mgeneral-regs-only cannot emit: vector, MMX and x87 loads and stores,
 * string instructions, xlat, xchg / cmpxchg forms, non-temporal moves, the
 * guest's own traps in every encoding, and svc_exit's timing twin.
 * SysV ABI: arguments in rdi, rsi, rdx; rbx is saved where used.
 */
    .text
#define FN(name) .globl name; .type name, @function; name:

/* void (const void *src, void *dst): copy 16 / 8 / 32 bytes with one load of the family */
FN(rd_movdqu)   movdqu (%rdi), %xmm0;  movdqu %xmm0, (%rsi);  ret
FN(rd_movups)   movups (%rdi), %xmm1;  movups %xmm1, (%rsi);  ret
FN(rd_movaps)   movaps (%rdi), %xmm2;  movups %xmm2, (%rsi);  ret   /* src 16-aligned */
FN(rd_lddqu)    lddqu (%rdi), %xmm3;   movdqu %xmm3, (%rsi);  ret   /* SSE3 */
FN(rd_movntdqa) movntdqa (%rdi), %xmm4; movdqu %xmm4, (%rsi); ret   /* SSE4.1, src 16-aligned */
FN(rd_movq_xmm) movq (%rdi), %xmm5;    movq %xmm5, (%rsi);    ret
FN(rd_mmx)      movq (%rdi), %mm0;     movq %mm0, (%rsi);     emms; ret
FN(rd_x87)      fildq (%rdi);          fistpq (%rsi);         ret   /* exact for every 64-bit integer */
FN(rd_avx)      vmovdqu (%rdi), %ymm0; vmovdqu %ymm0, (%rsi); vzeroupper; ret /* AVX only */

/* void rd_rep_movsb(void *dst, const void *src, uint64_t n), rd_rep_movsq (n quadwords) */
FN(rd_rep_movsb) mov %rdx, %rcx; rep movsb; ret
FN(rd_rep_movsq) mov %rdx, %rcx; rep movsq; ret
/* int rd_repe_cmpsb(const void *a, const void *b, uint64_t n): 1 when equal */
FN(rd_repe_cmpsb)
    mov %rdx, %rcx
    xor %eax, %eax
    test %rcx, %rcx
    jz 1f
    mov %rdi, %r8           /* cmpsb compares [rsi] with [rdi] */
    mov %rsi, %rdi
    mov %r8, %rsi
    repe cmpsb
    jne 2f
1:  mov $1, %eax
2:  ret
/* uint64_t rd_lodsq(const void *src) */
FN(rd_lodsq) mov %rdi, %rsi; lodsq; ret
/* uint64_t rd_scasb(const void *p, uint8_t byte, uint64_t n): index of byte + 1, 0 if absent */
FN(rd_scasb)
    mov %esi, %eax
    mov %rdx, %rcx
    mov %rdx, %r8
    repne scasb
    jne 1f
    mov %r8, %rax
    sub %rcx, %rax
    ret
1:  xor %eax, %eax
    ret
/* uint8_t rd_xlat(const void *table, uint8_t index) */
FN(rd_xlat)
    push %rbx
    mov %rdi, %rbx
    movzbl %sil, %eax
    xlat
    movzbl %al, %eax
    pop %rbx
    ret
/* uint64_t rd_cmpxchg(void *p, uint64_t expected, uint64_t desired): the value found */
FN(rd_cmpxchg) mov %rsi, %rax; lock cmpxchg %rdx, (%rdi); ret
/* uint64_t rw_xchg(void *p, uint64_t v): the old value */
FN(rw_xchg) mov %rsi, %rax; xchg %rax, (%rdi); ret
/* void rd_cmpxchg16b(void *p16, void *out16): reads 16 bytes (stores them back) */
FN(rd_cmpxchg16b)
    push %rbx
    mov %rsi, %r8
    xor %eax, %eax
    xor %edx, %edx
    xor %ebx, %ebx
    xor %ecx, %ecx
    not %rax                /* expected ~0:0, rarely there: the found value lands in rdx:rax */
    lock cmpxchg16b (%rdi)
    mov %rax, (%r8)
    mov %rdx, 8(%r8)
    pop %rbx
    ret
/* void wr_movnti(void *p, uint64_t v); void wr_movntdq(void *p16, const void *src16) */
FN(wr_movnti)  movnti %rsi, (%rdi); sfence; ret
FN(wr_movntdq) movdqu (%rsi), %xmm6; movntdq %xmm6, (%rdi); sfence; ret
/* void wr_movdqu(void *dst, const void *src16): store with SSE */
FN(wr_movdqu)  movdqu (%rsi), %xmm7; movdqu %xmm7, (%rdi); ret
/* void wr_fistp(void *dst, const void *src8): store with x87 */
FN(wr_fistp)   fildq (%rsi); fistpq (%rdi); ret

/* The guest's own traps outside hooked pages: INT $3 (CD 03), INT1/ICEBP
 * (F1, #DB), INTO (CE: #UD in 64-bit mode). Each returns right after. */
FN(trap_int3_cd03) .byte 0xcd, 0x03; ret
FN(trap_icebp)     .byte 0xf1; ret
FN(trap_into)      .byte 0xce; ret

    .section .note.GNU-stack, "", @progbits
