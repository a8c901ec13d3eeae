// Package linux holds small syscall wrappers that x/sys/unix lacks and
// that more than one package of stasis needs, each citing its kernel
// header.
package linux
