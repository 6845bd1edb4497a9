package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	golangv3alpha "github.com/envoyproxy/go-control-plane/contrib/envoy/extensions/filters/network/golang/v3alpha"
	"google.golang.org/protobuf/types/known/anypb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"

	"github.com/breeze-mesh/breeze/config"
	"github.com/breeze-mesh/breeze/internal/release"
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
	// Files Breeze ships that validate recognizes but does not check.
	KindCompose    Kind = "Docker Compose file"
	KindPrometheus Kind = "Prometheus config"
	KindUnknown    Kind = "unknown"
)

// notChecked says, for the kinds validate recognizes but does not check,
// what does check them.
var notChecked = map[Kind]string{
	KindCompose:    "breeze validate does not check Compose files: `docker compose config` does",
	KindPrometheus: "breeze validate does not check Prometheus configs: `promtool check config` does",
}

// File is one file to check.
type File struct {
	Name string
	Data []byte
}

// Detect tells what a file holds from its first document's top-level keys.
func Detect(data []byte) Kind {
	kind, _ := detect(data)
	return kind
}

// detect is Detect, with the first document's top-level value.
func detect(data []byte) (Kind, any) {
	docs := splitDocs(data)
	if len(docs) == 0 {
		return KindUnknown, nil
	}
	v, _, err := yamlValue(docs[0])
	if err != nil {
		return KindUnknown, nil
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return KindUnknown, v
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
		return KindKubernetes, v
	case has("static_resources", "staticResources", "dynamic_resources", "dynamicResources", "admin", "node", "layered_runtime", "layeredRuntime"):
		return KindBootstrap, v
	case has("listeners", "admin_address", "adminAddress"):
		return KindRunner, v
	case has("@type"):
		return KindPluginConfig, v
	case has("host", "vip", "direction", "protocol"):
		return KindService, v
	case has("stat_prefix", "statPrefix", "codec", "route_config", "routeConfig", "clusters", "xds"):
		return KindProxyConfig, v
	case has("services"):
		return KindCompose, v
	case has("scrape_configs", "rule_files", "alerting", "remote_write", "remote_read"):
		return KindPrometheus, v
	}
	return KindUnknown, v
}

// FileResult is what Check found in one file.
type FileResult struct {
	Name string
	Kind Kind
	// Objects lists the kinds of a Kubernetes file's objects, each once,
	// in order.
	Objects []string
	// NotChecked, when set, says why the file was not checked: it is of a
	// kind validate recognizes but leaves to another tool.
	NotChecked string
	Findings
}

// What names what the file holds, for a verdict: its kind, and for
// Kubernetes manifests the kinds of their objects.
func (r *FileResult) What() string {
	if r.Kind == KindKubernetes && len(r.Objects) > 0 {
		return "Kubernetes: " + strings.Join(r.Objects, ", ")
	}
	return string(r.Kind)
}

// Check checks files the way `breeze validate` does and returns all the
// findings. Every Error names its file (and resource).
func Check(files ...File) Findings {
	var all Findings
	for _, r := range CheckFiles(files...) {
		all.merge(r.Findings)
	}
	return all
}

// CheckFiles checks files the way `breeze validate` does: each by its
// kind, then the EnvoyFilters of all of them together (a Breeze patch needs
// a plainText cluster for the same pods, maybe from another file). It
// returns a result per file, in order; a finding across files belongs to
// the file of the object it names. Every Error names its file (and
// resource).
func CheckFiles(files ...File) []FileResult {
	return CheckFilesWith(Options{}, files...)
}

// Options tune CheckFilesWith.
type Options struct {
	// Istio is the Istio release (1.28, 1.31) the files are for, as in
	// `breeze validate --istio 1.31`: every Breeze patch must be pinned to
	// its sidecars (proxyVersion), and service descriptions are rendered
	// for it. Unset: a Breeze patch may be pinned to any release Breeze is
	// built for, and a description is rendered for its own istio. An
	// unknown release is an error in every file.
	Istio string
}

