package istiostats

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"strconv"
	"strings"
)

// unknown is Istio's value for a label it cannot know.
const unknown = "unknown"

// Identity is one end of a request as Istio's standard metrics name it.
// Empty fields are reported as "unknown".
type Identity struct {
	Workload, Namespace, App, Version   string
	CanonicalService, CanonicalRevision string
	Cluster                             string
}

// Environment variables the local identity is read from, once, when the
// first istio_stats filter is built: what Istio's injector sets in the
// istio-proxy container, which the plugin sees since it runs inside Envoy.
const (
	EnvWorkload  = "ISTIO_META_WORKLOAD_NAME"
	EnvNamespace = "POD_NAMESPACE"
	EnvCluster   = "ISTIO_META_CLUSTER_ID"
	// EnvLabels is the pod's labels as a JSON object (Istio's VMs and
	// older injectors); without it the labels come from PodLabelsFile.
	EnvLabels = "ISTIO_METAJSON_LABELS"
)

// PodLabelsFile is where Istio's injector mounts the pod's labels (a
// downward API volume of the istio-proxy container: key="value" lines).
const PodLabelsFile = "/etc/istio/pod/labels"

// Pod labels Istio reads a workload's app, version and canonical names
// from; endpoint labels are read with the same keys.
const (
	LabelApp               = "app"
	LabelVersion           = "version"
	LabelCanonicalName     = "service.istio.io/canonical-name"
	LabelCanonicalRevision = "service.istio.io/canonical-revision"
	labelK8sName           = "app.kubernetes.io/name"
	labelK8sVersion        = "app.kubernetes.io/version"
)

// Endpoint labels for what Kubernetes pod labels do not carry, read on
// outbound for the destination workload (cluster endpoints' labels: the
// config, or EDS metadata "envoy.lb" / "breeze").
const (
	LabelWorkload  = "breeze.io/workload"
	LabelNamespace = "breeze.io/namespace"
	LabelCluster   = "breeze.io/cluster"
)

// LocalFromEnv reads the local identity from the sidecar's environment:
// getenv is os.Getenv, readFile os.ReadFile (tests pass their own).
func LocalFromEnv(getenv func(string) string, readFile func(string) ([]byte, error)) Identity {
	labels := map[string]string{}
	if js := getenv(EnvLabels); strings.TrimSpace(js) != "" {
		_ = json.Unmarshal([]byte(js), &labels)
	} else if b, err := readFile(PodLabelsFile); err == nil {
		labels = parseDownwardLabels(b)
	}
	return fromLabels(func(k string) string { return labels[k] },
		getenv(EnvWorkload), getenv(EnvNamespace), getenv(EnvCluster))
}

// localFromProcess is the process's local identity.
func localFromProcess() Identity { return LocalFromEnv(os.Getenv, os.ReadFile) }

// parseDownwardLabels reads a downward API labels file: one key="value"
// per line, the value quoted as Go quotes strings.
func parseDownwardLabels(b []byte) map[string]string {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		if u, err := strconv.Unquote(v); err == nil {
			v = u
		}
		out[strings.TrimSpace(k)] = v
	}
	return out
}

// fromLabels makes an identity from a workload's labels, with Istio's
// defaults for the canonical names (its injector's: the canonical name
// falls back to app.kubernetes.io/name, app, then the workload name; the
// revision to app.kubernetes.io/version, version, then "latest").
func fromLabels(label func(string) string, workload, namespace, cluster string) Identity {
	id := Identity{
		Workload: workload, Namespace: namespace, Cluster: cluster,
		App: label(LabelApp), Version: label(LabelVersion),
		CanonicalService: label(LabelCanonicalName), CanonicalRevision: label(LabelCanonicalRevision),
	}
	if id.CanonicalService == "" {
		id.CanonicalService = firstSet(label(labelK8sName), id.App, workload)
	}
	if id.CanonicalRevision == "" {
		id.CanonicalRevision = firstSet(label(labelK8sVersion), id.Version)
		if id.CanonicalRevision == "" && id.CanonicalService != "" {
			id.CanonicalRevision = "latest"
		}
	}
	return id
}

// fromEndpoint is the identity behind an endpoint, from its labels.
func fromEndpoint(labels map[string]string) Identity {
	if len(labels) == 0 {
		return Identity{}
	}
	get := func(k string) string { return labels[k] }
	return fromLabels(get, labels[LabelWorkload], labels[LabelNamespace], labels[LabelCluster])
}

func firstSet(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// PeerKey is the request key (a Dubbo attachment, a THeader/TTHeader
// header) that carries the caller's identity from an outbound istio_stats
// filter to an inbound one, which removes it before the request reaches
// the app. It is a label source, never a credential: anyone can set it.
const PeerKey = "x-breeze-peer"

// peerVersion leads the encoded identity, so that the format can change.
const peerVersion = "1"

// maxPeerValue bounds an encoded identity a peer sends: longer ones are
// not read (Kubernetes names are at most 253 bytes, label values 63).
const maxPeerValue = 1024

// encodePeer writes id as PeerKey's value: fields separated by ';' in the
// order of Istio's endpoint workload metadata (workload, namespace,
// canonical service, canonical revision, cluster), then app and version.
// Kubernetes names and label values cannot hold ';': a value that does
// has it replaced by '_'.
func encodePeer(id Identity) string {
	fields := []string{peerVersion, id.Workload, id.Namespace, id.CanonicalService, id.CanonicalRevision, id.Cluster, id.App, id.Version}
	for i, f := range fields {
		fields[i] = strings.ReplaceAll(f, ";", "_")
	}
	return strings.Join(fields, ";")
}

// decodePeer reads what encodePeer wrote. Fields a later version adds
// are ignored; a value of another version, or malformed, is not read.
func decodePeer(v string) (Identity, bool) {
	if len(v) > maxPeerValue {
		return Identity{}, false
	}
	f := strings.Split(v, ";")
	if len(f) < 8 || f[0] != peerVersion {
		return Identity{}, false
	}
	return Identity{
		Workload: f[1], Namespace: f[2], CanonicalService: f[3], CanonicalRevision: f[4],
		Cluster: f[5], App: f[6], Version: f[7],
	}, true
}
