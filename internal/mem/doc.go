// Package mem owns a task's address space: turning /proc/PID/smaps into
// CRIU vma_entry records, finding the pages that must be saved (pagemap),
// copying them into pages-N.img, and on restore mapping every VMA back at
// its address inside the puppet task and filling it from the pages image.
// Dump and restore live side by side because both must agree on which
// pages an image holds.
//
// Page copies use process_vm_readv/writev and need no ptrace stop; mapping
// calls are injected and so run on the tracer thread (see package ptrace).
package mem
