package seal

import (
	"bytes"
	"errors"
	"io"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testData(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewSource(1))
	for i := 0; i < n; i += 4096 {
		if (i/4096)%3 == 0 {
			r.Read(b[i:min(n, i+4096)]) // incompressible pages beside zero ones
		}
	}
	return b
}

var testKey = bytes.Repeat([]byte{7}, 32)

func TestFileRoundTrip(t *testing.T) {
	data := testData(5*ChunkSize + 12345)
	for _, o := range []Options{{Compress: true}, {Key: testKey}, {Compress: true, Key: testKey}} {
		p := filepath.Join(t.TempDir(), "pages-1.img")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		plain, stored, err := SealFile(p, o)
		if err != nil {
			t.Fatal(err)
		}
		if plain != int64(len(data)) || (o.Compress && stored >= plain) {
			t.Errorf("%+v: plain %d stored %d", o, plain, stored)
		}
		f, _ := os.Open(p)
		if !IsSealed(f) {
			t.Fatal("not sealed")
		}
		m, err := OpenFile(f, "pages-1.img", o.Key)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(m)
		if !bytes.Equal(got, data) {
			t.Fatalf("%+v: decoded data differs", o)
		}
		m.Close()
		// The streaming reader reads the same.
		f.Seek(0, 0)
		got, err = io.ReadAll(NewReader(f, "pages-1.img", o.Key))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%+v: stream read: %v", o, err)
		}
		f.Close()
	}
}

func TestTampered(t *testing.T) {
	data := testData(3 * ChunkSize)
	for _, o := range []Options{{Compress: true}, {Compress: true, Key: testKey}} {
		p := filepath.Join(t.TempDir(), "pages-2.img")
		os.WriteFile(p, data, 0o600)
		if _, _, err := SealFile(p, o); err != nil {
			t.Fatal(err)
		}
		sealed, _ := os.ReadFile(p)
		cases := map[string][]byte{
			"flipped":   func() []byte { b := bytes.Clone(sealed); b[len(b)/2] ^= 1; return b }(),
			"truncated": sealed[:len(sealed)-100],
			"cut":       sealed[:len(sealed)/2],
		}
		for name, b := range cases {
			os.WriteFile(p, b, 0o600)
			f, _ := os.Open(p)
			_, err := OpenFile(f, "pages-2.img", o.Key)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "pages-2.img") || !strings.Contains(err.Error(), "offset") {
				t.Errorf("%+v %s: %v, want a corrupt error naming the file and offset", o, name, err)
			}
			f.Seek(0, 0)
			_, err = io.ReadAll(NewReader(f, "pages-2.img", o.Key))
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("%+v %s (stream): %v", o, name, err)
			}
			f.Close()
		}
		// Another name (a file swapped for another) or key fails too.
		if o.Key != nil {
			os.WriteFile(p, sealed, 0o600)
			f, _ := os.Open(p)
			if _, err := OpenFile(f, "pages-3.img", o.Key); !errors.Is(err, ErrCorrupt) {
				t.Errorf("renamed: %v", err)
			}
			if _, err := OpenFile(f, "pages-2.img", bytes.Repeat([]byte{8}, 32)); !errors.Is(err, ErrCorrupt) {
				t.Errorf("wrong key: %v", err)
			}
			if _, err := OpenFile(f, "pages-2.img", nil); !errors.Is(err, ErrNoKey) {
				t.Errorf("no key: %v", err)
			}
			f.Close()
		}
	}
}

func TestConn(t *testing.T) {
	a, b := net.Pipe()
	data := testData(3*ChunkSize + 7)
	done := make(chan error, 1)
	go func() {
		c, err := Client(a, "up", "down", Options{Compress: true, Key: testKey})
		if err != nil {
			done <- err
			return
		}
		if _, err := c.Write(data); err != nil {
			done <- err
			return
		}
		ans := make([]byte, 4)
		if _, err := io.ReadFull(c, ans); err != nil || string(ans) != "done" {
			done <- errors.New("bad answer")
			return
		}
		done <- c.Close()
	}()
	br := newBuf(b)
	if !Detect(br) {
		t.Fatal("not detected")
	}
	s, err := Server(b, br, "up", "down", testKey)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if _, err := io.ReadFull(s, got); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("server read: %v", err)
	}
	if _, err := s.Write([]byte("done")); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestLoadKey(t *testing.T) {
	d := t.TempDir()
	os.WriteFile(d+"/raw", testKey, 0o600)
	os.WriteFile(d+"/hex", []byte(strings.Repeat("07", 32)+"\n"), 0o600)
	os.WriteFile(d+"/bad", []byte("short"), 0o600)
	for _, n := range []string{"raw", "hex"} {
		if k, err := LoadKey(d + "/" + n); err != nil || !bytes.Equal(k, testKey) {
			t.Errorf("%s: %v", n, err)
		}
	}
	if _, err := LoadKey(d + "/bad"); !errors.Is(err, ErrBadKey) {
		t.Errorf("bad: %v", err)
	}
}
