package controlplane

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"google.golang.org/protobuf/proto"

	metaprotocolv1alpha1 "github.com/aeraki-mesh/api/metaprotocol/v1alpha1"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"

	"github.com/breeze-mesh/breeze/config"
)

// Object is one resource from a source: a MetaRouter
// (*metaprotocolv1alpha1.MetaRouter), DestinationRule or ServiceEntry
// (*networkingv1alpha3.DestinationRule, *networkingv1alpha3.ServiceEntry).
type Object struct {
	Kind, Namespace, Name string
	// Origin says where the object came from, for messages: a file, with
	// "#n" for the n-th document of a multi-document file.
	Origin string
	// File is the file the object came from.
	File string
	// namedTargetPorts: a Kubernetes Service with a targetPort that names
	// a container port, whose number it does not say.
	namedTargetPorts bool
	Spec             proto.Message
	// Version changes whenever the object does: a digest of its document
	// (a Kubernetes source would use the resourceVersion).
	Version string
}

// Ref names an object in messages: "greeter.yaml: MetaRouter default/greeter".
func (o *Object) Ref() string {
	return fmt.Sprintf("%s: %s %s/%s", o.Origin, o.Kind, o.Namespace, o.Name)
}

// Problem is something wrong with one object, or with a file that could
// not be read.
type Problem struct {
	// Object is the object's Ref, or the file's name.
	Object string
	// Field is the path of the field at fault within the object, e.g.
	// spec.routes[1].route[0].destination.subset; empty for a whole file.
	Field string
	// Warning: the object is used, without the part Field names.
	Warning bool
	Err     error
	// Version is that of the object (or file) at fault: Run logs a problem
	// once per version, not on every read of an unchanged directory.
	Version string
	// File is the file of the object at fault (or the file at fault); the
	// directory when it could not be read.
	File string
	// document: the problem is with a document as a whole (not YAML, not
	// a Kubernetes object), which `breeze validate` reports on its own.
	document bool
}

func (p Problem) Error() string {
	if p.Field == "" {
		return p.Object + ": " + p.Err.Error()
	}
	return p.Object + ": " + p.Field + ": " + p.Err.Error()
}

// Snapshot is the whole content of a source at one time.
type Snapshot struct {
	Objects []Object
	// Problems reading it. An object that cannot be read is replaced by
	// its last good version, if there was one.
	Problems []Problem
}

// Source delivers the objects the control plane translates. A directory
// of YAML files is one; a Kubernetes watch would be another.
type Source interface {
	// Run calls update with the whole content of the source at once, then
	// after every change, until ctx ends. Calls are sequential.
	Run(ctx context.Context, update func(Snapshot)) error
}

// Kinds the control plane reads, by API group (any version).
var kinds = map[string]func() proto.Message{
	"metaprotocol.aeraki.io/MetaRouter":   func() proto.Message { return &metaprotocolv1alpha1.MetaRouter{} },
	"networking.istio.io/DestinationRule": func() proto.Message { return &networkingv1alpha3.DestinationRule{} },
	"networking.istio.io/ServiceEntry":    func() proto.Message { return &networkingv1alpha3.ServiceEntry{} },
}

// Kinds read for what they declare, not translated: a Kubernetes Service
// declares a host, an address and ports (its Spec is a ServiceEntry
// holding them), an EnvoyFilter (read only by Lint) the listeners it
// patches.
const (
	kindService     = "Service"
	kindEnvoyFilter = "EnvoyFilter"
)

