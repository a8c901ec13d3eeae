package main

import (
	"github.com/spf13/pflag"

	"github.com/stasis-cr/stasis"
)

// registerSealFlags gives a command stasis' --compress, --encrypt and
// --key-file (stasis extensions: criu 4.2 reads no sealed image).
func registerSealFlags(f *pflag.FlagSet, o *stasis.SealOptions) {
	f.BoolVar(&o.Compress, "compress", false, "compress the pages images and streams with zstd (a stasis extension: criu cannot read them)")
	f.BoolVar(&o.Encrypt, "encrypt", false, "encrypt the images and streams (XChaCha20-Poly1305) with --key-file (a stasis extension)")
	f.StringVar(&o.KeyFile, "key-file", "", "the key of --encrypt: 32 bytes, raw or as 64 hex digits")
}

// registerTLSFlags gives a command criu's --tls options.
func registerTLSFlags(f *pflag.FlagSet, o *stasis.TLSOptions) {
	f.BoolVar(&o.Enabled, "tls", false, "use TLS to secure the connection (X.509, mutual, as criu)")
	f.StringVar(&o.CACert, "tls-cacert", "", "trust certificates signed only by this CA (default /etc/pki/CA/cacert.pem)")
	f.StringVar(&o.CACRL, "tls-cacrl", "", "the CA's certificate revocation list (default /etc/pki/CA/cacrl.pem, if present)")
	f.StringVar(&o.Cert, "tls-cert", "", "this end's certificate (default /etc/pki/criu/cert.pem)")
	f.StringVar(&o.Key, "tls-key", "", "this end's private key (default /etc/pki/criu/private/key.pem)")
	f.BoolVar(&o.NoCNVerify, "tls-no-cn-verify", false, "do not check that the server's certificate names its address")
}
