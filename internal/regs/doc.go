// Package regs converts a thread's x86_64 register state between the form
// ptrace gives (user_regs_struct and the standard-format XSAVE area of
// NT_X86_XSTATE) and CRIU's image form (thread_info_x86: gpregs and
// fpregs with per-component xsave fields), in both directions.
package regs
