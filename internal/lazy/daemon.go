package lazy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/mem"
)

// The lazy-pages daemon (criu lazy-pages): it takes the userfaultfds of
// a lazy restore's processes, fills the pages they fault on at once
// (UFFDIO_COPY; a page the images do not have is the zero page), and,
// once the restore says it is finished, copies the rest in the
// background, a growing run at a time, yielding to faults between runs.
// It follows the tasks' fork (the child's userfaultfd comes in the
// event), mremap, munmap and MADV_DONTNEED, and exits once every page
// has been copied (or its task has exited). One goroutine does it all,
// with poll(2) over the userfaultfds and the restore's socket.

// Options are those of `lazy-pages`.
type Options struct {
	ImagesDir string
	WorkDir   string // where lazy-pages.socket is (default ImagesDir)
	// PageServer (host:port) is the page server to ask for the pages
	// (--page-server --address --port); "" reads them from ImagesDir.
	PageServer string
	Log        *slog.Logger
	// Ready is called once the socket listens (criu's status-fd).
	Ready func() error
}

// Stats are the figures of a daemon's run.
type Stats struct {
	Tasks         int
	Pages         uint64 // lazy pages of the images
	Faults        uint64 // page faults served
	FaultPages    uint64 // pages copied for faults
	ZeroPages     uint64 // faults on pages the images do not have
	Background    uint64 // pages copied by the background transfer
	Forks         int
	Started, Done time.Time
	Finished      time.Time // the restore said it was finished
	// FirstFault is the first fault once the tasks run (the restore said
	// it was finished), InAtFirstFault how many pages had been copied
	// then: fewer than Pages, a task ran before its memory had arrived.
	FirstFault     time.Time
	InAtFirstFault uint64
}

// iov is a range of a task's memory still to be filled: [start, end) in
// the task now, img where it was at dump time (the page server's and the
// pagemap's address).
type iov struct{ start, end, img uint64 }

// task is one userfaultfd: a restored process, or a child it forked.
type task struct {
	pid    int // in the images: the pages are those of this process
	uffd   *os.File
	iovs   []iov // sorted, disjoint
	exited bool
}

type daemon struct {
	opts    Options
	log     *slog.Logger
	dir     *images.Dir
	src     Source
	tasks   []*task
	st      Stats
	buf     []byte
	xferLen uint64 // the next background run, in bytes (criu's update_xfer_len)
	msgs    []byte
}

// Background transfer sizes (criu's DEFAULT_XFER_LEN, MAX_XFER_LEN).
const (
	xferMin = 64 << 10
	xferMax = 4 << 20
)

// Run is `lazy-pages`: it serves one lazy restore and returns once every
// page of its tasks has been copied. On failure (the page server or the
// restore gone) the pages not served are poisoned, so that a task that
// touches one dies of SIGBUS instead of running on with zeroes, and the
// error says how many.
func Run(ctx context.Context, opts Options) (Stats, error) {
	d := &daemon{opts: opts, log: opts.Log, buf: make([]byte, xferMax), xferLen: xferMin, msgs: make([]byte, 64*msgSize)}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if opts.WorkDir == "" {
		opts.WorkDir = opts.ImagesDir
	}
	d.st.Started = time.Now()
	var err error
	if d.dir, err = images.Open(opts.ImagesDir); err != nil {
		return d.st, fmt.Errorf("lazy-pages: %w", err)
	}
	n, err := countTasks(d.dir)
	if err != nil {
		return d.st, fmt.Errorf("lazy-pages: %w", err)
	}
	l, err := listen(opts.WorkDir)
	if err != nil {
		return d.st, err
	}
	defer l.Close()
	if opts.Ready != nil {
		if err := opts.Ready(); err != nil {
			return d.st, err
		}
	}
	d.log.Info("lazy-pages: waiting for the restore", "socket", SocketPath(opts.WorkDir), "processes", n)
	// Accept gives up when ctx is done (a signal).
	stop := context.AfterFunc(ctx, func() { l.Close() })
	c, err := l.AcceptUnix()
	stop()
	if err != nil {
		return d.st, fmt.Errorf("lazy-pages: accept on %s: %w", SocketPath(opts.WorkDir), err)
	}
	cf, err := c.File()
	c.Close()
	if err != nil {
		return d.st, fmt.Errorf("lazy-pages: %w", err)
	}
	defer cf.Close()
	defer func() {
		for _, t := range d.tasks {
			if t.uffd != nil {
				t.uffd.Close()
			}
		}
	}()
	if err := d.receive(int(cf.Fd()), n); err != nil {
		return d.st, d.fail(err)
	}
	if opts.PageServer != "" {
		if d.src, err = NewRemoteSource(opts.PageServer); err != nil {
			return d.st, d.fail(err)
		}
	} else {
		d.src = NewImagesSource(d.dir)
	}
	if err := d.loop(ctx, int(cf.Fd())); err != nil {
		if rs, ok := d.src.(*remoteSource); ok {
			rs.abort()
		} else {
			d.src.Close()
		}
		return d.st, d.fail(err)
	}
	if err := d.src.Close(); err != nil {
		return d.st, fmt.Errorf("lazy-pages: every page was copied, but: %w", err)
	}
	d.st.Done = time.Now()
	d.log.Info("lazy-pages: every page copied", "tasks", d.st.Tasks, "pages", d.st.Pages, "faults", d.st.Faults,
		"fault pages", d.st.FaultPages, "zero pages", d.st.ZeroPages, "background pages", d.st.Background, "took", d.st.Done.Sub(d.st.Started))
	return d.st, nil
}

