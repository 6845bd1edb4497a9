// Package metadataservice asks a Dubbo 3 provider for its MetadataInfo
// through the provider's own MetadataService — the only place the
// interfaces of an application-level instance are published when the
// provider keeps its metadata local (metadata-type local, Dubbo Java's
// default): one Dubbo call,
//
//	org.apache.dubbo.metadata.MetadataService:1.0.0, group <application>
//	MetadataInfo getMetadataInfo(String revision)
//
// on the port the instance names in its "dubbo.metadata-service.url-params"
// metadata (else its dubbo endpoint). The request is written with
// dubbo-go-hessian2, the response framed and checked by Breeze's own Dubbo
// codec (codecs/dubbo) and its body read with dubbo-go-hessian2 into
// MetadataInfo: Java's org.apache.dubbo.metadata.MetadataInfo has no Go
// class registered, so it arrives as a map of its fields.
package metadataservice

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	hessian "github.com/apache/dubbo-go-hessian2"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/codecs/dubbo"
)

// The MetadataService as Dubbo Java 3.x and dubbo-go 3.x export it.
const (
	Interface = "org.apache.dubbo.metadata.MetadataService"
	// Version is MetadataService.VERSION: "1.0.0" whatever the release.
	Version = "1.0.0"
	Method  = "getMetadataInfo"
	// URLParamsKey is the instance metadata where a provider that serves
	// its metadata itself says how to reach its MetadataService (JSON:
	// {"port":"20880","protocol":"dubbo","version":"1.0.0",...}).
	URLParamsKey = "dubbo.metadata-service.url-params"
	// StorageTypeKey is "local" (MetadataService) or "remote" (report).
	StorageTypeKey = "dubbo.metadata.storage-type"
)

// DefaultTimeout bounds one call, connection included.
const DefaultTimeout = 5 * time.Second

// ServiceInfo is one service of a MetadataInfo: what a provider exports.
// The JSON names are those of the metadata report's MetadataInfo.
type ServiceInfo struct {
	Name     string            `json:"name"`
	Group    string            `json:"group"`
	Version  string            `json:"version"`
	Protocol string            `json:"protocol"`
	Port     uint32            `json:"port"`
	Path     string            `json:"path"`
	Params   map[string]string `json:"params"`
}

// MetadataInfo is what an application's instances of one revision export.
type MetadataInfo struct {
	App      string                 `json:"app"`
	Revision string                 `json:"revision"`
	Services map[string]ServiceInfo `json:"services"`
}

// Target is where an instance serves its MetadataService.
type Target struct {
	// Address is host:port.
	Address string
	// Group is the application name; Version the service version.
	Group, Version string
}

// TargetOf reads where the instance of application app at host serves
// its MetadataService: the port and protocol of its URLParamsKey metadata,
// else its dubbo endpoint's port (endpoints: "dubbo.endpoints" by
// protocol), else its own port. Only the dubbo protocol can be called
// (Breeze's codec speaks Dubbo): a MetadataService on tri is an error.
func TargetOf(app, host string, port uint32, metadata map[string]string, endpoints map[string]uint32) (Target, error) {
	t := Target{Group: app, Version: Version}
	protocol := "dubbo"
	if raw := metadata[URLParamsKey]; raw != "" {
		var params map[string]string
		if err := json.Unmarshal([]byte(raw), &params); err != nil {
			return Target{}, fmt.Errorf("%s: %w", URLParamsKey, err)
		}
		if p := params["protocol"]; p != "" {
			protocol = p
		}
		if v := params["version"]; v != "" {
			t.Version = v
		}
		if g := params["group"]; g != "" {
			t.Group = g
		}
		if p, err := strconv.ParseUint(params["port"], 10, 16); err == nil && p != 0 {
			port = uint32(p)
		} else if p := endpoints[protocol]; p != 0 {
			port = p
		}
	} else if p := endpoints[protocol]; p != 0 {
		port = p
	}
	if protocol != "dubbo" {
		return Target{}, fmt.Errorf("its MetadataService speaks %q; Breeze calls it only over dubbo", protocol)
	}
	if port == 0 {
		return Target{}, errors.New("no port for its MetadataService")
	}
	t.Address = net.JoinHostPort(host, strconv.FormatUint(uint64(port), 10))
	return t, nil
}

// requestIDs numbers the requests of this process (one per connection;
// distinct only to make a mixed-up reply visible).
var requestIDs atomic.Uint64

// Get calls t's getMetadataInfo(revision), on a connection of its own,
// within ctx and DefaultTimeout.
func Get(ctx context.Context, t Target, revision string) (MetadataInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", t.Address)
	if err != nil {
		return MetadataInfo{}, err
	}
	defer conn.Close()
	// The deadline bounds the reads and writes; closing on ctx's end
	// covers a cancel before it.
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	id := requestIDs.Add(1)
	req, err := Request(id, t, revision)
	if err != nil {
		return MetadataInfo{}, err
	}
	if _, err := conn.Write(req); err != nil {
		return MetadataInfo{}, err
	}
	codec, err := dubbo.New(codecs.Options{})
	if err != nil {
		return MetadataInfo{}, err
	}
	var (
		buf = make([]byte, 0, 4096)
		msg codecs.Message
	)
	for {
		msg.Reset()
		n, err := codec.Decode(buf, &msg)
		if err != nil {
			return MetadataInfo{}, err
		}
		if n == 0 {
			if len(buf) == cap(buf) {
				buf = append(buf, 0)[:len(buf)]
			}
			m, rerr := conn.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+m]
			if rerr != nil && m == 0 {
				if ctx.Err() != nil {
					return MetadataInfo{}, fmt.Errorf("no answer: %w", ctx.Err())
				}
				return MetadataInfo{}, rerr
			}
			continue
		}
		frame := msg.Frame
		buf = buf[n:]
		if msg.Type != codecs.Response || msg.ID != id {
			// A heartbeat or an event: the provider may send them on
			// any connection; the answer is still to come.
			continue
		}
		return Response(&msg, frame)
	}
}

