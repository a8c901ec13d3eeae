// Package dump checkpoints a process tree into an image directory. Dump
// is an orchestrator that reads as its list of phases; each phase calls
// the package that owns the resource (core, mem, files, images). Any
// failure after the tree is seized puts every task back exactly as it
// was and lets it run.
//
// The whole dump runs on one goroutine locked to its OS thread, the
// tracer thread of package ptrace.
package dump