// countTasks is the number of processes in pstree.img: the restore sends
// one message for each.
func countTasks(dir *images.Dir) (int, error) {
	r, err := dir.NewReader("pstree.img")
	if err != nil {
		return 0, err
	}
	defer r.Close()
	n := 0
	for {
		if err := r.Next(&pstree.PstreeEntry{}); err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			return 0, err
		}
		n++
	}
}

// receive takes the n processes' userfaultfds from the restore.
func (d *daemon) receive(fd, n int) error {
	for i := 0; i < n; i++ {
		pid, uffd, err := recvTask(fd)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = ErrRestoreGone
			}
			return fmt.Errorf("process %d of %d: %w", i+1, n, err)
		}
		if uffd == nil {
			d.log.Debug("lazy-pages: zombie", "pid", pid)
			continue
		}
		if err := unix.SetNonblock(int(uffd.Fd()), true); err != nil {
			uffd.Close()
			return err
		}
		iovs, pages, err := taskRanges(d.dir, pid)
		if err != nil {
			uffd.Close()
			return fmt.Errorf("pid %d: %w", pid, err)
		}
		d.tasks = append(d.tasks, &task{pid: pid, uffd: uffd, iovs: iovs})
		d.st.Tasks++
		d.st.Pages += pages
		d.log.Debug("lazy-pages: process", "pid", pid, "lazy pages", pages, "ranges", len(iovs))
	}
	return nil
}

// loop serves faults and events until every page is in; after the
// restore's "finished", it also copies a background run between polls.
func (d *daemon) loop(ctx context.Context, sock int) error {
	restoring := true
	for {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		fds := make([]unix.PollFd, 0, len(d.tasks)+1)
		var polled []*task
		for _, t := range d.tasks {
			if !t.exited {
				fds = append(fds, unix.PollFd{Fd: int32(t.uffd.Fd()), Events: unix.POLLIN})
				polled = append(polled, t)
			}
		}
		if restoring {
			fds = append(fds, unix.PollFd{Fd: int32(sock), Events: unix.POLLIN})
		}
		next := d.nextBackground()
		if !restoring && next == nil {
			return nil // every page is in
		}
		// While the restore runs, only faults: wait for them (a second
		// at most, to see ctx); then between background runs, a look.
		timeout := 0
		if restoring {
			timeout = 1000
		}
		if _, err := unix.Poll(fds, timeout); err != nil && err != unix.EINTR {
			return fmt.Errorf("poll: %w", err)
		}
		for i, t := range polled {
			if fds[i].Revents == 0 {
				continue
			}
			if err := d.events(t); err != nil {
				return err
			}
		}
		if restoring && fds[len(fds)-1].Revents != 0 {
			if err := d.finished(sock); err != nil {
				return err
			}
			restoring = false
			continue
		}
		if !restoring {
			if t := d.nextBackground(); t != nil {
				if err := d.background(t); err != nil {
					return err
				}
			}
		}
	}
}

