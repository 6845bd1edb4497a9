package main

import (
	"context"
	"testing"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/codecs/thrift/testdata/peers/peer/gen-go/echo"
)

// BenchmarkFullDecodeApache decodes the framed binary Greet request the way
// an Apache Thrift Go server does, every field built by generated code;
// BenchmarkBreezeDecode is the codec's routing decode of the same bytes.
//
//	cd codecs/thrift/testdata/peers && go test -run '^$' -bench . -count=6 .
func BenchmarkFullDecodeApache(b *testing.B) {
	f := frame(b, "apache_framed_binary_request.bin")
	ctx := context.Background()
	conf := &thrift.TConfiguration{}
	buf := thrift.NewTMemoryBufferLen(len(f))
	trans := thrift.NewTFramedTransportConf(buf, conf)
	p := thrift.NewTBinaryProtocolConf(trans, conf)
	b.SetBytes(int64(len(f)))
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		buf.Write(f)
		if _, _, _, err := p.ReadMessageBegin(ctx); err != nil {
			b.Fatal(err)
		}
		args := echo.NewGreeterGreetArgs()
		if err := args.Read(ctx, p); err != nil {
			b.Fatal(err)
		}
		if err := p.ReadMessageEnd(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBreezeDecode(b *testing.B) {
	f := frame(b, "apache_framed_binary_request.bin")
	c := breeze(b, nil)
	var m codecs.Message
	b.SetBytes(int64(len(f)))
	b.ReportAllocs()
	for b.Loop() {
		m.Reset()
		if _, err := c.Decode(f, &m); err != nil {
			b.Fatal(err)
		}
	}
}
