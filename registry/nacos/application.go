package nacos

import (
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/model"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"

	"github.com/breeze-mesh/breeze/registry"
	"github.com/breeze-mesh/breeze/registry/metadataservice"
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
type serviceInfo = metadataservice.ServiceInfo

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
		services, perr := metadataservice.ParseReport([]byte(data))
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
	// The first endpoint of the protocol, as Dubbo reads dubbo.endpoints.
	endpointPort := func(protocol string) uint32 {
		for _, e := range endpoints {
			if e.Protocol == protocol && e.Port != 0 {
				return e.Port
			}
		}
		return 0
	}
	for _, s := range services {
		inst := registry.ApplicationServiceInstance(app, in.Ip, uint32(in.Port), in.Metadata, endpointPort, s)
		setWeight(inst.Params, in.Weight)
		inst.ID = fmt.Sprintf("%s\x00%s:%s:%s:%s:%d", id, s.Name, s.Version, s.Group, inst.Protocol, inst.Port)
		out = append(out, inst)
	}
	return out
}
