/*
 * guests/platform/platform_asm.S — interrupt entry stubs: each pushes its
 * vector and calls irq_dispatch(vector) with the caller-saved registers
 * preserved, then iretq.
 */
    .text
    .macro IRQ_STUB vec
    .globl irq_stub_\vec
irq_stub_\vec:
    push    %rax
    push    %rcx
    push    %rdx
    push    %rsi
    push    %rdi
    push    %r8
    push    %r9
    push    %r10
    push    %r11
    mov     $\vec, %edi
    call    irq_dispatch
    pop     %r11
    pop     %r10
    pop     %r9
    pop     %r8
    pop     %rdi
    pop     %rsi
    pop     %rdx
    pop     %rcx
    pop     %rax
    iretq
    .endm

    IRQ_STUB 236    /* 0xec: LAPIC timer (Linux's vector) */
    IRQ_STUB 37     /* UART IRQ 4 through IOAPIC pin 4 (as Linux routes it) */
    IRQ_STUB 48     /* HPET timer 0 in legacy mode (IRQ 0, IOAPIC pin 2) */
    .section .note.GNU-stack,"",@progbits
