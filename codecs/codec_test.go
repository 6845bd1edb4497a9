package codecs

import "testing"

func TestErrorKindText(t *testing.T) {
	for kind, want := range map[ErrorKind]string{
		ErrNoRoute:           "no route",
		ErrNoHealthyUpstream: "no healthy upstream",
		ErrTimeout:           "upstream timeout",
		ErrOverloaded:        "overloaded",
		ErrBadRequest:        "bad request",
		ErrInternal:          "internal error",
		ErrorKind(99):        "error(99)",
	} {
		if got := kind.Text(); got != want {
			t.Errorf("%v.Text() = %q, want %q", kind, got, want)
		}
	}
	// Text is for people, String for counters: they must not be confused.
	if ErrNoHealthyUpstream.Text() == ErrNoHealthyUpstream.String() {
		t.Error("Text and String give the same text")
	}
}
