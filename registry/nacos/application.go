package nacos

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/model"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"

	"github.com/breeze-mesh/breeze/registry"
)

// Application-level discovery (Dubbo 3's service discovery) in Nacos:
// each application is a Nacos service, its instances carry
//
//	dubbo.metadata.revision  the revision of the instance's MetadataInfo
//	dubbo.endpoints          [{"port":20880,"protocol":"dubbo"}]
//
// and the MetadataInfo of a revision (the interfaces, versions, groups and
// their parameters) is the Nacos configuration dataId=<application>,
// group=<revision>, as dubbo-go 3.3's and Dubbo Java 3's Nacos metadata
// reports publish it. A revision's MetadataInfo never changes (the
// revision is its digest), so it is read once.

// serviceInfo is one service of a MetadataInfo.
type serviceInfo struct {
	Name     string            `json:"name"`
	Group    string            `json:"group"`
	Version  string            `json:"version"`
	Protocol string            `json:"protocol"`
	Port     uint32            `json:"port"`
	Path     string            `json:"path"`
	Params   map[string]string `json:"params"`
}

// ParseMetadataInfo reads a MetadataInfo (JSON, as the metadata report
// stores it).
func ParseMetadataInfo(data []byte) ([]serviceInfo, error) {
	var raw struct {
		Services map[string]serviceInfo `json:"services"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, err
	}
	out := make([]serviceInfo, 0, len(raw.Services))
	for _, s := range raw.Services {
		out = append(out, s)
	}
	return out, nil
}

// metadataRetry: how long before reading again a MetadataInfo that was
// not in the report (the provider publishes it around its registration).
const metadataRetry = 2 * time.Second

// metadataOf returns the services of an application's revision, reading
// the metadata report when not known yet; nil when it is not there.
func (w *watcher) metadataOf(app, revision string) []serviceInfo {
	if revision == "" {
		return nil
	}
	key := app + "/" + revision
	m, ok := w.metadata[key]
	if ok && m.services != nil {
		return m.services
	}
	if ok && time.Since(m.checked) < metadataRetry {
		m.wakeIn(w, metadataRetry-time.Since(m.checked))
		return nil
	}
	if !ok {
		m = &metadataInfo{}
		w.metadata[key] = m
	}
	m.checked = time.Now()
	data, err := w.config.GetConfig(vo.ConfigParam{DataId: app, Group: revision})
	if err == nil && data != "" {
		services, perr := ParseMetadataInfo([]byte(data))
		if perr == nil {
			m.services = services
			return services
		}
		err = perr
	}
	if w.missingLogged == nil {
		w.missingLogged = map[string]bool{}
	}
	if !w.missingLogged[key] {
		w.missingLogged[key] = true
		w.log.Warn("no MetadataInfo for this application revision in Nacos' configurations (dataId application, group revision): its instances are not served until it appears",
			"application", app, "revision", revision, "err", err)
	}
	m.wakeIn(w, metadataRetry)
	return nil
}

// wakeIn wakes the Run loop after d, to read the MetadataInfo again; one
// timer at a time.
func (m *metadataInfo) wakeIn(w *watcher, d time.Duration) {
	if !m.timerPending.CompareAndSwap(false, true) {
		return
	}
	time.AfterFunc(d, func() {
		m.timerPending.Store(false)
		select {
		case w.wake <- struct{}{}:
		default:
		}
	})
}

// ApplicationInstances translates one instance of an application-level
// service with its revision's services: one Instance per service. The
// labels are the service's parameters, its version and group, and the
// instance's metadata (but dubbo.endpoints, the ports it already gave).
func ApplicationInstances(app string, in model.Instance, services []serviceInfo) []registry.Instance {
	if !takesTraffic(in) || in.Ip == "" || in.Port > math.MaxUint16 {
		return nil
	}
	var endpoints []struct {
		Port     uint32 `json:"port"`
		Protocol string `json:"protocol"`
	}
	if eps := in.Metadata["dubbo.endpoints"]; eps != "" {
		json.Unmarshal([]byte(eps), &endpoints) // malformed: the ports below
	}
	id := instanceID(app, in)
	out := make([]registry.Instance, 0, len(services))
	for _, s := range services {
		protocol := s.Protocol
		if protocol == "" {
			protocol = registry.ProtocolDubbo
		}
		port := s.Port
		for _, e := range endpoints {
			if port == 0 && e.Protocol == protocol {
				port = e.Port
			}
		}
		if port == 0 {
			port = uint32(in.Port)
		}
		params := make(map[string]string, len(s.Params)+len(in.Metadata)+2)
		for k, v := range in.Metadata {
			if k != "dubbo.endpoints" {
				params[k] = v
			}
		}
		maps.Copy(params, s.Params)
		if s.Version != "" {
			params["version"] = s.Version
		}
		if s.Group != "" {
			params["group"] = s.Group
		}
		if _, ok := params["application"]; !ok {
			params["application"] = app
		}
		setWeight(params, in.Weight)
		out = append(out, registry.Instance{Interface: s.Name, Address: in.Ip, Port: port, Params: params, Protocol: protocol,
			ID: fmt.Sprintf("%s\x00%s:%s:%s:%s:%d", id, s.Name, s.Version, s.Group, protocol, port)})
	}
	return out
}
