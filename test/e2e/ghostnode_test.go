package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ghostfile "github.com/checkpoint-restore/go-criu/v8/crit/images/ghost-file"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/testutil"
)

// Unlinked FIFOs, directories and device nodes (ghostnode.c): they travel
// as ghost-file-N.img entries without content, made again at restore
// (mknod, mkdir) and removed once the tasks hold them.

// noNodesLeft fails if the restore left anything in work, which the
// victim emptied before the dump.
func noNodesLeft(t *testing.T, work string) {
	t.Helper()
	ents, _ := os.ReadDir(work)
	for _, e := range ents {
		if e.Name() != "ready" {
			t.Errorf("%s left behind in %s", e.Name(), work)
		}
	}
}

// TestGhostNodes: an unlinked FIFO with 3000 bytes buffered and 3 fds
// (one ghost, data back byte for byte), a removed directory open as an fd,
// a cwd in a removed directory whose parent is gone too, unlinked
// /dev/null and /dev/zero nodes, and a deleted /dev/shm file open and
// mapped come back unlinked, with their mode, owner and data.
func TestGhostNodes(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	work := t.TempDir()
	v := testutil.StartVictim(t, "ghostnode", work)
	v.WaitReady(t)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	if n, _ := imagesSize(t, dir, "ghost-file-*.img"); n != 6 {
		t.Errorf("%d ghost images, want 6 (fifo, dir, cwd, null, zero, shm)", n)
	}
	if _, err := os.Stat(filepath.Join(dir, "remap-fpath.img")); err != nil {
		t.Error(err)
	}
	testutil.CheckImages(t, dir)
	testutil.RestoreDetached(t, dir, v)
	noNodesLeft(t, work)
	v.TermAndCheck(t)
}

// TestGhostNodeBadImage: a ghost entry whose mode is no file that can be
// made again (a socket), or a device ghost without its device number,
// fails the restore with an error naming the ghost image and the offset;
// no task and no ghost (not even the directories made before it) is left,
// and the intact images then restore.
func TestGhostNodeBadImage(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	work := t.TempDir()
	v := testutil.StartVictim(t, "ghostnode", work)
	v.WaitReady(t)
	good := t.TempDir()
	testutil.Dump(t, v.Pid, good)
	v.Reap(t)
	// The ghost of the /dev/zero node, the last fd the victim opened.
	var zero string
	names, _ := filepath.Glob(filepath.Join(good, "ghost-file-*.img"))
	for _, p := range names {
		if ge := readGhost(t, p); ge.GetMode()&unix.S_IFMT == unix.S_IFCHR && unix.Minor(uint64(ge.GetRdev())) == 5 {
			zero = filepath.Base(p)
		}
	}
	if zero == "" {
		t.Fatalf("no ghost image of a character device 1:5 among %v", names)
	}
	for _, c := range []struct {
		name   string
		damage func(ge *ghostfile.GhostFileEntry)
		want   string
	}{
		{"socket-mode", func(ge *ghostfile.GhostFileEntry) { ge.Mode = proto.Uint32(unix.S_IFSOCK | 0o620) }, "mode 0140620"},
		{"no-rdev", func(ge *ghostfile.GhostFileEntry) { ge.Rdev = nil }, "without its device number"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Without the checksums, as criu's images: the decoder must see it.
			dir := copyDir(t, good, isCriuFile)
			p := filepath.Join(dir, zero)
			ge := readGhost(t, p)
			c.damage(ge)
			os.Remove(p)
			d, err := images.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Write(zero, ge); err != nil {
				t.Fatal(err)
			}
			msg := testutil.RestoreFail(t, dir)
			testutil.AssertContains(t, msg, zero, "offset 8", c.want, "fd 45", "/zero")
			testutil.AssertNoTask(t, v.Pid)
			noNodesLeft(t, work)
		})
	}
	testutil.RestoreDetached(t, copyDir(t, good, isCriuFile), v)
	noNodesLeft(t, work)
	v.TermAndCheck(t)
}

