package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/config"
	"github.com/breeze-mesh/breeze/filters/filter"
	"github.com/breeze-mesh/breeze/host"
	"github.com/breeze-mesh/breeze/internal/testwait"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
	"github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"
)

// backend is a real TCP server speaking tframe. It answers each request
// with metadata "server" (its name) and "seen" (the request's metadata,
// so tests can check mutations), and the request body. Requests may ask
// for behaviour through metadata: "sleep" (ms before answering), "hang"
// (never answer), "drop" (close the connection instead of answering),
// "reply_panic" (the response carries that value as its "panic" key, see
// tcodec).
type backend struct {
	t    *testing.T
	name string
	ln   net.Listener

	mu      sync.Mutex
	conns   map[net.Conn]bool
	oneways []string
	// withKey counts the requests and oneways received carrying each
	// metadata key.
	withKey map[string]int
	// onConnect lets a test make the backend speak first (heartbeat, goaway).
	onConnect func(c net.Conn)
	served    chan string
	// hangAll: receive requests, answer none (a provider stuck before it dies).
	hangAll atomic.Bool
	// dropAll: close the connection on each request, after counting it
	// received (a provider that dies running it).
	dropAll atomic.Bool
	// closeNext: close the connection on the next frame it reads, before
	// looking at it (a provider whose idle timeout fires as the frame
	// arrives).
	closeNext atomic.Bool
	// errorCode, when not 0: answer every request with a protocol error
	// carrying that code (tcodec reads it into Message.Code).
	errorCode  atomic.Int64
	received   atomic.Int64
	heartbeats atomic.Int64
	// open counts the connections the backend has open now.
	open atomic.Int64
	// idleTimeout (nanos): close a connection that sent nothing for that
	// long, as providers do. 0: never.
	idleTimeout atomic.Int64
}

func newBackend(t *testing.T, name string) *backend {
	t.Helper()
	return newBackendAt(t, name, "127.0.0.1:0")
}

func newBackendAt(t *testing.T, name, addr string) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{t: t, name: name, ln: ln, conns: map[net.Conn]bool{}, withKey: map[string]int{}, served: make(chan string, 10000)}
	go b.serve()
	t.Cleanup(b.kill)
	return b
}

func (b *backend) port() uint32 { return uint32(b.ln.Addr().(*net.TCPAddr).Port) }

// receivedWith is how many requests and oneways the backend received
// carrying metadata key.
func (b *backend) receivedWith(key string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.withKey[key]
}

// onewaysReceived is how many oneways the backend received.
func (b *backend) onewaysReceived() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.oneways)
}

func (b *backend) serve() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		b.conns[c] = true
		hook := b.onConnect
		b.mu.Unlock()
		if hook != nil {
			hook(c)
		}
		go b.handle(c)
	}
}

// kill closes the listener and every connection at once, like a provider
// process that died.
func (b *backend) kill() {
	b.ln.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	for c := range b.conns {
		c.Close()
	}
}

