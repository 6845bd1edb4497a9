package dubbo

import (
	"bytes"
	"math"
	"strings"
	"testing"

	hessian "github.com/apache/dubbo-go-hessian2"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/codecs/codectest"
)

func TestConformance(t *testing.T) {
	req := testdata(t, "request.bin")
	// The arguments as dubbo-go wrote them: the User object (with its class
	// definition), the order string and the int 7 (0x97).
	argsStart := bytes.Index(req, []byte("C\x1corg.apache.dubbo.sample.User"))
	argsEnd := bytes.Index(req, []byte{0x97, 'H'}) + 1
	if argsStart < 0 || argsEnd <= argsStart {
		t.Fatal("request.bin does not look like the frame testdata/dubbogo writes")
	}
	codectest.Run(t, New, codectest.Samples{
		Request: req,
		RequestMetadata: codecs.Metadata{
			{Key: "dubbo", Value: "2.0.2"},
			{Key: "interface", Value: "org.apache.dubbo.sample.UserProvider"},
			{Key: "method", Value: "GetUser"},
			{Key: "version", Value: "1.0.0"},
			{Key: "group", Value: "blue"},
			{Key: "parameter_types", Value: "Lorg/apache/dubbo/sample/User;Ljava/lang/String;I"},
			{Key: "timeout", Value: "3000"},
			{Key: "env", Value: "staging"},
			{Key: "traceparent", Value: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		},
		MutableKey:    "env",
		Payload:       req[argsStart:argsEnd],
		Oneway:        testdata(t, "oneway.bin"),
		Response:      testdata(t, "response.bin"),
		ErrorResponse: testdata(t, "response_error.bin"),
		Heartbeat:     testdata(t, "heartbeat.bin"),
		MaxID:         math.MaxUint64,
	})
}

func TestRegistered(t *testing.T) {
	f, ok := codecs.Lookup("dubbo")
	if !ok {
		t.Fatal(`"dubbo" is not registered`)
	}
	if _, err := f(codecs.Options{}); err != nil {
		t.Fatal(err)
	}
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		opts codecs.Options
		ok   bool
	}{
		{codecs.Options{}, true},
		{codecs.Options{MaxFrameSize: 17}, true},
		{codecs.Options{MaxFrameSize: 16}, false},
		{codecs.Options{MaxFrameSize: -5}, false},
		{codecs.Options{Params: map[string]string{"serialization": "hessian2"}}, false},
	} {
		_, err := New(tc.opts)
		if (err == nil) != tc.ok {
			t.Errorf("New(%+v) error = %v, want ok=%v", tc.opts, err, tc.ok)
		}
	}
}

// TestDubboGoFrames checks every frame dubbo-go wrote under testdata.
func TestDubboGoFrames(t *testing.T) {
	for _, tc := range []struct {
		file   string
		typ    codecs.MessageType
		status codecs.ResponseStatus
		id     uint64
		md     map[string]string
	}{
		{"request.bin", codecs.Request, codecs.StatusOK, 1, map[string]string{"method": "GetUser", "zone": "eu-west-1b"}},
		{"oneway.bin", codecs.Oneway, codecs.StatusOK, 2, map[string]string{"method": "Notify", "app": "checkout-web"}},
		// A generic call ($invoke) routes on the method it names.
		{"generic.bin", codecs.Request, codecs.StatusOK, 3, map[string]string{
			"method": "GetUser", "parameter_types": "Ljava/lang/String;[Ljava/lang/String;[Ljava/lang/Object;",
		}},
		{"response.bin", codecs.Response, codecs.StatusOK, 1, map[string]string{"served-by": "provider-7", "dubbo": "2.0.2"}},
		{"response_plain.bin", codecs.Response, codecs.StatusOK, 1, nil},
		{"response_null.bin", codecs.Response, codecs.StatusOK, 1, map[string]string{"tenant": "acme"}},
		{"response_exc.bin", codecs.Response, codecs.StatusAppError, 1, map[string]string{"served-by": "provider-7"}},
		{"response_exc_noatt.bin", codecs.Response, codecs.StatusAppError, 1, nil},
		{"response_error.bin", codecs.Response, codecs.StatusError, 1, nil},
		{"heartbeat.bin", codecs.Heartbeat, codecs.StatusOK, 9, nil},
		{"heartbeat_reply.bin", codecs.HeartbeatReply, codecs.StatusOK, 9, nil},
	} {
		t.Run(tc.file, func(t *testing.T) {
			m := decode(t, newCodec(t, codecs.Options{}), testdata(t, tc.file))
			if m.Type != tc.typ || m.Status != tc.status || m.ID != tc.id {
				t.Errorf("got %v status %v id %d, want %v status %v id %d", m.Type, m.Status, m.ID, tc.typ, tc.status, tc.id)
			}
			for k, want := range tc.md {
				if got, _ := m.Metadata.Get(k); got != want {
					t.Errorf("metadata %q = %q, want %q", k, got, want)
				}
			}
			if tc.md == nil && len(m.Metadata) != 0 {
				t.Errorf("metadata %v, want none", m.Metadata)
			}
		})
	}
}

