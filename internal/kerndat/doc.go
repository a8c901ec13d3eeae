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
// Probes reuse the engine's primitives rather than copies of them: the
// ptrace probe seizes a `sleep` child with ptrace.SeizeAndStop and reads
// it with internal/ptrace's requests, on ptrace.RunLocked's tracer thread
// (discarded afterwards, with any tracer state); kcmp is linux.KcmpOrder;
// uapi constants and structs are internal/linux's or x/sys/unix's.
//
// Results are kept between runs in /run/stasis.kdat (cache.go; criu keeps
// /run/criu.kdat): the ptrace probe alone forks and traces a `sleep`, ~10
// ms of a small dump. An entry is used only by the same build (Go build
// ID), kernel boot (boot_id), euid, capabilities and seccomp mode; a file
// that is missing, damaged, foreign or writable by others is ignored and
// rewritten (atomically, mode 0600, no fsync). Cheap answers that change
// without a reboot (pid_max, capabilities) are never cached. Probe, which
// `stasis check` runs, always probes and rewrites the file.
//
// Thread rules: the time-namespace probe unshares on a throwaway thread
// (RunLocked's too). Everything else is plain syscalls and safe from any
// goroutine.
//
// Require is what the engine calls at the start of a dump, restore or
// check, with the features it cannot do without (Feature.Required); its
// error names the feature and the kernel that brought it and wraps
// ErrNotSupported, which is linux.ErrNotSupported. Fake stands in a
// feature set for tests.
//
// CRIUFeature answers criu 4.2's `check --feature NAME` for every one of
// its names: criu.go maps names onto Probe's features, criu_features.go
// holds the small probes for features stasis uses that Probe does not
// measure, and the names of criu features stasis has no use for yet, which
// are "not supported" whatever the kernel (a script told yes would fail
// later).
package kerndat
