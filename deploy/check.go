package deploy

import (
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"

	golangv3alpha "github.com/envoyproxy/go-control-plane/contrib/envoy/extensions/filters/network/golang/v3alpha"
	"google.golang.org/protobuf/types/known/anypb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"

	"github.com/breeze-mesh/breeze/config"
)

// Kind is what a file holds.
type Kind string

const (
	KindBootstrap    Kind = "Envoy bootstrap"
	KindKubernetes   Kind = "Kubernetes manifests"
	KindRunner       Kind = "Breeze runner config"
	KindPluginConfig Kind = "Breeze plugin_config"
	KindProxyConfig  Kind = "Breeze proxy config"
	KindService      Kind = "Breeze service description"
	KindUnknown      Kind = "unknown"
)

// File is one file to check.
type File struct {
	Name string
	Data []byte
}

// Detect tells what a file holds from its first document's top-level keys.
func Detect(data []byte) Kind {
	docs := splitDocs(data)
	if len(docs) == 0 {
		return KindUnknown
	}
	v, _, err := yamlValue(docs[0])
	if err != nil {
		return KindUnknown
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return KindUnknown
	}
	has := func(keys ...string) bool {
		for _, k := range keys {
			if _, ok := obj[k]; ok {
				return true
			}
		}
		return false
	}
	switch {
	case has("apiVersion", "kind"):
		return KindKubernetes
	case has("static_resources", "staticResources", "dynamic_resources", "dynamicResources", "admin", "node", "layered_runtime", "layeredRuntime"):
		return KindBootstrap
	case has("listeners", "admin_address", "adminAddress"):
		return KindRunner
	case has("@type"):
		return KindPluginConfig
	case has("host", "vip", "direction", "protocol"):
		return KindService
	case has("stat_prefix", "statPrefix", "codec", "route_config", "routeConfig", "clusters", "xds"):
		return KindProxyConfig
	}
	return KindUnknown
}

// Check checks files the way `breeze validate` does: each by its kind,
// then the EnvoyFilters of all of them together (a Breeze patch needs a
// plainText cluster for the same pods, maybe from another file). Every
// Error names its file (and resource).
func Check(files ...File) Findings {
	var all Findings
	var uses []istioUse
	for _, file := range files {
		var f Findings
		switch kind := Detect(file.Data); kind {
		case KindBootstrap:
			_, f = CheckBootstrap(file.Data)
		case KindKubernetes:
			var u []istioUse
			f, u = checkManifests(file.Data, file.Name)
			uses = append(uses, u...)
		case KindRunner:
			r, err := config.ParseRunner(file.Name, file.Data)
			if err != nil {
				all.Errors = append(all.Errors, unjoin(err)...) // they name the file
				continue
			}
			for i, l := range r.GetListeners() {
				addConfigWarnings(l.GetProxy(), fmt.Sprintf("listeners[%d].proxy", i), &f)
			}
		case KindPluginConfig:
			f = checkPluginConfigFile(file.Data)
		case KindProxyConfig:
			f = checkProxyConfigFile(file.Data)
		case KindService:
			s, err := ParseService(file.Data)
			if err == nil {
				_, err = Render(s)
			}
			if err != nil {
				f.Errors = unjoin(err)
			} else {
				addConfigWarnings(s.Outbound, "", &f) // the service file's keys are the proxy's
			}
		default:
			f.errorf("", "cannot tell what this is: not an Envoy bootstrap, Kubernetes manifest, Breeze runner, plugin_config, proxy config or service description")
		}
		all.merge(inDoc(f, file.Name))
	}
	checkIstioSet(uses, &all)
	return all
}

// inDoc puts every finding of f under doc.
func inDoc(f Findings, doc string) Findings {
	put := func(errs []error) []error {
		out := make([]error, len(errs))
		for i, e := range errs {
			if fe, ok := e.(*Error); ok {
				c := *fe
				if c.Doc == "" {
					c.Doc = doc
				} else {
					c.Doc = doc + ": " + c.Doc
				}
				out[i] = &c
			} else {
				out[i] = fmt.Errorf("%s: %w", doc, e)
			}
		}
		return out
	}
	return Findings{Errors: put(f.Errors), Warnings: put(f.Warnings)}
}

