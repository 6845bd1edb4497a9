package controller

import "testing"

// A reconcile that panics returns the panic as its error (retried with
// backoff) instead of taking the controller down.
func TestPanicAsError(t *testing.T) {
	reconcile := func() (err error) {
		defer panicAsError(&err)
		panic("boom")
	}
	if err := reconcile(); err == nil || err.Error() != "panic: boom" {
		t.Errorf("a reconcile that panicked with %q returned %v, want the error %q", "boom", err, "panic: boom")
	}
}