func readGhost(t *testing.T, path string) *ghostfile.GhostFileEntry {
	t.Helper()
	d, err := images.Open(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	r, err := d.NewReader(filepath.Base(path))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ge := &ghostfile.GhostFileEntry{}
	if err := r.Next(ge); err != nil {
		t.Fatal(err)
	}
	return ge
}

// bashDeletedCwd is a shell in a deleted build directory, reading its
// input from an unlinked FIFO at fd 3: on SIGUSR1 it writes to OUT.N
// what pwd, $PWD, its /proc cwd link, /bin/pwd (getcwd) and relative
// opens give, and each line it reads goes to OUT.lines.
const bashDeletedCwd = `set -u
work=$1 out=$2
mkdir "$work/build" && cd "$work/build" && rmdir "$work/build" || exit 9
mkfifo "$work/input" && exec 3<>"$work/input" && rm "$work/input" || exit 9
report() {
	{ pwd; echo "PWD=$PWD"; readlink /proc/$$/cwd; /bin/pwd; cat nofile; echo x > newfile
	  readlink /proc/$$/fd/3; } > "$out.$1" 2>&1
}
n=1
trap 'report $n; n=$((n+1))' USR1
echo ready > "$out.ready"
while :; do
	if read -u 3 line; then echo "got $line" >> "$out.lines"; fi
done
`

// TestGhostBashDeletedCwd: bash whose cwd was removed under it and whose
// input is an unlinked FIFO is dumped and restored: pwd still prints what
// bash thinks, everything else about its cwd says what it said before
// the dump ("(deleted)", getcwd failing, ENOENT for relative names), and
// a line written into the FIFO through /proc after the restore is read.
func TestGhostBashDeletedCwd(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	work := t.TempDir()
	out := filepath.Join(t.TempDir(), "out")
	script := filepath.Join(t.TempDir(), "deleted-cwd.sh")
	if err := os.WriteFile(script, []byte(bashDeletedCwd), 0o644); err != nil {
		t.Fatal(err)
	}
	v := testutil.StartProgram(t, program(t, "bash"), script, work, out)
	killForkingTree(t, v)
	testutil.WaitFor(t, 5*time.Second, "bash to be ready", func() bool { return fileExists(out + ".ready") })
	feed := func(line string) {
		t.Helper()
		f, err := os.OpenFile(fmt.Sprintf("/proc/%d/fd/3", v.Pid), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(line + "\n"); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, 5*time.Second, "bash to read "+line, func() bool {
			b, _ := os.ReadFile(out + ".lines")
			return strings.Contains(string(b), "got "+line+"\n")
		})
	}
	report := func(n int) string {
		t.Helper()
		v.Signal(t, unix.SIGUSR1)
		p := fmt.Sprintf("%s.%d", out, n)
		var b []byte
		testutil.WaitFor(t, 5*time.Second, "bash to report to "+p, func() bool {
			b, _ = os.ReadFile(p)
			return strings.Contains(string(b), "(deleted)\n") && strings.Count(string(b), "\n") >= 7
		})
		return string(b)
	}
	feed("before")
	before := report(1)
	build := filepath.Join(work, "build")
	for _, want := range []string{build + "\n", "PWD=" + build + "\n", build + " (deleted)\n", filepath.Join(work, "input") + " (deleted)\n", "nofile: No such file or directory"} {
		if !strings.Contains(before, want) {
			t.Fatalf("before the dump bash reports\n%s\nwithout %q", before, want)
		}
	}
	// Dump while bash waits in read, with no child.
	testutil.WaitFor(t, 5*time.Second, "bash alone", func() bool { return len(testutil.Children(v.Pid)) == 0 })
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	testutil.CheckImages(t, dir)
	testutil.RestoreDetached(t, dir, v)
	noNodesLeft(t, work)
	feed("after")
	if after := report(2); after != before {
		t.Errorf("bash reports after the restore\n%s\nand before the dump\n%s", after, before)
	}
	testutil.AssertRunning(t, v.Pid)
}