// CheckEnvoyFilters checks a stream of Kubernetes manifests: every
// EnvoyFilter singly and all of them as a set; the pod templates of
// workloads for the sidecar annotations Breeze needs. It returns the
// EnvoyFilters that parsed.
func CheckEnvoyFilters(data []byte) ([]*EnvoyFilter, Findings) {
	efs, f, uses := parseManifests(data, "")
	checkIstioSet(uses, &f)
	return efs, f
}

func checkManifests(data []byte, file string) (Findings, []istioUse) {
	_, f, uses := parseManifests(data, file)
	return f, uses
}

func parseManifests(data []byte, file string) ([]*EnvoyFilter, Findings, []istioUse) {
	var all Findings
	var efs []*EnvoyFilter
	var uses []istioUse
	for i, doc := range splitDocs(data) {
		name := fmt.Sprintf("document %d", i+1)
		v, _, err := yamlValue(doc)
		if err != nil {
			all.Errors = append(all.Errors, &Error{Doc: name, Msg: "not YAML: " + err.Error()})
			continue
		}
		obj, ok := v.(map[string]any)
		if !ok {
			all.Errors = append(all.Errors, &Error{Doc: name, Msg: "want a Kubernetes object, got " + config.JSONKind(v)})
			continue
		}
		kind, _ := obj["kind"].(string)
		if meta, ok := obj["metadata"].(map[string]any); ok {
			if n, ok := meta["name"].(string); ok && n != "" {
				name = kind + " " + n
			}
		}
		var f Findings
		switch kind {
		case EnvoyFilterKind:
			ef, use, ff := checkEnvoyFilter(obj, name)
			f = ff
			use.doc = joinDoc(file, name)
			uses = append(uses, use)
			if ef != nil {
				efs = append(efs, ef)
			}
		default:
			f = checkWorkload(obj)
		}
		for _, e := range f.Errors {
			if fe, ok := e.(*Error); ok && fe.Doc == "" {
				fe.Doc = name
			}
		}
		for _, e := range f.Warnings {
			if fe, ok := e.(*Error); ok && fe.Doc == "" {
				fe.Doc = name
			}
		}
		all.merge(f)
	}
	return efs, all, uses
}

func joinDoc(file, name string) string {
	if file == "" {
		return name
	}
	return file + ": " + name
}

func checkPluginConfigFile(data []byte) Findings {
	var f Findings
	v, _, err := yamlValue(data)
	if err != nil {
		f.errorf("", "not YAML: %v", err)
		return f
	}
	a := &anypb.Any{}
	if err := decodeStrict(v, a, "", envoy); err != nil {
		f.Errors = unjoin(err)
		return f
	}
	checkPluginConfig(&golangv3alpha.Config{PluginConfig: a}, "", &f)
	return f
}

func checkProxyConfigFile(data []byte) Findings {
	var f Findings
	v, _, err := yamlValue(data)
	if err != nil {
		f.errorf("", "not YAML: %v", err)
		return f
	}
	obj, ok := v.(map[string]any)
	if !ok {
		f.errorf("", "want an object (breeze.v1.ProxyConfig), got %s", config.JSONKind(v))
		return f
	}
	pc, err := parseProxyFragment(obj)
	if err == nil {
		err = config.Validate(pc)
	}
	if err != nil {
		addConfigErrors(err, "", "", &f)
		return f
	}
	addConfigWarnings(pc, "", &f)
	return f
}

// Pod annotations Istio's sidecar injector reads (istio.io/api
// annotation, and the injection template of Istio 1.28).
const (
	annoProxyImage      = "sidecar.istio.io/proxyImage"
	annoUserVolume      = "sidecar.istio.io/userVolume"
	annoUserVolumeMount = "sidecar.istio.io/userVolumeMount"
	annoProxyConfig     = "proxy.istio.io/config"
)

