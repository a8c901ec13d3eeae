package kerndat

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The rest of criu 4.2's `check --feature` names. Each answers what
// stasis can do on this kernel: a probe where stasis uses the feature,
// "not supported" naming what stasis lacks where it does not (a script
// that gates on the answer must not be told yes and fail later).
func init() {
	for name, why := range notInStasis {
		criuFeatures[name] = lacking(why)
	}
	for name, fn := range criuProbes {
		criuFeatures[name] = fn
	}
}

// notInStasis are criu features stasis has no use for yet: the kernel may
// well have them, stasis cannot do what they are for.
var notInStasis = map[string]string{
	"pidfd_store":       "stasis keeps no pidfd store between pre-dumps (it keeps the tracking's userfaultfds with a holder process)",
	"tun":               "stasis does not dump tun/tap devices yet",
	"tun_ns":            "stasis does not dump tun/tap devices yet",
	"autofs":            "stasis does not dump autofs mounts",
	"compat_cr":         "stasis does not dump 32-bit (compat) tasks",
	"nsid":              "stasis does not dump network namespace ids yet",
	"link_nsid":         "stasis does not dump links into other network namespaces yet",
	"has_ipt_legacy":    "stasis locks the network with nftables only (--network-lock iptables is not implemented)",
	"ns_pid":            "stasis does not read nested pid namespaces through NS_GET_PID yet",
	"apparmor_stacking": "stasis does not restore LSM profiles yet (--lsm-profile)",
	"memfd_hugetlb":     "stasis does not dump hugetlb memfds yet",
	"overlayfs_maps":    "stasis does not resolve mappings of overlayfs files through map_files yet",
	"breakpoints":       "stasis does not restore hardware breakpoints",
}

func lacking(why string) func() (bool, string) {
	return func() (bool, string) { return false, why }
}

// criuProbes are the features stasis uses that its own probes (Probe) do
// not measure: each is tried here, once per call.
var criuProbes = map[string]func() (bool, string){
	"aio_remap":                since("aio ring mremap", 3, 19),
	"mem_dirty_track":          probeMemTrack,
	"uffd":                     all(Userfaultfd), // --lazy-pages, lazy-pages
	"uffd-noncoop":             all(UffdNonCoop), // a lazy restore of trees that fork, mremap, munmap
	"kcmp_epoll":               and(all(Kcmp), since("KCMP_EPOLL_TFD", 4, 13)),
	"tcp_half_closed":          and(tryTCPRepair, since("TCP_REPAIR of half-closed connections", 4, 11)),
	"pagemap_scan_guard_pages": and(all(PagemapScan), since("PAGE_IS_GUARD", 6, 14)),
	"timerfd":                  probeTimerfd,
	"cgroupns":                 probeCgroupNS,
	"fdinfo_lock":              probeFdinfoLock,
	"loginuid":                 probeLoginuid,
	"sk_unix_file":             probeUnixFile,
	"nftables":                 probeNftables,
	"network_lock_nftables":    probeNftables,
	"sockopt_buf_lock":         probeBufLock,
	"openat2":                  probeOpenat2,
	"ipv6_freebind":            probeFreebind,
	"timer_cr_ids":             probeTimerIDs,
	"net_diag_raw":             probeRawDiag,
}

func and(fns ...func() (bool, string)) func() (bool, string) {
	return func() (bool, string) {
		var details []string
		okAll := true
		for _, fn := range fns {
			ok, d := fn()
			okAll = okAll && ok
			details = append(details, d)
		}
		return okAll, strings.Join(details, "; ")
	}
}

// since answers from the kernel's release for what has no cheaper probe.
func since(what string, major, minor int) func() (bool, string) {
	return func() (bool, string) {
		var u unix.Utsname
		if err := unix.Uname(&u); err != nil {
			return false, fmt.Sprintf("%s: uname: %v", what, err)
		}
		rel := unix.ByteSliceToString(u.Release[:])
		parts := strings.SplitN(rel, ".", 3)
		ma, _ := strconv.Atoi(parts[0])
		mi := 0
		if len(parts) > 1 {
			mi, _ = strconv.Atoi(strings.TrimLeftFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
		}
		ok := ma > major || ma == major && mi >= minor
		return ok, fmt.Sprintf("%s: kernel %s (needs %d.%d+)", what, rel, major, minor)
	}
}

func errDetail(what string, err error) (bool, string) {
	if err != nil {
		return false, fmt.Sprintf("%s: %v", what, err)
	}
	return true, what
}

func tryTCPRepair() (bool, string) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return errDetail("TCP_REPAIR", err)
	}
	defer unix.Close(fd)
	return errDetail("TCP_REPAIR", unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, 1))
}

// fdinfoHas says whether /proc/self/fdinfo/FD has a line starting with key.
func fdinfoHas(fd int, key string) (bool, error) {
	b, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(fd))
	if err != nil {
		return false, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, key) {
			return true, nil
		}
	}
	return false, nil
}

