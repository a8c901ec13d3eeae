package images

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/apparmor"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/autofs"
	binfmt_misc "github.com/checkpoint-restore/go-criu/v8/crit/images/binfmt-misc"
	bpfmap_data "github.com/checkpoint-restore/go-criu/v8/crit/images/bpfmap-data"
	bpfmap_file "github.com/checkpoint-restore/go-criu/v8/crit/images/bpfmap-file"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/cgroup"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/cpuinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/creds"
	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	criu_sa "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-sa"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/eventfd"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/eventpoll"
	ext_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ext-file"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fh"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fifo"
	file_lock "github.com/checkpoint-restore/go-criu/v8/crit/images/file-lock"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fsnotify"
	ghost_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ghost-file"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	ipc_msg "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-msg"
	ipc_sem "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-sem"
	ipc_shm "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-shm"
	ipc_var "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-var"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/memfd"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mnt"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/netdev"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/ns"
	packet_sock "github.com/checkpoint-restore/go-criu/v8/crit/images/packet-sock"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pidfd"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pidns"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pipe"
	pipe_data "github.com/checkpoint-restore/go-criu/v8/crit/images/pipe-data"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"
	remap_file_path "github.com/checkpoint-restore/go-criu/v8/crit/images/remap-file-path"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/rlimit"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/seccomp"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/siginfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/signalfd"
	sk_inet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-inet"
	sk_netlink "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-netlink"
	sk_packet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-packet"
	sk_unix "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-unix"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/stats"
	tcp_stream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timens"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timer"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timerfd"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/tty"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/tun"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/userns"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/utsns"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"github.com/checkpoint-restore/go-criu/v8/magic"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Header magics (criu/include/magic.h).
const (
	imgCommonMagic  = 0x54564319
	imgServiceMagic = 0x55105940
	inventoryMagic  = 0x58313116
)

// extraMagics are magics criu 4.x writes that go-criu's generated table
// (v8.3.0) lacks.
var extraMagics = map[string]uint32{
	"PIDFD": 0x54435556,
	// stasis' own images (stasis.go), unknown to criu.
	"STASIS_MQUEUE": 0x58514d53,
}

// kind describes one image file of criu's image set (criu/image-desc.c).
type kind struct {
	pattern string // file name as in image-desc.c: "core-%u.img"
	magic   string // go-criu magic table name; "" for raw images
	value   uint32 // the type magic, resolved from magic at init
	service bool   // IMG_SERVICE header (stats, irmap-cache)
	// single: criu writes exactly one entry (pb_write_one once per file);
	// decoding insists on it so that a file cut at an entry boundary is
	// still reported as truncated.
	single bool
	// first is the message type of entry 0 when it differs from the rest
	// (pagemap head, ghost-file header); nil otherwise.
	first, rest proto.Message
	// extra says what raw bytes follow an entry; nil if none ever do.
	extra func(m proto.Message, idx int) extraSpec
}

// extraSpec is the raw blob that follows one entry: n bytes, or the rest of
// the file, or msgs nested ipc_msg frames each followed by its text.
type extraSpec struct {
	n    uint64
	rest bool
	msgs uint32
}

func (s extraSpec) none() bool { return s.n == 0 && !s.rest && s.msgs == 0 }

// isRaw reports a raw image: no header, no entries (pages, tarballs, ip dumps).
func (k *kind) isRaw() bool { return k.magic == "" }

// msgType returns the prototype for entry idx.
func (k *kind) msgType(idx int) proto.Message {
	if idx == 0 && k.first != nil {
		return k.first
	}
	return k.rest
}

func (k *kind) newMsg(idx int) proto.Message {
	return k.msgType(idx).ProtoReflect().New().Interface()
}

func roundUp(x, to uint64) uint64 {
	if x > ^uint64(0)-to {
		return ^uint64(0) // saturate: larger than any file, reported as truncated
	}
	return (x + to - 1) / to * to
}

