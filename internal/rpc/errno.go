package rpc

import (
	"errors"
	"syscall"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/dump"
	"github.com/stasis-cr/stasis/internal/pstree"
)

// cr_errno as criu 4.2 sets it, compared failure by failure over swrk:
// a request whose options or directories cannot be taken (setup fails
// before the log is open) EBADRQC; a dump of a pid that does not exist or
// of a kernel thread ESRCH; a restore whose pid is taken EEXIST. Other
// failures carry the errno behind them, when there is one, or none (a
// restore from an empty directory: criu sets none either). cr_errmsg is
// stasis' own error, which names what failed and where: criu's is the
// first "Error" line of its log, often unrelated (its rlimit warning).
func errnoOf(err error) syscall.Errno {
	var n syscall.Errno
	switch {
	case errors.Is(err, errSetup):
		return syscall.EBADRQC
	case errors.Is(err, dump.ErrNoProcess), errors.Is(err, dump.ErrKernelThread):
		return syscall.ESRCH
	case errors.Is(err, pstree.ErrPidInUse):
		return syscall.EEXIST
	case errors.As(err, &n):
		return n
	}
	return 0
}

// errSetup marks the failures of a request's setup (configuration files,
// directories, log, refused options): criu's EBADRQC.
var errSetup = errors.New("request setup failed")

// setupError wraps err as a setup failure, with its message unchanged.
type setupError struct{ err error }

func (e setupError) Error() string   { return e.err.Error() }
func (e setupError) Unwrap() []error { return []error{e.err, errSetup} }
func asSetup(err error) error        { return setupError{err} }

// restoreFailed gives a failed RESTORE reply criu's restore{pid: -1}.
func restoreFailed(r *rpc.CriuResp) *rpc.CriuResp {
	r.Restore = &rpc.CriuRestoreResp{Pid: proto.Int32(-1)}
	return r
}
