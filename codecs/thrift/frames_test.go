package thrift

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/breeze-mesh/breeze/codecs"
)

// TestPeerFrames checks every frame the real peers wrote under testdata.
func TestPeerFrames(t *testing.T) {
	for _, f := range flavorsUnderTest {
		c := newCodec(t, codecs.Options{Params: f.onewayParam()})
		for _, tc := range []struct {
			kind   string
			typ    codecs.MessageType
			status codecs.ResponseStatus
			method string
			mtype  string
		}{
			{"request", codecs.Request, codecs.StatusOK, "Greet", "call"},
			{"response", codecs.Response, codecs.StatusOK, "Greet", "reply"},
			{"oneway", codecs.Oneway, codecs.StatusOK, "Fire", ""},
			{"void_request", codecs.Request, codecs.StatusOK, "Whoami", "call"},
			{"void_response", codecs.Response, codecs.StatusOK, "Whoami", "reply"},
			{"exception", codecs.Response, codecs.StatusAppError, "GetUser", "reply"},
			{"app_exception", codecs.Response, codecs.StatusError, "Greet", "exception"},
		} {
			m := decode(t, c, f.frame(t, tc.kind))
			md := asMap(m.Metadata)
			if m.Type != tc.typ || m.Status != tc.status || md["method"] != tc.method ||
				md["transport"] != f.transport || md["protocol"] != f.protocol || tc.mtype != "" && md["message_type"] != tc.mtype {
				t.Errorf("%v %s: %v status %v metadata %v", f, tc.kind, m.Type, m.Status, md)
			}
			if got := c.Flavor(); got != f.transport+"/"+f.protocol {
				t.Errorf("%v %s: Flavor() = %q", f, tc.kind, got)
			}
		}
	}
}

func asMap(md codecs.Metadata) map[string]string {
	m := map[string]string{}
	for _, kv := range md {
		m[kv.Key] = kv.Value
	}
	return m
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		opts codecs.Options
		ok   bool
	}{
		{codecs.Options{}, true},
		{codecs.Options{MaxFrameSize: minFrame}, true},
		{codecs.Options{MaxFrameSize: minFrame - 1}, false},
		{codecs.Options{MaxFrameSize: -1}, false},
		{codecs.Options{Params: map[string]string{"transport": "buffered", "protocol": "compact"}}, true},
		{codecs.Options{Params: map[string]string{"transport": "ttheader", "headerless_mutations": "reject", "oneway_methods": "Fire, Svc:Log"}}, true},
		{codecs.Options{Params: map[string]string{"transport": "http"}}, false},
		{codecs.Options{Params: map[string]string{"protocol": "json"}}, false},
		{codecs.Options{Params: map[string]string{"headerless_mutations": "drop"}}, false},
		{codecs.Options{Params: map[string]string{"framed": "true"}}, false},
	} {
		_, err := New(tc.opts)
		if (err == nil) != tc.ok {
			t.Errorf("New(%+v) error = %v, want ok=%v", tc.opts, err, tc.ok)
		}
	}
}

// TestPinned checks that pinned params refuse other flavors at once.
func TestPinned(t *testing.T) {
	framed := testdata(t, "apache_framed_binary_request.bin")
	compact := testdata(t, "apache_framed_compact_request.bin")
	header := testdata(t, "apache_header_binary_request.bin")
	for _, tc := range []struct {
		params map[string]string
		frame  []byte
		want   string
	}{
		{map[string]string{"transport": "header"}, framed, reasonTransport},
		{map[string]string{"transport": "ttheader"}, header, reasonTransport},
		{map[string]string{"protocol": "binary"}, compact, reasonProtocol},
		{map[string]string{"protocol": "compact"}, framed, reasonProtocol},
		{map[string]string{"transport": "unframed"}, framed, "need_more"}, // a non-strict name of 0x14f bytes
		{map[string]string{"transport": "framed", "protocol": "compact"}, compact, "ok"},
	} {
		c := newCodec(t, codecs.Options{Params: tc.params})
		if got, err := decodeErr(c, bytes.Clone(tc.frame)); got != tc.want {
			t.Errorf("%v: %s %v, want %s", tc.params, got, err, tc.want)
		}
	}
}

