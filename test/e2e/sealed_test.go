package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/checksum"
	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestSealedImages (issue 16, test 4): a dump with --compress --encrypt
// writes sealed images (smaller pages); a restore without the key, or of
// an image with a byte flipped, fails naming the file and offset and
// leaves nothing; with the key the victim comes back whole.
func TestSealedImages(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v := testutil.StartVictim(t, "mem", "32")
	v.WaitReady(t)
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, bytes.Repeat([]byte{0x5c}, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir, "--compress", "--encrypt", "--key-file", key)
	v.Reap(t)
	pages, _ := filepath.Glob(filepath.Join(dir, "pages-*.img"))
	if len(pages) == 0 {
		t.Fatal("no pages image")
	}
	b, err := os.ReadFile(pages[0])
	if err != nil || !bytes.HasPrefix(b, []byte("STSEAL01")) {
		t.Fatalf("%s is not sealed (%v)", pages[0], err)
	}
	if inv, _ := os.ReadFile(filepath.Join(dir, "inventory.img")); !bytes.HasPrefix(inv, []byte("STSEAL01")) {
		t.Errorf("inventory.img is not sealed")
	}
	restoreFails := func(d, want string, extra ...string) {
		t.Helper()
		r := testutil.Run(t, 30*time.Second, append([]string{"restore", "-D", d, "-d"}, extra...)...)
		if r.Code == 0 {
			t.Fatalf("restore of %s succeeded, want a failure", d)
		}
		if !strings.Contains(r.Stderr, want) {
			t.Errorf("restore error does not say %q:\n%s", want, r.Stderr)
		}
		testutil.AssertNoTask(t, v.Pid)
	}
	restoreFails(dir, "--key-file")
	// A byte flipped in the pages: the chunk's tag fails.
	bad := t.TempDir()
	if out, err := exec.Command("cp", "-a", dir+"/.", bad).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	p := filepath.Join(bad, filepath.Base(pages[0]))
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	restoreFails(bad, filepath.Base(pages[0])+" at offset", "--key-file", key)
	// The same with the checksums rewritten to match: the seal's tag
	// still refuses it.
	if err := checksum.Write(bad, nil); err != nil {
		t.Fatal(err)
	}
	restoreFails(bad, filepath.Base(pages[0])+": chunk", "--key-file", key)
	testutil.RestoreDetached(t, dir, v, "--key-file", key)
	v.TermAndCheck(t)
}