// checkWorkload checks the sidecar annotations of a workload's pod
// template that bring breeze.so into the sidecar: a proxy image reference
// the injector takes, or a volume and its mount in the injector's JSON
// form; and GODEBUG=cgocheck=0 in the proxy's environment. A workload
// without any of them is not Breeze's business.
func checkWorkload(obj map[string]any) Findings {
	var f Findings
	tpath, annos := podAnnotations(obj)
	if annos == nil {
		return f
	}
	apath := func(k string) string { return tpath + "[" + fmt.Sprintf("%q", k) + "]" }
	image, hasImage := annos[annoProxyImage]
	_, hasVolume := annos[annoUserVolume]
	if !hasImage && !hasVolume {
		return f
	}
	if hasImage && !strings.Contains(image, "/") {
		f.errorf(apath(annoProxyImage), "%q: the injector uses the annotation only when it is a full reference with a '/' (registry/repository:tag); otherwise it silently keeps the stock image", image)
	}
	var volumes map[string]map[string]any
	if raw, ok := annos[annoUserVolume]; ok {
		if err := json.Unmarshal([]byte(raw), &volumes); err != nil {
			f.errorf(apath(annoUserVolume), "want a JSON object of volume name → volume source (Istio's injector ranges over it as a map; a list would name the volumes \"0\", \"1\"...): %v", err)
		}
	}
	if raw, ok := annos[annoUserVolumeMount]; ok {
		var mounts map[string]map[string]any
		if err := json.Unmarshal([]byte(raw), &mounts); err != nil {
			f.errorf(apath(annoUserVolumeMount), "want a JSON object of volume name → mount ({\"mountPath\": ...}): %v", err)
		}
		for _, name := range sortedKeys(mounts) {
			if _, ok := volumes[name]; !ok {
				f.errorf(apath(annoUserVolumeMount), "mount %q names no volume of %s", name, annoUserVolume)
			}
			if mp, _ := mounts[name]["mountPath"].(string); !path.IsAbs(mp) {
				f.errorf(apath(annoUserVolumeMount), "mount %q: mountPath %q: want an absolute path", name, mp)
			}
		}
	} else if hasVolume {
		f.errorf(apath(annoUserVolumeMount), "required with %s: the volume must be mounted into istio-proxy", annoUserVolume)
	}

	godebug := ""
	if raw, ok := annos[annoProxyConfig]; ok {
		pc := &meshv1alpha1.ProxyConfig{}
		v, _, err := yamlValue([]byte(raw))
		if err == nil {
			err = decodeStrict(v, pc, "", istiod)
		}
		if err != nil {
			for _, e := range unjoin(err) {
				f.errorf(apath(annoProxyConfig), "%v", e)
			}
		}
		godebug = pc.GetProxyMetadata()["GODEBUG"]
	}
	switch {
	case strings.Contains(godebug, "cgocheck=0"):
	case hasImage:
		f.warnf(apath(annoProxyConfig), "no proxyMetadata GODEBUG=cgocheck=0: fine with the Dockerfile's image, which sets it; any other image aborts Envoy on the first Go call that passes a Go pointer")
	default:
		f.errorf(apath(annoProxyConfig), "want proxyMetadata: {GODEBUG: cgocheck=0}: the stock proxy image does not set it, and Envoy with a Go plugin must run with it")
	}
	return f
}

// podAnnotations finds the pod (template) annotations of a workload.
func podAnnotations(obj map[string]any) (string, map[string]string) {
	get := func(v any, keys ...string) any {
		for _, k := range keys {
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		}
		return v
	}
	var p string
	var raw any
	switch kind, _ := obj["kind"].(string); kind {
	case "Pod":
		p, raw = "metadata.annotations", get(obj, "metadata", "annotations")
	case "CronJob":
		p, raw = "spec.jobTemplate.spec.template.metadata.annotations", get(obj, "spec", "jobTemplate", "spec", "template", "metadata", "annotations")
	default:
		p, raw = "spec.template.metadata.annotations", get(obj, "spec", "template", "metadata", "annotations")
	}
	m, ok := raw.(map[string]any)
	if !ok {
		return p, nil
	}
	out := map[string]string{}
	for k, v := range m {
		if s, ok := v.(string); ok {
			out[k] = s
		}
	}
	return p, out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