// Request is the getMetadataInfo(revision) request frame: Dubbo 2.0.2,
// hessian2, two-way.
func Request(id uint64, t Target, revision string) ([]byte, error) {
	e := hessian.NewEncoder()
	attachments := map[interface{}]interface{}{
		"path": Interface, "interface": Interface, "version": t.Version, "group": t.Group,
		"timeout": strconv.FormatInt(DefaultTimeout.Milliseconds(), 10),
	}
	for _, v := range []interface{}{"2.0.2", Interface, t.Version, Method, "Ljava/lang/String;", revision, attachments} {
		if err := e.Encode(v); err != nil {
			return nil, err
		}
	}
	body := e.Buffer()
	frame := make([]byte, 16, 16+len(body))
	frame[0], frame[1] = 0xda, 0xbb
	frame[2] = 0x80 | 0x40 | 2 // request, two-way, hessian2
	binary.BigEndian.PutUint64(frame[4:], id)
	binary.BigEndian.PutUint32(frame[12:], uint32(len(body)))
	return append(frame, body...), nil
}

// Response reads the MetadataInfo out of a response frame the Dubbo codec
// decoded into msg.
func Response(msg *codecs.Message, frame []byte) (info MetadataInfo, err error) {
	// dubbo-go-hessian2 can panic on malformed input; a provider's bad
	// answer is an error, never a crash of the control plane.
	defer func() {
		if r := recover(); r != nil {
			info, err = MetadataInfo{}, fmt.Errorf("hessian2 decoder panicked: %v", r)
		}
	}()
	d := hessian.NewDecoder(frame[16:])
	if msg.Code != 20 {
		text, _ := d.Decode()
		return MetadataInfo{}, fmt.Errorf("status %d: %v", msg.Code, text)
	}
	rt, err := d.Decode()
	if err != nil {
		return MetadataInfo{}, fmt.Errorf("result type: %w", err)
	}
	v, err := d.Decode()
	if err != nil {
		return MetadataInfo{}, fmt.Errorf("result: %w", err)
	}
	switch rt {
	case int32(1), int32(4): // a value (with attachments)
	case int32(2), int32(5):
		return MetadataInfo{}, errors.New("no MetadataInfo for this revision (null)")
	default: // 0, 3: an exception
		return MetadataInfo{}, fmt.Errorf("exception: %s", describe(v))
	}
	return metadataInfo(v)
}

// metadataInfo reads a decoded MetadataInfo object (a map of its fields).
func metadataInfo(v any) (MetadataInfo, error) {
	m, ok := stringMap(v)
	if !ok {
		return MetadataInfo{}, fmt.Errorf("result is a %T, not a MetadataInfo", v)
	}
	info := MetadataInfo{App: str(m["app"]), Revision: str(m["revision"]), Services: map[string]ServiceInfo{}}
	services, _ := stringMap(m["services"])
	for key, sv := range services {
		s, ok := stringMap(sv)
		if !ok {
			return MetadataInfo{}, fmt.Errorf("service %q is a %T, not a ServiceInfo", key, sv)
		}
		si := ServiceInfo{Name: str(s["name"]), Group: str(s["group"]), Version: str(s["version"]),
			Protocol: str(s["protocol"]), Path: str(s["path"]), Params: map[string]string{}}
		switch p := s["port"].(type) {
		case int32:
			si.Port = uint32(p)
		case int64:
			si.Port = uint32(p)
		case int:
			si.Port = uint32(p)
		}
		params, _ := stringMap(s["params"])
		for k, pv := range params {
			si.Params[k] = str(pv)
		}
		info.Services[key] = si
	}
	return info, nil
}

// stringMap is v as a map with string keys: hessian2 decodes a Java object
// of an unregistered class to map[string]any, a Java Map to
// map[any]any.
func stringMap(v any) (map[string]any, bool) {
	switch m := v.(type) {
	case map[string]any:
		return m, true
	case map[any]any:
		out := make(map[string]any, len(m))
		for k, v := range m {
			ks, ok := k.(string)
			if !ok {
				return nil, false
			}
			out[ks] = v
		}
		return out, true
	}
	return nil, false
}

func str(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return ""
}

// describe names an exception object: its class and message.
func describe(v any) string {
	if m, ok := stringMap(v); ok {
		return fmt.Sprintf("%v: %v", m[hessian.ClassKey], m["detailMessage"])
	}
	if e, ok := v.(error); ok {
		return e.Error()
	}
	return fmt.Sprintf("%v", v)
}

// ParseReport reads a MetadataInfo as a metadata report stores it (JSON):
// its services, in no particular order.
func ParseReport(data []byte) ([]ServiceInfo, error) {
	var raw struct {
		Services map[string]ServiceInfo `json:"services"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, err
	}
	out := make([]ServiceInfo, 0, len(raw.Services))
	for _, s := range raw.Services {
		out = append(out, s)
	}
	return out, nil
}
