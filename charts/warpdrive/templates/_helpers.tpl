{{- define "warpdrive.name" -}}warpdrive{{- end -}}

{{- define "warpdrive.fullname" -}}
{{- if contains "warpdrive" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-warpdrive" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "warpdrive.labels" -}}
app.kubernetes.io/name: {{ include "warpdrive.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "warpdrive.selector" -}}
app.kubernetes.io/name: {{ include "warpdrive.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The daemon's config: the user's `config` with the keys the chart owns set by it. */}}
{{- define "warpdrive.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- $_ := set $config "mount_point" .Values.mountPoint -}}
{{- $cache := deepCopy (default dict $config.cache) -}}
{{- $_ := set $cache "path" "/var/cache/warpdrive" -}}
{{- $_ := set $config "cache" $cache -}}
{{- $_ := set $config "control_socket" "/run/warpdrive/control.sock" -}}
{{- $addr := ternary (printf "0.0.0.0:%v" .Values.metrics.port) (printf "127.0.0.1:%v" .Values.metrics.port) .Values.metrics.service.enabled -}}
{{- $_ := set $config "metrics" (dict "enabled" true "addr" $addr) -}}
{{- if .Values.controlPlane.enabled -}}
{{- $cpAddr := ternary (printf "0.0.0.0:%v" .Values.controlPlane.port) (printf "127.0.0.1:%v" .Values.controlPlane.port) .Values.controlPlane.expose -}}
{{- $_ := set $config "control_plane" (dict "enabled" true "addr" $cpAddr "token_file" "/etc/warpdrive-control/token") -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}