func probeTimerfd() (bool, string) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC)
	if err != nil {
		return errDetail("timerfd_create", err)
	}
	defer unix.Close(fd)
	ok, err := fdinfoHas(fd, "it_value:")
	if err != nil || !ok {
		return false, fmt.Sprintf("timerfd fdinfo has no it_value (%v)", err)
	}
	return true, "timerfd fdinfo shows its settings"
}

func probeFdinfoLock() (bool, string) {
	f, err := os.CreateTemp("", "stasis-lock-probe")
	if err != nil {
		return errDetail("fdinfo lock: temporary file", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	fd := int(f.Fd())
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return errDetail("fdinfo lock: flock", err)
	}
	ok, err := fdinfoHas(fd, "lock:")
	if err != nil || !ok {
		return false, fmt.Sprintf("fdinfo shows no lock: line for a flocked file (%v)", err)
	}
	return true, "fdinfo shows file locks"
}

func probeLoginuid() (bool, string) {
	_, err := os.ReadFile("/proc/self/loginuid")
	return errDetail("/proc/self/loginuid", err)
}

// siocUnixFile is SIOCUNIXFILE (SIOCPROTOPRIVATE, linux/un.h; x/sys/unix
// lacks it): it opens the file a unix socket is bound to; an unbound
// socket gives ENOENT where the ioctl exists.
const siocUnixFile = 0x89e0

func probeUnixFile() (bool, string) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return errDetail("SIOCUNIXFILE: socket", err)
	}
	defer unix.Close(fd)
	r, err := unix.IoctlRetInt(fd, siocUnixFile)
	if err == nil {
		unix.Close(r)
		return true, "SIOCUNIXFILE"
	}
	if err == unix.ENOENT {
		return true, "SIOCUNIXFILE (ENOENT on an unbound socket)"
	}
	return errDetail("SIOCUNIXFILE", err)
}

// probeNftables asks nf_tables for its generation (NFT_MSG_GETGEN), as
// stasis' network lock talks to it: a kernel without it answers an error.
func probeNftables() (bool, string) {
	const nftGetGen = 10<<8 | 16 // NFNL_SUBSYS_NFTABLES, NFT_MSG_GETGEN
	err := nlAsk(unix.NETLINK_NETFILTER, nftGetGen, unix.NLM_F_REQUEST, []byte{unix.AF_UNSPEC, 0, 0, 0})
	return errDetail("nf_tables NFT_MSG_GETGEN", err)
}

func probeBufLock() (bool, string) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return errDetail("SO_BUF_LOCK: socket", err)
	}
	defer unix.Close(fd)
	_, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BUF_LOCK)
	return errDetail("SO_BUF_LOCK", err)
}

func probeOpenat2() (bool, string) {
	fd, err := unix.Openat2(unix.AT_FDCWD, "/", &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC})
	if err == nil {
		unix.Close(fd)
	}
	return errDetail("openat2", err)
}

func probeFreebind() (bool, string) {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return errDetail("IPV6_FREEBIND: socket", err)
	}
	defer unix.Close(fd)
	return errDetail("IPV6_FREEBIND", unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1))
}

func probeTimerIDs() (bool, string) {
	_, _, e := unix.Syscall6(unix.SYS_PRCTL, unix.PR_TIMER_CREATE_RESTORE_IDS, unix.PR_TIMER_CREATE_RESTORE_IDS_GET, 0, 0, 0, 0)
	if e != 0 {
		return errDetail("PR_TIMER_CREATE_RESTORE_IDS", e)
	}
	return true, "PR_TIMER_CREATE_RESTORE_IDS"
}

// probeRawDiag asks sock_diag for the raw sockets: a kernel without
// raw_diag answers ENOENT.
func probeRawDiag() (bool, string) {
	req := make([]byte, 56) // inet_diag_req_v2
	req[0] = unix.AF_INET
	req[1] = unix.IPPROTO_RAW
	binary.NativeEndian.PutUint32(req[4:], 0xffffffff) // every state
	const sockDiagByFamily = 20
	return errDetail("raw sock_diag", nlAsk(unix.NETLINK_SOCK_DIAG, sockDiagByFamily, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, req))
}

// nlAsk sends one netlink request and returns the error of its first
// answer, nil if that answer is not an error.
func nlAsk(proto int, typ, flags uint16, payload []byte) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	ne := binary.NativeEndian
	req := make([]byte, unix.SizeofNlMsghdr+len(payload))
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], typ)
	ne.PutUint16(req[6:], flags)
	copy(req[unix.SizeofNlMsghdr:], payload)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	buf := make([]byte, 8192)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	if n >= unix.SizeofNlMsghdr+4 && ne.Uint16(buf[4:]) == unix.NLMSG_ERROR {
		if code := int32(ne.Uint32(buf[16:])); code != 0 {
			return unix.Errno(-code)
		}
	}
	return nil
}

// probeCgroupNS: stasis dumps and restores cgroup namespaces (internal/cgroup).
func probeCgroupNS() (bool, string) {
	if _, err := os.Stat("/proc/self/ns/cgroup"); err != nil {
		return errDetail("cgroup namespaces (/proc/self/ns/cgroup)", err)
	}
	return true, "cgroup namespaces (/proc/self/ns/cgroup)"
}
