package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// criu's default paths (criu/include/tls.h).
const (
	DefaultCACert = "/etc/pki/CA/cacert.pem"
	DefaultCACRL  = "/etc/pki/CA/cacrl.pem"
	DefaultCert   = "/etc/pki/criu/cert.pem"
	DefaultKey    = "/etc/pki/criu/private/key.pem"
)

// ErrPeer is wrapped when the other end's certificate is refused.
var ErrPeer = errors.New("TLS peer certificate refused")

// Options are criu's --tls options.
type Options struct {
	Enabled    bool   // --tls
	CACert     string // --tls-cacert (criu's default if "")
	CACRL      string // --tls-cacrl (criu's default, if that file exists)
	Cert       string // --tls-cert
	Key        string // --tls-key
	NoCNVerify bool   // --tls-no-cn-verify: the server's name is not checked
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// config is what both ends share: our certificate, the CA, the CRL.
func (o Options) config() (*tls.Config, *x509.CertPool, *x509.RevocationList, error) {
	cert, err := tls.LoadX509KeyPair(or(o.Cert, DefaultCert), or(o.Key, DefaultKey))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("tls: certificate %s, key %s: %w", or(o.Cert, DefaultCert), or(o.Key, DefaultKey), err)
	}
	ca, err := os.ReadFile(or(o.CACert, DefaultCACert))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("tls: CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, nil, nil, fmt.Errorf("tls: CA certificate %s: no PEM certificate", or(o.CACert, DefaultCACert))
	}
	var crl *x509.RevocationList
	crlPath := or(o.CACRL, DefaultCACRL)
	if b, err := os.ReadFile(crlPath); err == nil {
		if crl, err = parseCRL(b); err != nil {
			return nil, nil, nil, fmt.Errorf("tls: CRL %s: %w", crlPath, err)
		}
	} else if o.CACRL != "" {
		return nil, nil, nil, fmt.Errorf("tls: CRL: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, pool, crl, nil
}

func parseCRL(b []byte) (*x509.RevocationList, error) {
	if blk := pemBlock(b); blk != nil {
		b = blk
	}
	return x509.ParseRevocationList(b)
}

// verify checks the peer's chain against pool and crl, and, if host is
// not "", that the certificate names host (its SANs, else its common
// name, as GnuTLS' check does).
func verify(raw [][]byte, pool *x509.CertPool, crl *x509.RevocationList, host string, usage x509.ExtKeyUsage) error {
	if len(raw) == 0 {
		return fmt.Errorf("%w: none given", ErrPeer)
	}
	certs := make([]*x509.Certificate, len(raw))
	for i, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrPeer, err)
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage, x509.ExtKeyUsageAny}, CurrentTime: time.Now()}); err != nil {
		return fmt.Errorf("%w: %w", ErrPeer, err)
	}
	if crl != nil {
		for _, e := range crl.RevokedCertificateEntries {
			if e.SerialNumber.Cmp(certs[0].SerialNumber) == 0 {
				return fmt.Errorf("%w: serial %s revoked by the CRL", ErrPeer, certs[0].SerialNumber)
			}
		}
	}
	if host != "" {
		if err := certs[0].VerifyHostname(host); err != nil {
			if len(certs[0].DNSNames) > 0 || len(certs[0].IPAddresses) > 0 || certs[0].Subject.CommonName != host {
				return fmt.Errorf("%w: %w (--tls-no-cn-verify to accept it)", ErrPeer, err)
			}
		}
	}
	return nil
}

// Client wraps c, connected to addr (host:port), in TLS: the server's
// certificate must be signed by the CA and, unless NoCNVerify, name the
// host.
func (o Options) Client(c net.Conn, addr string) (net.Conn, error) {
	cfg, pool, crl, err := o.config()
	if err != nil {
		return nil, err
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if o.NoCNVerify {
		host = ""
	}
	cfg.InsecureSkipVerify = true // verified below: criu's rules, the CN too
	cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
		return verify(raw, pool, crl, host, x509.ExtKeyUsageServerAuth)
	}
	tc := tls.Client(c, cfg)
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("tls handshake with %s: %w", addr, err)
	}
	return tc, nil
}

// Server wraps the accepted c in TLS: the client must show a certificate
// signed by the CA (criu's server requires one).
func (o Options) Server(c net.Conn) (net.Conn, error) {
	cfg, pool, crl, err := o.config()
	if err != nil {
		return nil, err
	}
	cfg.ClientAuth = tls.RequireAnyClientCert
	cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
		return verify(raw, pool, crl, "", x509.ExtKeyUsageClientAuth)
	}
	tc := tls.Server(c, cfg)
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("tls handshake with %s: %w", c.RemoteAddr(), err)
	}
	return tc, nil
}
