package metadataservice

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"

	hessian "github.com/apache/dubbo-go-hessian2"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/codecs/dubbo"
)

// The testdata frames are what a real Dubbo Java 3.3.6 provider
// (e2e/java's JavaProvider, register-mode instance, metadata-type local,
// application java-local, org.breeze.Greeter 3.0.0) answered to Request:
// java-3.3.6-response.bin for its revision, -unknown-revision.bin for
// revision "nosuchrevision", -wrong-group.bin with group "other-app".
const capturedRevision = "d872f0885b00d1dbf47a49576645b0e6"

// A real instance node's metadata, as that provider wrote it.
var capturedMetadata = map[string]string{
	"dubbo.endpoints":                   `[{"port":42880,"protocol":"dubbo"}]`,
	"dubbo.metadata-service.url-params": `{"serialization":"hessian2","prefer.serialization":"hessian2","version":"1.0.0","dubbo":"2.0.2","release":"3.3.6","side":"provider","port":"42880","protocol":"dubbo"}`,
	"dubbo.metadata.revision":           capturedRevision,
	"dubbo.metadata.storage-type":       "local",
}

func readFrame(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decodeFrame runs Breeze's Dubbo codec on a frame, as Get does.
func decodeFrame(t *testing.T, frame []byte) *codecs.Message {
	t.Helper()
	c, err := dubbo.New(codecs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var msg codecs.Message
	n, err := c.Decode(frame, &msg)
	if err != nil || n != len(frame) {
		t.Fatalf("the Dubbo codec read %d of %d bytes: %v", n, len(frame), err)
	}
	return &msg
}

func TestTargetOfReadsURLParams(t *testing.T) {
	got, err := TargetOf("java-local", "10.0.0.7", 20880, capturedMetadata, map[string]uint32{"dubbo": 20880})
	if err != nil {
		t.Fatal(err)
	}
	if want := (Target{Address: "10.0.0.7:42880", Group: "java-local", Version: "1.0.0"}); got != want {
		t.Errorf("TargetOf = %+v, want %+v (the url-params' port wins over the instance's)", got, want)
	}
	// Without url-params (a remote-metadata instance): its dubbo endpoint.
	got, err = TargetOf("app", "10.0.0.7", 1, nil, map[string]uint32{"dubbo": 20881})
	if err != nil || got.Address != "10.0.0.7:20881" {
		t.Errorf("TargetOf without url-params = %+v, %v; want the dubbo endpoint 10.0.0.7:20881", got, err)
	}
	tri := map[string]string{URLParamsKey: `{"port":"50051","protocol":"tri"}`}
	if got, err := TargetOf("app", "10.0.0.7", 1, tri, nil); err == nil {
		t.Errorf("TargetOf with a tri MetadataService = %+v, want an error (only dubbo is called)", got)
	}
	bad := map[string]string{URLParamsKey: `{not json`}
	if got, err := TargetOf("app", "10.0.0.7", 1, bad, nil); err == nil {
		t.Errorf("TargetOf with unreadable url-params = %+v, want an error", got)
	}
}

// The request is a Dubbo frame Breeze's own codec reads as a call of
// getMetadataInfo on the MetadataService of the application's group.
func TestRequestIsWhatTheCodecReads(t *testing.T) {
	req, err := Request(42, Target{Address: "x:1", Group: "java-local", Version: "1.0.0"}, capturedRevision)
	if err != nil {
		t.Fatal(err)
	}
	msg := decodeFrame(t, req)
	if msg.Type != codecs.Request || msg.ID != 42 {
		t.Fatalf("decoded type %v id %d, want a two-way request with id 42", msg.Type, msg.ID)
	}
	want := map[string]string{"interface": Interface, "method": Method, "version": "1.0.0", "group": "java-local", "parameter_types": "Ljava/lang/String;"}
	for k, v := range want {
		if got, _ := msg.Metadata.Get(k); got != v {
			t.Errorf("request %s = %q, want %q (all: %v)", k, got, v, msg.Metadata)
		}
	}
}

func TestResponseFromJava(t *testing.T) {
	frame := readFrame(t, "java-3.3.6-response.bin")
	info, err := Response(decodeFrame(t, frame), frame)
	if err != nil {
		t.Fatal(err)
	}
	if info.App != "java-local" || info.Revision != capturedRevision {
		t.Errorf("app %q revision %q, want java-local %s", info.App, info.Revision, capturedRevision)
	}
	s, ok := info.Services["org.breeze.Greeter:3.0.0:dubbo"]
	if !ok || len(info.Services) != 1 {
		t.Fatalf("services %+v, want org.breeze.Greeter:3.0.0:dubbo only", info.Services)
	}
	if s.Name != "org.breeze.Greeter" || s.Version != "3.0.0" || s.Protocol != "dubbo" || s.Port != 42880 || s.Params["side"] != "provider" {
		t.Errorf("service %+v: want org.breeze.Greeter 3.0.0 dubbo port 42880 with its params", s)
	}
}

func TestResponseErrors(t *testing.T) {
	for _, c := range []struct{ file, want string }{
		{"java-3.3.6-unknown-revision.bin", "null"},
		{"java-3.3.6-wrong-group.bin", "Not found exported service"},
	} {
		frame := readFrame(t, c.file)
		info, err := Response(decodeFrame(t, frame), frame)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Response = %+v, %v; want an error saying %q", c.file, info, err, c.want)
		}
	}
	// A value that is not a MetadataInfo, and a body cut short.
	e := hessian.NewEncoder()
	_ = e.Encode(int32(1))
	_ = e.Encode("surprise")
	frame := responseFrame(e.Buffer())
	if info, err := Response(decodeFrame(t, frame), frame); err == nil {
		t.Errorf("a string result: Response = %+v, want an error", info)
	}
	good := readFrame(t, "java-3.3.6-response.bin")
	cut := responseFrame(good[16 : len(good)-40])
	if info, err := Response(&codecs.Message{Code: 20}, cut); err == nil {
		t.Errorf("a truncated MetadataInfo: Response = %+v, want an error", info)
	}
}

func responseFrame(body []byte) []byte {
	f := make([]byte, 16, 16+len(body))
	f[0], f[1], f[2], f[3] = 0xda, 0xbb, 0x02, 20
	binary.BigEndian.PutUint64(f[4:], 1)
	binary.BigEndian.PutUint32(f[12:], uint32(len(body)))
	return append(f, body...)
}

// serve answers each connection on a loopback listener with answer(request).
func serve(t *testing.T, answer func(req []byte, c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				h := make([]byte, 16)
				if _, err := io.ReadFull(c, h); err != nil {
					return
				}
				body := make([]byte, binary.BigEndian.Uint32(h[12:]))
				if _, err := io.ReadFull(c, body); err != nil {
					return
				}
				answer(append(h, body...), c)
			}()
		}
	}()
	return ln.Addr().String()
}

