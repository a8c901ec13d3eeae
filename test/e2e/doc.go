// Package e2e holds the end-to-end tests of stasis: real processes (the C
// victims of test/victims and ordinary programs) are dumped and restored by
// the stasis binary, built once per run, and then check from the inside that
// nothing was lost. They need root; see internal/testutil for the helpers.
//
// Run them with: go test ./test/e2e/ -v (or -run TestName).
package e2e
