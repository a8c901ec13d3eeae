package dump

import "github.com/stasis-cr/stasis/internal/kerndat"

// Needs are the kernel features a dump (and a preflight) cannot do
// without: the root package Requires them before it starts, so that a
// kernel without one is told which, not left to fail with an errno
// midway. Each is marked Required in kerndat, which makes `stasis check`
// say MISSING for it.
var Needs = []string{
	kerndat.CheckpointRestore, // /proc/PID/map_files of the mappings
	kerndat.PtraceSeize,       // the seize and interrupt of every thread
	kerndat.PtraceXstate,      // FPU/SSE/AVX state
	kerndat.PtraceRseq,        // every thread's rseq registration
	kerndat.PidfdGetfd,        // sockets and other files read through a copy
	kerndat.Kcmp,              // shared open files, fd tables, mm
}
