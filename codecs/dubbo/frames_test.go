package dubbo

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	hessian "github.com/apache/dubbo-go-hessian2"

	"github.com/breeze-mesh/breeze/codecs"
)

// User is the POJO the dubbo-go frames under testdata carry (see
// testdata/dubbogo), registered so that the full-decode benchmark builds it
// as dubbo-go would.
type User struct {
	ID      string
	Name    string
	Age     int32
	Email   string
	Tags    []string
	Created time.Time
}

func (User) JavaClassName() string { return "org.apache.dubbo.sample.User" }

func init() { hessian.RegisterPOJO(&User{}) }

// testdata reads a frame written by dubbo-go (see testdata/dubbogo).
func testdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// hess encodes values one after another in one hessian2 stream, as a Dubbo
// body is written.
func hess(values ...any) []byte {
	e := hessian.NewEncoder()
	for _, v := range values {
		if err := e.Encode(v); err != nil {
			panic(err)
		}
	}
	return e.Buffer()
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// frame wraps a body in a Dubbo header.
func frame(flag, status byte, id uint64, body []byte) []byte {
	h := make([]byte, headerLen, headerLen+len(body))
	h[0], h[1], h[2], h[3] = magicHigh, magicLow, flag, status
	binary.BigEndian.PutUint64(h[4:], id)
	binary.BigEndian.PutUint32(h[12:], uint32(len(body)))
	return append(h, body...)
}

const (
	reqFlag    = flagRequest | flagTwoWay | hessian2ID
	onewayFlag = flagRequest | hessian2ID
	respFlag   = hessian2ID
)

// requestBody builds a request body the way Java's DubboCodec writes it;
// attachments are appended raw so tests can shape the map.
func requestBody(version, method, desc string, args []any, attachments []byte) []byte {
	head := hess("2.0.2", "com.example.Greeter", version, method, desc)
	return cat(head, hess(args...), attachments)
}

// hmap writes an untyped hessian2 map with pairs in the given order.
func hmap(kv ...any) []byte {
	return cat([]byte{'H'}, hess(kv...), []byte{'Z'})
}

func newCodec(t testing.TB, opts codecs.Options) codecs.Codec {
	t.Helper()
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
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
