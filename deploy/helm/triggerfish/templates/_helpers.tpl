{{/*
Names and labels. The release's resources are named after fullname: the release name if it
contains "triggerfish", else <release>-triggerfish (fullnameOverride replaces it).
*/}}
{{- define "triggerfish.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "triggerfish.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The chart's NATS: StatefulSet <fullname>-nats, headless Service <fullname>-nats-headless. */}}
{{- define "triggerfish.nats" -}}
{{- include "triggerfish.fullname" . | trunc 50 | trimSuffix "-" }}-nats
{{- end }}

{{- define "triggerfish.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* Selector labels of a component: (dict "root" $ "component" "router"), and "name" for
another application than Triggerfish (NATS). */}}
{{- define "triggerfish.selectorLabels" -}}
app.kubernetes.io/name: {{ .name | default (include "triggerfish.name" .root) }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of a component's resources. */}}
{{- define "triggerfish.labels" -}}
{{ include "triggerfish.selectorLabels" . }}
app.kubernetes.io/part-of: triggerfish
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end }}

{{/* The JetStream URLs the router connects to: router.store.url, else the chart's NATS pods. */}}
{{- define "triggerfish.natsUrls" -}}
{{- if .Values.router.store.url }}
{{- .Values.router.store.url }}
{{- else if .Values.nats.enabled }}
{{- $nats := include "triggerfish.nats" . }}
{{- $urls := list }}
{{- range $i := until (int .Values.nats.replicas) }}
{{- $urls = append $urls (printf "nats://%s-%d.%s-headless:4222" $nats $i $nats) }}
{{- end }}
{{- join "," $urls }}
{{- else }}
{{- fail "router.store.kind is jetstream, but nats.enabled is false and router.store.url is empty: set one of them, or router.store.kind: memory" }}
{{- end }}
{{- end }}

{{/* The container's security context: non-root, read-only, no privileges. */}}
{{- define "triggerfish.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{/* The pod's security context, for uid and gid (dict "id" 10001). */}}
{{- define "triggerfish.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .id }}
runAsGroup: {{ .id }}
fsGroup: {{ .id }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Probes on the admin port: startup on /healthz, liveness on /healthz, readiness on /readyz. */}}
{{- define "triggerfish.probes" -}}
startupProbe:
  httpGet:
    path: /healthz
    port: admin
  periodSeconds: 2
  failureThreshold: 30
livenessProbe:
  httpGet:
    path: /healthz
    port: admin
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
{{- end }}
