// Package dump checkpoints a process tree into an image directory. Dump
// is an orchestrator that reads as its list of phases (dump.go run):
// seize the tree (tree.go, the freeze), check, ids (ids.go), task state,
// files, memory layout, pages, images (images.go: the list of images in
// the order they are written), finish. Each phase calls the package that
// owns the resource: core, mem, files, ns, pstree (pstree.img entries,
// killing the dumped tree), stats (stats-dump), images. Any failure after
// the tree is seized puts every task back exactly as it was and lets it
// run.
//
// The whole dump runs on one goroutine locked to its OS thread, the
// tracer thread of package ptrace.
package dump