// DirSource reads the YAML (or JSON) files of a directory — Kubernetes
// manifests, several per file separated by "---" — and watches it. Kinds
// other than those the control plane reads (kinds: MetaRouter,
// DestinationRule, ServiceEntry, Gateway, the authorization policies)
// are skipped.
// Files whose names start with "." are ignored (editors' temporary files,
// Kubernetes' ..data links are followed through the files that point there).
type DirSource struct {
	Dir string
	// Debounce is how long the directory must be quiet after a change
	// before it is read again (an editor writes a file in several steps).
	// Zero means 50ms.
	Debounce time.Duration
	Log      *slog.Logger

	// last good objects, by file and by identity, for what cannot be read.
	byFile  map[string][]Object
	byID    map[string]Object
	present map[string]bool
	// byHost: the last good object of each kind and host ("MetaRouter
	// org.example.Greeter"), for a broken object under a new name that
	// names the host; broken lists this read's such objects.
	byHost map[string]Object
	broken []brokenObject
	// lint: read for Lint, once: EnvoyFilters too, and a document that is
	// not YAML does not hide the others (there is no last good version to
	// keep).
	lint bool
}

// brokenObject is an object that could not be read and has no last good
// version of its own: the hosts it names, as far as they can be read.
type brokenObject struct {
	ref, file, kind, version string
	hosts                    []string
}

// Run reads the directory, then again after each change.
func (d *DirSource) Run(ctx context.Context, update func(Snapshot)) error {
	if d.Debounce <= 0 {
		d.Debounce = 50 * time.Millisecond
	}
	if d.Log == nil {
		d.Log = slog.Default()
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	if err := w.Add(d.Dir); err != nil {
		return fmt.Errorf("watch %s: %w", d.Dir, err)
	}
	update(d.Read())
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("directory watch closed")
			}
			d.Log.Debug("source directory changed", "event", ev)
			timer.Reset(d.Debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("directory watch closed")
			}
			// Events may have been lost: read everything again.
			d.Log.Warn("watching the source directory", "err", err)
			timer.Reset(d.Debounce)
		case <-timer.C:
			update(d.Read())
		}
	}
}

// Read reads the directory once.
func (d *DirSource) Read() Snapshot {
	var snap Snapshot
	entries, err := os.ReadDir(d.Dir)
	if err != nil {
		snap.Problems = append(snap.Problems, Problem{Object: d.Dir, File: d.Dir, Err: err})
		// Keep serving what was read before.
		for _, objs := range d.byFile {
			snap.Objects = append(snap.Objects, objs...)
		}
		return snap
	}
	var files []File
	for _, e := range entries {
		name := e.Name()
		if !objectFile(name) {
			continue
		}
		path := filepath.Join(d.Dir, name)
		data, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) || (err == nil && isDir(path)) {
			continue
		}
		files = append(files, File{Name: path, Data: data, err: err})
	}
	return d.read(files, snap)
}

// objectFile reports whether a directory entry is read for objects:
// YAML and JSON files, not dot-files (editors' temporary files).
func objectFile(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml", ".json":
		return !strings.HasPrefix(name, ".")
	}
	return false
}

// ReadPaths reads the files paths name and, for a directory, the files in
// it breeze xds reads there (YAML and JSON, no dot-files, not in
// subdirectories), in order of their names. A directory without any is an
// error.
func ReadPaths(paths ...string) ([]File, error) {
	var files []File
	for _, p := range paths {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: no such file or directory", p)
		}
		if err != nil {
			return nil, err
		}
		names := []string{p}
		if fi.IsDir() {
			entries, err := os.ReadDir(p)
			if err != nil {
				return nil, err
			}
			names = nil
			for _, e := range entries {
				if objectFile(e.Name()) && !e.IsDir() {
					names = append(names, filepath.Join(p, e.Name()))
				}
			}
			if len(names) == 0 {
				return nil, fmt.Errorf("%s: no *.yaml, *.yml or *.json files in this directory", p)
			}
		}
		for _, n := range names {
			data, err := os.ReadFile(n)
			if err != nil {
				return nil, err
			}
			files = append(files, File{Name: n, Data: data})
		}
	}
	return files, nil
}

// File is one file of objects.
type File struct {
	Name string
	Data []byte
	// err: the file could not be read.
	err error
}