func TestResponseStatus(t *testing.T) {
	c := newCodec(t, codecs.Options{})
	for _, tc := range []struct {
		name   string
		status byte
		body   []byte
		want   codecs.ResponseStatus
	}{
		{"exception", 20, hess(int32(0), "boom"), codecs.StatusAppError},
		{"value", 20, hess(int32(1), "ok"), codecs.StatusOK},
		{"null", 20, hess(int32(2)), codecs.StatusOK},
		{"exception with attachments", 20, cat(hess(int32(3), "boom"), hmap("k", "v")), codecs.StatusAppError},
		{"value with attachments", 20, cat(hess(int32(4), "ok"), hmap("k", "v")), codecs.StatusOK},
		{"null with attachments", 20, cat(hess(int32(5)), hmap("k", "v")), codecs.StatusOK},
		// Java writes the result type with writeInt; any int form is valid.
		{"value as a four-byte int", 20, cat([]byte{'I', 0, 0, 0, 1}, hess("ok")), codecs.StatusOK},
		{"client timeout", 30, hess("timeout"), codecs.StatusError},
		{"server timeout", 31, hess("timeout"), codecs.StatusError},
		{"bad request", 40, hess("bad"), codecs.StatusError},
		{"bad response", 50, hess("bad"), codecs.StatusError},
		{"service not found", 60, hess("none"), codecs.StatusError},
		{"service error", 70, hess("err"), codecs.StatusError},
		{"server error", 80, hess("err"), codecs.StatusError},
		{"client error", 90, hess("err"), codecs.StatusError},
		{"thread pool exhausted", 100, hess("busy"), codecs.StatusError},
		// A non-20 body is not parsed, whatever its serialization.
		{"error in another serialization", 80, []byte("{\"json\":1}"), codecs.StatusError},
	} {
		flag := byte(respFlag)
		if tc.name == "error in another serialization" {
			flag = 6
		}
		m := decode(t, c, frame(flag, tc.status, 77, tc.body))
		if m.Type != codecs.Response || m.Status != tc.want || m.ID != 77 {
			t.Errorf("%s: got %v status %v id %d, want response status %v id 77", tc.name, m.Type, m.Status, m.ID, tc.want)
		}
		if strings.HasSuffix(tc.name, "with attachments") {
			if v, _ := m.Metadata.Get("k"); v != "v" {
				t.Errorf("%s: attachment k = %q, want v", tc.name, v)
			}
		}
	}
}

