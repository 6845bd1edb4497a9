package controller

import (
	"fmt"
	"hash/fnv"
	"strings"
	"testing"
)

// TestPortCodec: Aeraki's port naming and appProtocol, as the controller
// reads them.
func TestPortCodec(t *testing.T) {
	r := codecResolver{
		known:        func(c string) bool { return c == "dubbo" || c == "thrift" },
		appProtocols: map[string]string{"myrpc": "aeraki.meta_protocol.codec.dubbo", "other": "aeraki.meta_protocol.codec.brpc"},
	}
	for _, tc := range []struct {
		name, appProtocol, want string
		err                     bool
	}{
		{name: "tcp-metaprotocol-dubbo-greeter", want: "dubbo"},
		{name: "tcp-metaprotocol-thrift", want: "thrift"},
		{name: "tcp-metaprotocol-myrpc-x", want: "dubbo"},
		{name: "tcp-metaprotocol-brpc-x", err: true},
		{name: "tcp-metaprotocol-other-x", err: true},
		{name: "tcp-dubbo", want: "dubbo"},
		{name: "tcp-thrift-calc", want: "thrift"},
		{name: "tcp-dubbox", want: ""},
		{name: "http", want: ""},
		{name: "http-admin", appProtocol: "http", want: ""},
		{name: "rpc", appProtocol: "dubbo", want: "dubbo"},
		{name: "rpc", appProtocol: "tcp-metaprotocol-thrift", want: "thrift"},
		{name: "rpc", appProtocol: "tcp-metaprotocol-brpc", err: true},
		{name: "", want: ""},
		// appProtocol first, as istiod reads it.
		{name: "tcp-metaprotocol-dubbo-x", appProtocol: "http", want: ""},
		{name: "tcp-dubbo", appProtocol: "grpc", want: ""},
		{name: "tcp-metaprotocol-dubbo-x", appProtocol: "thrift", want: "thrift"},
		{name: "http-admin", appProtocol: "tcp-metaprotocol-dubbo-admin", want: "dubbo"},
		{name: "tcp-metaprotocol-thrift", appProtocol: "tcp-metaprotocol-brpc", err: true},
	} {
		got, err := r.codec(tc.name, tc.appProtocol)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("port %q appProtocol %q: codec %q, error %v; want %q, error: %t", tc.name, tc.appProtocol, got, err, tc.want, tc.err)
		}
	}
}

// TestOverriddenName: a name asking for MetaProtocol under an appProtocol
// that makes the port something else is flagged; agreeing or absent
// appProtocols are not.
func TestOverriddenName(t *testing.T) {
	r := codecResolver{known: func(c string) bool { return c == "dubbo" || c == "thrift" }}
	for _, tc := range []struct {
		name, appProtocol string
		want              bool
	}{
		{"tcp-metaprotocol-dubbo-x", "http", true},
		{"tcp-thrift", "grpc", true},
		{"tcp-metaprotocol-dubbo-x", "", false},
		{"tcp-metaprotocol-dubbo-x", "dubbo", false},
		{"tcp-metaprotocol-dubbo-x", "thrift", false},
		{"http-web", "http", false},
		{"rpc", "tcp-metaprotocol-brpc", false},
	} {
		if got := r.overriddenName(tc.name, tc.appProtocol); got != tc.want {
			t.Errorf("port %q appProtocol %q: overridden %t, want %t", tc.name, tc.appProtocol, got, tc.want)
		}
	}
}

// TestServiceEntryPortCodec: a ServiceEntry port is Breeze's by its name
// only while its protocol is TCP or unset (Istio builds its listener from
// the protocol).
func TestServiceEntryPortCodec(t *testing.T) {
	r := codecResolver{known: func(c string) bool { return c == "dubbo" || c == "thrift" }}
	for _, tc := range []struct {
		name, protocol, want string
		overridden, err      bool
	}{
		{name: "tcp-metaprotocol-dubbo-x", protocol: "TCP", want: "dubbo"},
		{name: "tcp-metaprotocol-dubbo-x", protocol: "tcp", want: "dubbo"},
		{name: "tcp-thrift", protocol: "", want: "thrift"},
		{name: "tcp-metaprotocol-dubbo-x", protocol: "HTTP", overridden: true},
		{name: "http-web", protocol: "HTTP"},
		{name: "tcp-metaprotocol-brpc", protocol: "TCP", err: true},
	} {
		got, overridden, err := r.serviceEntryPortCodec(tc.name, tc.protocol)
		if got != tc.want || overridden != tc.overridden || (err != nil) != tc.err {
			t.Errorf("port %q protocol %q: codec %q, overridden %t, error %v; want %q, %t, error: %t", tc.name, tc.protocol, got, overridden, err, tc.want, tc.overridden, tc.err)
		}
	}
}

// TestFilterPrefix: a ServiceEntry name that is not a DNS label of at most
// 40 characters (a registry's, after a Java interface) becomes one, a long
// one with a hash that keeps two long names apart.
func TestFilterPrefix(t *testing.T) {
	long := "dubbo-org.apache.dubbo.samples.api.greetingsservice-20880"
	for _, tc := range []struct{ in, want string }{
		{"greeter-20880", "greeter-20880"},
		{"dubbo-org.breeze.greeter-20880", "dubbo-org-breeze-greeter-20880"},
		{"dubbo-org.breeze.outer-inner-20880", "dubbo-org-breeze-outer-inner-20880"},
		{long, "dubbo-org-apache-dubbo-samples-" + fmt.Sprintf("%08x", fnv32(long))},
	} {
		got := filterPrefix(tc.in)
		if got != tc.want || len(got) > 40 {
			t.Errorf("filterPrefix(%q) = %q (%d characters), want %q", tc.in, got, len(got), tc.want)
		}
	}
	if a, b := filterPrefix(long), filterPrefix(strings.Replace(long, "greetings", "farewells", 1)); a == b {
		t.Errorf("two long names share the prefix %q", a)
	}
}

func fnv32(s string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return h.Sum32()
}
