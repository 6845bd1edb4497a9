package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/thrift/lib/go/thrift"
	"github.com/cloudwego/gopkg/protocol/ttheader"

	"github.com/breeze-mesh/breeze/codecs"
	_ "github.com/breeze-mesh/breeze/codecs/thrift"
	"github.com/breeze-mesh/breeze/codecs/thrift/testdata/peers/peer"
	"github.com/breeze-mesh/breeze/codecs/thrift/testdata/peers/peer/gen-go/echo"
)

func frame(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func breeze(t testing.TB, params map[string]string) codecs.Codec {
	t.Helper()
	f, _ := codecs.Lookup("thrift")
	c, err := f(codecs.Options{Params: params})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func decode(t testing.TB, c codecs.Codec, b []byte) *codecs.Message {
	t.Helper()
	var m codecs.Message
	if n, err := c.Decode(bytes.Clone(b), &m); err != nil || n != len(b) {
		t.Fatalf("Decode = %d, %v", n, err)
	}
	return &m
}

// apacheProtocol reads b the way an Apache Thrift Go client of f does.
func apacheProtocol(b []byte, f peer.Flavor) (thrift.TProtocol, *thrift.THeaderTransport) {
	conf := peer.Conf(f)
	buf := thrift.NewTMemoryBuffer()
	buf.Write(b)
	var trans thrift.TTransport = buf
	var ht *thrift.THeaderTransport
	switch f.Transport {
	case "framed":
		trans = thrift.NewTFramedTransportConf(buf, conf)
	case "header":
		ht = thrift.NewTHeaderTransportConf(buf, conf)
		return thrift.NewTHeaderProtocolConf(ht, conf), ht
	}
	if f.Protocol == "compact" {
		return thrift.NewTCompactProtocolConf(trans, conf), nil
	}
	return thrift.NewTBinaryProtocolConf(trans, conf), nil
}

// TestApacheReadsLocalReplies: Apache Thrift Go reads Breeze's local reply
// as the TApplicationException answering its call: right method, seqid,
// type and message.
func TestApacheReadsLocalReplies(t *testing.T) {
	ctx := context.Background()
	for _, c := range Captures {
		if c.Peer != "apache" {
			continue
		}
		t.Run(c.Flavor.String(), func(t *testing.T) {
			codec := breeze(t, map[string]string{"oneway_methods": "Fire"})
			req := decode(t, codec, frame(t, "apache_"+c.Flavor.String()+"_request.bin"))
			reply := codec.LocalReply(&codecs.Message{Type: codecs.Request, ID: 4242, Metadata: req.Metadata}, codecs.ErrNoRoute, "no route matched")
			p, _ := apacheProtocol(reply, c.Flavor)
			name, typ, seq, err := p.ReadMessageBegin(ctx)
			if err != nil || name != "Greet" || typ != thrift.EXCEPTION || seq != 4242 {
				t.Fatalf("ReadMessageBegin = %q %v %d %v", name, typ, seq, err)
			}
			exc := thrift.NewTApplicationException(0, "")
			if err := exc.Read(ctx, p); err != nil || exc.TypeId() != thrift.UNKNOWN_METHOD ||
				!strings.Contains(exc.Error(), "no route matched") {
				t.Fatalf("TApplicationException %v (type %d), %v", exc, exc.TypeId(), err)
			}
		})
	}
}

// TestApacheClientGetsException runs the generated client's Recv on a
// local reply: the call fails with UNKNOWN_METHOD and Breeze's message.
func TestApacheClientGetsException(t *testing.T) {
	for _, c := range Captures {
		if c.Peer != "apache" || c.Flavor.Mux {
			continue
		}
		t.Run(c.Flavor.String(), func(t *testing.T) {
			codec := breeze(t, nil)
			req := decode(t, codec, frame(t, "apache_"+c.Flavor.String()+"_request.bin"))
			reply := codec.LocalReply(&codecs.Message{Type: codecs.Request, ID: 1, Metadata: req.Metadata}, codecs.ErrNoRoute, "no route matched")
			in, _ := apacheProtocol(reply, c.Flavor)
			out, _ := apacheProtocol(nil, c.Flavor)
			client := echo.NewGreeterClient(thrift.NewTStandardClient(in, out))
			_, err := client.Greet(context.Background(), "x", nil)
			var ae thrift.TApplicationException
			if !asAppExc(err, &ae) || ae.TypeId() != thrift.UNKNOWN_METHOD || !strings.Contains(ae.Error(), "breeze proxy: no route for Greet") {
				t.Fatalf("Greet = %v, want an UNKNOWN_METHOD application exception", err)
			}
		})
	}
}

func asAppExc(err error, ae *thrift.TApplicationException) bool {
	e, ok := err.(thrift.TApplicationException)
	if ok {
		*ae = e
	}
	return ok
}

// TestApacheReadsMutatedHeaders: Apache's THeaderTransport reads the
// headers Breeze added and overwrote, and the arguments intact.
func TestApacheReadsMutatedHeaders(t *testing.T) {
	ctx := context.Background()
	for _, proto := range []string{"binary", "compact", "binary_zlib"} {
		f := peer.Flavor{Transport: "header", Protocol: strings.TrimSuffix(proto, "_zlib"), Zlib: strings.HasSuffix(proto, "_zlib")}
		codec := breeze(t, nil)
		m := decode(t, codec, frame(t, "apache_header_"+proto+"_request.bin"))
		m.ID = 1 << 30
		m.Mutations = codecs.Metadata{{Key: "tenant", Value: "platinum"}, {Key: "x-breeze", Value: "routed"}}
		out, err := codec.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		p, ht := apacheProtocol(out, f)
		name, _, seq, err := p.ReadMessageBegin(ctx)
		if err != nil || name != "Greet" || seq != 1<<30 {
			t.Fatalf("%s: ReadMessageBegin = %q %d %v", proto, name, seq, err)
		}
		h := ht.GetReadHeaders()
		if h["tenant"] != "platinum" || h["x-breeze"] != "routed" || h["env"] != "staging" || ht.SequenceID != 1<<30 {
			t.Errorf("%s: headers %v seqid %d", proto, h, ht.SequenceID)
		}
		args := echo.NewGreeterGreetArgs()
		if err := args.Read(ctx, p); err != nil || args.Name != "alice" || args.User.Friend.Name != "Sam Friend" {
			t.Errorf("%s: arguments %+v, %v", proto, args, err)
		}
	}
}

// TestKitexReadsBreezeTTHeader: Kitex's TTHeader decoder (gopkg) reads a
// mutated request and a local reply.
func TestKitexReadsBreezeTTHeader(t *testing.T) {
	ctx := context.Background()
	codec := breeze(t, nil)
	m := decode(t, codec, frame(t, "kitex_ttheader_binary_request.bin"))
	m.ID = 99
	m.Mutations = codecs.Metadata{{Key: "RPC_TRANSIT_tenant", Value: "platinum"}, {Key: "to_cluster", Value: "canary"}}
	out, err := codec.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ttheader.DecodeFromBytes(ctx, out)
	if err != nil || p.SeqID != 99 || p.StrInfo["RPC_TRANSIT_tenant"] != "platinum" || p.IntInfo[7] != "canary" || p.IntInfo[9] != "Greet" {
		t.Fatalf("mutated TTHeader: %+v %v", p, err)
	}
	reply := codec.LocalReply(&codecs.Message{Type: codecs.Request, ID: 7, Metadata: m.Metadata}, codecs.ErrTimeout, "slow")
	p, err = ttheader.DecodeFromBytes(ctx, reply)
	if err != nil || p.SeqID != 7 {
		t.Fatalf("local reply TTHeader: %+v %v", p, err)
	}
	payload := reply[p.HeaderLen:]
	bp, _ := apacheProtocol(payload[4:], peer.Flavor{Transport: "unframed", Protocol: "binary"})
	name, typ, seq, err := bp.ReadMessageBegin(ctx)
	if err != nil || name != "Greet" || typ != thrift.EXCEPTION || seq != 7 {
		t.Fatalf("local reply payload: %q %v %d %v", name, typ, seq, err)
	}
}

// TestCodeOfApacheExceptions: Breeze reads the type of a
// TApplicationException Apache Thrift Go writes, in each of its flavors,
// as the response's Code.
func TestCodeOfApacheExceptions(t *testing.T) {
	ctx := context.Background()
	for _, c := range Captures {
		if c.Peer != "apache" {
			continue
		}
		for _, typ := range []int32{thrift.UNKNOWN_METHOD, thrift.WRONG_METHOD_NAME, thrift.INTERNAL_ERROR, thrift.PROTOCOL_ERROR, thrift.UNSUPPORTED_CLIENT_TYPE} {
			p, buf := apacheWriter(c.Flavor)
			if err := p.WriteMessageBegin(ctx, "Greet", thrift.EXCEPTION, 3); err != nil {
				t.Fatal(err)
			}
			if err := thrift.NewTApplicationException(typ, "failed").Write(ctx, p); err != nil {
				t.Fatal(err)
			}
			if err := p.WriteMessageEnd(ctx); err != nil {
				t.Fatal(err)
			}
			if err := p.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			m := decode(t, breeze(t, nil), buf.Bytes())
			if m.Type != codecs.Response || m.Status != codecs.StatusError || m.Code != uint32(typ) {
				t.Errorf("%v: exception of type %d decodes as %v %v Code %d", c.Flavor, typ, m.Type, m.Status, m.Code)
			}
		}
	}
}

// apacheWriter writes the way an Apache Thrift Go server of f does, into
// the buffer it returns.
func apacheWriter(f peer.Flavor) (thrift.TProtocol, *thrift.TMemoryBuffer) {
	conf := peer.Conf(f)
	buf := thrift.NewTMemoryBuffer()
	var trans thrift.TTransport = buf
	switch f.Transport {
	case "framed":
		trans = thrift.NewTFramedTransportConf(buf, conf)
	case "header":
		return thrift.NewTHeaderProtocolConf(thrift.NewTHeaderTransportConf(buf, conf), conf), buf
	}
	if f.Protocol == "compact" {
		return thrift.NewTCompactProtocolConf(trans, conf), buf
	}
	return thrift.NewTBinaryProtocolConf(trans, conf), buf
}