// finished reads the restore's last word.
func (d *daemon) finished(sock int) error {
	var b [4]byte
	if err := readFull(sock, b[:]); err != nil {
		return ErrRestoreGone
	}
	if w := le32(b[:]); w != finished {
		return fmt.Errorf("%w: %#x instead of the restore's finished word", ErrProtocol, w)
	}
	d.st.Finished = time.Now()
	d.log.Debug("lazy-pages: restore finished, background transfer", "pages left", d.left())
	return nil
}

// nextBackground is the first task with pages left.
func (d *daemon) nextBackground() *task {
	for _, t := range d.tasks {
		if !t.exited && len(t.iovs) > 0 {
			return t
		}
	}
	return nil
}

func (d *daemon) left() uint64 {
	var n uint64
	for _, t := range d.tasks {
		if !t.exited {
			for _, v := range t.iovs {
				n += (v.end - v.start) / mem.PageSize
			}
		}
	}
	return n
}

// events handles the pending messages of t's userfaultfd.
func (d *daemon) events(t *task) error {
	for !t.exited {
		ms, err := readMsgs(t.uffd, d.msgs)
		if err != nil {
			return fmt.Errorf("userfaultfd of pid %d: %w", t.pid, err)
		}
		if len(ms) == 0 {
			return nil
		}
		for _, m := range ms {
			if err := d.event(t, m); err != nil {
				return err
			}
		}
	}
	return nil
}

func (d *daemon) event(t *task, m msg) error {
	switch m.event {
	case eventPagefault:
		return d.fault(t, m.a&^(mem.PageSize-1))
	case eventFork:
		f := os.NewFile(uintptr(m.a), fmt.Sprintf("userfaultfd of a child of pid %d", t.pid))
		if err := unix.SetNonblock(int(f.Fd()), true); err != nil {
			f.Close()
			return err
		}
		child := &task{pid: t.pid, uffd: f, iovs: append([]iov(nil), t.iovs...)}
		d.tasks = append(d.tasks, child)
		d.st.Forks++
		d.log.Debug("lazy-pages: fork", "pid", t.pid, "pages left", len(child.iovs))
	case eventRemap:
		t.iovs = remapIovs(t.iovs, m.a, m.b, m.c)
	case eventRemove:
		// The range stays mapped: a fault there must be the kernel's
		// own zero page now, not the image's.
		if err := unregister(t.uffd, m.a, m.b); err != nil {
			if errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.ESRCH) {
				d.exit(t)
				return nil
			}
			return fmt.Errorf("userfaultfd of pid %d: unregister %#x-%#x: %w", t.pid, m.a, m.b, err)
		}
		t.iovs = dropIovs(t.iovs, m.a, m.b)
	case eventUnmap:
		t.iovs = dropIovs(t.iovs, m.a, m.b)
	default:
		return fmt.Errorf("userfaultfd of pid %d: %w: event %#x", t.pid, ErrProtocol, m.event)
	}
	return nil
}

func (d *daemon) exit(t *task) {
	d.log.Debug("lazy-pages: task gone", "pid", t.pid, "pages left", len(t.iovs))
	t.exited = true
	t.iovs = nil
}

