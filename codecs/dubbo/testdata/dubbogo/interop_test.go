package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	hessian "github.com/apache/dubbo-go-hessian2"

	"dubbo.apache.org/dubbo-go/v3/protocol"
	"dubbo.apache.org/dubbo-go/v3/protocol/dubbo"
	"dubbo.apache.org/dubbo-go/v3/remoting"

	"github.com/breeze-mesh/breeze/codecs"
	breeze "github.com/breeze-mesh/breeze/codecs/dubbo"
)

// These tests feed what Breeze's codec writes (local replies, heartbeat
// frames, mutated frames) to dubbo-go's own decoder, the one its getty
// transport runs: what a real dubbo-go client or provider would make of it.

func init() { hessian.RegisterPOJO(&User{}) }

func breezeDecode(t *testing.T, name string, muts ...string) (codecs.Codec, *codecs.Message) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", name))
	if err != nil {
		t.Fatal(err)
	}
	c, err := breeze.New(codecs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var m codecs.Message
	if _, err := c.Decode(b, &m); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(muts); i += 2 {
		m.Mutations = append(m.Mutations, codecs.KV{Key: muts[i], Value: muts[i+1]})
	}
	return c, &m
}

func dubbogoDecode(t *testing.T, b []byte) *remoting.DecodeResult {
	t.Helper()
	res, n, err := (&dubbo.DubboCodec{}).Decode(b)
	if err != nil || n != len(b) || res == nil {
		t.Fatalf("dubbo-go Decode(%x) = %v, %d, %v", b, res, n, err)
	}
	return res
}

func TestLocalReplyInDubboGo(t *testing.T) {
	c, req := breezeDecode(t, "request.bin")
	for kind, status := range map[codecs.ErrorKind]uint8{
		codecs.ErrNoRoute: 60, codecs.ErrNoHealthyUpstream: 80, codecs.ErrTimeout: 31,
		codecs.ErrOverloaded: 100, codecs.ErrBadRequest: 40, codecs.ErrInternal: 80,
	} {
		res := dubbogoDecode(t, c.LocalReply(req, kind, "detail-"+kind.String()))
		rsp := res.Result.(*remoting.Response)
		if res.IsRequest || rsp.ID != 1 || rsp.Status != status || rsp.Event {
			t.Errorf("%v: dubbo-go reads %+v", kind, rsp)
		}
		err := rsp.Result.(*protocol.RPCResult).Err
		if err == nil || !strings.Contains(err.Error(), "detail-"+kind.String()) {
			t.Errorf("%v: dubbo-go error %v", kind, err)
		}
	}
}

func TestHeartbeatsInDubboGo(t *testing.T) {
	c, hb := breezeDecode(t, "heartbeat.bin")
	res := dubbogoDecode(t, c.HeartbeatReply(hb))
	if rsp := res.Result.(*remoting.Response); res.IsRequest || !rsp.Event || rsp.ID != 9 || rsp.Status != 20 {
		t.Errorf("HeartbeatReply: dubbo-go reads %+v", rsp)
	}
	res = dubbogoDecode(t, breeze.HeartbeatRequest(1<<40))
	if req := res.Result.(*remoting.Request); !res.IsRequest || !req.Event || !req.TwoWay || req.ID != 1<<40 {
		t.Errorf("HeartbeatRequest: dubbo-go reads %+v", req)
	}
}

func TestMutatedRequestInDubboGo(t *testing.T) {
	c, m := breezeDecode(t, "request.bin", "env", "canary", "x-route", "blue-v2")
	m.ID = 1 << 50
	out, err := c.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	res := dubbogoDecode(t, out)
	req := res.Result.(*remoting.Request)
	inv := req.Data.(protocol.Invocation)
	atts := inv.Attachments()
	if req.ID != 1<<50 || atts["env"] != "canary" || atts["x-route"] != "blue-v2" || atts["group"] != "blue" {
		t.Errorf("dubbo-go reads id %d attachments %v", req.ID, atts)
	}
	args := inv.Arguments()
	if u, ok := args[0].(*User); !ok || u.Name != "Alex Example" || args[2] != int32(7) {
		t.Errorf("dubbo-go reads arguments %#v", args)
	}
}

func TestMutatedResponseInDubboGo(t *testing.T) {
	for _, name := range []string{"response_plain.bin", "response.bin"} {
		c, m := breezeDecode(t, name, "served-by", "breeze")
		out, err := c.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		pr := remoting.NewPendingResponse(1)
		var reply any
		if name == "response.bin" {
			reply = &User{}
		} else {
			reply = new(string)
		}
		pr.Reply = reply
		remoting.AddPendingResponse(pr)
		res := dubbogoDecode(t, bytes.Clone(out))
		rpc := res.Result.(*remoting.Response).Result.(*protocol.RPCResult)
		if rpc.Err != nil || rpc.Attrs["served-by"] != "breeze" {
			t.Errorf("%s: dubbo-go reads err %v attachments %v", name, rpc.Err, rpc.Attrs)
		}
		if s, ok := reply.(*string); ok && *s != "ok" {
			t.Errorf("%s: result %q", name, *s)
		}
		if u, ok := reply.(*User); ok && u.Name != "Alex Example" {
			t.Errorf("%s: result %+v", name, u)
		}
	}
}
