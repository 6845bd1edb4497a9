package registry

import (
	"cmp"
	"encoding/json"
	"maps"
	"regexp"
	"slices"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	"sigs.k8s.io/yaml"
)

// Naming of what a registry's interfaces become. One ServiceEntry per
// interface; its host is the interface name (Aeraki's rule: a MetaRouter
// names the interface as its host), its one port ServicePort named
// PortName, whatever port each provider listens on (the endpoint says).
// The control plane then serves route table "<interface>_20880" and cluster
// "outbound|20880||<interface>".
const (
	ServicePort = 20880
	PortName    = "tcp-dubbo"
)

// Entry is a ServiceEntry with its object name.
type Entry struct {
	Name, Namespace string
	Spec            *networkingv1alpha3.ServiceEntry
}

// Host is the ServiceEntry host of an interface: its name, each character
// a DNS name cannot hold ('_', '$' of a nested class...) replaced by '-'.
func Host(iface string) string {
	for i := range len(iface) {
		if c := iface[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-') {
			return invalidHostChars.ReplaceAllString(iface, "-")
		}
	}
	return iface // the common case, without the regexp: it runs for every provider of every update
}

var invalidHostChars = regexp.MustCompile(`[^A-Za-z0-9.-]`)

// ObjectName is the ServiceEntry's metadata.name for an interface:
// "dubbo-" and its host in lower case (a Kubernetes name is a lower-case
// DNS subdomain), at most 253 characters.
func ObjectName(iface string) string {
	n := "dubbo-" + strings.ToLower(Host(iface))
	if len(n) > 253 {
		n = n[:253]
	}
	return strings.TrimRight(n, ".-")
}

// Labels maps URL parameters to endpoint labels, as Istio validates them
// (Kubernetes label syntax). A parameter whose key is a valid label key
// and whose value a valid label value is a label, verbatim. Otherwise the
// value's characters outside [A-Za-z0-9-_.] become '_' (Dubbo's "methods"
// list "sayHello,sayHi" is the label "sayHello_sayHi") and non-alphanumeric
// characters at its ends are dropped; a value still longer than 63
// characters, or a key that is not a valid label key, is left out: a
// truncated value would match selectors it should not.
func Labels(params map[string]string) map[string]string {
	out := make(map[string]string, len(params))
	for k, v := range params {
		if !labelKey.MatchString(k) || len(k) > 63 {
			continue
		}
		if !labelValue.MatchString(v) {
			v = strings.TrimFunc(invalidValueChars.ReplaceAllString(v, "_"), func(r rune) bool {
				return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9')
			})
		}
		if len(v) > 63 {
			continue
		}
		out[k] = v
	}
	return out
}

var (
	labelKey          = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	labelValue        = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`)
	invalidValueChars = regexp.MustCompile(`[^-A-Za-z0-9_.]`)
)

// ServiceEntries translates instances into one ServiceEntry per interface,
// in namespace, sorted by name, endpoints sorted by address and port, so
// that an unchanged registry gives equal objects. Disabled providers and
// providers of other protocols than Dubbo are left out; an interface left
// without providers has no ServiceEntry.
func ServiceEntries(instances []Instance, namespace string) []Entry {
	byHost := map[string]*networkingv1alpha3.ServiceEntry{}
	for _, in := range instances {
		if !in.Enabled() || in.Protocol != ProtocolDubbo {
			continue
		}
		host := Host(in.Interface)
		se := byHost[host]
		if se == nil {
			se = &networkingv1alpha3.ServiceEntry{
				Hosts:      []string{host},
				Ports:      []*networkingv1alpha3.ServicePort{{Number: ServicePort, Name: PortName, Protocol: "TCP"}},
				Location:   networkingv1alpha3.ServiceEntry_MESH_INTERNAL,
				Resolution: networkingv1alpha3.ServiceEntry_STATIC,
			}
			byHost[host] = se
		}
		se.Endpoints = append(se.Endpoints, &networkingv1alpha3.WorkloadEntry{
			Address: in.Address,
			Ports:   map[string]uint32{PortName: in.Port},
			Labels:  Labels(in.Params),
			Weight:  in.Weight(),
		})
	}
	out := make([]Entry, 0, len(byHost))
	for _, host := range slices.Sorted(maps.Keys(byHost)) {
		se := byHost[host]
		slices.SortFunc(se.Endpoints, func(a, b *networkingv1alpha3.WorkloadEntry) int {
			return cmp.Or(cmp.Compare(a.Address, b.Address), cmp.Compare(a.Ports[PortName], b.Ports[PortName]),
				cmp.Compare(labelString(a.Labels), labelString(b.Labels)))
		})
		out = append(out, Entry{Name: ObjectName(host), Namespace: namespace, Spec: se})
	}
	return out
}

func labelString(l map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(l)) {
		b.WriteString(k + "=" + l[k] + ",")
	}
	return b.String()
}

// YAML is an Entry as a Kubernetes manifest (networking.istio.io/v1
// ServiceEntry): the spec in protobuf's JSON mapping, which Istio's CRDs
// take.
func YAML(e Entry) ([]byte, error) {
	spec, err := protojson.Marshal(e.Spec)
	if err != nil {
		return nil, err
	}
	obj := map[string]any{
		"apiVersion": "networking.istio.io/v1",
		"kind":       "ServiceEntry",
		"metadata":   map[string]any{"name": e.Name, "namespace": e.Namespace},
		"spec":       json.RawMessage(spec),
	}
	js, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	return yaml.JSONToYAML(js)
}
