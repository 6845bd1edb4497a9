package dubbo

import (
	"testing"

	"github.com/breeze-mesh/breeze/codecs"
)

// Clients name the unversioned service differently: Apache Dubbo Java
// writes "0.0.0" in the body and the version attachment, dubbo-go an empty
// body field and an empty attachment. Neither is offered, so that one route
// condition (version present: false) catches "unversioned" from both.
func TestUnversionedFromRealClients(t *testing.T) {
	for _, tc := range []struct{ file, version string }{
		{"real/request_greet_with_attachments.bin", ""}, // dubbo-go, unversioned
		{"real/request_whoami_no_args.bin", ""},
		{"real/request_slow_int_arg.bin", ""},
		{"real/request_whoami_unknown_version.bin", "9.9.9"}, // dubbo-go, versioned
		{"java/request_greet_attachments.bin", ""},           // Apache Dubbo Java 3.3.6
		{"java/request_generic_greet_attachments.bin", ""},
		{"java/request_generic_unrouted.bin", ""},
		{"request.bin", "1.0.0"},
	} {
		m := decode(t, newCodec(t, codecs.Options{}), testdata(t, tc.file))
		v, ok := m.Metadata.Get(keyVersion)
		if tc.version == "" && ok {
			t.Errorf("%s: version offered as %q; an unversioned call offers none", tc.file, v)
		}
		if tc.version != "" && v != tc.version {
			t.Errorf("%s: version %q (offered %v), want %q", tc.file, v, ok, tc.version)
		}
		if iface, _ := m.Metadata.Get(keyInterface); iface == "" {
			t.Errorf("%s: no interface", tc.file)
		}
	}
}

// The README: empty fields are not offered, whether from the body or from
// an attachment named like a body field; a non-empty one wins either way.
func TestVersionFromBodyAndAttachment(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		att        []any
		want       string // "" = not offered
	}{
		{"empty body, empty attachment", "", []any{"version", ""}, ""},
		{"0.0.0 body, 0.0.0 attachment", "0.0.0", []any{"version", "0.0.0"}, ""},
		{"0.0.0 body, no attachment", "0.0.0", nil, ""},
		{"empty body, 0.0.0 attachment", "", []any{"version", "0.0.0"}, ""},
		{"empty body, versioned attachment", "", []any{"version", "1.0.0"}, "1.0.0"},
		{"versioned body, empty attachment", "2.0.0", []any{"version", ""}, "2.0.0"},
		{"versioned body, 0.0.0 attachment", "2.0.0", []any{"version", "0.0.0"}, "2.0.0"},
		{"versioned attachment then empty (the last wins)", "", []any{"version", "1.0.0", "version", ""}, ""},
	} {
		att := hmap(append([]any{"k", "v"}, tc.att...)...)
		m := decode(t, newCodec(t, codecs.Options{}), frame(reqFlag, 0, 1, requestBody(tc.body, "Greet", "", nil, att)))
		v, ok := m.Metadata.Get(keyVersion)
		if tc.want == "" && ok || v != tc.want {
			t.Errorf("%s: version %q (offered %v), want %q", tc.name, v, ok, tc.want)
		}
		if k, _ := m.Metadata.Get("k"); k != "v" {
			t.Errorf("%s: other attachments lost: %v", tc.name, m.Metadata)
		}
	}
	// Other body fields: an empty attachment named like one is not offered.
	m := decode(t, newCodec(t, codecs.Options{}), frame(reqFlag, 0, 1, requestBody("", "Greet", "", nil,
		hmap("method", "", "interface", "", "group", "", "tenant", ""))))
	if v, _ := m.Metadata.Get(keyMethod); v != "Greet" {
		t.Errorf("method %q, want the body's Greet", v)
	}
	if v, _ := m.Metadata.Get(keyInterface); v != "com.example.Greeter" {
		t.Errorf("interface %q, want the body's", v)
	}
	if v, ok := m.Metadata.Get(keyGroup); ok {
		t.Errorf("group offered as %q; an empty group is none", v)
	}
	// Attachments that are not body fields keep their empty values: an
	// empty user key may mean something to a route.
	if v, ok := m.Metadata.Get("tenant"); !ok || v != "" {
		t.Errorf("tenant = %q, %v; an empty user attachment is offered as it is", v, ok)
	}
}
