package seal

import "errors"

var (
	// ErrCorrupt is wrapped when sealed data fails its checks (CRC, AEAD
	// tag, layout): it was altered or truncated.
	ErrCorrupt = errors.New("sealed data corrupt or tampered with")
	// ErrNoKey: the data is encrypted and no key was given.
	ErrNoKey = errors.New("encrypted, and no key given (--key-file)")
	// ErrBadKey: a key file that is not 32 bytes (raw, or 64 hex digits).
	ErrBadKey = errors.New("key file must hold 32 bytes, raw or as 64 hex digits")
)
