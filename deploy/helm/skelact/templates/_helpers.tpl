{{/* Names and labels (the usual Helm conventions). */}}

{{- define "skelact.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "skelact.fullname" -}}
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

{{- define "skelact.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "skelact.selectorLabels" -}}
app.kubernetes.io/name: {{ include "skelact.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "skelact.labels" -}}
helm.sh/chart: {{ include "skelact.chart" . }}
{{ include "skelact.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "skelact.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "skelact.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "skelact.image" -}}
{{- printf "%s:%s%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) .Values.image.tagSuffix }}
{{- end }}

{{/*
A setting's value as the service reads it from the environment: lists as `a,b,c`, whole numbers
without an exponent (YAML numbers reach templates as float64: 8388608 would print as 8.388608e+06).
*/}}
{{- define "skelact.envValue" -}}
{{- if kindIs "slice" . }}
{{- join "," . }}
{{- else if and (kindIs "float64" .) (eq . (floor .)) }}
{{- int64 . }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/* Whole CPU cores of the pod (limits.cpu, else requests.cpu; "1500m" -> 1), at least 1. */}}
{{- define "skelact.cpuCores" -}}
{{- $res := .Values.resources | default dict }}
{{- $cpu := dig "limits" "cpu" (dig "requests" "cpu" "1" $res) $res | toString }}
{{- $cores := 1 }}
{{- if hasSuffix "m" $cpu }}
{{- $cores = div (trimSuffix "m" $cpu | atoi) 1000 }}
{{- else }}
{{- $cores = $cpu | float64 | floor | int }}
{{- end }}
{{- max 1 $cores }}
{{- end }}

{{- define "skelact.apiKeysSecret" -}}
{{- .Values.apiKeys.existingSecret | default (printf "%s-api-keys" (include "skelact.fullname" .)) }}
{{- end }}

{{- define "skelact.apiKeysEnabled" -}}
{{- if or .Values.apiKeys.existingSecret .Values.apiKeys.keys }}true{{ end }}
{{- end }}

{{- define "skelact.persistenceClaim" -}}
{{- .Values.persistence.existingClaim | default (printf "%s-shared" (include "skelact.fullname" .)) }}
{{- end }}

{{/* More than one pod at a time (rolling updates add one more anyway). */}}
{{- define "skelact.multiPod" -}}
{{- if or .Values.autoscaling.enabled .Values.keda.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/*
Values that the schema cannot relate to each other; `helm install` / `template` stop with the
message (tests/test_helm.py renders each case).
*/}}
{{- define "skelact.validate" -}}
{{- $shutdown := required "config.shutdown_timeout_s is required: the chart sizes terminationGracePeriodSeconds against it" .Values.config.shutdown_timeout_s }}
{{- $needed := add (int .Values.drain.preStopSleepSeconds) (ceil $shutdown | int) (int .Values.drain.marginSeconds) }}
{{- if lt (int .Values.terminationGracePeriodSeconds) (int $needed) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least drain.preStopSleepSeconds (%d) + config.shutdown_timeout_s (%v) + drain.marginSeconds (%d) = %d, or the kubelet kills the pod before its streams and clips are drained" (int .Values.terminationGracePeriodSeconds) (int .Values.drain.preStopSleepSeconds) $shutdown (int .Values.drain.marginSeconds) (int $needed)) }}
{{- end }}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled }}
{{- fail "autoscaling.enabled and keda.enabled are exclusive: KEDA creates its own HorizontalPodAutoscaler" }}
{{- end }}
{{- if or .Values.autoscaling.enabled .Values.keda.enabled }}
{{- $max := required "config.max_streams is required with autoscaling: the per-pod target must stay below it" .Values.config.max_streams }}
{{- if ge (float64 .Values.autoscaling.streamsPerPod) (float64 $max) }}
{{- fail (printf "autoscaling.streamsPerPod (%v) must be below config.max_streams (%v): pods must scale out before they refuse streams" .Values.autoscaling.streamsPerPod $max) }}
{{- end }}
{{- if gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas) }}
{{- fail (printf "autoscaling.minReplicas (%d) is above autoscaling.maxReplicas (%d)" (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- end }}
{{- end }}
{{- if and .Values.persistence.enabled (not .Values.persistence.existingClaim) (include "skelact.multiPod" .) (not (has "ReadWriteMany" .Values.persistence.accessModes)) }}
{{- fail "persistence.accessModes must include ReadWriteMany when more than one pod runs: every pod mounts the shared volume" }}
{{- end }}
{{- if and .Values.httpRoute.enabled (not .Values.httpRoute.parentRefs) }}
{{- fail "httpRoute.parentRefs is required with httpRoute.enabled: the Gateway (name, namespace) the route attaches to" }}
{{- end }}
{{- if and .Values.ingress.enabled .Values.ingress.tls.enabled (not .Values.ingress.host) }}
{{- fail "ingress.tls.enabled needs ingress.host (the certificate's host name)" }}
{{- end }}
{{- end }}

{{- /*
Readiness and start-up probe: GET /health/ready (200 once the models are warm; 503 while starting,
draining or at SKELACT_MAX_STREAMS). The route answers without an API key (status, readiness and
reason; the model details only with a key), so a plain HTTP probe works with API keys on.
*/}}
{{- define "skelact.readyProbe" -}}
httpGet:
  path: /health/ready
  port: http
{{- end }}