// CheckFilesWith is CheckFiles with options. The API types the files are
// checked with are always those this binary links: the Envoy and Istio
// release it is built for (DefaultIstio).
func CheckFilesWith(o Options, files ...File) []FileResult {
	results := make([]FileResult, len(files))
	var want *release.Release
	if o.Istio != "" {
		r, err := release.ForIstio(o.Istio)
		if err != nil {
			for i, file := range files {
				results[i] = FileResult{Name: file.Name, Kind: Detect(file.Data)}
				results[i].Errors = []error{&Error{Doc: file.Name, Msg: err.Error()}}
			}
			return results
		}
		want = &r
	}
	var uses []istioUse
	for i, file := range files {
		var f Findings
		kind, top := detect(file.Data)
		results[i] = FileResult{Name: file.Name, Kind: kind, NotChecked: notChecked[kind]}
		switch kind {
		case KindBootstrap:
			_, f = CheckBootstrap(file.Data)
		case KindKubernetes:
			var u []istioUse
			var objects []string
			f, u, objects = checkManifests(file.Data, file.Name)
			for j := range u {
				u[j].file = i
			}
			uses = append(uses, u...)
			results[i].Objects = objects
		case KindRunner:
			r, err := config.ParseRunner(file.Name, file.Data)
			if err != nil {
				results[i].Errors = unjoin(err) // they name the file
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
			if err == nil && want != nil {
				if s.Istio != "" && minorRelease(s.Istio) != want.Istio {
					err = errorf("istio", "%q: the description is for Istio %s, not %s (--istio)", s.Istio, s.Istio, want.Istio)
				}
				s.Istio = want.Istio
			}
			if err == nil {
				_, err = Render(s)
			}
			if err != nil {
				f.Errors = unjoin(err)
			} else {
				addConfigWarnings(s.Outbound, "", &f) // the service file's keys are the proxy's
			}
		case KindCompose, KindPrometheus:
		default:
			if err := firstSyntaxError(file.Data); err != nil {
				f.Errors = append(f.Errors, err)
				break
			}
			f.errorf("", "cannot tell what this is from %s: not an Envoy bootstrap, Kubernetes manifest, Breeze runner, plugin_config, proxy config or service description", topLevel(top))
		}
		results[i].merge(inDoc(f, file.Name))
	}
	checkIstioSet(uses, func(u *istioUse, e error) {
		results[u.file].Errors = append(results[u.file].Errors, e)
	})
	checkPins(uses, want, func(u *istioUse, e error, warning bool) {
		if warning {
			results[u.file].Warnings = append(results[u.file].Warnings, e)
		} else {
			results[u.file].Errors = append(results[u.file].Errors, e)
		}
	})
	return results
}

// firstSyntaxError returns the syntax error of data's first document, at
// its line in the file, nil if it parses.
func firstSyntaxError(data []byte) error {
	docs := splitDocsAt(data)
	if len(docs) == 0 {
		return nil
	}
	_, _, err := yamlValue(docs[0].data)
	var se *config.SyntaxError
	if errors.As(err, &se) {
		se.Shift(docs[0].line)
	}
	return err
}

// topLevel describes what Detect saw at the top of a file.
func topLevel(v any) string {
	obj, ok := v.(map[string]any)
	if !ok {
		return "its content (" + config.JSONKind(v) + ")"
	}
	keys := sortedKeys(obj)
	if len(keys) > 5 {
		keys = append(keys[:5], "...")
	}
	return "its top-level keys (" + strings.Join(keys, ", ") + ")"
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
	efs, f, uses, _ := parseManifests(data, "")
	checkIstioSet(uses, func(_ *istioUse, e error) { f.Errors = append(f.Errors, e) })
	checkPins(uses, nil, func(_ *istioUse, e error, warning bool) {
		if warning {
			f.Warnings = append(f.Warnings, e)
		} else {
			f.Errors = append(f.Errors, e)
		}
	})
	return efs, f
}

func checkManifests(data []byte, file string) (Findings, []istioUse, []string) {
	_, f, uses, objects := parseManifests(data, file)
	return f, uses, objects
}

// parseManifests checks each document of a stream of Kubernetes manifests
// (file names the stream in messages); it returns the EnvoyFilters that
// parsed, the findings, what the set-wide checks need, and the kinds of
// the objects, each once.
func parseManifests(data []byte, file string) ([]*EnvoyFilter, Findings, []istioUse, []string) {
	var all Findings
	var efs []*EnvoyFilter
	var uses []istioUse
	var objects []string
	for i, doc := range splitDocsAt(data) {
		name := fmt.Sprintf("document %d", i+1)
		v, _, err := yamlValue(doc.data)
		if err != nil {
			// A syntax error names its line in the file: no document name.
			var se *config.SyntaxError
			if errors.As(err, &se) {
				se.Shift(doc.line)
				all.Errors = append(all.Errors, err)
			} else {
				all.Errors = append(all.Errors, &Error{Doc: name, Msg: err.Error()})
			}
			continue
		}
		obj, ok := v.(map[string]any)
		if !ok {
			all.Errors = append(all.Errors, &Error{Doc: name, Msg: "want a Kubernetes object, got " + config.JSONKind(v)})
			continue
		}
		kind, _ := obj["kind"].(string)
		if kind != "" && !slices.Contains(objects, kind) {
			objects = append(objects, kind)
		}
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
	return efs, all, uses, objects
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
		f.Errors = append(f.Errors, err)
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
		f.Errors = append(f.Errors, err)
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
