package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/cgroup"
	"github.com/stasis-cr/stasis/internal/cpuinfo"
	"github.com/stasis-cr/stasis/internal/files"
	"github.com/stasis-cr/stasis/internal/mount"
	"github.com/stasis-cr/stasis/internal/netns"
)

// Backend is what the server calls to do the work: the root package's
// API, which this package cannot import.
type Backend struct {
	Dump    func(ctx context.Context, r DumpRequest) error
	Restore func(ctx context.Context, r RestoreRequest) (pid int, err error)
	// Check says whether this kernel has what stasis needs (criu check).
	Check func() error
	// PreDump and PageServer: predump.go.
	PreDump    func(ctx context.Context, r DumpRequest) error
	PageServer func(ctx context.Context, r PageServerRequest) (pid, port int, err error)
	// DisplayStats prints the stats image a dump or restore left in
	// workDir (display_stats), as criu does on its stdout.
	DisplayStats func(w io.Writer, workDir string, restore bool) error
}

// DumpRequest is a DUMP's criu_opts in stasis' terms.
type DumpRequest struct {
	Pid                        int
	ImagesDir, WorkDir         string
	LeaveRunning, LeaveStopped bool
	ShellJob, Unprivileged     bool
	NetworkLock                string
	Files                      files.DumpOptions
	Net                        netns.Options // net.go
	Log                        *slog.Logger
	Notify                     func(script string, pid int) error
	Mem                        MemRequest         // predump.go
	Cgroups                    cgroup.DumpOptions // container.go
	Mounts                     mount.DumpOptions  // mounts.go
	CPUCap                     cpuinfo.Caps       // cpuinfo.go
	// LazyPages (lazy_pages): the dump serves the private anonymous pages
	// on ps.address:ps.port (Mem) once the images are written.
	LazyPages bool
}

// RestoreRequest is a RESTORE's criu_opts in stasis' terms.
type RestoreRequest struct {
	ImagesDir, WorkDir     string
	ShellJob, Unprivileged bool
	// Sibling (rst_sibling): the root is the client's child, as criu's.
	Sibling     bool
	NetworkLock string
	Files       files.RestoreOptions
	Net         netns.Options // net.go
	Log         *slog.Logger
	Notify      func(script string, pid int) error
	Cgroups     cgroup.RestoreOptions // container.go
	Mounts      mount.RestoreOptions  // mounts.go
	CPUCap      cpuinfo.Caps          // cpuinfo.go
	LazyPages   bool                  // lazy_pages: the lazy-pages daemon fills the memory
}

// ErrFailed is returned by Serve when the request it served failed (its
// reply said so): `criu swrk` then exits 1.
var ErrFailed = errors.New("rpc request failed")

type server struct {
	ctx context.Context
	c   *conn
	b   Backend
	// service: a connection of `service` (the client is not this
	// process' parent), not an inherited swrk socket.
	service bool
}

// Serve serves criu's swrk protocol on f, a SOCK_SEQPACKET socket whose
// peer is the client: one request, or more while the client sets
// keep_open on the types criu keeps the connection open for. It returns
// nil when every request succeeded, an error wrapping ErrFailed when one
// got a failure reply, or another error when the socket itself failed.
func Serve(ctx context.Context, f *os.File, b Backend) error {
	c, err := newConn(f)
	if err != nil {
		return err
	}
	s := &server{ctx: ctx, c: c, b: b, service: os.Getenv(serviceConnEnv) == "1"}
	os.Unsetenv(serviceConnEnv)
	for {
		if err := s.splitForSibling(); err != nil {
			return err
		}
		req, err := c.recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if errors.Is(err, ErrBadRequest) {
				if rerr := c.send(failure(rpc.CriuReqType_EMPTY, err)); rerr != nil {
					return rerr
				}
			}
			return err
		}
		keep, err := s.handle(req)
		if err != nil || !keep {
			return err
		}
	}
}