// Get over a connection: a heartbeat first, then the captured answer with
// the request's id, delivered in two pieces.
func TestGetReadsTheAnswerToItsRequest(t *testing.T) {
	captured := readFrame(t, "java-3.3.6-response.bin")
	addr := serve(t, func(req []byte, c net.Conn) {
		answer := append([]byte(nil), captured...)
		copy(answer[4:12], req[4:12])
		_, _ = c.Write(dubbo.HeartbeatRequest(999))
		_, _ = c.Write(answer[:100])
		_, _ = c.Write(answer[100:])
		_, _ = io.Copy(io.Discard, c)
	})
	info, err := Get(context.Background(), Target{Address: addr, Group: "java-local", Version: Version}, capturedRevision)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := info.Services["org.breeze.Greeter:3.0.0:dubbo"]; !ok {
		t.Errorf("Get = %+v, want the captured MetadataInfo", info)
	}
}

func TestGetFailsOnSilenceAndRefusal(t *testing.T) {
	// A provider that reads the request and never answers: Get gives up
	// when its context ends (here cancelled once the request arrived), not
	// only at its own timeout.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	silent := serve(t, func(_ []byte, c net.Conn) { cancel(); _, _ = io.Copy(io.Discard, c) })
	if info, err := Get(ctx, Target{Address: silent, Group: "a", Version: Version}, "r"); !errors.Is(err, context.Canceled) {
		t.Errorf("Get from a silent provider, cancelled = %+v, %v; want context.Canceled", info, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	if info, err := Get(context.Background(), Target{Address: closed, Group: "a", Version: Version}, "r"); err == nil {
		t.Errorf("Get on a closed port = %+v, want an error", info)
	}
	garbage := serve(t, func(_ []byte, c net.Conn) { _, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n")) })
	_, err = Get(context.Background(), Target{Address: garbage, Group: "a", Version: Version}, "r")
	var pe *codecs.ProtocolError
	if !errors.As(err, &pe) {
		t.Errorf("Get on a non-Dubbo answer: %v, want the codec's protocol error", err)
	}
}