// The extra payload layouts below follow criu's writers and crit's
// readers (pycriu images.py): pipes.c, sk-queue.c, sk-tcp.c, files-reg.c,
// ipc_ns.c, bpfmap.c.

func pipeDataExtra(m proto.Message, _ int) extraSpec {
	return extraSpec{n: uint64(m.(*pipe_data.PipeDataEntry).GetBytes())}
}

func skQueueExtra(m proto.Message, _ int) extraSpec {
	return extraSpec{n: uint64(m.(*sk_packet.SkPacketEntry).GetLength())}
}

func tcpStreamExtra(m proto.Message, _ int) extraSpec {
	e := m.(*tcp_stream.TcpStreamEntry)
	return extraSpec{n: uint64(e.GetInqLen()) + uint64(e.GetOutqLen())}
}

func bpfmapDataExtra(m proto.Message, _ int) extraSpec {
	e := m.(*bpfmap_data.BpfmapDataEntry)
	return extraSpec{n: uint64(e.GetKeysBytes()) + uint64(e.GetValuesBytes())}
}

func ipcShmExtra(m proto.Message, _ int) extraSpec {
	e := m.(*ipc_shm.IpcShmEntry)
	if e.GetInPagemaps() {
		return extraSpec{} // contents are in pagemap-shmem/pages images
	}
	return extraSpec{n: roundUp(e.GetSize(), 4)}
}

func ipcSemExtra(m proto.Message, _ int) extraSpec {
	return extraSpec{n: roundUp(2*uint64(m.(*ipc_sem.IpcSemEntry).GetNsems()), 8)}
}

func ipcMsgExtra(m proto.Message, _ int) extraSpec {
	return extraSpec{msgs: m.(*ipc_msg.IpcMsgEntry).GetQnum()}
}

// ghostExtra: a ghost file is a ghost_file_entry then either its whole
// content (to EOF) or, with chunks set, ghost_chunk_entry+data pairs.
func ghostExtra(m proto.Message, idx int) extraSpec {
	if idx == 0 {
		if m.(*ghost_file.GhostFileEntry).GetChunks() {
			return extraSpec{}
		}
		return extraSpec{rest: true}
	}
	return extraSpec{n: m.(*ghost_file.GhostChunkEntry).GetLen()}
}