// read parses files, the whole content of the source, into snap.
func (d *DirSource) read(files []File, snap Snapshot) Snapshot {
	if d.byFile == nil {
		d.byFile, d.byID = map[string][]Object{}, map[string]Object{}
	}
	if d.Log == nil {
		d.Log = slog.Default()
	}
	parsed := map[string][]Object{}
	d.present = map[string]bool{}
	d.broken = nil
	defer func() {
		// Last good versions are kept only for objects still there.
		maps.DeleteFunc(d.byID, func(id string, _ Object) bool { return !d.present[id] })
	}()
	for _, f := range files {
		if f.err != nil {
			snap.Problems = append(snap.Problems, Problem{Object: f.Name, File: f.Name, Err: f.err})
			parsed[f.Name] = d.byFile[f.Name]
			continue
		}
		objs, problems := d.parse(f.Name, f.Data)
		snap.Problems = append(snap.Problems, problems...)
		parsed[f.Name] = objs
	}
	d.byFile = parsed
	seen := map[string]string{}
	for _, path := range slices.Sorted(maps.Keys(parsed)) {
		for _, o := range parsed[path] {
			id := o.Kind + " " + o.Namespace + "/" + o.Name
			if prev, dup := seen[id]; dup {
				snap.Problems = append(snap.Problems, Problem{Object: o.Ref(), File: o.File, Version: o.Version, Err: fmt.Errorf("also defined in %s; this one is ignored", prev)})
				continue
			}
			seen[id] = o.Origin
			snap.Objects = append(snap.Objects, o)
		}
	}
	d.keepHosts(&snap)
	return snap
}

// keepHosts gives each host that only a broken object names — one with no
// last good version of its own, such as a good object replaced by a broken
// one under a new name — the last good object of that kind that held it,
// restricted to the hosts no other object holds: the host keeps its rules,
// as it does when an object is broken under its own name. It then records
// the objects that hold each host for the next read. A host no object
// names any more is forgotten: deleting an object returns its hosts to
// their defaults.
func (d *DirSource) keepHosts(snap *Snapshot) {
	held := map[string]Object{}
	for _, o := range snap.Objects {
		for _, h := range hostsOf(o.Spec) {
			held[o.Kind+" "+h] = o
		}
	}
	type keep struct {
		last   Object
		hosts  []string
		broken brokenObject
	}
	var keeps []*keep
	byLast := map[string]*keep{}
	for _, b := range d.broken {
		for _, h := range b.hosts {
			k := b.kind + " " + h
			last, ok := d.byHost[k]
			if _, taken := held[k]; taken || !ok {
				continue
			}
			id := last.Kind + " " + last.Namespace + "/" + last.Name
			kp := byLast[id]
			if kp == nil {
				kp = &keep{last: last, broken: b}
				byLast[id] = kp
				keeps = append(keeps, kp)
			}
			kp.hosts = append(kp.hosts, h)
			held[k] = last // whole: a later read restricts it afresh
		}
	}
	for _, kp := range keeps {
		o := kp.last
		o.Spec = withHosts(o.Spec, kp.hosts)
		snap.Objects = append(snap.Objects, o)
		snap.Problems = append(snap.Problems, Problem{Object: kp.broken.ref, File: kp.broken.file, Version: kp.broken.version,
			Err: fmt.Errorf("keeping the last good rules of %s from %s", strings.Join(kp.hosts, ", "), o.Ref())})
	}
	d.byHost = held
}

// hostsOf lists the hosts an object holds.
func hostsOf(spec proto.Message) []string {
	switch s := spec.(type) {
	case *metaprotocolv1alpha1.MetaRouter:
		return s.GetHosts()
	case *networkingv1alpha3.ServiceEntry:
		return s.GetHosts()
	case *networkingv1alpha3.DestinationRule:
		return []string{s.GetHost()}
	}
	return nil
}

// withHosts returns a copy of spec that holds only hosts.
func withHosts(spec proto.Message, hosts []string) proto.Message {
	spec = proto.Clone(spec)
	switch s := spec.(type) {
	case *metaprotocolv1alpha1.MetaRouter:
		s.Hosts = slices.DeleteFunc(s.Hosts, func(h string) bool { return !slices.Contains(hosts, h) })
	case *networkingv1alpha3.ServiceEntry:
		s.Hosts = slices.DeleteFunc(s.Hosts, func(h string) bool { return !slices.Contains(hosts, h) })
	}
	return spec
}

