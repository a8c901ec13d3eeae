package rpc

import (
	"fmt"
	"log/slog"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"google.golang.org/protobuf/proto"
)

// Iterative dumps and page servers over RPC, as criu's cr-service.c:
// PRE_DUMP answers each pre-dump and reads the next request on the same
// connection, another PRE_DUMP or the final DUMP (any other is "Bad req
// seq"); SINGLE_PRE_DUMP is one pre-dump; PAGE_SERVER (a daemon) and
// PAGE_SERVER_CHLD start a page server and answer with its pid and port.
// A pre-dump sends no notification (criu runs no action script there).

// MemRequest is what criu_opts says about iterations and page servers.
type MemRequest struct {
	TrackMem      bool   // track_mem
	PrevImagesDir string // parent_img
	PageServer    bool   // ps set
	Address       string // ps.address
	Port          int    // ps.port
}

// PageServerRequest is a PAGE_SERVER's criu_opts in stasis' terms.
type PageServerRequest struct {
	ImagesDir, PrevImagesDir string
	Address                  string
	Port                     int
	Daemon                   bool // PAGE_SERVER (else PAGE_SERVER_CHLD)
	Log                      *slog.Logger
}

// memRequest reads the options of iterations from o.
func memRequest(o *rpc.CriuOpts) (MemRequest, error) {
	m := MemRequest{TrackMem: o.GetTrackMem(), PrevImagesDir: o.GetParentImg()}
	if ps := o.GetPs(); ps != nil {
		if ps.Fd != nil {
			return m, fmt.Errorf("rpc: ps.fd (a page server socket of the client): %w", ErrNotImplemented)
		}
		m.PageServer, m.Address, m.Port = true, ps.GetAddress(), int(ps.GetPort())
	}
	return m, nil
}

// memRefused are the options of iterations (memRequest) set on a request
// that has none: a restore (ps there is criu's lazy-pages source).
var memRefused = []option{
	{"ps", func(o *rpc.CriuOpts) bool { return o.Ps != nil }},
	{"parent_img", func(o *rpc.CriuOpts) bool { return o.GetParentImg() != "" }},
	{"track_mem", func(o *rpc.CriuOpts) bool { return o.GetTrackMem() }},
}

// preDumps serves PRE_DUMP (and the requests that follow it on the
// connection) or SINGLE_PRE_DUMP.
func (s *server) preDumps(req *rpc.CriuReq) error {
	single := req.GetType() == rpc.CriuReqType_SINGLE_PRE_DUMP
	for {
		if err := s.reply(s.preDump(req.GetOpts(), req.GetType())); err != nil || single {
			return err
		}
		next, err := s.c.recv()
		if err != nil {
			return fmt.Errorf("rpc: after PRE_DUMP: %w", err)
		}
		switch next.GetType() {
		case rpc.CriuReqType_PRE_DUMP:
			req = next
			continue
		case rpc.CriuReqType_DUMP:
			return s.reply(s.dump(next.GetOpts()))
		}
		err = fmt.Errorf("rpc: %v after PRE_DUMP: Bad req seq (PRE_DUMP or DUMP): %w", next.GetType(), ErrBadRequest)
		if rerr := s.c.send(failure(rpc.CriuReqType_EMPTY, err)); rerr != nil {
			return rerr
		}
		return err
	}
}

// preDump runs one pre-dump.
func (s *server) preDump(o *rpc.CriuOpts, t rpc.CriuReqType) *rpc.CriuResp {
	fail := func(err error) *rpc.CriuResp { return failure(t, err) }
	if s.b.PreDump == nil {
		return unsupported(t)
	}
	if o == nil || o.GetPid() == 0 {
		return fail(fmt.Errorf("rpc: %v without a pid: %w", t, ErrBadRequest))
	}
	if err := configure(o); err != nil {
		return fail(err)
	}
	if err := refuse(t.String(), o, dumpRefused); err != nil {
		return fail(err)
	}
	mem, err := memRequest(o)
	if err != nil {
		return fail(err)
	}
	d, err := openDirs(s.c.peer, o)
	if err != nil {
		return fail(err)
	}
	defer d.close()
	logRequest(d.log, t.String(), o)
	r := DumpRequest{Pid: int(o.GetPid()), ImagesDir: d.images, WorkDir: d.work, Log: d.log, Mem: mem, Unprivileged: o.GetUnprivileged()}
	d.log.Info("rpc pre-dump", "client", s.c.peer, "pid", r.Pid, "images", r.ImagesDir, "parent", mem.PrevImagesDir)
	if err := s.b.PreDump(s.ctx, r); err != nil {
		d.log.Error("pre-dump failed", "err", err)
		return fail(err)
	}
	return success(t)
}

// pageServer serves PAGE_SERVER and PAGE_SERVER_CHLD: the page server
// runs in a process of its own, the reply carries its pid and port.
func (s *server) pageServer(req *rpc.CriuReq) *rpc.CriuResp {
	t := rpc.CriuReqType_PAGE_SERVER
	fail := func(err error) *rpc.CriuResp { return failure(t, err) }
	o := req.GetOpts()
	if s.b.PageServer == nil {
		return unsupported(req.GetType())
	}
	if o == nil {
		return fail(fmt.Errorf("rpc: PAGE_SERVER without options: %w", ErrBadRequest))
	}
	d, err := openDirs(s.c.peer, o)
	if err != nil {
		return fail(err)
	}
	defer d.close()
	r := PageServerRequest{ImagesDir: d.images, PrevImagesDir: o.GetParentImg(), Log: d.log,
		Daemon: req.GetType() == rpc.CriuReqType_PAGE_SERVER}
	if ps := o.GetPs(); ps != nil {
		r.Address, r.Port = ps.GetAddress(), int(ps.GetPort())
	}
	pid, port, err := s.b.PageServer(s.ctx, r)
	if err != nil {
		d.log.Error("page server failed", "err", err)
		return fail(err)
	}
	resp := success(t)
	resp.Ps = &rpc.CriuPageServerInfo{Pid: proto.Int32(int32(pid)), Port: proto.Int32(int32(port))}
	return resp
}
