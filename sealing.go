package stasis

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/seal"
	"github.com/stasis-cr/stasis/internal/tlsconf"
)

// SealOptions are stasis' --compress and --encrypt --key-file: images
// (and page server and migration streams) compressed with zstd and/or
// encrypted with XChaCha20-Poly1305 (internal/seal). A stasis extension:
// criu 4.2 reads no sealed image, so nothing is sealed unless asked.
type SealOptions struct {
	Compress bool   // --compress: the pages images (and streams)
	Encrypt  bool   // --encrypt: every image but stats (and streams)
	KeyFile  string // --key-file: 32 bytes, raw or 64 hex digits
}

// load reads the key.
func (o SealOptions) load() (seal.Options, error) {
	so := seal.Options{Compress: o.Compress}
	if o.Encrypt && o.KeyFile == "" {
		return so, fmt.Errorf("--encrypt needs --key-file")
	}
	if o.KeyFile != "" {
		k, err := seal.LoadKey(o.KeyFile)
		if err != nil {
			return so, err
		}
		if o.Encrypt {
			so.Key = k
		}
	}
	return so, nil
}

// UseKeyFile makes the images this process reads decrypt with the key in
// path (restore --key-file and the other readers of images).
func UseKeyFile(path string) error {
	k, err := seal.LoadKey(path)
	if err != nil {
		return err
	}
	images.SetKey(k)
	return nil
}

// SealStats are the figures of sealing an images dir.
type SealStats struct {
	Files         int
	Plain, Stored int64
}

// Ratio is plain/stored (1 if nothing was sealed).
func (s SealStats) Ratio() float64 {
	if s.Stored == 0 {
		return 1
	}
	return float64(s.Plain) / float64(s.Stored)
}

// sealDir seals the images of dir a dump has just written: with
// Compress the pages images, with Encrypt every image (stats-dump
// excepted: tools read it) and the raw data images.
func sealDir(dir string, o SealOptions, log *slog.Logger) (SealStats, error) {
	var st SealStats
	so, err := o.load()
	if err != nil || !so.Enabled() {
		return st, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return st, fmt.Errorf("seal images: %w", err)
	}
	for _, e := range ents {
		n := e.Name()
		if !e.Type().IsRegular() || !strings.HasSuffix(n, ".img") || strings.HasPrefix(n, "stats-") {
			continue
		}
		pages := strings.HasPrefix(n, "pages-")
		if !pages && !o.Encrypt {
			continue
		}
		fo := so
		fo.Compress = so.Compress && pages
		p, s, err := seal.SealFile(filepath.Join(dir, n), fo)
		if err != nil {
			return st, fmt.Errorf("seal images: %w", err)
		}
		st.Files++
		st.Plain += p
		st.Stored += s
	}
	if log != nil {
		log.Info("images sealed", "dir", dir, "files", st.Files, "plain", st.Plain, "stored", st.Stored, "ratio", fmt.Sprintf("%.2f", st.Ratio()))
	}
	return st, nil
}

// TLSOptions are criu's --tls options (page server, dump, migrate's
// tcp:// target).
type TLSOptions = tlsconf.Options

// dialTLS connects to addr (host:port), in TLS if o says so.
func dialTLS(addr string, o TLSOptions) (net.Conn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	if !o.Enabled {
		return c, nil
	}
	tc, err := o.Client(c, addr)
	if err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}

// AcceptTLS accepts one connection on l, in TLS if o says so (a page
// server, a migration receiver).
func AcceptTLS(l net.Listener, o TLSOptions) (net.Conn, error) {
	c, err := l.Accept()
	if err != nil {
		return nil, fmt.Errorf("accept: %w", err)
	}
	if !o.Enabled {
		return c, nil
	}
	tc, err := o.Server(c)
	if err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}