func TestEvents(t *testing.T) {
	c := newCodec(t, codecs.Options{})
	for _, tc := range []struct {
		name   string
		frame  []byte
		want   codecs.MessageType
		reason string
	}{
		{"heartbeat", frame(reqFlag|flagEvent, 0, 5, hess(nil)), codecs.Heartbeat, ""},
		{"heartbeat with empty body", frame(reqFlag|flagEvent, 0, 5, nil), codecs.Heartbeat, ""},
		{"oneway heartbeat", frame(onewayFlag|flagEvent, 0, 5, hess(nil)), codecs.Heartbeat, ""},
		{"mock heartbeat", frame(reqFlag|flagEvent, 0, 5, hess("H")), codecs.Heartbeat, ""},
		{"readonly", frame(onewayFlag|flagEvent, 0, 5, hess("R")), codecs.GoAway, ""},
		{"readonly two-way", frame(reqFlag|flagEvent, 0, 5, hess("R")), codecs.GoAway, ""},
		{"writeable", frame(onewayFlag|flagEvent, 0, 5, hess("W")), codecs.Heartbeat, ""},
		{"heartbeat reply", frame(respFlag|flagEvent, 20, 5, hess(nil)), codecs.HeartbeatReply, ""},
		{"dubbo-go heartbeat reply", frame(respFlag|flagEvent, 20, 5, []byte("NN")), codecs.HeartbeatReply, ""},
		{"unknown event", frame(reqFlag|flagEvent, 0, 5, hess("X")), 0, reasonBadEvent},
		{"event with an int", frame(reqFlag|flagEvent, 0, 5, hess(int32(1))), 0, reasonBadEvent},
		{"event in fastjson", frame(flagRequest|flagTwoWay|flagEvent|6, 0, 5, []byte("null")), 0, reasonSerialization},
	} {
		var m codecs.Message
		n, err := c.Decode(tc.frame, &m)
		if tc.reason != "" {
			if pe, ok := err.(*codecs.ProtocolError); !ok || pe.Reason != tc.reason {
				t.Errorf("%s: Decode = %d, %v; want ProtocolError %s", tc.name, n, err, tc.reason)
			}
			continue
		}
		if err != nil || n != len(tc.frame) || m.Type != tc.want || m.ID != 5 {
			t.Errorf("%s: Decode = %d, %v, %v id %d; want %v id 5", tc.name, n, err, m.Type, m.ID, tc.want)
		}
	}
	var m codecs.Message
	if _, err := c.Decode(frame(respFlag|flagEvent, 90, 5, nil), &m); err != nil || m.Type != codecs.HeartbeatReply || m.Status != codecs.StatusError {
		t.Errorf("failed heartbeat reply: %v %v %v", err, m.Type, m.Status)
	}
}

func TestRequestMetadata(t *testing.T) {
	c := newCodec(t, codecs.Options{})
	for _, tc := range []struct {
		name string
		body []byte
		want map[string]string // "" means absent
	}{
		{
			"attachment version when the body has none",
			requestBody("", "greet", "Ljava/lang/String;", []any{"x"}, hmap("version", "2.0.0", "group", "g1")),
			map[string]string{"version": "2.0.0", "group": "g1", "interface": "com.example.Greeter", "method": "greet"},
		},
		{
			"body fields win over attachments",
			requestBody("1.0.0", "greet", "", nil, hmap("version", "2.0.0", "interface", "other", "method", "m2", "dubbo", "9")),
			map[string]string{"version": "1.0.0", "interface": "com.example.Greeter", "method": "greet", "dubbo": "2.0.2"},
		},
		{
			"scalar values are stringified, others skipped",
			requestBody("", "greet", "IJZ", []any{int32(1), int64(2), true}, hmap(
				"i", int32(-7), "l", int64(1)<<40, "b", false, "d", 1.5, "null", nil,
				"list", []any{"a"}, "map", map[string]any{"a": "b"}, int32(5), "int key", "s", "str")),
			map[string]string{"i": "-7", "l": "1099511627776", "b": "false", "d": "1.5", "s": "str", "null": "", "list": "", "map": "", "int key": ""},
		},
		{
			"duplicate keys: the last wins, as in Java's HashMap",
			requestBody("", "greet", "", nil, hmap("k", "first", "k", "second")),
			map[string]string{"k": "second"},
		},
		{
			"typed map",
			requestBody("", "greet", "", nil, cat([]byte{'M'}, hess("java.util.HashMap", "k", "v"), []byte{'Z'})),
			map[string]string{"k": "v"},
		},
		{
			"null attachments",
			requestBody("", "greet", "", nil, hess(nil)),
			map[string]string{"method": "greet", "group": ""},
		},
		{
			"no attachments at all",
			requestBody("", "greet", "[Ljava/lang/String;", []any{[]string{"a", "b"}}, nil),
			map[string]string{"method": "greet", "parameter_types": "[Ljava/lang/String;"},
		},
		{
			"non-ASCII strings go through dubbo-go-hessian2",
			requestBody("", "grüßen", "", nil, hmap("名字", "值 😀")),
			map[string]string{"method": "grüßen", "名字": "值 😀"},
		},
		{
			"long strings in chunks",
			requestBody("", "greet", "", nil, hmap("big", strings.Repeat("x", 70000))),
			map[string]string{"big": strings.Repeat("x", 70000)},
		},
		{
			"generic call whose first argument is not a string",
			requestBody("", "$invoke", "I", []any{int32(1)}, hmap()),
			map[string]string{"method": "$invoke"},
		},
	} {
		m := decode(t, c, frame(reqFlag, 0, 1, tc.body))
		for k, want := range tc.want {
			got, ok := m.Metadata.Get(k)
			if want == "" && ok || got != want {
				t.Errorf("%s: metadata %q = %q (present %v), want %q", tc.name, k, got, ok, want)
			}
		}
	}
}

