{{/* Names, labels and the pieces every Switchboard pod shares. */}}

{{- define "switchboard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains "switchboard" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-switchboard" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "switchboard.labels" -}}
app.kubernetes.io/name: switchboard
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector labels of one component: include with (dict "root" $ "component" "voice"). */}}
{{- define "switchboard.selectorLabels" -}}
app.kubernetes.io/name: switchboard
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "switchboard.componentLabels" -}}
{{ include "switchboard.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "switchboard.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "switchboard.secretName" -}}
{{- default (include "switchboard.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* The voice server count can exceed one: fixed replicas above one, or autoscaling. */}}
{{- define "switchboard.voiceIsScaled" -}}
{{- if or .Values.voice.autoscaling.enabled (gt (int .Values.voice.replicas) 1) -}}true{{- end -}}
{{- end -}}

{{/* One env entry from the Secret: (dict "root" $ "key" "NAME" "optional" true). */}}
{{- define "switchboard.secretEnv" -}}
- name: {{ .key }}
  valueFrom:
    secretKeyRef:
      name: {{ include "switchboard.secretName" .root }}
      key: {{ .key }}
      optional: {{ .optional }}
{{- end -}}

{{/* The OTEL_* variables as env entries; empty when none are set. */}}
{{- define "switchboard.otelEnv" -}}
{{- $env := list -}}
{{- range $name, $value := .Values.otel -}}
{{- $env = append $env (dict "name" $name "value" (toString $value)) -}}
{{- end -}}
{{- if $env }}{{ toYaml $env }}{{ end -}}
{{- end -}}

{{/* Pod-level fields every Switchboard pod shares. */}}
{{- define "switchboard.podCommon" -}}
automountServiceAccountToken: false
{{- with .Values.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Scrape annotations, and a checksum of the settings so a settings change rolls the pods. */}}
{{- define "switchboard.podAnnotations" -}}
checksum/config: {{ include (print .root.Template.BasePath "/configmap.yaml") .root | sha256sum }}
{{- if .root.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{/* HTTP probes: readiness on /health-check/ready, liveness on /health-check/live, and a startup probe
     on /health-check/live that gives the process a minute to load before liveness counts. */}}
{{- define "switchboard.probes" -}}
startupProbe:
  httpGet: {path: /health-check/live, port: http}
  periodSeconds: 2
  failureThreshold: 60
  timeoutSeconds: 2
readinessProbe:
  httpGet: {path: /health-check/ready, port: http}
  periodSeconds: {{ dig "readiness" "periodSeconds" 5 . }}
  failureThreshold: {{ dig "readiness" "failureThreshold" 2 . }}
  successThreshold: 1
  timeoutSeconds: 2
livenessProbe:
  httpGet: {path: /health-check/live, port: http}
  periodSeconds: {{ dig "liveness" "periodSeconds" 10 . }}
  failureThreshold: {{ dig "liveness" "failureThreshold" 3 . }}
  timeoutSeconds: {{ dig "liveness" "timeoutSeconds" 3 . }}
{{- end -}}

{{/* Writable scratch space under a read-only root filesystem. */}}
{{- define "switchboard.volumeMounts" -}}
- name: data
  mountPath: /var/lib/switchboard
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "switchboard.volumes" -}}
- name: data
  emptyDir: {}
- name: tmp
  emptyDir:
    medium: Memory
    sizeLimit: 64Mi
{{- end -}}
