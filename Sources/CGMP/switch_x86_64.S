// Context switch for x86_64 System V.
//   void gmp_ctx_switch(void **save_sp /* rdi */, void *new_sp /* rsi */)
// Saves the callee-saved registers, MXCSR and the x87 control word on the
// current stack, stores rsp in *save_sp, loads new_sp and restores the same
// frame from there. MXCSR's control bits and the x87 control word are
// callee-saved (MXCSR's status flags are not), and nearly every G runs with
// the defaults: they are loaded only when they differ from the ones in
// force, since LDMXCSR and FLDCW are serializing and cost more than the rest
// of the switch.
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
    movl (%rsp), %eax           // the MXCSR and x87 control word in force
    movzwl 4(%rsp), %ecx
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    movl (%rsp), %edx
    xorl %eax, %edx
    testl $0xFFC0, %edx         // control bits (status flags, bits 0-5, are not kept)
    jnz 1f
2:  cmpw 4(%rsp), %cx
    jne 3f
4:  addq $16, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
1:  ldmxcsr (%rsp)
    jmp 2b
3:  fldcw 4(%rsp)
    jmp 4b
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