func TestSerializationRefused(t *testing.T) {
	c := newCodec(t, codecs.Options{})
	body := requestBody("", "greet", "", nil, hmap())
	for _, f := range []byte{flagRequest | flagTwoWay | 6, flagRequest | 22, flagRequest | 0} {
		if r, _ := decodeErr(c, frame(f, 0, 1, body)); r != reasonSerialization {
			t.Errorf("flag %#x: %s, want %s", f, r, reasonSerialization)
		}
	}
	if r, _ := decodeErr(c, frame(23, 20, 1, hess(int32(1), "x"))); r != reasonSerialization {
		t.Errorf("status-20 response in fastjson2: %s, want %s", r, reasonSerialization)
	}
}

func TestLocalReply(t *testing.T) {
	c := newCodec(t, codecs.Options{})
	req := decode(t, c, testdata(t, "request.bin"))
	req.ID = 1<<63 + 5
	for kind, status := range map[codecs.ErrorKind]byte{
		codecs.ErrNoRoute:           60,
		codecs.ErrNoHealthyUpstream: 80,
		codecs.ErrTimeout:           31,
		codecs.ErrOverloaded:        100,
		codecs.ErrBadRequest:        40,
		codecs.ErrInternal:          80,
		codecs.ErrorKind(99):        80,
	} {
		f := c.LocalReply(req, kind, "cluster blue-v1")
		if f[2] != hessian2ID || f[3] != status {
			t.Errorf("%v: flag %#x status %d, want flag 2 status %d", kind, f[2], f[3], status)
		}
		if got := c.(codecs.ReplyCoder).ReplyCode(kind); got != uint32(status) {
			t.Errorf("%v: ReplyCode = %d, the reply's status is %d", kind, got, status)
		}
		m := decode(t, c, f)
		if m.Type != codecs.Response || m.Status != codecs.StatusError || m.ID != req.ID {
			t.Errorf("%v: decodes as %v %v id %d", kind, m.Type, m.Status, m.ID)
		}
		// Java reads the body with readUTF, dubbo-go as a string.
		v, err := hessian.NewDecoder(f[headerLen:]).Decode()
		text, _ := v.(string)
		if err != nil || !strings.Contains(text, "org.apache.dubbo.sample.UserProvider.GetUser") ||
			!strings.Contains(text, "cluster blue-v1") || !strings.Contains(text, kind.Text()) {
			t.Errorf("%v: body %q, %v", kind, text, err)
		}
	}
}

func TestHeartbeatFrames(t *testing.T) {
	c := newCodec(t, codecs.Options{})
	hb := HeartbeatRequest(1<<63 | 42)
	// The same bytes dubbo-go's getty client sends, but for the id.
	want := testdata(t, "heartbeat.bin")
	if !bytes.Equal(hb[:4], want[:4]) || !bytes.Equal(hb[12:], want[12:]) {
		t.Errorf("HeartbeatRequest = %x, dubbo-go sends %x", hb, want)
	}
	m := decode(t, c, hb)
	if m.Type != codecs.Heartbeat || m.ID != 1<<63|42 {
		t.Fatalf("HeartbeatRequest decodes as %v id %d", m.Type, m.ID)
	}
	r := decode(t, c, c.HeartbeatReply(m))
	if r.Type != codecs.HeartbeatReply || r.ID != m.ID || r.Status != codecs.StatusOK {
		t.Errorf("HeartbeatReply decodes as %v %v id %d", r.Type, r.Status, r.ID)
	}
}

