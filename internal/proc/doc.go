// Package proc parses the /proc files that checkpointing reads: maps and
// smaps, stat, status, fdinfo, auxv and mountinfo, plus the task and
// children lists.
//
// The parsers are pure functions over an io.Reader or a []byte, so they are
// tested on captured files in testdata/ and fuzzed; they never panic on
// malformed input, and a malformed file gives a *SyntaxError that wraps
// ErrMalformed and names the file kind and line. The Read* helpers only open
// /proc/<pid>/... and call the parsers; their errors name the path.
//
// Text is kept as the kernel wrote it unless a field's doc says otherwise:
// a maps path keeps its spaces (only a trailing " (deleted)" is moved into
// VMA.Deleted, and the kernel's "\012" escape for a newline is left as is),
// /proc/PID/stat's comm is raw while status's Name is unescaped, and in
// mountinfo the octal escapes (\040 ...) are decoded in Root, MountPoint and
// Source but left in Options and SuperOptions so those stay splittable on
// commas.
//
// Nothing here holds state or locks; every function is safe to call from any
// goroutine. Reading /proc/PID files of another process needs ptrace-read
// access to it for some fields (stat's code/stack/data addresses read as 0
// without it).
package proc