// TestMixedFlavors: without pinning, every frame is detected by itself, as
// on a shared upstream connection whose server answers each client in its
// own flavor; Flavor follows.
func TestMixedFlavors(t *testing.T) {
	c := newCodec(t, codecs.Options{})
	var buf []byte
	var want []string
	for _, f := range flavorsUnderTest {
		if f.transport == "unframed" {
			continue // detected too, but its end is only known by skipping
		}
		buf = append(buf, f.frame(t, "response")...)
		want = append(want, f.transport+"/"+f.protocol)
	}
	for i, w := range want {
		var m codecs.Message
		n, err := c.Decode(buf, &m)
		if err != nil || n == 0 || m.Type != codecs.Response || c.Flavor() != w {
			t.Fatalf("frame %d: %d %v %v flavor %q, want %s", i, n, err, m.Type, c.Flavor(), w)
		}
		buf = buf[n:]
	}
}

func TestLocalReply(t *testing.T) {
	for _, f := range flavorsUnderTest {
		c := newCodec(t, codecs.Options{Params: f.onewayParam()})
		req := decode(t, c, f.frame(t, "request"))
		for kind, exc := range map[codecs.ErrorKind]int32{
			codecs.ErrNoRoute: excUnknownMethod, codecs.ErrBadRequest: excProtocolError,
			codecs.ErrTimeout: excInternalError, codecs.ErrNoHealthyUpstream: excInternalError,
		} {
			// As the proxy builds it: id and metadata only.
			reply := c.LocalReply(&codecs.Message{Type: codecs.Request, ID: 77, Metadata: req.Metadata}, kind, "because")
			got := decode(t, newCodec(t, codecs.Options{}), reply)
			md := asMap(got.Metadata)
			if got.Type != codecs.Response || got.Status != codecs.StatusError || got.ID != 77 ||
				md["method"] != "Greet" || md["transport"] != f.transport || md["protocol"] != f.protocol || md["message_type"] != "exception" {
				t.Errorf("%v %v: reply decodes as %v %v id %d %v", f, kind, got.Type, got.Status, got.ID, md)
			}
			if !bytes.Contains(reply, []byte("breeze proxy: ")) || !bytes.Contains(reply, []byte("because")) {
				t.Errorf("%v %v: reply %q lacks the message", f, kind, reply)
			}
			// The exception type is the i32 that ends the struct.
			var typ int32
			if f.protocol == "binary" {
				typ = int32(binary.BigEndian.Uint32(reply[len(reply)-5:]))
			} else {
				v := uint32(reply[len(reply)-2])
				typ = int32(v>>1) ^ -int32(v&1)
			}
			if typ != exc || got.Code != uint32(exc) {
				t.Errorf("%v %v: exception type %d, decoded as Code %d, want %d", f, kind, typ, got.Code, exc)
			}
			if rc := c.ReplyCode(kind); rc != got.Code {
				t.Errorf("%v %v: ReplyCode = %d, the reply decodes with Code %d", f, kind, rc, got.Code)
			}
			// Only header transports carry keys.
			if want := f.transport == "header" || f.transport == "ttheader"; c.CarriesKeys(req) != want {
				t.Errorf("%v: CarriesKeys = %v, want %v", f, !want, want)
			}
			if strings.HasSuffix(f.name, "_nonstrict") && reply[bytes.Index(reply, []byte("Greet"))-4] != 0 {
				t.Errorf("%v: reply to a non-strict client is strict", f)
			}
		}
	}
}

