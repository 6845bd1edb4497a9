// Command gen writes the Dubbo frames under testdata/ with dubbo-go's own
// codec (protocol/dubbo.DubboCodec, the one its getty transport uses), so
// the tests check the decoder against bytes a real dubbo-go peer sends.
//
// interop_test.go checks the other way: dubbo-go decoding what Breeze
// writes (local replies, heartbeats, mutated frames).
//
// It lives in its own module so that dubbo-go never enters Breeze's go.mod:
//
//	cd codecs/dubbo/testdata/dubbogo && go run . -out .. && go test .
package main

import (
	"errors"
	"flag"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	hessian "github.com/apache/dubbo-go-hessian2"

	"dubbo.apache.org/dubbo-go/v3/protocol"
	"dubbo.apache.org/dubbo-go/v3/protocol/dubbo"
	"dubbo.apache.org/dubbo-go/v3/protocol/invocation"
	"dubbo.apache.org/dubbo-go/v3/remoting"
)

// User mirrors the POJO of dubbo-go's samples; the tests register the same
// class so that the full-decode benchmark materialises it as dubbo-go would.
type User struct {
	ID      string
	Name    string
	Age     int32
	Email   string
	Tags    []string
	Created time.Time
}

func (User) JavaClassName() string { return "org.apache.dubbo.sample.User" }

func main() {
	out := flag.String("out", "..", "directory to write the .bin files to")
	flag.Parse()
	hessian.RegisterPOJO(&User{})

	codec := &dubbo.DubboCodec{}
	user := &User{
		ID: "A000-7f3c-41d2", Name: "Alex Example", Age: 42,
		Email:   "alex.example@example.com",
		Tags:    []string{"gold", "beta-tester", "eu-west", "newsletter", "mobile"},
		Created: time.Date(2024, 5, 17, 9, 30, 0, 0, time.UTC),
	}
	attachments := func() map[string]interface{} {
		return map[string]interface{}{
			"path":         "org.apache.dubbo.sample.UserProvider",
			"interface":    "org.apache.dubbo.sample.UserProvider",
			"version":      "1.0.0",
			"group":        "blue",
			"timeout":      "3000",
			"traceparent":  "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
			"x-request-id": "9f1c2b3a-5d6e-4f70-8a9b-0c1d2e3f4a5b",
			"tenant":       "acme",
			"env":          "staging",
			"region":       "eu-west-1",
			"zone":         "eu-west-1b",
			"app":          "checkout-web",
		}
	}
	request := func(id int64, twoWay bool, method string, args []interface{}) []byte {
		var inv protocol.Invocation = invocation.NewRPCInvocationWithOptions(
			invocation.WithMethodName(method),
			invocation.WithArguments(args),
			invocation.WithAttachments(attachments()))
		buf, err := codec.EncodeRequest(&remoting.Request{
			ID: id, Version: "2.0.2", SerialID: 2, Data: &inv, TwoWay: twoWay,
		})
		if err != nil {
			log.Fatal(err)
		}
		return buf.Bytes()
	}
	response := func(id int64, status uint8, res protocol.RPCResult) []byte {
		buf, err := codec.EncodeResponse(&remoting.Response{
			ID: id, Version: "2.0.2", SerialID: 2, Status: status, Result: res,
		})
		if err != nil {
			log.Fatal(err)
		}
		return buf.Bytes()
	}
	withVersion := map[string]interface{}{"dubbo": "2.0.2", "tenant": "acme", "served-by": "provider-7"}

	args := []interface{}{user, "order-" + strings.Repeat("0123456789", 38), int32(7)}
	frames := map[string][]byte{
		"request.bin": request(1, true, "GetUser", args),
		"oneway.bin":  request(2, false, "Notify", []interface{}{"user-registered", user}),
		"generic.bin": request(3, true, "$invoke", []interface{}{
			"GetUser", []string{"java.lang.String"}, []hessian.Object{"A000"},
		}),
		// With a "dubbo" attachment dubbo-go writes result types 3-5
		// (with attachments); without, 0-2.
		"response.bin":           response(1, 20, protocol.RPCResult{Rest: user, Attrs: withVersion}),
		"response_plain.bin":     response(1, 20, protocol.RPCResult{Rest: "ok", Attrs: map[string]interface{}{}}),
		"response_null.bin":      response(1, 20, protocol.RPCResult{Attrs: withVersion}),
		"response_exc.bin":       response(1, 20, protocol.RPCResult{Err: errors.New("user A000 not found"), Attrs: withVersion}),
		"response_exc_noatt.bin": response(1, 20, protocol.RPCResult{Err: errors.New("user A000 not found"), Attrs: map[string]interface{}{}}),
		"response_error.bin":     response(1, 70, protocol.RPCResult{Err: errors.New("service error: boom")}),
	}
	hb, err := codec.EncodeRequest(&remoting.Request{ID: 9, Version: "2.0.2", SerialID: 2, TwoWay: true, Event: true})
	if err != nil {
		log.Fatal(err)
	}
	frames["heartbeat.bin"] = hb.Bytes()
	hbr, err := codec.EncodeResponse(&remoting.Response{ID: 9, Version: "2.0.2", SerialID: 2, Status: 20, Event: true})
	if err != nil {
		log.Fatal(err)
	}
	frames["heartbeat_reply.bin"] = hbr.Bytes()

	for name, b := range frames {
		if err := os.WriteFile(filepath.Join(*out, name), b, 0o644); err != nil {
			log.Fatal(err)
		}
		log.Printf("%s: %d bytes", name, len(b))
	}
}
