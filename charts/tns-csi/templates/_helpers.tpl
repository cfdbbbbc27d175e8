{{/* The name every object and label uses; `kubectl logs -l app.kubernetes.io/name=tns-csi-driver` finds all pods. */}}
{{- define "tns-csi.name" -}}tns-csi-driver{{- end -}}

{{- define "tns-csi.fullname" -}}
{{- if contains "tns-csi" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-tns-csi" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tns-csi.labels" -}}
app.kubernetes.io/name: {{ include "tns-csi.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tns-csi.selector" -}}
app.kubernetes.io/name: {{ include "tns-csi.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tns-csi.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The CSI driver name: fixed, the binary registers under it. */}}
{{- define "tns-csi.driver" -}}tns.csi.io{{- end -}}

{{- define "tns-csi.metricsAddr" -}}
{{- if .Values.metrics.service.enabled -}}
0.0.0.0:{{ .Values.metrics.port }}
{{- else -}}
127.0.0.1:{{ .Values.metrics.port }}
{{- end -}}
{{- end -}}
