// Context switch for x86_64 System V.
//   void gmp_ctx_switch(void **save_sp /* rdi */, void *new_sp /* rsi */)
// Saves the callee-saved registers, MXCSR and the x87 control word on the
// current stack, stores rsp in *save_sp, loads new_sp and restores the same
// frame from there.
#if defined(__x86_64__)
    .text
    .globl gmp_ctx_switch
    .type gmp_ctx_switch,@function
    .p2align 4
gmp_ctx_switch:
    .cfi_startproc
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $16, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $16, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .cfi_endproc
    .size gmp_ctx_switch, .-gmp_ctx_switch

// First code run on a new stack: entry (r13) with arg (r12). Never returns.
    .globl gmp_ctx_trampoline
    .type gmp_ctx_trampoline,@function
    .p2align 4
gmp_ctx_trampoline:
    .cfi_startproc
    .cfi_undefined rip
    movq %r12, %rdi
    callq *%r13
    ud2
    .cfi_endproc
    .size gmp_ctx_trampoline, .-gmp_ctx_trampoline

    .section .note.GNU-stack,"",@progbits
#endif