// handle serves one request and says whether the connection stays open
// for another (keep_open, only where criu honours it).
func (s *server) handle(req *rpc.CriuReq) (keep bool, err error) {
	t := req.GetType()
	keep = req.GetKeepOpen()
	switch t {
	case rpc.CriuReqType_VERSION:
		return keep, s.reply(version())
	case rpc.CriuReqType_FEATURE_CHECK:
		return keep, s.reply(featureCheck(req.GetFeatures()))
	case rpc.CriuReqType_CPUINFO_DUMP, rpc.CriuReqType_CPUINFO_CHECK:
		if err := s.allowed(t); err != nil {
			return false, s.reply(failure(t, err))
		}
		return keep, s.reply(s.cpuinfoReq(t, req.GetOpts()))
	case rpc.CriuReqType_PAGE_SERVER, rpc.CriuReqType_PAGE_SERVER_CHLD:
		if err := s.allowed(t); err != nil {
			return false, s.reply(failure(rpc.CriuReqType_PAGE_SERVER, err))
		}
		return keep, s.reply(s.pageServer(req))
	}
	if err := s.allowed(t); err != nil {
		return false, s.reply(failure(t, err))
	}
	if keep {
		// criu closes without a word: the client sees EOF.
		return false, fmt.Errorf("rpc: keep_open on a %v request: criu honours it only for VERSION, FEATURE_CHECK, CPUINFO and PAGE_SERVER requests: %w", t, ErrBadRequest)
	}
	switch t {
	case rpc.CriuReqType_CHECK:
		return false, s.reply(s.check())
	case rpc.CriuReqType_DUMP:
		return false, s.reply(s.dump(req.GetOpts()))
	case rpc.CriuReqType_RESTORE:
		return false, s.reply(s.restore(req.GetOpts()))
	case rpc.CriuReqType_WAIT_PID:
		// criu exits 0 after a WAIT_PID whatever its reply said.
		return false, s.c.send(waitPid(req))
	case rpc.CriuReqType_PRE_DUMP, rpc.CriuReqType_SINGLE_PRE_DUMP:
		return false, s.preDumps(req)
	}
	// EMPTY, a NOTIFY out of turn, or a number rpc.proto does not have.
	err = fmt.Errorf("rpc: invalid request type %d: %w", int32(t), ErrBadRequest)
	if rerr := s.c.send(failure(rpc.CriuReqType_EMPTY, err)); rerr != nil {
		return false, rerr
	}
	return false, err
}

// allowed refuses the requests that act on processes to a client of
// another uid than the server's, unless it is root: the service socket
// is open to every user (0666, as criu's), and stasis runs as root.
func (s *server) allowed(t rpc.CriuReqType) error {
	switch t {
	case rpc.CriuReqType_VERSION, rpc.CriuReqType_FEATURE_CHECK, rpc.CriuReqType_CHECK:
		return nil
	}
	if s.c.uid == 0 || s.c.uid == os.Geteuid() {
		return nil
	}
	return fmt.Errorf("rpc: %v from pid %d of uid %d: only root or uid %d may ask this server: %w", t, s.c.peer, s.c.uid, os.Geteuid(), os.ErrPermission)
}

// reply sends resp and turns a failure reply into Serve's error.
func (s *server) reply(resp *rpc.CriuResp) error {
	if err := s.c.send(resp); err != nil {
		return err
	}
	if !resp.GetSuccess() {
		return fmt.Errorf("%v: %s: %w", resp.GetType(), resp.GetCrErrmsg(), ErrFailed)
	}
	return nil
}

// maxErrmsg keeps a failure reply within go-criu's 8192-byte read (a
// longer packet is cut and fails to decode there); the log has it all.
const maxErrmsg = 4096

func success(t rpc.CriuReqType) *rpc.CriuResp {
	return &rpc.CriuResp{Type: t.Enum(), Success: proto.Bool(true)}
}

// failure is the reply to a failed request: cr_errmsg is the error (criu:
// its first error line), cr_errno the errno behind it when there is one.
func failure(t rpc.CriuReqType, err error) *rpc.CriuResp {
	msg := err.Error()
	if len(msg) > maxErrmsg {
		msg = msg[:maxErrmsg-3] + "..."
	}
	resp := &rpc.CriuResp{Type: t.Enum(), Success: proto.Bool(false), CrErrmsg: proto.String(msg)}
	if n := errnoOf(err); n != 0 {
		resp.CrErrno = proto.Int32(int32(n))
	}
	return resp
}
