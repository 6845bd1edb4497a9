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

func TestErrorKindByName(t *testing.T) {
	for k := ErrNoRoute; k <= ErrInternal; k++ {
		if got, ok := ErrorKindByName(k.String()); !ok || got != k {
			t.Errorf("ErrorKindByName(%q) = %v, %v", k.String(), got, ok)
		}
	}
	for _, name := range []string{"", "error(7)", "Overloaded", "no route"} {
		if got, ok := ErrorKindByName(name); ok {
			t.Errorf("ErrorKindByName(%q) = %v, want none", name, got)
		}
	}
}

// plain is a codec that does not say how its requests are named.
type plain struct{}

func (plain) Decode([]byte, *Message) (int, error)          { return 0, nil }
func (plain) Encode(m *Message) ([]byte, error)             { return m.Frame, nil }
func (plain) LocalReply(*Message, ErrorKind, string) []byte { return nil }
func (plain) HeartbeatReply(*Message) []byte                { return nil }

// described names requests by "svc" and "op".
type described struct{ plain }

func (described) RequestKeys() (service, method string) { return "svc", "op" }

// methodOnly has no service key.
type methodOnly struct{ plain }

func (methodOnly) RequestKeys() (service, method string) { return "", "op" }

func TestDescribe(t *testing.T) {
	md := Metadata{{"svc", "Greeter"}, {"op", "Hello"}, {"service", "other"}, {"method", "other"}}
	for _, tc := range []struct {
		name                  string
		c                     Codec
		md                    Metadata
		wantService, wantMeth string
	}{
		{"describer", described{}, md, "Greeter", "Hello"},
		{"keys absent", described{}, Metadata{{"op", "Hello"}}, "", "Hello"},
		{"no metadata", described{}, nil, "", ""},
		{"no service key", methodOnly{}, md, "", "Hello"},
		// No guessing from well-known names for a codec that does not say.
		{"not a describer", plain{}, md, "", ""},
	} {
		s, m := Describe(tc.c, tc.md)
		if s != tc.wantService || m != tc.wantMeth {
			t.Errorf("%s: Describe = %q, %q; want %q, %q", tc.name, s, m, tc.wantService, tc.wantMeth)
		}
	}
}
