// Package dump checkpoints a process tree into an image directory. Dump
// is an orchestrator that reads as its list of phases (dump.go run):
// seize the tree (tree.go, the freeze), check, ids (ids.go; an fd table
// shared with the parent: sharedfdt.go; fs info: sharedfs.go), task state,
// files, memory layout, pages, images (images.go: the list of images in
// the order they are written), finish. Each phase calls the package that
// owns the resource: core, mem, files, ns, pstree (pstree.img entries,
// killing the dumped tree), stats (stats-dump), images. Any failure after
// the tree is seized puts every task back exactly as it was and lets it
// run.
//
// Iterative dumps (iterate.go): PreDump (criu pre-dump) seizes, checks,
// plans each process's pages and arms the write tracking, resumes the
// tree, then copies; a dump with --track-mem/--prev-images-dir or a page
// server replaces the pages phase by the same plan and copy (mem.Plan,
// mem.SavePlan) with the tree stopped. The trackers go to a holder
// process in the new images dir when the tree runs on.
//
// A lazy dump (lazy.go, --lazy-pages) saves no private anonymous page
// (PE_LAZY entries) and, once the images are complete, serves those pages
// from the frozen tree to a lazy restore's daemon (pagesrv.ServeLazy)
// before the finish; a daemon gone before it has them all fails the dump.
//
// The whole dump runs on one goroutine locked to its OS thread, the
// tracer thread of package ptrace; only reads of /proc that no ptrace
// call needs run beside it (threadproc.go: each thread's stat and status
// while the tracer injects the calls of the threads before it).
// seizeahead.go seizes and interrupts every thread of a process before
// the first wait for a stop, so that the threads' stops overlap (and the
// children of a process once it is stopped). taskstate.go asks the
// injected calls of the task state and memory layout phases of every
// process of a tree at once (askTree), their stops overlapped, before the
// task state phase collects each process; pagesall.go copies the pages of
// two processes at a time on goroutines beside the tracer (no ptrace
// request: process_vm_readv and /proc/PID/mem), the phase's safe point
// taken before each.
package dump
