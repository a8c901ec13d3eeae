// Package lazy is post-copy restore (criu's lazy pages, criu/uffd.c):
// a restored task runs before its private anonymous memory has arrived;
// each page comes when the task first touches it (a userfaultfd fault
// answered with UFFDIO_COPY) or when the background transfer gets to it.
//
//	sock.go      the lazy-pages socket (lazy-pages.socket in the work
//	             dir): a pid and a userfaultfd per process, then
//	             "restore finished"; both ends (Conn for the restore)
//	register.go  the restore's side: the userfaultfd made in the task,
//	             its lazy VMAs registered for missing pages, handed over
//	daemon.go    the lazy-pages daemon (Run): faults, fork/mremap/
//	             munmap/MADV_DONTNEED events, the background transfer,
//	             poison of what it could not serve
//	source.go    where the daemon gets pages: a page server (PS_IOV_GET,
//	             pagesrv.LazyClient) or the images dir; the ranges of a
//	             task (pagemap PE_LAZY entries cut at its VMAs)
//	ranges.go    range arithmetic of the pages still missing
//	uffd_unsafe.go  the userfaultfd ioctls and messages
//
// The dump's side (dump --lazy-pages) marks the pages (mem: PE_LAZY) and
// serves them from the frozen tree (internal/dump, pagesrv.ServeLazy).
// The daemon is one goroutine (poll over its file descriptors); Register
// runs on the restore's tracer thread (it injects calls).
package lazy
