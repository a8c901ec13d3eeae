package e2e

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// tlsFiles makes a CA and a certificate it signs for 127.0.0.1 (both
// server and client use, as criu's test setups do), and returns criu's
// --tls options naming them.
func tlsFiles(t *testing.T) []string {
	t.Helper()
	d := t.TempDir()
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "stasis test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	caCert, _ := x509.ParseCertificate(caDER)
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(d, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return []string{"--tls", "--tls-cacert", write("cacert.pem", "CERTIFICATE", caDER),
		"--tls-cert", write("cert.pem", "CERTIFICATE", leafDER),
		"--tls-key", write("key.pem", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key))}
}

// TestPageServerTLS: criu's --tls on the page server and the dump, both
// ends stasis (also with the stream compressed and encrypted), and
// interchanged with criu 4.2's page server and dump; a client without
// --tls is refused by a --tls server.
func TestPageServerTLS(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	tlsArgs := tlsFiles(t)
	stasisBin := testutil.StasisBin(t)
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	// one dumps a victim to a page server with TLS and restores it.
	one := func(t *testing.T, server string, dumpWith func(t *testing.T, pid, dir string, port int), srvExtra, restoreExtra []string) {
		v := testutil.StartVictim(t, "track", "16", "50")
		v.WaitReady(t)
		srv, loc := t.TempDir(), t.TempDir()
		ps := startPageServer(t, server, srv, append(append([]string{}, tlsArgs...), srvExtra...)...)
		dumpWith(t, strconv.Itoa(v.Pid), loc, ps.port)
		ps.wait(t)
		v.Reap(t)
		if own, _ := pagesOf(t, srv, v.Pid); own < 4096 {
			t.Fatalf("the page server got %d pages of a 16 MiB victim", own)
		}
		mergeImages(t, loc, srv)
		testutil.RestoreDetached(t, srv, v, restoreExtra...)
		v.TermAndCheck(t)
	}
	stasisDump := func(extra ...string) func(t *testing.T, pid, dir string, port int) {
		return func(t *testing.T, pid, dir string, port int) {
			stasisRun(t, "dump", append(append([]string{"-t", pid, "-D", dir, "--page-server", "--address", "127.0.0.1", "--port", strconv.Itoa(port)}, tlsArgs...), extra...)...)
		}
	}
	t.Run("stasis", func(t *testing.T) { one(t, stasisBin, stasisDump(), nil, nil) })
	t.Run("stasis-sealed", func(t *testing.T) {
		one(t, stasisBin, stasisDump("--compress", "--encrypt", "--key-file", key), []string{"--key-file", key}, []string{"--key-file", key})
	})
	t.Run("no-tls-refused", func(t *testing.T) {
		v := testutil.StartVictim(t, "track", "16", "50")
		v.WaitReady(t)
		ps := startPageServer(t, stasisBin, t.TempDir(), tlsArgs...)
		r := testutil.Run(t, 30*time.Second, "dump", "-t", strconv.Itoa(v.Pid), "-D", t.TempDir(), "--page-server", "--address", "127.0.0.1", "--port", strconv.Itoa(ps.port))
		if r.Code == 0 {
			t.Fatal("a dump without --tls to a --tls page server succeeded")
		}
		testutil.AssertRunning(t, v.Pid)
	})
	criu := testutil.CRIU(t)
	t.Run("stasis-to-criu", func(t *testing.T) { one(t, criu, stasisDump(), nil, nil) })
	t.Run("criu-to-stasis", func(t *testing.T) {
		one(t, stasisBin, func(t *testing.T, pid, dir string, port int) {
			r := testutil.RunCRIU(t, 60*time.Second, dir, append([]string{"dump", "-t", pid, "-D", dir,
				"--page-server", "--address", "127.0.0.1", "--port", strconv.Itoa(port)}, tlsArgs...)...)
			if r.Code != 0 {
				t.Fatalf("criu 4.2 dump --tls to stasis' page server failed: %s\n%s", testutil.CriuErrors(r.Log), r)
			}
		}, nil, nil)
	})
}
