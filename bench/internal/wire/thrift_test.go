package wire

import (
	"testing"

	"github.com/breeze-mesh/breeze/codecs"
	_ "github.com/breeze-mesh/breeze/codecs/thrift"
)

func thriftCodec(t *testing.T) codecs.Codec {
	t.Helper()
	f, ok := codecs.Lookup("thrift")
	if !ok {
		t.Fatal("thrift codec not registered")
	}
	c, err := f(codecs.Options{Params: map[string]string{"transport": "framed", "protocol": "binary"}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The frames the tools write are ones Breeze's own codec accepts: framed
// binary CALLs with the method the bench routes match on, and echo replies
// as successful REPLYs.
func TestThriftFramesDecode(t *testing.T) {
	p, err := Lookup("thrift")
	if err != nil {
		t.Fatal(err)
	}
	if IDMask(p) != 0xffffffff {
		t.Fatalf("IDMask %#x", IDMask(p))
	}
	c := thriftCodec(t)
	for _, payload := range []int{0, 100, 1024, 70000, 256 << 10} {
		reqs, err := p.Requests(MixRoutes, payload)
		if err != nil {
			t.Fatal(err)
		}
		if len(reqs) != 10 {
			t.Fatalf("%d requests in the routes mix", len(reqs))
		}
		for i, r := range reqs {
			id := uint64(i)<<20 | 7
			f := p.AppendRequest([]byte("junk"), &r, id)[4:]
			if n, err := p.FrameLen(f[:p.HeaderLen()]); err != nil || n != len(f) {
				t.Fatalf("FrameLen %d, %v; frame is %d bytes", n, err, len(f))
			}
			var m codecs.Message
			if n, err := c.Decode(f, &m); err != nil || n != len(f) {
				t.Fatalf("%s: decode: %d, %v", r.Name, n, err)
			}
			if m.Type != codecs.Request || m.ID != id {
				t.Errorf("%s: type %v id %d", r.Name, m.Type, m.ID)
			}
			for k, want := range map[string]string{"method": thriftRoutesMix[i], "transport": "framed", "protocol": "binary", "message_type": "call"} {
				if got, _ := m.Metadata.Get(k); got != want {
					t.Errorf("%s: %s = %q, want %q", r.Name, k, got, want)
				}
			}
			reply, err := p.Echo(nil, f)
			if err != nil {
				t.Fatal(err)
			}
			if len(reply) != r.ReplyLen {
				t.Errorf("%s: reply %d bytes, want %d", r.Name, len(reply), r.ReplyLen)
			}
			m.Reset()
			if n, err := c.Decode(reply, &m); err != nil || n != len(reply) {
				t.Fatalf("%s: decode reply: %d, %v", r.Name, n, err)
			}
			if m.Type != codecs.Response || m.Status != codecs.StatusOK || m.ID != id {
				t.Errorf("%s: reply type %v status %v id %d", r.Name, m.Type, m.Status, m.ID)
			}
			resp, err := p.ParseResponse(reply)
			if err != nil || resp.Kind != OK || resp.ID != id {
				t.Errorf("%s: ParseResponse %+v, %v", r.Name, resp, err)
			}
			// The reply carries the argument's bytes: the request's tail
			// (field header, length, bytes, stop) after the seqid.
			hdr := 12 + len(thriftRoutesMix[i]) + 4
			if string(reply[hdr+3:]) != string(f[hdr+3:]) || len(reply)-hdr < payload {
				t.Errorf("%s: reply does not carry the %d-byte argument", r.Name, payload)
			}
		}
	}
}

func TestThriftEchoAndErrors(t *testing.T) {
	p, _ := Lookup("thrift")
	c := thriftCodec(t)
	reqs, _ := p.Requests(MixSingle, 10)
	req := p.AppendRequest(nil, &reqs[0], 5)

	// A local reply of the proxy (a TApplicationException) is an error
	// named by its type (1: UNKNOWN_METHOD for no route).
	var m codecs.Message
	if _, err := c.Decode(req, &m); err != nil {
		t.Fatal(err)
	}
	r, err := p.ParseResponse(c.LocalReply(&m, codecs.ErrNoRoute, "test"))
	if err != nil || r.Kind != Error || r.Status != "exception_1" || r.ID != 5 {
		t.Errorf("local reply parsed as %+v, %v", r, err)
	}
	// A declared exception (result field 1) is an application error; a void
	// reply is a success.
	if r, err := p.ParseResponse(thriftMessage(nil, thriftReply, "echo", 9, 1, []byte("x"))); err != nil || r.Kind != AppError || r.ID != 9 {
		t.Errorf("declared exception parsed as %+v, %v", r, err)
	}
	void := thriftMessage(nil, thriftReply, "echo", 3, -1, nil)
	if r, err := p.ParseResponse(void); err != nil || r.Kind != OK || r.ID != 3 {
		t.Errorf("void reply parsed as %+v, %v", r, err)
	}
	// A call without a binary argument gets a void reply; a oneway nothing.
	if out, err := p.Echo(nil, thriftMessage(nil, thriftCall, "echo", 3, -1, nil)); err != nil || string(out) != string(void) {
		t.Errorf("void call: %x, %v", out, err)
	}
	if out, err := p.Echo(nil, thriftMessage(nil, thriftOneway, "fire", 1, 1, []byte("x"))); err != nil || len(out) != 0 {
		t.Errorf("oneway: %x, %v", out, err)
	}
	if _, err := p.ParseResponse(req); err == nil {
		t.Error("ParseResponse accepted a CALL")
	}
	if _, err := p.FrameLen([]byte("GET / HTTP/1.1\r\n")); err == nil {
		t.Error("FrameLen accepted HTTP")
	}
	if _, err := p.Echo(nil, req[:len(req)-8]); err == nil {
		t.Error("Echo accepted a truncated argument")
	}
	if _, err := p.Echo(nil, append([]byte{0, 0, 0, 20, 0, 0, 0, 1}, req[8:]...)); err == nil {
		t.Error("Echo accepted a non-strict version word")
	}
}