// TestHeaderMutations checks THeader and TTHeader rewrites beyond the kit:
// several keys, integer keys, repeated mutation keys, growth of the seqid.
func TestHeaderMutations(t *testing.T) {
	for _, tc := range []struct {
		file string
		muts codecs.Metadata
		want map[string]string
	}{
		{"apache_header_binary_request.bin", codecs.Metadata{{Key: "env", Value: "prod"}, {Key: "a", Value: "1"}, {Key: "a", Value: "2"}},
			map[string]string{"env": "prod", "a": "2", "tenant": "gold"}},
		{"apache_header_compact_request.bin", codecs.Metadata{{Key: "new", Value: strings.Repeat("v", 300)}},
			map[string]string{"new": strings.Repeat("v", 300), "env": "staging"}},
		{"kitex_ttheader_binary_request.bin", codecs.Metadata{{Key: "to_cluster", Value: "canary"}, {Key: "to_method", Value: "Greet2"}, {Key: "ttheader_int_300", Value: "x"}},
			map[string]string{"to_cluster": "canary", "to_method": "Greet2", "ttheader_int_300": "x", "RPC_TRANSIT_tenant": "gold"}},
	} {
		c := newCodec(t, codecs.Options{})
		m := decode(t, c, testdata(t, tc.file))
		m.Mutations = tc.muts
		m.ID = 1 << 30 // a 5-byte varint in compact
		out, err := c.Encode(m)
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		got := decode(t, newCodec(t, codecs.Options{}), out)
		md := asMap(got.Metadata)
		for k, v := range tc.want {
			if md[k] != v {
				t.Errorf("%s: %s = %q, want %q", tc.file, k, md[k], v)
			}
		}
		if got.ID != 1<<30 || md["method"] != "Greet" {
			t.Errorf("%s: id %d method %q", tc.file, got.ID, md["method"])
		}
	}
}

// TestCompactSeqidGrowth: a compact seqid that needs more varint bytes
// than the frame has makes a new frame; one that fits is padded in place.
func TestCompactSeqidGrowth(t *testing.T) {
	for _, name := range []string{"apache_framed_compact_request.bin", "apache_unframed_compact_request.bin", "apache_header_compact_request.bin"} {
		orig := testdata(t, name)
		c := newCodec(t, codecs.Options{})
		m := decode(t, c, orig)
		m.ID = math32
		out, err := c.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		if len(out) != len(orig)+4 {
			t.Errorf("%s: %d bytes, want %d", name, len(out), len(orig)+4)
		}
		if got := decode(t, newCodec(t, codecs.Options{}), out); got.ID != math32 {
			t.Errorf("%s: id %d", name, got.ID)
		}
		m.ID = 0
		out, _ = c.Encode(m)
		if len(out) != len(orig) {
			t.Errorf("%s: small id changed the length", name)
		}
		if got := decode(t, newCodec(t, codecs.Options{}), out); got.ID != 0 {
			t.Errorf("%s: id %d, want 0", name, got.ID)
		}
	}
}

const math32 = 1<<32 - 1

// TestHeaderRemovals: removed header keys are gone (string keys, TTHeader
// integer keys by name), the others stay; a key both removed and mutated
// takes the mutation's value; headerless frames go out as they came.
func TestHeaderRemovals(t *testing.T) {
	for _, tc := range []struct {
		file      string
		removals  []string
		muts      codecs.Metadata
		gone      []string
		want      map[string]string
		unchanged bool
	}{
		{file: "apache_header_binary_request.bin", removals: []string{"env"},
			gone: []string{"env"}, want: map[string]string{"tenant": "gold"}},
		{file: "apache_header_compact_request.bin", removals: []string{"env", "absent"},
			gone: []string{"env"}},
		{file: "apache_header_binary_request.bin", removals: []string{"env", "tenant"}, muts: codecs.Metadata{{Key: "tenant", Value: "new"}},
			gone: []string{"env"}, want: map[string]string{"tenant": "new"}},
		{file: "kitex_ttheader_binary_request.bin", removals: []string{"RPC_TRANSIT_tenant", "to_method"},
			gone: []string{"RPC_TRANSIT_tenant", "to_method"}},
		{file: "apache_framed_binary_request.bin", removals: []string{"env"}, unchanged: true},
	} {
		c := newCodec(t, codecs.Options{})
		in := testdata(t, tc.file)
		before := asMap(decode(t, newCodec(t, codecs.Options{}), bytes.Clone(in)).Metadata)
		m := decode(t, c, bytes.Clone(in))
		m.Removals, m.Mutations = tc.removals, tc.muts
		ignored := IgnoredMutations()
		out, err := c.Encode(m)
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		if tc.unchanged {
			if !bytes.Equal(out, in) || IgnoredMutations() != ignored {
				t.Errorf("%s: frame changed %v, ignored mutations counted %d; want it as it came, nothing counted",
					tc.file, !bytes.Equal(out, in), IgnoredMutations()-ignored)
			}
			continue
		}
		md := asMap(decode(t, newCodec(t, codecs.Options{}), out).Metadata)
		for _, k := range tc.gone {
			if _, was := before[k]; !was {
				t.Fatalf("%s: no header %s to remove in %v", tc.file, k, before)
			}
			if v, ok := md[k]; ok {
				t.Errorf("%s: %s = %q after its removal", tc.file, k, v)
			}
		}
		for k, v := range tc.want {
			if md[k] != v {
				t.Errorf("%s: %s = %q, want %q", tc.file, k, md[k], v)
			}
		}
		// Every other header and the call stay.
		for k, v := range before {
			if slices.Contains(tc.removals, k) {
				continue
			}
			if md[k] != v {
				t.Errorf("%s: %s = %q, was %q", tc.file, k, md[k], v)
			}
		}
	}
}