// mutate decodes f, applies muts, encodes, and decodes the result.
func mutate(t *testing.T, f []byte, muts ...string) (*codecs.Message, []byte) {
	t.Helper()
	c := newCodec(t, codecs.Options{})
	m := decode(t, c, f)
	for i := 0; i < len(muts); i += 2 {
		m.Mutations = append(m.Mutations, codecs.KV{Key: muts[i], Value: muts[i+1]})
	}
	out, err := c.Encode(m)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	out = bytes.Clone(out)
	return decode(t, newCodec(t, codecs.Options{}), out), out
}

func TestMutations(t *testing.T) {
	t.Run("overwritten scalar pairs are dropped", func(t *testing.T) {
		_, out := mutate(t, testdata(t, "request.bin"), "env", "prod", "env", "canary", "new", "1")
		if bytes.Contains(out, []byte("staging")) {
			t.Error("the overwritten value is still in the frame")
		}
		if n := bytes.Count(out, []byte("\x03env")); n != 1 {
			t.Errorf("key env appears %d times, want once", n)
		}
		m := decode(t, newCodec(t, codecs.Options{}), out)
		if v, _ := m.Metadata.Get("env"); v != "canary" {
			t.Errorf("env = %q, want the last mutation, canary", v)
		}
	})
	t.Run("dubbo-go decodes the merged map", func(t *testing.T) {
		_, out := mutate(t, testdata(t, "request.bin"), "tenant", "globex", "x-canary", "true")
		got := fullDecode(t, out[headerLen:])
		atts := got[len(got)-1].(map[any]any)
		if atts["tenant"] != "globex" || atts["x-canary"] != "true" || atts["group"] != "blue" || len(atts) != 13 {
			t.Errorf("attachments as dubbo-go-hessian2 reads them: %v", atts)
		}
		if u, ok := got[5].(*User); !ok || u.Name != "Alex Example" {
			t.Errorf("first argument: %#v", got[5])
		}
	})
	t.Run("null attachments become a map", func(t *testing.T) {
		m, _ := mutate(t, frame(reqFlag, 0, 1, requestBody("", "greet", "", nil, hess(nil))), "k", "v")
		if v, _ := m.Metadata.Get("k"); v != "v" {
			t.Errorf("k = %q", v)
		}
	})
	t.Run("missing attachments are added", func(t *testing.T) {
		m, _ := mutate(t, frame(reqFlag, 0, 1, requestBody("", "greet", "I", []any{int32(3)}, nil)), "k", "v")
		if v, _ := m.Metadata.Get("k"); v != "v" {
			t.Errorf("k = %q", v)
		}
	})
	t.Run("typed map keeps its type", func(t *testing.T) {
		typed := cat([]byte{'M'}, hess("java.util.HashMap", "a", "1", "k", "old"), []byte{'Z'})
		m, out := mutate(t, frame(reqFlag, 0, 1, requestBody("", "greet", "", nil, typed)), "k", "new")
		if !bytes.Contains(out, []byte("java.util.HashMap")) {
			t.Error("map type lost")
		}
		if a, _ := m.Metadata.Get("a"); a != "1" {
			t.Errorf("a = %q", a)
		}
		if k, _ := m.Metadata.Get("k"); k != "new" {
			t.Errorf("k = %q", k)
		}
	})
	t.Run("a list value that is overwritten stays, the new pair wins", func(t *testing.T) {
		atts := cat([]byte{'H'}, hess("k", []string{"x"}, "ref", "v"), []byte{'Z'})
		m, out := mutate(t, frame(reqFlag, 0, 1, requestBody("", "greet", "", nil, atts)), "k", "new")
		if k, _ := m.Metadata.Get("k"); k != "new" {
			t.Errorf("k = %q", k)
		}
		got := fullDecode(t, out[headerLen:])
		if a := got[len(got)-1].(map[any]any); a["k"] != "new" {
			t.Errorf("dubbo-go-hessian2 reads k = %v", a["k"])
		}
	})
	t.Run("object of a class defined in the arguments", func(t *testing.T) {
		u := &User{ID: "u1", Name: "N"}
		// One stream: the attachment value reuses the class definition
		// written for the argument.
		body := cat(hess("2.0.2", "com.example.Greeter", "", "greet", "Lorg/apache/dubbo/sample/User;"))
		e := hessian.NewEncoder()
		_ = e.Encode(u)
		_ = e.Encode(map[string]any{"owner": &User{ID: "u2"}, "k": "old"})
		body = append(body, e.Buffer()...)
		m, out := mutate(t, frame(reqFlag, 0, 1, body), "k", "new")
		if k, _ := m.Metadata.Get("k"); k != "new" {
			t.Errorf("k = %q", k)
		}
		got := fullDecode(t, out[headerLen:])
		if a := got[len(got)-1].(map[any]any); a["k"] != "new" || a["owner"] == nil {
			t.Errorf("attachments %v", a)
		}
	})
	t.Run("response with attachments", func(t *testing.T) {
		m, _ := mutate(t, testdata(t, "response.bin"), "served-by", "proxy", "x", "y")
		if v, _ := m.Metadata.Get("served-by"); v != "proxy" || m.Status != codecs.StatusOK {
			t.Errorf("served-by = %q, status %v", v, m.Status)
		}
	})
	for _, tc := range []struct {
		file   string
		status codecs.ResponseStatus
		typ    byte
	}{
		{"response_plain.bin", codecs.StatusOK, 0x94},
		{"response_exc_noatt.bin", codecs.StatusAppError, 0x93},
	} {
		t.Run("result type upgraded in "+tc.file, func(t *testing.T) {
			m, out := mutate(t, testdata(t, tc.file), "k", "v")
			if out[headerLen] != tc.typ || m.Status != tc.status {
				t.Errorf("result type %#x status %v, want %#x %v", out[headerLen], m.Status, tc.typ, tc.status)
			}
			if v, _ := m.Metadata.Get("k"); v != "v" {
				t.Errorf("k = %q", v)
			}
		})
	}
	t.Run("null result", func(t *testing.T) {
		m, out := mutate(t, frame(respFlag, 20, 1, hess(int32(2))), "k", "v")
		if out[headerLen] != 0x95 {
			t.Errorf("result type %#x, want 0x95", out[headerLen])
		}
		if v, _ := m.Metadata.Get("k"); v != "v" {
			t.Errorf("k = %q", v)
		}
	})
	for _, f := range []string{"response_error.bin", "heartbeat.bin", "heartbeat_reply.bin"} {
		t.Run("ignored by "+f, func(t *testing.T) {
			in := testdata(t, f)
			_, out := mutate(t, in, "k", "v")
			if !bytes.Equal(out, in) {
				t.Errorf("frame changed: %x", out)
			}
		})
	}
	t.Run("frame limit", func(t *testing.T) {
		in := testdata(t, "request.bin")
		c := newCodec(t, codecs.Options{MaxFrameSize: len(in) + 10})
		m := decode(t, c, in)
		m.Mutations = codecs.Metadata{{Key: "big", Value: strings.Repeat("x", 100)}}
		if _, err := c.Encode(m); err == nil {
			t.Error("Encode made a frame over the limit")
		}
	})
}

