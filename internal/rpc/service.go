package rpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
)

// DefaultAddress is criu's service socket when --address is not given,
// in the current directory.
const DefaultAddress = "criu_service.socket"

// listenFdEnv hands the listening socket of `service --daemon` to the
// daemon, so that the socket exists once the command returns.
const listenFdEnv = "STASIS_SERVICE_LISTEN_FD"

// serviceConnEnv tells the swrk process serving a connection of the
// service that its client is not its parent (rst_sibling is refused).
const serviceConnEnv = "STASIS_SERVICE_CONN"

// ServiceOptions are `criu service`'s.
type ServiceOptions struct {
	Address string // unix socket path; DefaultAddress if ""
	// Daemon: bind, then go on in a detached process (new session,
	// stdio on /dev/null) and return.
	Daemon bool
	// Swrk is the command line that serves one connection, which it finds
	// at fd 3: [stasis, swrk, 3].
	Swrk []string
	Log  *slog.Logger
	// Ready, if set, is called once the socket listens.
	Ready func(address string)
	// PidFile, if set, gets the pid of the serving process (the
	// daemon's with Daemon, written before Service returns), as criu's
	// --pidfile.
	PidFile string
	// DaemonArgs are added to the daemon's command line (its log).
	DaemonArgs []string
}

// Service listens on a SOCK_SEQPACKET unix socket and serves each
// connection as swrk serves its socket, in a process of its own (criu
// forks one per connection): a dump or restore holds ptrace, a
// subreaper and a tracer thread, which a long-lived server must not
// share between clients. The peer of each connection is its client.
// It returns when ctx is done.
func Service(ctx context.Context, o ServiceOptions) error {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Address == "" {
		o.Address = DefaultAddress
	}
	lfd, inherited, err := listener(o.Address)
	if err != nil {
		return err
	}
	if o.Daemon && !inherited {
		return daemonize(lfd, o.Address, o.PidFile, o.DaemonArgs)
	}
	defer unix.Close(lfd)
	if o.PidFile != "" && !inherited {
		if err := writePidFile(o.PidFile, os.Getpid()); err != nil {
			return err
		}
	}
	if o.Ready != nil {
		o.Ready(o.Address)
	}
	go func() {
		<-ctx.Done()
		// Wakes the accept below.
		_ = unix.Shutdown(lfd, unix.SHUT_RDWR)
	}()
	o.Log.Info("rpc service listening", "address", o.Address)
	for {
		cfd, _, err := linux.Accept4(lfd, unix.SOCK_CLOEXEC)
		if errors.Is(err, unix.ECONNABORTED) {
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("rpc service %s: accept: %w", o.Address, err)
		}
		if err := serveConn(cfd, o); err != nil {
			o.Log.Error("rpc service: connection not served", "err", err)
		}
	}
}

// listener binds the service socket, or takes the one a `--daemon`
// parent bound.
func listener(address string) (fd int, inherited bool, err error) {
	if s := os.Getenv(listenFdEnv); s != "" {
		os.Unsetenv(listenFdEnv)
		fd, err := strconv.Atoi(s)
		if err != nil {
			return -1, false, fmt.Errorf("rpc service: %s=%q: %w", listenFdEnv, s, err)
		}
		unix.CloseOnExec(fd)
		return fd, true, nil
	}
	fd, err = unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, false, fmt.Errorf("rpc service: socket: %w", err)
	}
	// A socket file left by an earlier service is replaced, as criu does.
	if st, err := os.Lstat(address); err == nil && st.Mode()&os.ModeSocket != 0 {
		_ = os.Remove(address)
	}
	// The socket file is made 0666 by the bind itself (the chmod below
	// only confirms it): a client that finds it must never see it
	// narrower. Nothing else creates files while the service starts.
	old := unix.Umask(0o111)
	err = unix.Bind(fd, &unix.SockaddrUnix{Name: address})
	unix.Umask(old)
	if err != nil {
		unix.Close(fd)
		return -1, false, fmt.Errorf("rpc service: bind %s: %w", address, err)
	}
	// Anyone may connect, as to criu's; requests that act on processes
	// are refused to other users than root and the server's (server.go).
	if err := os.Chmod(address, 0o666); err != nil {
		unix.Close(fd)
		return -1, false, fmt.Errorf("rpc service: %w", err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		unix.Close(fd)
		return -1, false, fmt.Errorf("rpc service: listen %s: %w", address, err)
	}
	return fd, false, nil
}

// daemonize starts the service again in a new session with the bound
// socket and returns: the caller exits, the daemon serves.
func daemonize(lfd int, address, pidFile string, args []string) error {
	defer unix.Close(lfd)
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("rpc service --daemon: %w", err)
	}
	abs, err := filepath.Abs(address)
	if err != nil {
		return fmt.Errorf("rpc service --daemon: %w", err)
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("rpc service --daemon: %w", err)
	}
	defer null.Close()
	cmd := exec.Command(self, append([]string{"service", "--address", abs}, args...)...)
	cmd.Env = append(os.Environ(), listenFdEnv+"=3")
	cmd.ExtraFiles = []*os.File{os.NewFile(uintptr(lfd), "service-listener")}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, null, null
	cmd.Dir = "/"
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("rpc service --daemon: start: %w", err)
	}
	if pidFile != "" {
		if err := writePidFile(pidFile, cmd.Process.Pid); err != nil {
			_ = cmd.Process.Kill()
			_, _ = cmd.Process.Wait()
			return err
		}
	}
	return cmd.Process.Release()
}

// serveConn serves one connection in a swrk process, reaped when done.
func serveConn(cfd int, o ServiceOptions) error {
	f := os.NewFile(uintptr(cfd), "criu-service-conn")
	defer f.Close()
	if len(o.Swrk) == 0 {
		return errors.New("rpc service: no swrk command to serve a connection with")
	}
	cmd := exec.Command(o.Swrk[0], o.Swrk[1:]...)
	cmd.ExtraFiles = []*os.File{f}
	cmd.Env = append(os.Environ(), serviceConnEnv+"=1")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("rpc service: start %s: %w", o.Swrk[0], err)
	}
	go func() {
		if err := cmd.Wait(); err != nil {
			o.Log.Info("rpc service: request failed", "pid", cmd.Process.Pid, "err", err)
		}
	}()
	return nil
}

// writePidFile writes pid as criu writes its pidfiles: the number alone.
func writePidFile(path string, pid int) error {
	if err := os.WriteFile(path, []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return fmt.Errorf("rpc service --pidfile: %w", err)
	}
	return nil
}