func TestIgnoredMutations(t *testing.T) {
	c := newCodec(t, codecs.Options{})
	f := testdata(t, "apache_framed_binary_request.bin")
	m := decode(t, c, f)
	m.Mutations = codecs.Metadata{{Key: "k", Value: "v"}}
	before := IgnoredMutations()
	out, err := c.Encode(m)
	if err != nil || !bytes.Equal(out, f) || IgnoredMutations() != before+1 {
		t.Errorf("framed mutation: %v, frame changed %v, counted %d", err, !bytes.Equal(out, f), IgnoredMutations()-before)
	}
}

// TestZeroAlloc: the steady state of routing decode and id rewrite
// allocates nothing.
func TestZeroAlloc(t *testing.T) {
	for _, f := range flavorsUnderTest {
		c := newCodec(t, codecs.Options{Params: f.onewayParam()})
		frame := f.frame(t, "request")
		var m codecs.Message
		decodeOnce := func() {
			m.Reset()
			if _, err := c.Decode(frame, &m); err != nil {
				t.Fatal(err)
			}
			m.ID = 5
			if _, err := c.Encode(&m); err != nil {
				t.Fatal(err)
			}
		}
		decodeOnce()
		if a := testing.AllocsPerRun(50, decodeOnce); a != 0 {
			t.Errorf("%v: %v allocations per decode+encode", f, a)
		}
	}
}

// TestZlib: THeader messages compressed with zlib (Apache Thrift Go's
// TransformZlib) are inflated to read; unchanged they pass through
// compressed, with a new seqid or headers they go out inflated.
func TestZlib(t *testing.T) {
	for _, tc := range []struct {
		kind   string
		typ    codecs.MessageType
		status codecs.ResponseStatus
	}{
		{"request", codecs.Request, codecs.StatusOK},
		{"response", codecs.Response, codecs.StatusOK},
		{"oneway", codecs.Oneway, codecs.StatusOK},
		{"exception", codecs.Response, codecs.StatusAppError},
		{"app_exception", codecs.Response, codecs.StatusError},
	} {
		orig := testdata(t, "apache_header_binary_zlib_"+tc.kind+".bin")
		if bytes.Contains(orig, []byte("Greet")) || bytes.Contains(orig, []byte("Fire")) {
			t.Fatalf("%s: the method name is readable: not compressed", tc.kind)
		}
		c := newCodec(t, codecs.Options{Params: map[string]string{"oneway_methods": "Fire"}})
		m := decode(t, c, orig)
		md := asMap(m.Metadata)
		request := tc.typ != codecs.Response // Apache servers send no headers back
		if m.Type != tc.typ || m.Status != tc.status || request && md["tenant"] != "gold" || md["method"] == "" || c.Flavor() != "header/binary" {
			t.Errorf("%s: %v %v %v flavor %q", tc.kind, m.Type, m.Status, md, c.Flavor())
		}
		if out, err := c.Encode(m); err != nil || !bytes.Equal(out, orig) {
			t.Errorf("%s: unchanged message re-encoded: %v", tc.kind, err)
		}
		id := m.ID
		m.ID = 1 << 30
		m.Mutations = codecs.Metadata{{Key: "x-breeze", Value: "1"}}
		out, err := c.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		got := decode(t, newCodec(t, codecs.Options{Params: map[string]string{"oneway_methods": "Fire"}}), out)
		if gmd := asMap(got.Metadata); got.ID != 1<<30 || got.Type != tc.typ || gmd["x-breeze"] != "1" || gmd["tenant"] != md["tenant"] || gmd["method"] != md["method"] {
			t.Errorf("%s: inflated frame decodes as %v id %d %v", tc.kind, got.Type, got.ID, gmd)
		}
		if got.Private[privFlags]&flagZlib != 0 || !bytes.Contains(out, []byte(md["method"])) {
			t.Errorf("%s: the re-encoded frame is still compressed", tc.kind)
		}
		m.ID, m.Mutations = id, nil
		if out, _ := c.Encode(m); !bytes.Equal(out, orig) {
			t.Errorf("%s: restoring the id does not restore the frame", tc.kind)
		}
	}
	// A zlib bomb stops at MaxFrameSize.
	c := newCodec(t, codecs.Options{MaxFrameSize: 1 << 16})
	bomb := theader([]byte{0, 1, 1}, zlibBytes(bytes.Repeat([]byte{0}, 1<<17)))
	if r, _ := decodeErr(c, bomb); r != reasonTooLarge {
		t.Errorf("zlib bomb: %s", r)
	}
}

