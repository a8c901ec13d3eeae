package restore

import "github.com/stasis-cr/stasis/internal/kerndat"

// Needs are the kernel features a restore cannot do without: the root
// package Requires them before it starts, so that a kernel without one is
// told which before any task is created. Each is marked Required in
// kerndat, which makes `stasis check` say MISSING for it.
var Needs = []string{
	kerndat.CheckpointRestore, // map_files, PR_SET_MM_MAP, set_tid
	kerndat.Clone3SetTID,      // every task with its pid
	kerndat.SetMMMap,          // brk, arg/env, auxv, exe link
	kerndat.MapVDSO,           // the vDSO where the image has it
	kerndat.PidfdGetfd,        // the fd channel to every task
	kerndat.PtraceXstate,      // FPU/SSE/AVX state
}
