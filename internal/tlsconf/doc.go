// Package tlsconf builds the TLS configurations of criu's --tls options
// (--tls-cacert, --tls-cacrl, --tls-cert, --tls-key, --tls-no-cn-verify)
// for the page server and the dump (and stasis migrate's tcp:// stream):
// mutual X.509 authentication against one CA, as criu's GnuTLS code
// does, so that a stasis end talks TLS to a criu 4.2 end.
//
//	tlsconf.go  Options, Client, Server, the peer check (chain, CRL,
//	            common name)
package tlsconf