// specHosts reads the hosts a spec names, for an object that could not be
// read as a whole: "hosts" (MetaRouter, ServiceEntry) or "host"
// (DestinationRule), when they at least are well formed.
func specHosts(spec []byte) []string {
	var fields struct {
		Hosts json.RawMessage `json:"hosts"`
		Host  json.RawMessage `json:"host"`
	}
	if json.Unmarshal(spec, &fields) != nil {
		return nil
	}
	var hosts []string
	if json.Unmarshal(fields.Hosts, &hosts) != nil {
		hosts = nil
	}
	var host string
	if json.Unmarshal(fields.Host, &host) == nil && host != "" {
		hosts = append(hosts, host)
	}
	return hosts
}

func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*(#.*)?$`)

// parse reads the documents of one file. A document that cannot be read
// is replaced by the last good object of the same kind and name; a file
// that is not YAML at all keeps its last good objects.
func (d *DirSource) parse(path string, data []byte) ([]Object, []Problem) {
	var objs []Object
	var problems []Problem
	text := string(data)
	seps := docSeparator.FindAllStringIndex(text, -1)
	for i := 0; i <= len(seps); i++ {
		start, end := 0, len(text)
		if i > 0 {
			start = seps[i-1][1]
		}
		if i < len(seps) {
			end = seps[i][0]
		}
		doc := text[start:end]
		origin := path
		if len(seps) > 0 {
			origin = fmt.Sprintf("%s#%d", path, i+1)
		}
		if strings.TrimSpace(doc) == "" {
			continue
		}
		version := digest(doc)
		js, err := config.YAMLToJSON([]byte(doc))
		if err != nil {
			var se *config.SyntaxError
			if errors.As(err, &se) {
				se.Shift(strings.Count(text[:start], "\n")) // its line in the file
			}
			if d.lint {
				problems = append(problems, Problem{Object: path, File: path, Version: version, document: true, Err: err})
				continue
			}
			problems = append(problems, Problem{Object: path, File: path, Version: digest(text), document: true, Err: fmt.Errorf("%w; keeping what it held before", err)})
			return d.byFile[path], problems
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
			Spec json.RawMessage `json:"spec"`
		}
		if err := json.Unmarshal(js, &head); err != nil {
			problems = append(problems, Problem{Object: origin, File: path, Version: version, document: true, Err: fmt.Errorf("not a Kubernetes object: %w", err)})
			continue
		}
		group, _, _ := strings.Cut(head.APIVersion, "/")
		newSpec := kinds[group+"/"+head.Kind]
		switch {
		case head.APIVersion == "v1" && head.Kind == kindService:
			newSpec = func() proto.Message { return &networkingv1alpha3.ServiceEntry{} }
		case d.lint && group == "networking.istio.io" && head.Kind == kindEnvoyFilter:
			newSpec = func() proto.Message { return &networkingv1alpha3.EnvoyFilter{} }
		case newSpec == nil:
			d.Log.Debug("skipping an object of a kind not translated", "origin", origin, "apiVersion", head.APIVersion, "kind", head.Kind)
			continue
		}
		o := Object{Kind: head.Kind, Namespace: head.Metadata.Namespace, Name: head.Metadata.Name, Origin: origin, File: path, Spec: newSpec(), Version: version}
		if o.Namespace == "" {
			o.Namespace = "default"
		}
		if o.Name == "" {
			problems = append(problems, Problem{Object: o.Ref(), File: path, Version: version, Field: "metadata.name", Err: errors.New("required")})
			continue
		}
		id := o.Kind + " " + o.Namespace + "/" + o.Name
		d.present[id] = true
		spec := head.Spec
		if len(bytes.TrimSpace(spec)) == 0 || string(spec) == "null" {
			spec = []byte("{}")
		}
		switch o.Kind {
		case kindService:
			// Kubernetes' own type, not Istio's: only what it declares is
			// read, leniently (the API server checked the rest).
			se, named, err := kubernetesService(o.Name, o.Namespace, spec)
			if err != nil {
				problems = append(problems, Problem{Object: o.Ref(), File: path, Version: version, Field: "spec", Err: err})
				continue
			}
			o.Spec, o.namedTargetPorts = se, named
			objs = append(objs, o)
			continue
		case kindEnvoyFilter:
			// `breeze validate` checks EnvoyFilters with Istio's own rules;
			// Lint needs only those that decode.
			if decodeSpec(spec, o.Spec) == nil {
				objs = append(objs, o)
			}
			continue
		}
		if err := decodeSpec(spec, o.Spec); err != nil {
			for _, e := range unjoin(err) {
				p := Problem{Object: o.Ref(), File: path, Version: version, Err: e}
				var fe *config.FieldError
				if errors.As(e, &fe) {
					p.Field = fe.Path
					p.Err = errors.New(strings.TrimPrefix(fe.Error(), fe.Path+": "))
				}
				problems = append(problems, p)
			}
			if last, ok := d.byID[id]; ok {
				problems = append(problems, Problem{Object: o.Ref(), File: path, Version: version, Err: fmt.Errorf("keeping its last good version (%s)", last.Origin)})
				objs = append(objs, last)
			} else {
				d.broken = append(d.broken, brokenObject{ref: o.Ref(), file: path, kind: o.Kind, version: version, hosts: specHosts(spec)})
			}
			continue
		}
		d.byID[id] = o
		objs = append(objs, o)
	}
	return objs, problems
}

// ClusterDomain is the DNS suffix of Kubernetes Services the hosts of
// MetaRouters and ServiceEntries are matched against.
const ClusterDomain = "svc.cluster.local"

// kubernetesService reads what a Kubernetes Service declares, as a
// ServiceEntry would: its host <name>.<namespace>.svc.cluster.local, its
// ClusterIP and its ports. A targetPort that names a container port says
// no number: named reports one.
func kubernetesService(name, namespace string, spec []byte) (_ *networkingv1alpha3.ServiceEntry, named bool, _ error) {
	var s struct {
		ClusterIP string `json:"clusterIP"`
		Ports     []struct {
			Name       string          `json:"name"`
			Port       uint32          `json:"port"`
			TargetPort json.RawMessage `json:"targetPort"`
		} `json:"ports"`
	}
	if err := json.Unmarshal(spec, &s); err != nil {
		return nil, false, fmt.Errorf("not a Kubernetes Service spec: %w", err)
	}
	se := &networkingv1alpha3.ServiceEntry{Hosts: []string{name + "." + namespace + "." + ClusterDomain}}
	if s.ClusterIP != "" && s.ClusterIP != "None" {
		se.Addresses = []string{s.ClusterIP}
	}
	for _, p := range s.Ports {
		sp := &networkingv1alpha3.ServicePort{Number: p.Port, Name: p.Name}
		var target uint32
		var targetName string
		switch {
		case json.Unmarshal(p.TargetPort, &target) == nil:
			sp.TargetPort = target
		case json.Unmarshal(p.TargetPort, &targetName) == nil:
			if n, err := strconv.ParseUint(targetName, 10, 32); err == nil {
				sp.TargetPort = uint32(n)
			} else {
				named = true
			}
		}
		se.Ports = append(se.Ports, sp)
	}
	return se, named, nil
}

// decodeSpec fills spec from the JSON of an object's spec as istiod
// reads it (every unknown field an error; durations in Go's form too),
// errors named by the keys as the file writes them, under "spec".
func decodeSpec(js []byte, spec proto.Message) error {
	d := json.NewDecoder(bytes.NewReader(js))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return err
	}
	return config.DecodeStrict(v, spec, config.StrictOptions{Path: "spec", KeysAsWritten: true, GoDurations: true})
}

// digest identifies a version of a document.
func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:8])
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