// fullDecode decodes every value of a body with dubbo-go-hessian2, as
// dubbo-go's provider does.
func fullDecode(t testing.TB, body []byte) []any {
	t.Helper()
	d := hessian.NewDecoder(body)
	var out []any
	for i := 0; i < 5; i++ {
		v, err := d.Decode()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	n, err := countArgs(out[4].(string))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i <= n; i++ {
		v, err := d.Decode()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

func TestHeartbeatForKeepalive(t *testing.T) {
	c, err := New(codecs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p, ok := c.(codecs.Pinger)
	if !ok {
		t.Fatal("dubbo codec does not implement codecs.Pinger")
	}
	var m codecs.Message
	f := p.Heartbeat(1 << 40)
	if n, err := c.Decode(f, &m); err != nil || n != len(f) || m.Type != codecs.Heartbeat || m.ID != 1<<40 {
		t.Fatalf("decode heartbeat: n=%d err=%v msg=%+v", n, err, m)
	}
}

func TestDescribe(t *testing.T) {
	c := newCodec(t, codecs.Options{})
	if _, ok := c.(codecs.Describer); !ok {
		t.Fatal("the dubbo codec is not a codecs.Describer")
	}
	const iface = "org.apache.dubbo.sample.UserProvider"
	for _, tc := range []struct{ file, service, method string }{
		{"request.bin", iface, "GetUser"},
		{"oneway.bin", iface, "Notify"},
		// A generic call ($invoke) is named after the method it invokes.
		{"generic.bin", iface, "GetUser"},
	} {
		m := decode(t, c, testdata(t, tc.file))
		if s, meth := codecs.Describe(c, m.Metadata); s != tc.service || meth != tc.method {
			t.Errorf("%s: Describe = %q, %q; want %q, %q", tc.file, s, meth, tc.service, tc.method)
		}
	}
}

func TestSupportsResponseAttachments(t *testing.T) {
	for v, want := range map[string]bool{
		"2.0.2": true, "2.0.99": true, "2.0.10": true, "2.0.2.1": true,
		"": false, "2.0.1": false, "2.0.100": false, "2.5.3": false, "2.6.2": false,
		"2.7.23": false, "3.2.0": false, "1.0.0": false, "x": false, "2.0.2-SNAPSHOT": true,
		"2.0.9999999": false, "2.0.2.0.0.0.0": false,
	} {
		if got := supportsResponseAttachments(v); got != want {
			t.Errorf("supportsResponseAttachments(%q) = %v, want %v", v, got, want)
		}
	}
}

// TestResponseMutationsFollowClientVersion: a response without attachments
// (result type 0-2) gets them only when the requests of the connection say
// the client reads result types 3-5; one with attachments always takes them.
func TestResponseMutationsFollowClientVersion(t *testing.T) {
	request := func(version string) []byte {
		return frame(reqFlag, 0, 1, cat(hess(version, "com.example.Greeter", "", "greet", ""), hmap()))
	}
	for _, tc := range []struct {
		name     string
		requests []string // dubbo versions of requests decoded before
		file     string
		upgraded bool
	}{
		{"no request seen", nil, "response_plain.bin", true},
		{"2.0.2 client", []string{"2.0.2"}, "response_plain.bin", true},
		{"2.6.2 client", []string{"2.6.2"}, "response_plain.bin", false},
		{"client without version", []string{""}, "response_exc_noatt.bin", false},
		{"the last request counts", []string{"2.0.2", "2.5.3"}, "response_plain.bin", false},
		{"back to 2.0.2", []string{"2.5.3", "2.0.2"}, "response_exc_noatt.bin", true},
		// The provider already judged the client able to read attachments.
		{"response with attachments", []string{"2.6.2"}, "response.bin", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCodec(t, codecs.Options{})
			for _, v := range tc.requests {
				decode(t, c, request(v))
			}
			in := testdata(t, tc.file)
			m := decode(t, c, in)
			m.Mutations = codecs.Metadata{{Key: "k", Value: "v"}}
			before := IgnoredMutations()
			out, err := c.Encode(m)
			if err != nil {
				t.Fatal(err)
			}
			got := decode(t, newCodec(t, codecs.Options{}), out)
			v, _ := got.Metadata.Get("k")
			if tc.upgraded {
				if v != "v" || out[headerLen] < 0x93 {
					t.Errorf("k = %q, result type %#x; want the mutation and type 3-5", v, out[headerLen])
				}
			} else if !bytes.Equal(out, in) || IgnoredMutations() != before+1 {
				t.Errorf("frame changed %v, ignored mutations counted %d; want the frame as is, counted once",
					!bytes.Equal(out, in), IgnoredMutations()-before)
			}
		})
	}
}

func TestIgnoredMutationsCounted(t *testing.T) {
	for _, f := range []string{"response_error.bin", "heartbeat.bin", "heartbeat_reply.bin"} {
		c := newCodec(t, codecs.Options{})
		m := decode(t, c, testdata(t, f))
		m.Mutations = codecs.Metadata{{Key: "k", Value: "v"}}
		before := IgnoredMutations()
		if _, err := c.Encode(m); err != nil || IgnoredMutations() != before+1 {
			t.Errorf("%s: Encode error %v, counted %d, want 1", f, err, IgnoredMutations()-before)
		}
		// No mutations, nothing to count.
		m.Mutations = nil
		before = IgnoredMutations()
		if _, err := c.Encode(m); err != nil || IgnoredMutations() != before {
			t.Errorf("%s: Encode without mutations counted", f)
		}
	}
}

// remove decodes f, asks Encode to remove keys, and returns the encoded
// frame and what it decodes as.
func remove(t *testing.T, f []byte, keys ...string) (*codecs.Message, []byte) {
	t.Helper()
	c := newCodec(t, codecs.Options{})
	m := decode(t, c, f)
	m.Removals = append(m.Removals, keys...)
	out, err := c.Encode(m)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	out = bytes.Clone(out)
	return decode(t, newCodec(t, codecs.Options{}), out), out
}

func TestRemovals(t *testing.T) {
	t.Run("a removed attachment is gone, the others stay", func(t *testing.T) {
		in := testdata(t, "request.bin")
		before := decode(t, newCodec(t, codecs.Options{}), bytes.Clone(in))
		if _, ok := before.Metadata.Get("env"); !ok {
			t.Fatal("request.bin has no env attachment to remove")
		}
		m, out := remove(t, in, "env")
		if v, ok := m.Metadata.Get("env"); ok {
			t.Errorf("env = %q after its removal", v)
		}
		if bytes.Contains(out, []byte("\x03env")) {
			t.Error("the key env is still in the frame")
		}
		got := fullDecode(t, out[headerLen:])
		atts := got[len(got)-1].(map[any]any)
		if _, ok := atts["env"]; ok || atts["tenant"] == nil || atts["group"] != "blue" {
			t.Errorf("attachments as dubbo-go-hessian2 reads them: %v", atts)
		}
		if u, ok := got[5].(*User); !ok || u.Name != "Alex Example" {
			t.Errorf("first argument: %#v", got[5])
		}
	})
	t.Run("removed and mutated: the mutation's value", func(t *testing.T) {
		c := newCodec(t, codecs.Options{})
		m := decode(t, c, testdata(t, "request.bin"))
		m.Removals = []string{"env"}
		m.Mutations = codecs.Metadata{{Key: "env", Value: "canary"}}
		out, err := c.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		got := decode(t, newCodec(t, codecs.Options{}), bytes.Clone(out))
		if v, _ := got.Metadata.Get("env"); v != "canary" || bytes.Count(out, []byte("\x03env")) != 1 {
			t.Errorf("env = %q, %d times in the frame; want canary, once", v, bytes.Count(out, []byte("\x03env")))
		}
	})
	t.Run("a key the frame lacks changes nothing but the map's bytes", func(t *testing.T) {
		in := testdata(t, "request.bin")
		want := decode(t, newCodec(t, codecs.Options{}), bytes.Clone(in))
		m, _ := remove(t, in, "absent")
		if len(m.Metadata) != len(want.Metadata) {
			t.Errorf("metadata %v, want %v", m.Metadata, want.Metadata)
		}
	})
	t.Run("a list value stays", func(t *testing.T) {
		atts := cat([]byte{'H'}, hess("k", []string{"x"}, "ref", "v"), []byte{'Z'})
		_, out := remove(t, frame(reqFlag, 0, 1, requestBody("", "greet", "", nil, atts)), "k", "ref")
		got := fullDecode(t, out[headerLen:])
		a := got[len(got)-1].(map[any]any)
		if _, ok := a["ref"]; ok || a["k"] == nil {
			t.Errorf("attachments %v; want ref removed, the list k kept", a)
		}
	})
	t.Run("response with attachments", func(t *testing.T) {
		in := testdata(t, "response.bin")
		before := decode(t, newCodec(t, codecs.Options{}), bytes.Clone(in))
		if len(before.Metadata) == 0 {
			t.Fatal("response.bin has no attachments")
		}
		key := before.Metadata[0].Key
		m, _ := remove(t, in, key)
		if _, ok := m.Metadata.Get(key); ok || m.Status != codecs.StatusOK {
			t.Errorf("%s still there (status %v)", key, m.Status)
		}
	})
	// Frames without an attachments map: nothing to remove, the frame as
	// it was (no result type upgraded), nothing counted as ignored.
	for _, f := range []string{"response_plain.bin", "response_error.bin", "heartbeat.bin", "heartbeat_reply.bin"} {
		t.Run("nothing to remove in "+f, func(t *testing.T) {
			in := testdata(t, f)
			ignored := IgnoredMutations()
			_, out := remove(t, in, "k")
			if !bytes.Equal(out, in) || IgnoredMutations() != ignored {
				t.Errorf("frame changed %v, ignored mutations counted %d; want the frame as is, nothing counted",
					!bytes.Equal(out, in), IgnoredMutations()-ignored)
			}
		})
	}
}
