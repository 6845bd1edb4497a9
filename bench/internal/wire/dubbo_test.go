package wire

import (
	"testing"

	"github.com/breeze-mesh/breeze/codecs"
	_ "github.com/breeze-mesh/breeze/codecs/dubbo"
)

func dubboCodec(t *testing.T) codecs.Codec {
	t.Helper()
	f, ok := codecs.Lookup("dubbo")
	if !ok {
		t.Fatal("dubbo codec not registered")
	}
	c, err := f(codecs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The frames the tools write are ones Breeze's own codec accepts: requests
// with the metadata the bench routes match on, and echo replies as
// successful responses.
func TestDubboFramesDecode(t *testing.T) {
	p, err := Lookup("dubbo")
	if err != nil {
		t.Fatal(err)
	}
	c := dubboCodec(t)
	for _, payload := range []int{0, 100, 1024, 70000, 256 << 10} {
		reqs, err := p.Requests(MixRoutes, payload)
		if err != nil {
			t.Fatal(err)
		}
		if len(reqs) != 10 {
			t.Fatalf("%d requests in the routes mix", len(reqs))
		}
		for i, r := range reqs {
			f := p.AppendRequest([]byte("junk"), &r, uint64(i)<<40|7)[4:]
			if n, err := p.FrameLen(f[:p.HeaderLen()]); err != nil || n != len(f) {
				t.Fatalf("FrameLen %d, %v; frame is %d bytes", n, err, len(f))
			}
			var m codecs.Message
			if n, err := c.Decode(f, &m); err != nil || n != len(f) {
				t.Fatalf("%s: decode: %d, %v", r.Name, n, err)
			}
			if m.Type != codecs.Request || m.ID != uint64(i)<<40|7 {
				t.Errorf("%s: type %v id %d", r.Name, m.Type, m.ID)
			}
			call := routesMix[i]
			for k, want := range map[string]string{"interface": call.iface, "method": call.method, "version": call.version, "tenant": call.tenant, "zone": "az-1"} {
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
			if m.Type != codecs.Response || m.Status != codecs.StatusOK || m.ID != uint64(i)<<40|7 {
				t.Errorf("%s: reply type %v status %v id %d", r.Name, m.Type, m.Status, m.ID)
			}
			resp, err := p.ParseResponse(reply)
			if err != nil || resp.Kind != OK || resp.ID != m.ID {
				t.Errorf("%s: ParseResponse %+v, %v", r.Name, resp, err)
			}
			// The reply carries the argument's bytes.
			arg, _ := dubboByteArg(f[dubboHeader:])
			if string(reply[dubboHeader+1:]) != string(arg) || len(arg) < payload {
				t.Errorf("%s: reply does not carry the %d-byte argument", r.Name, payload)
			}
		}
	}
}

func TestDubboEchoHeartbeatAndErrors(t *testing.T) {
	p, _ := Lookup("dubbo")
	c := dubboCodec(t)
	hb := []byte{0xda, 0xbb, 0xe2, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 1, 'N'}
	reply, err := p.Echo(nil, hb)
	if err != nil {
		t.Fatal(err)
	}
	var m codecs.Message
	if _, err := c.Decode(reply, &m); err != nil || m.Type != codecs.HeartbeatReply || m.ID != 9 {
		t.Errorf("heartbeat reply: %v %v %d", err, m.Type, m.ID)
	}
	if r, _ := p.ParseResponse(hb); r.Kind != Ping {
		t.Errorf("heartbeat request parsed as %v", r.Kind)
	}
	if r, _ := p.ParseResponse(reply); r.Kind != Other {
		t.Errorf("heartbeat reply parsed as %v", r.Kind)
	}
	// A local reply of the proxy (status 60) is an error named by its status.
	m.Reset()
	reqs, _ := p.Requests(MixSingle, 10)
	if _, err := c.Decode(p.AppendRequest(nil, &reqs[0], 5), &m); err != nil {
		t.Fatal(err)
	}
	r, err := p.ParseResponse(c.LocalReply(&m, codecs.ErrNoRoute, "test"))
	if err != nil || r.Kind != Error || r.Status != "status_60" || r.ID != 5 {
		t.Errorf("local reply parsed as %+v, %v", r, err)
	}
	if _, err := p.FrameLen([]byte("GET / HTTP/1.1\r\n")); err == nil {
		t.Error("FrameLen accepted HTTP")
	}
	req := p.AppendRequest(nil, &reqs[0], 1)
	if _, err := p.Echo(nil, req[:40]); err == nil {
		t.Error("Echo accepted a truncated body")
	}
}