var kinds = []*kind{
	{pattern: "inventory.img", magic: "INVENTORY", single: true, rest: &inventory.InventoryEntry{}},
	{pattern: "pstree.img", magic: "PSTREE", rest: &pstree.PstreeEntry{}},
	{pattern: "core-%u.img", magic: "CORE", single: true, rest: &criu_core.CoreEntry{}},
	{pattern: "ids-%u.img", magic: "IDS", single: true, rest: &criu_core.TaskKobjIdsEntry{}},
	{pattern: "mm-%u.img", magic: "MM", single: true, rest: &mm.MmEntry{}},
	{pattern: "pagemap-%u.img", magic: "PAGEMAP", first: &pagemap.PagemapHead{}, rest: &pagemap.PagemapEntry{}},
	{pattern: "pagemap-shmem-%u.img", magic: "PAGEMAP", first: &pagemap.PagemapHead{}, rest: &pagemap.PagemapEntry{}},
	{pattern: "pages-%u.img"},
	{pattern: "fs-%u.img", magic: "FS", single: true, rest: &fs.FsEntry{}},
	{pattern: "files.img", magic: "FILES", rest: &fdinfo.FileEntry{}},
	{pattern: "fdinfo-%u.img", magic: "FDINFO", rest: &fdinfo.FdinfoEntry{}},
	{pattern: "seccomp.img", magic: "SECCOMP", single: true, rest: &seccomp.SeccompEntry{}},
	{pattern: "timens-%u.img", magic: "TIMENS", single: true, rest: &timens.TimensEntry{}},
	{pattern: "stats-dump", magic: "STATS", service: true, single: true, rest: &stats.StatsEntry{}},
	{pattern: "stats-restore", magic: "STATS", service: true, single: true, rest: &stats.StatsEntry{}},
	{pattern: "irmap-cache", magic: "IRMAP_CACHE", service: true, rest: &fh.IrmapCacheEntry{}},

	{pattern: "tty.img", magic: "TTY_FILES", rest: &tty.TtyFileEntry{}},
	{pattern: "tty-info.img", magic: "TTY_INFO", rest: &tty.TtyInfoEntry{}},
	{pattern: "tty-data.img", magic: "TTY_DATA", rest: &tty.TtyDataEntry{}},
	{pattern: "pipes.img", magic: "PIPES", rest: &pipe.PipeEntry{}},
	{pattern: "pipes-data.img", magic: "PIPES_DATA", rest: &pipe_data.PipeDataEntry{}, extra: pipeDataExtra},
	{pattern: "fifo.img", magic: "FIFO", rest: &fifo.FifoEntry{}},
	{pattern: "fifo-data.img", magic: "FIFO_DATA", rest: &pipe_data.PipeDataEntry{}, extra: pipeDataExtra},
	{pattern: "sk-queues.img", magic: "SK_QUEUES", rest: &sk_packet.SkPacketEntry{}, extra: skQueueExtra},
	{pattern: "tcp-stream-%x.img", magic: "TCP_STREAM", single: true, rest: &tcp_stream.TcpStreamEntry{}, extra: tcpStreamExtra},
	{pattern: "ghost-file-%x.img", magic: "GHOST_FILE", first: &ghost_file.GhostFileEntry{}, rest: &ghost_file.GhostChunkEntry{}, extra: ghostExtra},
	{pattern: "remap-fpath.img", magic: "REMAP_FPATH", rest: &remap_file_path.RemapFilePathEntry{}},
	{pattern: "memfd.img", magic: "MEMFD_INODE", rest: &memfd.MemfdInodeEntry{}},
	{pattern: "filelocks.img", magic: "FILE_LOCKS", rest: &file_lock.FileLockEntry{}},
	{pattern: "cgroup.img", magic: "CGROUP", single: true, rest: &cgroup.CgroupEntry{}},
	{pattern: "cpuinfo.img", magic: "CPUINFO", single: true, rest: &cpuinfo.CpuinfoEntry{}},
	{pattern: "apparmor.img", magic: "APPARMOR", single: true, rest: &apparmor.ApparmorEntry{}},
	{pattern: "pidfd.img", magic: "PIDFD", rest: &pidfd.PidfdEntry{}},

	// File kinds that criu 4.x stores in files.img; restore of older
	// images still reads these.
	{pattern: "reg-files.img", magic: "REG_FILES", rest: &regfile.RegFileEntry{}},
	{pattern: "ext-files.img", magic: "EXT_FILES", rest: &ext_file.ExtFileEntry{}},
	{pattern: "ns-files.img", magic: "NS_FILES", rest: &ns.NsFileEntry{}},
	{pattern: "eventfd.img", magic: "EVENTFD_FILE", rest: &eventfd.EventfdFileEntry{}},
	{pattern: "eventpoll.img", magic: "EVENTPOLL_FILE", rest: &eventpoll.EventpollFileEntry{}},
	{pattern: "eventpoll-tfd.img", magic: "EVENTPOLL_TFD", rest: &eventpoll.EventpollTfdEntry{}},
	{pattern: "signalfd.img", magic: "SIGNALFD", rest: &signalfd.SignalfdEntry{}},
	{pattern: "inotify.img", magic: "INOTIFY_FILE", rest: &fsnotify.InotifyFileEntry{}},
	{pattern: "inotify-wd.img", magic: "INOTIFY_WD", rest: &fsnotify.InotifyWdEntry{}},
	{pattern: "fanotify.img", magic: "FANOTIFY_FILE", rest: &fsnotify.FanotifyFileEntry{}},
	{pattern: "fanotify-mark.img", magic: "FANOTIFY_MARK", rest: &fsnotify.FanotifyMarkEntry{}},
	{pattern: "unixsk.img", magic: "UNIXSK", rest: &sk_unix.UnixSkEntry{}},
	{pattern: "inetsk.img", magic: "INETSK", rest: &sk_inet.InetSkEntry{}},
	{pattern: "packetsk.img", magic: "PACKETSK", rest: &packet_sock.PacketSockEntry{}},
	{pattern: "netlinksk.img", magic: "NETLINK_SK", rest: &sk_netlink.NetlinkSkEntry{}},
	{pattern: "tunfile.img", magic: "TUNFILE", rest: &tun.TunfileEntry{}},
	{pattern: "timerfd.img", magic: "TIMERFD", rest: &timerfd.TimerfdEntry{}},
	{pattern: "bpfmap-file.img", magic: "BPFMAP_FILE", rest: &bpfmap_file.BpfmapFileEntry{}},
	{pattern: "bpfmap-data.img", magic: "BPFMAP_DATA", rest: &bpfmap_data.BpfmapDataEntry{}, extra: bpfmapDataExtra},

	// Per-task images of old criu versions (now in core-N.img).
	{pattern: "vmas-%u.img", magic: "VMAS", rest: &vma.VmaEntry{}},
	{pattern: "sigacts-%u.img", magic: "SIGACT", rest: &criu_sa.SaEntry{}},
	{pattern: "itimers-%u.img", magic: "ITIMERS", rest: &timer.ItimerEntry{}},
	{pattern: "posix-timers-%u.img", magic: "POSIX_TIMERS", rest: &timer.PosixTimerEntry{}},
	{pattern: "creds-%u.img", magic: "CREDS", single: true, rest: &creds.CredsEntry{}},
	{pattern: "rlimit-%u.img", magic: "RLIMIT", rest: &rlimit.RlimitEntry{}},
	{pattern: "signal-s-%u.img", magic: "SIGNAL", single: true, rest: &siginfo.SignalQueueEntry{}},
	{pattern: "signal-p-%u.img", magic: "SIGNAL", single: true, rest: &siginfo.SignalQueueEntry{}},

	// Namespaces.
	{pattern: "mountpoints-%u.img", magic: "MNTS", rest: &mnt.MntEntry{}},
	{pattern: "utsns-%u.img", magic: "UTSNS", single: true, rest: &utsns.UtsnsEntry{}},
	{pattern: "ipcns-var-%u.img", magic: "IPC_VAR", single: true, rest: &ipc_var.IpcVarEntry{}},
	{pattern: "ipcns-shm-%u.img", magic: "IPCNS_SHM", rest: &ipc_shm.IpcShmEntry{}, extra: ipcShmExtra},
	{pattern: "ipcns-msg-%u.img", magic: "IPCNS_MSG", rest: &ipc_msg.IpcMsgEntry{}, extra: ipcMsgExtra},
	{pattern: "ipcns-sem-%u.img", magic: "IPCNS_SEM", rest: &ipc_sem.IpcSemEntry{}, extra: ipcSemExtra},
	{pattern: "netns-%u.img", magic: "NETNS", single: true, rest: &netdev.NetnsEntry{}},
	{pattern: "netdev-%u.img", magic: "NETDEV", rest: &netdev.NetDeviceEntry{}},
	{pattern: "userns-%u.img", magic: "USERNS", single: true, rest: &userns.UsernsEntry{}},
	{pattern: "pidns-%u.img", magic: "PIDNS", single: true, rest: &pidns.PidnsEntry{}},
	{pattern: "autofs-%u.img", magic: "AUTOFS", rest: &autofs.AutofsEntry{}},
	{pattern: "binfmt-misc.img", magic: "BINFMT_MISC", rest: &binfmt_misc.BinfmtMiscEntry{}},
	{pattern: "binfmt-misc-%u.img", magic: "BINFMT_MISC", rest: &binfmt_misc.BinfmtMiscEntry{}},
	{pattern: "mqueue-%u.img", magic: "STASIS_MQUEUE", rest: lazyMessage{MqueueEntry.(lazyType)}},

	// Raw images: no header, written by external tools or as-is data.
	{pattern: "ifaddr-%u.img"},
	{pattern: "route-%u.img"},
	{pattern: "route6-%u.img"},
	{pattern: "rule-%u.img"},
	{pattern: "iptables-%u.img"},
	{pattern: "ip6tables-%u.img"},
	{pattern: "nftables-%u.img"},
	{pattern: "netns-ct-%u.img"},
	{pattern: "netns-exp-%u.img"},
	{pattern: "tmpfs-%u.tar.gz"},
	{pattern: "tmpfs-dev-%u.tar.gz"},
	{pattern: "tmpfs-dev-%u.tar.gz.img"}, // criu 4.x
}

