package controlplane

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

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
	Spec   proto.Message
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

// DirSource reads the YAML (or JSON) files of a directory — Kubernetes
// manifests, several per file separated by "---" — and watches it. Kinds
// other than MetaRouter, DestinationRule and ServiceEntry are skipped.
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
}

// brokenObject is an object that could not be read and has no last good
// version of its own: the hosts it names, as far as they can be read.
type brokenObject struct {
	ref, kind, version string
	hosts              []string
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
	if d.byFile == nil {
		d.byFile, d.byID = map[string][]Object{}, map[string]Object{}
	}
	var snap Snapshot
	entries, err := os.ReadDir(d.Dir)
	if err != nil {
		snap.Problems = append(snap.Problems, Problem{Object: d.Dir, Err: err})
		// Keep serving what was read before.
		for _, objs := range d.byFile {
			snap.Objects = append(snap.Objects, objs...)
		}
		return snap
	}
	files := map[string][]Object{}
	d.present = map[string]bool{}
	d.broken = nil
	defer func() {
		// Last good versions are kept only for objects still there.
		maps.DeleteFunc(d.byID, func(id string, _ Object) bool { return !d.present[id] })
	}()
	for _, e := range entries {
		name := e.Name()
		switch strings.ToLower(filepath.Ext(name)) {
		case ".yaml", ".yml", ".json":
		default:
			continue
		}
		if strings.HasPrefix(name, ".") {
			continue
		}
		path := filepath.Join(d.Dir, name)
		data, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) || (err == nil && isDir(path)) {
			continue
		}
		if err != nil {
			snap.Problems = append(snap.Problems, Problem{Object: path, Err: err})
			files[path] = d.byFile[path]
			continue
		}
		objs, problems := d.parse(path, data)
		snap.Problems = append(snap.Problems, problems...)
		files[path] = objs
	}
	d.byFile = files
	seen := map[string]string{}
	for _, path := range slices.Sorted(maps.Keys(files)) {
		for _, o := range files[path] {
			id := o.Kind + " " + o.Namespace + "/" + o.Name
			if prev, dup := seen[id]; dup {
				snap.Problems = append(snap.Problems, Problem{Object: o.Ref(), Version: o.Version, Err: fmt.Errorf("also defined in %s; this one is ignored", prev)})
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
		snap.Problems = append(snap.Problems, Problem{Object: kp.broken.ref, Version: kp.broken.version,
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
	docs := docSeparator.Split(string(data), -1)
	for i, doc := range docs {
		origin := path
		if len(docs) > 1 {
			origin = fmt.Sprintf("%s#%d", path, i+1)
		}
		if strings.TrimSpace(doc) == "" {
			continue
		}
		version := digest(doc)
		js, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			problems = append(problems, Problem{Object: origin, Version: digest(string(data)), Err: fmt.Errorf("not YAML: %w; keeping what it held before", err)})
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
			problems = append(problems, Problem{Object: origin, Version: version, Err: fmt.Errorf("not a Kubernetes object: %w", err)})
			continue
		}
		group, _, _ := strings.Cut(head.APIVersion, "/")
		newSpec := kinds[group+"/"+head.Kind]
		if newSpec == nil {
			d.Log.Debug("skipping an object of a kind not translated", "origin", origin, "apiVersion", head.APIVersion, "kind", head.Kind)
			continue
		}
		o := Object{Kind: head.Kind, Namespace: head.Metadata.Namespace, Name: head.Metadata.Name, Origin: origin, Spec: newSpec(), Version: version}
		if o.Namespace == "" {
			o.Namespace = "default"
		}
		if o.Name == "" {
			problems = append(problems, Problem{Object: o.Ref(), Version: version, Field: "metadata.name", Err: errors.New("required")})
			continue
		}
		id := o.Kind + " " + o.Namespace + "/" + o.Name
		d.present[id] = true
		spec := head.Spec
		if len(bytes.TrimSpace(spec)) == 0 || string(spec) == "null" {
			spec = []byte("{}")
		}
		if err := decodeSpec(spec, o.Spec); err != nil {
			for _, e := range unjoin(err) {
				p := Problem{Object: o.Ref(), Version: version, Err: e}
				var fe *config.FieldError
				if errors.As(e, &fe) {
					p.Field = fe.Path
					p.Err = errors.New(strings.TrimPrefix(fe.Error(), fe.Path+": "))
				}
				problems = append(problems, p)
			}
			if last, ok := d.byID[id]; ok {
				problems = append(problems, Problem{Object: o.Ref(), Version: version, Err: fmt.Errorf("keeping its last good version (%s)", last.Origin)})
				objs = append(objs, last)
			} else {
				d.broken = append(d.broken, brokenObject{ref: o.Ref(), kind: o.Kind, version: version, hosts: specHosts(spec)})
			}
			continue
		}
		d.byID[id] = o
		objs = append(objs, o)
	}
	return objs, problems
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