// fault fills the page at addr of t: from the source if it is one of t's
// lazy pages, the zero page otherwise.
func (d *daemon) fault(t *task, addr uint64) error {
	d.st.Faults++
	if d.st.FirstFault.IsZero() && !d.st.Finished.IsZero() {
		d.st.FirstFault = time.Now()
		d.st.InAtFirstFault = d.st.FaultPages + d.st.Background
		d.log.Info("lazy-pages: first fault of a running task", "pid", t.pid, "address", fmt.Sprintf("%#x", addr),
			"pages in", d.st.InAtFirstFault, "of", d.st.Pages, "after", d.st.FirstFault.Sub(d.st.Finished))
	}
	d.xferLen = xferMin
	k := findIov(t.iovs, addr)
	if k < 0 {
		err := zeroPages(t.uffd, addr, addr+mem.PageSize)
		switch {
		case err == nil:
			d.st.ZeroPages++
		case errors.Is(err, unix.EEXIST):
			_ = wake(t.uffd, addr, addr+mem.PageSize)
		case errors.Is(err, unix.ESRCH), errors.Is(err, unix.ENOSPC):
			d.exit(t)
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.ENOENT):
			// The mapping changes (an event to read) or is gone.
		default:
			return fmt.Errorf("userfaultfd of pid %d: zero page at %#x: %w", t.pid, addr, err)
		}
		return nil
	}
	n, err := d.fill(t, t.iovs[k], addr, mem.PageSize)
	d.st.FaultPages += n
	return err
}

// background copies the next run of t's pages.
func (d *daemon) background(t *task) error {
	v := t.iovs[0]
	n, err := d.fill(t, v, v.start, min(v.end-v.start, d.xferLen))
	d.st.Background += n
	// Doubled (criu adds 64 KiB): 4 MiB runs after six quiet ones.
	d.xferLen = min(d.xferLen*2, xferMax)
	return err
}

// fill copies [at, at+size) of range v into t from the source, and
// returns the pages copied.
func (d *daemon) fill(t *task, v iov, at, size uint64) (uint64, error) {
	buf := d.buf[:size]
	n, err := d.src.Read(t.pid, v.img+(at-v.start), buf)
	if err != nil {
		return 0, fmt.Errorf("pages of pid %d at %#x: %w", t.pid, v.img+(at-v.start), err)
	}
	size = uint64(n) * mem.PageSize
	done, err := copyPages(t.uffd, at, buf[:size])
	pages := uint64(done) / mem.PageSize
	switch {
	case err == nil:
		t.iovs = dropIovs(t.iovs, at, at+size)
	case errors.Is(err, unix.EEXIST):
		// A page there is in already: what came before it, and it, are
		// done; the rest is copied later.
		_ = wake(t.uffd, at, at+size)
		t.iovs = dropIovs(t.iovs, at, at+uint64(done)+mem.PageSize)
	case errors.Is(err, unix.ESRCH), errors.Is(err, unix.ENOSPC):
		d.exit(t)
	case errors.Is(err, unix.EAGAIN):
		// The mapping is changing: the event comes first, then a retry.
		t.iovs = dropIovs(t.iovs, at, at+uint64(done))
	case errors.Is(err, unix.ENOENT):
		t.iovs = dropIovs(t.iovs, at, at+size) // unmapped meanwhile
	default:
		return pages, fmt.Errorf("userfaultfd of pid %d: copy %d pages at %#x: %w", t.pid, n, at, err)
	}
	return pages, nil
}

// fail poisons every page not served, so that no task runs on with a zero
// page where its memory should be, and says so.
func (d *daemon) fail(err error) error {
	var left, poisoned uint64
	var perr error
	for _, t := range d.tasks {
		if t.exited {
			continue
		}
		for _, v := range t.iovs {
			left += (v.end - v.start) / mem.PageSize
			for at := v.start; at < v.end; at += mem.PageSize {
				e := poison(t.uffd, at, at+mem.PageSize)
				switch {
				case e == nil:
					poisoned++
				case errors.Is(e, unix.ESRCH), errors.Is(e, unix.ENOSPC):
					// Gone already (it touched a poisoned page): the
					// rest of its pages are no one's.
					at = v.end
				case !errors.Is(e, unix.EEXIST) && perr == nil:
					perr = fmt.Errorf("poison %#x of pid %d: %w", at, t.pid, e)
				}
			}
		}
	}
	if left == 0 {
		return fmt.Errorf("lazy-pages: %w", err)
	}
	if perr != nil {
		return fmt.Errorf("lazy-pages: %w: %d pages of the restored tasks: %w, and they could not all be poisoned (%v): kill the restored tree", err, left, ErrIncomplete, perr)
	}
	return fmt.Errorf("lazy-pages: %w: %d pages of the restored tasks: %w; they were poisoned: a task that touches one dies of SIGBUS", err, left, ErrIncomplete)
}
