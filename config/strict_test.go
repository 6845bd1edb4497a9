package config

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

func jsonValue(t *testing.T, s string) any {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// The options deploy uses: a path prefix, keys as written, and Any
// contents checked against the types Resolve accepts.
func TestDecodeStrictOptions(t *testing.T) {
	resolve := func(u string) (protoreflect.MessageType, error) {
		if strings.HasSuffix(u, "/breeze.v1.Runner") {
			return protoregistry.GlobalTypes.FindMessageByURL(u)
		}
		return nil, errors.New("not allowed")
	}
	o := StrictOptions{Path: "p", KeysAsWritten: true, Resolve: resolve}
	for _, tc := range []struct{ name, in, want string }{
		{"unknown inside Any", `{"@type": "type.googleapis.com/breeze.v1.Runner", "listeners": [{"proxy": {"statPrefix": "x", "codecc": 1}}]}`,
			`p.listeners[0].proxy.codecc: unknown field (breeze.v1.ProxyConfig has no field "codecc")`},
		{"rejected type", `{"@type": "type.googleapis.com/breeze.v1.Listener"}`, `p.@type: not allowed`},
		{"no type", `{"listeners": []}`, `p.@type: required: an Any names its type`},
		{"bad value inside Any", `{"@type": "type.googleapis.com/breeze.v1.Runner", "adminAddress": 5}`, `p.adminAddress: `},
		{"not an object", `[1]`, `p: want an object (google.protobuf.Any), got a list`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := DecodeStrict(jsonValue(t, tc.in), &anypb.Any{}, o)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}

	// Without options, paths use proto names and Any is protojson's.
	r := &breezev1.Runner{}
	err := DecodeStrict(jsonValue(t, `{"adminAddress": 5}`), r, StrictOptions{})
	if err == nil || !strings.HasPrefix(err.Error(), "admin_address: ") {
		t.Fatalf("got %v", err)
	}
	if err := DecodeStrict(jsonValue(t, `{"adminAddress": "127.0.0.1:1"}`), r, StrictOptions{}); err != nil || r.GetAdminAddress() != "127.0.0.1:1" {
		t.Fatalf("got %v, %v", err, r)
	}
	var fe *FieldError
	if err := DecodeStrict(jsonValue(t, `{"x": 1}`), r, StrictOptions{}); !errors.As(err, &fe) || fe.Path != "x" {
		t.Fatalf("got %v, want a FieldError at x", err)
	}
}
