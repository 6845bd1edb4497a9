{{- define "breeze.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "breeze.controller" -}}
{{- printf "%s-controller" (include "breeze.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "breeze.selectorLabels" -}}
app.kubernetes.io/name: breeze-controller
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "breeze.labels" -}}
{{ include "breeze.selectorLabels" . }}
app.kubernetes.io/part-of: breeze
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "breeze.xdsAddress" -}}
{{- if .Values.xds.address -}}
{{- .Values.xds.address -}}
{{- else -}}
{{- printf "%s.%s.svc.%s:%v" (include "breeze.controller" .) .Release.Namespace .Values.clusterDomain .Values.xds.port -}}
{{- end -}}
{{- end -}}