func (b *backend) handle(c net.Conn) {
	b.open.Add(1)
	defer b.open.Add(-1)
	defer c.Close()
	var wmu sync.Mutex
	write := func(p []byte) {
		wmu.Lock()
		defer wmu.Unlock()
		c.Write(p)
	}
	r := bufio.NewReader(c)
	for {
		if d := time.Duration(b.idleTimeout.Load()); d > 0 {
			c.SetReadDeadline(time.Now().Add(d))
		}
		f, err := readFrame(r)
		if err != nil {
			return
		}
		if b.closeNext.CompareAndSwap(true, false) {
			return
		}
		m, _, err := tdecode(f)
		if err != nil {
			b.t.Errorf("backend %s: bad frame from proxy: %v", b.name, err)
			return
		}
		if m.typ == codecs.Request || m.typ == codecs.Oneway {
			b.mu.Lock()
			for _, kv := range m.md {
				b.withKey[kv.Key]++
			}
			b.mu.Unlock()
		}
		switch m.typ {
		case codecs.Heartbeat:
			b.heartbeats.Add(1)
			write(tencode(tmsg{typ: codecs.HeartbeatReply, id: m.id}))
			continue
		case codecs.HeartbeatReply:
			b.served <- "heartbeat_reply"
			continue
		case codecs.Oneway:
			b.mu.Lock()
			b.oneways = append(b.oneways, m.body)
			b.mu.Unlock()
			b.served <- "oneway"
			continue
		}
		b.received.Add(1)
		md := codecs.Metadata(m.md)
		if _, ok := md.Get("hang"); ok || b.hangAll.Load() {
			continue
		}
		if _, ok := md.Get("drop"); ok || b.dropAll.Load() {
			return
		}
		if code := b.errorCode.Load(); code != 0 {
			write(tencode(tmsg{typ: codecs.Response, id: m.id, status: codecs.StatusError,
				md: []codecs.KV{{Key: "server", Value: b.name}, {Key: "code", Value: strconv.Itoa(int(code))}}}))
			b.served <- b.name
			continue
		}
		reply := func() {
			seen := ""
			for _, kv := range m.md {
				seen += kv.Key + "=" + kv.Value + ";"
			}
			rmd := []codecs.KV{{Key: "server", Value: b.name}, {Key: "seen", Value: seen}}
			if v, ok := md.Get("reply_panic"); ok {
				rmd = append(rmd, codecs.KV{Key: "panic", Value: v})
			}
			write(tencode(tmsg{typ: codecs.Response, id: m.id, md: rmd, body: m.body}))
			b.served <- b.name
		}
		if ms, ok := md.Get("sleep"); ok {
			d, _ := strconv.Atoi(ms)
			time.AfterFunc(time.Duration(d)*time.Millisecond, reply)
			continue
		}
		reply()
	}
}

func readFrame(r *bufio.Reader) ([]byte, error) {
	hdr := make([]byte, 4)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, err
	}
	n := int(hdr[0])<<24 | int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
	f := make([]byte, 4+n)
	copy(f, hdr)
	_, err := io.ReadFull(r, f[4:])
	return f, err
}

// client is a tframe client on one connection that may have many requests
// in flight; it matches responses to requests by id.
type client struct {
	c       net.Conn
	mu      sync.Mutex
	nextID  uint64
	waiters map[uint64]chan tmsg
	closed  chan struct{}
	extra   chan tmsg // frames that answer no request (heartbeat replies)
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cl := &client{c: c, waiters: map[uint64]chan tmsg{}, closed: make(chan struct{}), extra: make(chan tmsg, 16)}
	go cl.read()
	t.Cleanup(func() { c.Close() })
	return cl
}

func (cl *client) read() {
	defer close(cl.closed)
	r := bufio.NewReader(cl.c)
	for {
		f, err := readFrame(r)
		if err != nil {
			return
		}
		m, _, err := tdecode(f)
		if err != nil {
			return
		}
		cl.mu.Lock()
		ch := cl.waiters[m.id]
		delete(cl.waiters, m.id)
		cl.mu.Unlock()
		if ch == nil || m.typ != codecs.Response {
			cl.extra <- m
			continue
		}
		ch <- m
	}
}

var errClosed = errors.New("connection closed by proxy")

// call sends a request with the given id (0: the next one) and waits for its answer.
func (cl *client) call(id uint64, body string, md ...string) (tmsg, error) {
	ch := cl.send(codecs.Request, id, body, md...)
	select {
	case m := <-ch:
		if m.id != id && id != 0 {
			return m, fmt.Errorf("answer has id %d, want %d", m.id, id)
		}
		return m, nil
	case <-cl.closed:
		return tmsg{}, errClosed
	case <-time.After(20 * time.Second):
		return tmsg{}, errors.New("no answer within 20s: the proxy lost the request")
	}
}

func (cl *client) send(typ codecs.MessageType, id uint64, body string, md ...string) chan tmsg {
	var kvs []codecs.KV
	for i := 0; i+1 < len(md); i += 2 {
		kvs = append(kvs, codecs.KV{Key: md[i], Value: md[i+1]})
	}
	ch := make(chan tmsg, 1)
	cl.mu.Lock()
	if id == 0 {
		cl.nextID++
		id = cl.nextID
	}
	if typ == codecs.Request {
		cl.waiters[id] = ch
	}
	cl.mu.Unlock()
	cl.c.Write(tencode(tmsg{typ: typ, id: id, md: kvs, body: body}))
	return ch
}

func md(m tmsg, key string) string {
	v, _ := codecs.Metadata(m.md).Get(key)
	return v
}

var (
	testHostOnce sync.Once
	testHost     *host.Host
)

