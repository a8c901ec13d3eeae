// Package mem owns a task's address space, both ways: what the dump
// reads of it (VMAs from /proc/PID/smaps, the mm entry, present pages
// from pagemap, shared memory objects, AIO rings) and how the restore
// builds it again inside a restored task (unmap what the task inherited,
// map every VMA at its address, fill its pages, make AIO contexts, set
// protections, move the vDSO, PR_SET_MM_MAP). Dump and restore of each
// part live side by side in one file, because both must agree on its
// image entries:
//
//	vma.go      VMAs: Classify (smaps -> vma_entry, a table of mapping
//	            kinds; a packet socket's ring is a socket VMA mapped from
//	            the socket again, its pages not kept) / MapAreas, Protect
//	            (mmap, mprotect, madvise)
//	pages.go    pages: DumpPages, WritePages (pages-N.img, pagemap-PID.img;
//	            PageRuns reads the page map only where PAGEMAP_SCAN finds
//	            pages) / the pagemap reader, PagedAreas, FillPages
//	pagecopy.go how the dump copies pages into pages-N.img: 1 MiB
//	            windows, each read by process_vm_readv into a worker's
//	            cache-sized buffer, summed there and pwritten at its
//	            offset, two workers (copyToFile)
//	pagefill.go how the restore fills a task from pages-N.img: 1 MiB
//	            windows pread into a worker's cache-sized buffer and
//	            written with process_vm_writev, two workers (fillFromFile)
//	mm.go       the mm entry: DumpMM / checkMM, RestoreMM (PR_SET_MM_MAP)
//	vdso.go     the vDSO: SyscallInsn (the dump injects through it, or
//	            through any executable mapping without one) /
//	            restoreVDSO (ARCH_MAP_VDSO_64, same layout checked)
//	parent.go   parent chains (criu dump --prev-images-dir): restore reads
//	            PE_PARENT entries' pages from the "parent" dirs; refuses
//	            lazy-only entries (ResolveParents, fillParents)
//	shmem.go    shared memory objects (MAP_SHARED|MAP_ANONYMOUS, memfd):
//	            DumpShmem, DumpSharedAnon / FillShmem, ShmemObjects
//	sysvshm.go  System V attachments: checked at dump / shmat at restore
//	aio.go      AIO rings: AioRing / restoreAioRings
//	uring.go    io_uring rings (socket VMAs of an io_uring file): MapAreas
//	            places them last, the kernel choosing the address (it
//	            refuses any given one) among placeholders that leave it
//	            only the original (placeUring)
//	guard.go    guard regions (MADV_GUARD_INSTALL): GuardAreas, as
//	            criu's VMA_AREA_GUARD entries after the VMAs / splitGuards
//	            (ReadImage), installGuards
//	space.go    the whole address space at restore: Image and ReadImage
//	            (mm-PID.img, pagemap-PID.img), Restorer.RestoreMemory,
//	            which runs the steps above in order; keepInherited (a
//	            child keeps what it shares with its parent); FreeRange
//	track.go    write tracking between the iterations of a chain
//	            (pre-dump, dump --track-mem): Tracker, userfaultfd
//	            WP_ASYNC + PAGEMAP_SCAN(PAGE_IS_WRITTEN), or soft-dirty
//	trackhold.go the holder process that keeps the trackers' userfaultfds
//	            open between iterations (a socket in the images dir)
//	plan.go     which pages an iteration saves (Plan: written since the
//	            parent, or not in it) and SavePlan into an Xfer
//	xfer.go     ImagesXfer, the Xfer into an images dir (a page server's
//	            is package pagesrv's)
//	lazy.go     lazy pages: which VMAs a lazy restore leaves missing
//	            (LazyVMA, LazyAreas), PE_LAZY in the dump's pagemaps,
//	            WriteLazyPages (a lazy dump), CheckLazy
//	dedup.go    criu dedup: the pages a dump saves punched out of its
//	            parents' pages images
//	scan_unsafe.go  the PAGEMAP_SCAN ioctl (pages.go, guard.go)
//	mmcalls.go  the mm entry's injected calls (dumpable, brk, THP),
//	            asked of many processes at once (AskMM)
//	winbuf.go   the 1 MiB window buffers of the page copy and fill,
//	            kept between runs (fresh memory faults per page here)
//	track_unsafe.go the userfaultfd ioctls and the WP_MATCHING scan
//	errors.go   sentinels
//
// The orchestrators call one entry per phase: the dump Classify and
// SyscallInsn (check), DumpMM (memory layout), WritePages (pages),
// DumpSharedAnon (images); the restore ReadImage (reading the images),
// FreeRange (where its injection page goes, which stays the
// orchestrator's), Restorer.RestoreMemory and Restorer.RestoreMM (per
// task, with the task as a remote.Task).
//
// Page copies use process_vm_readv/writev and need no ptrace stop; the
// calls made inside a task (dump: ptrace.Task.Call; restore:
// remote.Task) are injected and so run on the tracer thread (see package
// ptrace).
package mem
