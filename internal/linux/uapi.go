package linux

// uapi constants and structs missing from golang.org/x/sys/unix v0.50.0,
// one definition each, citing the header. A constant that unix has is
// used from unix (unix.PR_SET_MM_MAP, unix.PTRACE_GETSIGMASK,
// unix.BPF_MAXINSNS, unix.SECCOMP_RET_KILL_PROCESS, ...), never repeated
// here.

// ArchMapVDSO64 is ARCH_MAP_VDSO_64 (arch/x86/include/uapi/asm/prctl.h):
// arch_prctl option that maps the vDSO (and its data pages) at an address.
const ArchMapVDSO64 = 0x2003

// PrctlMMMapSize is sizeof(struct prctl_mm_map) (include/uapi/linux/prctl.h):
// 11 u64 addresses, the auxv pointer, auxv_size and exe_fd.
const PrctlMMMapSize = 11*8 + 8 + 4 + 4 // 104

// MembarrierCmdGetRegistrations is MEMBARRIER_CMD_GET_REGISTRATIONS
// (include/uapi/linux/membarrier.h, Linux 6.3).
const MembarrierCmdGetRegistrations = 1 << 9

// ioctl requests (the _IOW/_IOWR encodings spelled out).
const (
	// TfdIocSetTicks is TFD_IOC_SET_TICKS, _IOW('T', 0, __u64)
	// (include/uapi/linux/timerfd.h); it needs CONFIG_CHECKPOINT_RESTORE.
	TfdIocSetTicks = 0x40085400
	// InotifyIocSetNextWd is INOTIFY_IOC_SETNEXTWD, _IOW('I', 0, __s32)
	// (include/uapi/linux/inotify.h); it needs CONFIG_CHECKPOINT_RESTORE.
	InotifyIocSetNextWd = 0x40044900
	// PagemapScan is PAGEMAP_SCAN, _IOWR('f', 16, struct pm_scan_arg)
	// (include/uapi/linux/fs.h, Linux 6.7).
	PagemapScan = 0xC0606610
	// UffdioAPI is UFFDIO_API, _IOWR(UFFDIO, _UFFDIO_API, struct uffdio_api)
	// (include/uapi/linux/userfaultfd.h).
	UffdioAPI = 0xC018AA3F
)

// PAGEMAP_SCAN page categories (include/uapi/linux/fs.h).
const (
	PageIsWPAllowed = 1 << 0 // PAGE_IS_WPALLOWED
	PageIsWritten   = 1 << 1 // PAGE_IS_WRITTEN
	PageIsFile      = 1 << 2 // PAGE_IS_FILE
	PageIsPresent   = 1 << 3 // PAGE_IS_PRESENT
	PageIsSwapped   = 1 << 4 // PAGE_IS_SWAPPED
	PageIsGuard     = 1 << 8 // PAGE_IS_GUARD (Linux 6.16)
)

// PmScanArg is struct pm_scan_arg (include/uapi/linux/fs.h): 12 u64, 96 bytes.
type PmScanArg struct {
	Size, Flags, Start, End, WalkEnd, Vec, VecLen, MaxPages       uint64
	CategoryInverted, CategoryMask, CategoryAnyofMask, ReturnMask uint64
}

// PageRegion is struct page_region (include/uapi/linux/fs.h).
type PageRegion struct{ Start, End, Categories uint64 }

// Bits of a /proc/PID/pagemap entry (Documentation/admin-guide/mm/pagemap.rst,
// fs/proc/task_mmu.c PM_*).
const (
	PmPresent     = 1 << 63 // PM_PRESENT
	PmSwap        = 1 << 62 // PM_SWAP
	PmFile        = 1 << 61 // PM_FILE: file page or shared anonymous
	PmGuardRegion = 1 << 58 // PM_GUARD_REGION (Linux 6.15)
	PmMMapExcl    = 1 << 56 // PM_MMAP_EXCLUSIVE: mapped by this process only
	PmSoftDirty   = 1 << 55 // PM_SOFT_DIRTY
	PmPFNMask     = 1<<55 - 1
)

// userfaultfd (include/uapi/linux/userfaultfd.h).
const (
	UffdAPI          = 0xAA // UFFD_API
	UffdUserModeOnly = 1    // UFFD_USER_MODE_ONLY, a flag of userfaultfd(2)

	UffdFeatureEventFork     = 1 << 1  // UFFD_FEATURE_EVENT_FORK
	UffdFeatureEventRemap    = 1 << 2  // UFFD_FEATURE_EVENT_REMAP
	UffdFeatureEventRemove   = 1 << 3  // UFFD_FEATURE_EVENT_REMOVE
	UffdFeatureEventUnmap    = 1 << 6  // UFFD_FEATURE_EVENT_UNMAP
	UffdFeatureWPUnpopulated = 1 << 13 // UFFD_FEATURE_WP_UNPOPULATED
	UffdFeatureWPAsync       = 1 << 15 // UFFD_FEATURE_WP_ASYNC
)

// UffdioAPIArg is struct uffdio_api (include/uapi/linux/userfaultfd.h).
type UffdioAPIArg struct{ API, Features, Ioctls uint64 }

// CloneArgs is struct clone_args (include/uapi/linux/sched.h), 88 bytes
// (CLONE_ARGS_SIZE_VER2).
type CloneArgs struct {
	Flags, Pidfd, ChildTID, ParentTID, ExitSignal, Stack, StackSize, TLS uint64
	SetTID, SetTIDSize, Cgroup                                           uint64
}

// TCP states (include/net/tcp_states.h; not uapi, but the values of
// inet_diag's and criu's state fields).
const (
	TCPEstablished = 1  // TCP_ESTABLISHED
	TCPSynSent     = 2  // TCP_SYN_SENT
	TCPSynRecv     = 3  // TCP_SYN_RECV
	TCPFinWait1    = 4  // TCP_FIN_WAIT1
	TCPFinWait2    = 5  // TCP_FIN_WAIT2
	TCPTimeWait    = 6  // TCP_TIME_WAIT
	TCPClose       = 7  // TCP_CLOSE
	TCPCloseWait   = 8  // TCP_CLOSE_WAIT
	TCPLastAck     = 9  // TCP_LAST_ACK
	TCPListen      = 10 // TCP_LISTEN
	TCPClosing     = 11 // TCP_CLOSING
)
