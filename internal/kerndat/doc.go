// Package kerndat probes the running kernel for the features stasis needs,
// once per process, and says what would break without each one.
//
// Every probe asks the kernel itself (a syscall, an ioctl, a ptrace request
// on a throwaway child) rather than reading a config file, so the answer
// also covers seccomp profiles, missing capabilities and sysctls. Probes are
// grouped; each group runs at most once (sync.Once), on first use by Probe,
// Require or one of the value getters, so Require of one feature does not
// pay for the others.
//
// Thread rules: the ptrace probe forks a `sleep` child and does every ptrace
// and wait4 call from one goroutine locked to its OS thread, which then exits
// locked so the runtime discards that thread (and any tracer state with it).
// The time-namespace probe unshares on a throwaway locked thread the same
// way. Everything else is plain syscalls and safe from any goroutine.
//
// uapi constants and structs that golang.org/x/sys/unix lacks live in
// uapi.go, each citing its kernel header.
package kerndat
