package thrift

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/codecs/codectest"
)

// flavor is one set of frames under testdata, written by a real peer (see
// testdata/peers).
type flavor struct {
	peer, name string // file prefix: <peer>_<name>_<kind>.bin
	transport  string
	protocol   string
	// headers are key/values the request carries in its transport header.
	headers codecs.Metadata
	// mutable is a header key a mutation can overwrite ("" without headers).
	mutable string
}

var flavorsUnderTest = []flavor{
	{peer: "apache", name: "framed_binary", transport: "framed", protocol: "binary"},
	{peer: "apache", name: "framed_compact", transport: "framed", protocol: "compact"},
	{peer: "apache", name: "framed_binary_nonstrict", transport: "framed", protocol: "binary"},
	{peer: "apache", name: "framed_binary_mux", transport: "framed", protocol: "binary"},
	{peer: "apache", name: "unframed_binary", transport: "unframed", protocol: "binary"},
	{peer: "apache", name: "unframed_compact", transport: "unframed", protocol: "compact"},
	{peer: "apache", name: "unframed_binary_nonstrict", transport: "unframed", protocol: "binary"},
	{peer: "apache", name: "header_binary", transport: "header", protocol: "binary",
		headers: codecs.Metadata{{Key: "tenant", Value: "gold"}, {Key: "env", Value: "staging"}}, mutable: "tenant"},
	{peer: "apache", name: "header_compact", transport: "header", protocol: "compact",
		headers: codecs.Metadata{{Key: "tenant", Value: "gold"}, {Key: "env", Value: "staging"}}, mutable: "tenant"},
	{peer: "kitex", name: "ttheader_binary", transport: "ttheader", protocol: "binary",
		headers: codecs.Metadata{
			{Key: "RPC_TRANSIT_tenant", Value: "gold"}, {Key: "RPC_TRANSIT_env", Value: "staging"},
			{Key: "isn", Value: "Greeter"}, {Key: "to_method", Value: "Greet"}, {Key: "to_service", Value: "echo"},
		}, mutable: "RPC_TRANSIT_tenant"},
	{peer: "kitex", name: "framed_binary", transport: "framed", protocol: "binary"},
	{peer: "synthetic", name: "ttheader_compact", transport: "ttheader", protocol: "compact",
		headers: codecs.Metadata{{Key: "RPC_TRANSIT_tenant", Value: "gold"}, {Key: "to_method", Value: "Greet"}},
		mutable: "RPC_TRANSIT_tenant"},
}

func (f flavor) String() string { return f.peer + "_" + f.name }

func (f flavor) frame(t testing.TB, kind string) []byte {
	t.Helper()
	if f.peer == "synthetic" {
		return ttheaderCompact(t, kind)
	}
	return testdata(t, f.String()+"_"+kind+".bin")
}

// ttheaderCompact builds a TTHeader frame with a compact message, which no
// peer at hand writes (Kitex speaks binary only): Kitex's header of the
// same kind of frame, protocol id 2, around Apache's unframed compact
// message.
func ttheaderCompact(t testing.TB, kind string) []byte {
	t.Helper()
	kitex := testdata(t, "kitex_ttheader_binary_"+kind+".bin")
	msg := testdata(t, "apache_unframed_compact_"+kind+".bin")
	end := hdrMetaSize + 4*int(binary.BigEndian.Uint16(kitex[12:]))
	b := append(bytes.Clone(kitex[:end]), msg...)
	b[hdrMetaSize] = protoIDCompact
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b
}

func (f flavor) params() map[string]string {
	p := map[string]string{"transport": f.transport, "protocol": f.protocol}
	for k, v := range f.onewayParam() {
		p[k] = v
	}
	return p
}

// onewayParam: Apache Thrift Go writes oneway calls as CALL messages.
func (f flavor) onewayParam() map[string]string {
	if f.peer != "kitex" {
		return map[string]string{"oneway_methods": "Fire"}
	}
	return nil
}

// testdata reads a frame written by a real peer (see testdata/peers).
func testdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newCodec(t testing.TB, opts codecs.Options) *codec {
	t.Helper()
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c.(*codec)
}

func decode(t testing.TB, c codecs.Codec, b []byte) *codecs.Message {
	t.Helper()
	var m codecs.Message
	n, err := c.Decode(bytes.Clone(b), &m)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if n != len(b) {
		t.Fatalf("Decode = %d, want %d", n, len(b))
	}
	return &m
}

// decodeErr decodes b and names the outcome: "need_more", "ok" or the
// ProtocolError's reason.
func decodeErr(c codecs.Codec, b []byte) (string, error) {
	var m codecs.Message
	n, err := c.Decode(b, &m)
	if err == nil {
		if n == 0 {
			return "need_more", nil
		}
		return "ok", nil
	}
	var pe *codecs.ProtocolError
	if !errors.As(err, &pe) {
		return "", err
	}
	return pe.Reason, nil
}

func TestConformance(t *testing.T) {
	for _, f := range flavorsUnderTest {
		req := f.frame(t, "request")
		// The arguments, from the name "alice" to the end of the message.
		i := bytes.Index(req, []byte("alice"))
		if i < 0 {
			t.Fatalf("%v: request does not look like the frame testdata/peers writes", f)
		}
		md := codecs.Metadata{
			{Key: "method", Value: "Greet"}, {Key: "message_type", Value: "call"},
			{Key: "transport", Value: f.transport}, {Key: "protocol", Value: f.protocol},
		}
		if strings.HasSuffix(f.name, "_mux") {
			md = append(md, codecs.KV{Key: "service", Value: "Greeter"})
		}
		md = append(md, f.headers...)
		s := codectest.Samples{
			Request:         req,
			RequestMetadata: md,
			MutableKey:      f.mutable,
			Payload:         req[i:],
			Oneway:          f.frame(t, "oneway"),
			Response:        f.frame(t, "response"),
			ErrorResponse:   f.frame(t, "app_exception"),
			MaxID:           math.MaxUint32,
			Options:         codecs.Options{Params: f.onewayParam()},
		}
		t.Run(f.String()+"/auto", func(t *testing.T) { codectest.Run(t, New, s) })
		s.Options.Params = f.params()
		t.Run(f.String()+"/pinned", func(t *testing.T) { codectest.Run(t, New, s) })
		s.ErrorResponse = f.frame(t, "exception")
		s.Options.Params = map[string]string{"headerless_mutations": "reject"}
		for k, v := range f.onewayParam() {
			s.Options.Params[k] = v
		}
		t.Run(f.String()+"/declared_exception", func(t *testing.T) { codectest.Run(t, New, s) })
	}
}

func TestRegistered(t *testing.T) {
	f, ok := codecs.Lookup("thrift")
	if !ok {
		t.Fatal(`"thrift" is not registered`)
	}
	if _, err := f(codecs.Options{}); err != nil {
		t.Fatal(err)
	}
}

func TestDescribe(t *testing.T) {
	for _, f := range flavorsUnderTest {
		c := newCodec(t, codecs.Options{Params: f.params()})
		m := decode(t, c, f.frame(t, "request"))
		s, meth := codecs.Describe(c, m.Metadata)
		want := ""
		if strings.HasSuffix(f.name, "_mux") {
			want = "Greeter"
		}
		if s != want || meth != "Greet" {
			t.Errorf("%v: Describe = %q, %q; want %q, %q", f, s, meth, want, "Greet")
		}
	}
}
