package kerndat

// uapi constants missing from golang.org/x/sys/unix v0.50.0.

// include/uapi/linux/fs.h
const (
	pagemapScan = 0xC0606610 // PAGEMAP_SCAN = _IOWR('f', 16, struct pm_scan_arg)

	pageIsWPAllowed = 1 << 0 // PAGE_IS_WPALLOWED
	pageIsWritten   = 1 << 1 // PAGE_IS_WRITTEN
	pageIsFile      = 1 << 2 // PAGE_IS_FILE
	pageIsPresent   = 1 << 3 // PAGE_IS_PRESENT
)

// pmScanArg is struct pm_scan_arg (include/uapi/linux/fs.h): 12 u64, 96 bytes.
type pmScanArg struct {
	Size, Flags, Start, End, WalkEnd, Vec, VecLen, MaxPages       uint64
	CategoryInverted, CategoryMask, CategoryAnyofMask, ReturnMask uint64
}

// pageRegion is struct page_region (include/uapi/linux/fs.h).
type pageRegion struct{ Start, End, Categories uint64 }

// include/uapi/linux/userfaultfd.h
const (
	uffdAPIVersion   = 0xAA       // UFFD_API
	uffdioAPI        = 0xC018AA3F // UFFDIO_API = _IOWR(UFFDIO, _UFFDIO_API, struct uffdio_api)
	uffdUserModeOnly = 1          // UFFD_USER_MODE_ONLY

	uffdFeatureEventFork       = 1 << 1  // UFFD_FEATURE_EVENT_FORK
	uffdFeatureEventRemap      = 1 << 2  // UFFD_FEATURE_EVENT_REMAP
	uffdFeatureEventRemove     = 1 << 3  // UFFD_FEATURE_EVENT_REMOVE
	uffdFeatureEventUnmap      = 1 << 6  // UFFD_FEATURE_EVENT_UNMAP
	uffdFeatureWPUnpopulated   = 1 << 13 // UFFD_FEATURE_WP_UNPOPULATED
	uffdFeatureWPAsync         = 1 << 15 // UFFD_FEATURE_WP_ASYNC
	uffdFeaturesNonCooperative = uffdFeatureEventFork | uffdFeatureEventRemap | uffdFeatureEventRemove | uffdFeatureEventUnmap
)

// uffdioAPIArg is struct uffdio_api (include/uapi/linux/userfaultfd.h).
type uffdioAPIArg struct{ API, Features, Ioctls uint64 }

// include/uapi/linux/kcmp.h
const kcmpFile = 0 // KCMP_FILE

// arch/x86/include/uapi/asm/prctl.h
const archMapVDSO64 = 0x2003 // ARCH_MAP_VDSO_64

// cloneArgs is struct clone_args (include/uapi/linux/sched.h), 88 bytes
// (CLONE_ARGS_SIZE_VER2).
type cloneArgs struct {
	Flags, Pidfd, ChildTID, ParentTID, ExitSignal, Stack, StackSize, TLS uint64
	SetTID, SetTIDSize, Cgroup                                           uint64
}

// ptraceRseqConfiguration is struct ptrace_rseq_configuration
// (include/uapi/linux/ptrace.h), 24 bytes.
type ptraceRseqConfiguration struct {
	RseqAbiPointer uint64
	RseqAbiSize    uint32
	Signature      uint32
	Flags          uint32
	Pad            uint32
}

// include/uapi/linux/seccomp.h
const (
	seccompGetActionAvail = 2          // SECCOMP_GET_ACTION_AVAIL
	seccompRetKillProcess = 0x80000000 // SECCOMP_RET_KILL_PROCESS
)

// fs/proc/task_mmu.c: pagemap entry bits.
const (
	pmPresent   = 1 << 63
	pmSoftDirty = 1 << 55
)
