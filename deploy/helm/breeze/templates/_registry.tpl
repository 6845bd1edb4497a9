{{- /*
Registry sync (controller/README.md, "A Dubbo registry's ServiceEntries"):
with registry.zookeeper or registry.nacos set, the controller's leader
follows that registry and writes one ServiceEntry per interface into
registry.namespace. Kept apart from the other templates: its RBAC is a Role
of its own (registry.yaml), its arguments one include in deployment.yaml.
*/ -}}
{{- define "breeze.registryEnabled" -}}
{{- if or .Values.registry.zookeeper .Values.registry.nacos -}}true{{- end -}}
{{- end -}}

{{- define "breeze.registryArgs" -}}
{{- if include "breeze.registryEnabled" . -}}
{{- with .Values.registry.zookeeper }}
- -zookeeper={{ . }}
- -zookeeper-root={{ $.Values.registry.zookeeperRoot }}
{{- end }}
{{- with .Values.registry.nacos }}
- -nacos={{ . }}
{{- with $.Values.registry.nacosNamespace }}
- -nacos-namespace={{ . }}
{{- end }}
- -nacos-group={{ $.Values.registry.nacosGroup }}
- -nacos-list-interval={{ $.Values.registry.nacosListInterval }}
{{- end }}
- -registry-namespace={{ .Values.registry.namespace }}
- -registry-vips={{ .Values.registry.vips }}
{{- end -}}
{{- end -}}