// startProxy serves the proxy config (YAML of breeze.v1.ProxyConfig) on a
// loopback port through the host that drives Envoy's real Go shim, and
// returns its address.
func startProxy(t *testing.T, yamlCfg string) string {
	t.Helper()
	return startProxyAny(t, typedConfig(t, yamlCfg))
}

// startProxyAny is startProxy for a plugin_config as an EnvoyFilter
// carries it (an xds.type.v3.TypedStruct of breeze.v1.ProxyConfig).
func startProxyAny(t *testing.T, a *anypb.Any) string {
	t.Helper()
	testHostOnce.Do(func() {
		Register()
		testHost = host.New(host.Options{
			Logger:               slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
			FilterState:          testFilterState,
			HandshakeFilterState: testHandshakeState,
		})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := testHost.AddListener(ln, PluginName, a); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	testListenersMu.Lock()
	testListeners = append(testListeners, ln)
	testListenersMu.Unlock()
	return ln.Addr().String()
}

// testPeerState holds, by client IP, the URI SAN that Envoy's
// set_filter_state would store at the TLS handshake ("": a plaintext
// connection). The IPs in it are on a chain with that filter, which also
// marks each connection with filter.IdentityHookKey when it opens; other
// IPs come through no such filter. Tests give their clients addresses of
// their own in 127/8 (dialFrom).
var testPeerState sync.Map // string -> string

func testPeerURI(remoteAddr string) (string, bool) {
	ip, _, _ := net.SplitHostPort(remoteAddr)
	v, ok := testPeerState.Load(ip)
	if !ok {
		return "", false
	}
	return v.(string), true
}

// testFilterState is what is there when the connection opens: the mark.
func testFilterState(remoteAddr string) map[string]string {
	if _, ok := testPeerURI(remoteAddr); ok {
		return map[string]string{filter.IdentityHookKey: "tls_handshake"}
	}
	return nil
}

// testHandshakeState is what the handshake adds: the peer's URI SAN.
func testHandshakeState(remoteAddr string) map[string]string {
	if uri, _ := testPeerURI(remoteAddr); uri != "" {
		return map[string]string{"io.istio.peer_principal": uri}
	}
	return nil
}

// dialFrom connects to addr from the loopback address ip, so that the
// proxy sees the connection come from there.
func dialFrom(t *testing.T, addr, ip string) *client {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cl := &client{c: c, waiters: map[uint64]chan tmsg{}, closed: make(chan struct{}), extra: make(chan tmsg, 16)}
	go cl.read()
	t.Cleanup(func() { c.Close() })
	return cl
}

var (
	testListenersMu sync.Mutex
	testListeners   []net.Listener
)

// eventually waits for cond, failing the test after a deadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !holdsWithin(10*time.Second, cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

// holdsWithin polls cond until it holds (true) or within has passed
// (false): the one polling loop of these tests.
func holdsWithin(within time.Duration, cond func() bool) bool {
	return testwait.Poll(within, cond)
}

func TestMain(m *testing.M) {
	// Connection churn is logged at warn level by design; keep test output to errors.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	os.Exit(m.Run())
}

// proxyFor returns the Proxy the shim's config parser built for yamlCfg
// (identical configs share one).
func proxyFor(t *testing.T, yamlCfg string) *Proxy {
	t.Helper()
	p := parsedProxy(t, yamlCfg)
	if p.err != nil {
		t.Fatalf("no proxy for config: %v", p.err)
	}
	return p
}

// parsedProxy is what the shim's config parser made of yamlCfg, a Proxy
// or one carrying the config's error.
func parsedProxy(t *testing.T, yamlCfg string) *Proxy {
	t.Helper()
	Register()
	p, ok := network.GetNetworkFilterConfigParser().ParseConfig(typedConfig(t, yamlCfg)).(*Proxy)
	if !ok {
		t.Fatal("the parser made no *Proxy")
	}
	return p
}

// typedConfig is yamlCfg (a breeze.v1.ProxyConfig) as the TypedStruct an
// EnvoyFilter carries.
func typedConfig(t *testing.T, yamlCfg string) *anypb.Any {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(yamlCfg))
	if err != nil {
		t.Fatal(err)
	}
	cfg := &breezev1.ProxyConfig{}
	if err := protojson.Unmarshal(js, cfg); err != nil {
		t.Fatal(err)
	}
	a, err := config.ToTypedStruct(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