// byMagic maps a type magic to the first kind that carries it, for decoding
// files whose name says nothing.
var byMagic = map[uint32]*kind{}

// magicNames maps every magic go-criu knows to its name, for error messages.
var magicNames = map[uint32]string{}

func init() {
	table := magic.LoadMagic()
	for v, n := range table.ByValue {
		magicNames[uint32(v)] = n
	}
	for n, v := range extraMagics {
		magicNames[v] = n
	}
	for _, k := range kinds {
		if k.isRaw() {
			continue
		}
		v, ok := table.ByName[k.magic]
		if !ok {
			var v32 uint32
			v32, ok = extraMagics[k.magic]
			v = uint64(v32)
		}
		if !ok || v == 0 || v > 0xffffffff {
			panic(fmt.Sprintf("images: no magic value for %s (%s)", k.magic, k.pattern))
		}
		k.value = uint32(v)
		if _, dup := byMagic[k.value]; !dup {
			byMagic[k.value] = k
		}
	}
}

// lookup finds the kind of an image file by its base name.
func lookup(name string) *kind {
	base := filepath.Base(name)
	for _, k := range kinds {
		if matchPattern(k.pattern, base) {
			return k
		}
	}
	return nil
}

// matchPattern matches name against a printf-style pattern holding at most
// one verb: %u (decimal digits) or %x (hex digits).
func matchPattern(pattern, name string) bool {
	i := strings.IndexByte(pattern, '%')
	if i < 0 {
		return pattern == name
	}
	prefix, verb, suffix := pattern[:i], pattern[i+1], pattern[i+2:]
	if len(name) <= len(prefix)+len(suffix) ||
		!strings.HasPrefix(name, prefix) || !strings.HasSuffix(name, suffix) {
		return false
	}
	for _, c := range name[len(prefix) : len(name)-len(suffix)] {
		switch {
		case c >= '0' && c <= '9':
		case verb == 'x' && (c >= 'a' && c <= 'f'):
		default:
			return false
		}
	}
	return true
}

// IsRaw reports whether name is a raw image (pages-N.img, tmpfs-N.tar.gz,
// ifaddr-N.img, ...): no header and no entries, opened with OpenRaw.
func IsRaw(name string) bool {
	k := lookup(name)
	return k != nil && k.isRaw()
}

// Magic returns the magic name (as crit prints it, "CORE", "PAGEMAP") of
// the image kind the file name denotes, "PAGES" or "RAW" for raw images.
func Magic(name string) (string, error) {
	k := lookup(name)
	switch {
	case k == nil:
		return "", fmt.Errorf("%s: not a criu image name", name)
	case k.isRaw() && strings.HasPrefix(k.pattern, "pages-"):
		return "PAGES", nil
	case k.isRaw():
		return "RAW", nil
	}
	return k.magic, nil
}

func fullName(m proto.Message) protoreflect.FullName {
	return m.ProtoReflect().Descriptor().FullName()
}