// TestResponseMutations: replies and exceptions take mutations into their
// THeader/TTHeader headers like requests; headerless transports ignore
// (and count) or refuse them as headerless_mutations says.
func TestResponseMutations(t *testing.T) {
	kinds := []struct {
		kind   string
		status codecs.ResponseStatus
	}{
		{"response", codecs.StatusOK},
		{"void_response", codecs.StatusOK},
		{"exception", codecs.StatusAppError},
		{"app_exception", codecs.StatusError},
	}
	zlib := flavor{peer: "apache", name: "header_binary_zlib", transport: "header", protocol: "binary", mutable: "tenant"}
	for _, f := range append(flavorsUnderTest, zlib) {
		for _, k := range kinds {
			in := f.frame(t, k.kind)
			if f.mutable == "" {
				for _, mode := range []string{"ignore", "reject"} {
					p := f.params()
					p["headerless_mutations"] = mode
					c := newCodec(t, codecs.Options{Params: p})
					m := decode(t, c, in)
					m.Mutations = codecs.Metadata{{Key: "k", Value: "v"}}
					before := IgnoredMutations()
					out, err := c.Encode(m)
					var pe *codecs.ProtocolError
					switch {
					case mode == "ignore" && (err != nil || !bytes.Equal(out, in) || IgnoredMutations() != before+1):
						t.Errorf("%v %s, ignore: err %v, frame changed %v, counted %d",
							f, k.kind, err, !bytes.Equal(out, in), IgnoredMutations()-before)
					case mode == "reject" && (!errors.As(err, &pe) || pe.Reason != reasonMutation):
						t.Errorf("%v %s, reject: Encode error %v, want %s", f, k.kind, err, reasonMutation)
					}
				}
				continue
			}
			c := newCodec(t, codecs.Options{Params: f.params()})
			m := decode(t, c, in)
			m.ID = 4242
			m.Mutations = codecs.Metadata{{Key: "k", Value: "v"}, {Key: f.mutable, Value: "new"}}
			out, err := c.Encode(m)
			if err != nil {
				t.Errorf("%v %s: Encode: %v", f, k.kind, err)
				continue
			}
			got := decode(t, newCodec(t, codecs.Options{Params: f.params()}), out)
			kv, _ := got.Metadata.Get("k")
			mv, _ := got.Metadata.Get(f.mutable)
			if got.Type != codecs.Response || got.Status != k.status || got.ID != 4242 || kv != "v" || mv != "new" {
				t.Errorf("%v %s: mutated reply decodes as %v %v id %d, k=%q %s=%q",
					f, k.kind, got.Type, got.Status, got.ID, kv, f.mutable, mv)
			}
		}
	}
}
