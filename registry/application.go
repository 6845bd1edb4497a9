package registry

import (
	"maps"

	"github.com/breeze-mesh/breeze/registry/metadataservice"
)

// ApplicationServiceInstance is the provider of service s, one service of
// the MetadataInfo of an application-level instance of app at address:
// the same translation whichever registry announced the instance, so that
// ZooKeeper and Nacos label an application-level provider alike.
//
// The port is the service's own, else the instance's endpoint for the
// protocol (endpointPort; 0 when it has none), else the instance's port.
// The labels are the service's parameters, its version and group, and the
// instance's metadata (but dubbo.endpoints, the ports it already gave);
// "application" is app unless a parameter says otherwise. The caller sets
// ID, and may adjust Params (its registry's own weight).
func ApplicationServiceInstance(app, address string, instancePort uint32, metadata map[string]string,
	endpointPort func(protocol string) uint32, s metadataservice.ServiceInfo) Instance {
	protocol := s.Protocol
	if protocol == "" {
		protocol = ProtocolDubbo
	}
	port := s.Port
	if port == 0 {
		port = endpointPort(protocol)
	}
	if port == 0 {
		port = instancePort
	}
	params := make(map[string]string, len(s.Params)+len(metadata)+2)
	for k, v := range metadata {
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
	return Instance{Interface: s.Name, Address: address, Port: port, Params: params, Protocol: protocol}
}
