{{/* Chart name, truncated to the 63 characters a label allows. */}}
{{- define "herald.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: release name, plus the chart name unless it contains it. */}}
{{- define "herald.fullname" -}}
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

{{- define "herald.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "herald.labels" -}}
helm.sh/chart: {{ include "herald.chart" . }}
{{ include "herald.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "herald.selectorLabels" -}}
app.kubernetes.io/name: {{ include "herald.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "herald.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "herald.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "herald.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Secret holding keys and URLs: the user's existingSecret or the chart's own. */}}
{{- define "herald.secretName" -}}
{{- default (include "herald.fullname" .) .Values.auth.existingSecret }}
{{- end }}

{{/* Seconds from SIGTERM (after preStop) to exit: the drain window plus the binary's 2 s grace. */}}
{{- define "herald.shutdownSeconds" -}}
{{- add (int .Values.preStopSleepSeconds) (int .Values.herald.drainSeconds) 2 }}
{{- end }}

{{/* terminationGracePeriodSeconds: preStop sleep + drain + 15, or the override when it is long enough. */}}
{{- define "herald.terminationGracePeriodSeconds" -}}
{{- $needed := int (include "herald.shutdownSeconds" .) }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add (int .Values.preStopSleepSeconds) (int .Values.herald.drainSeconds) 15 }}
{{- else if le (int .Values.terminationGracePeriodSeconds) $needed }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds + herald.drainSeconds + 2 = %d, or pods are killed mid-drain" (int .Values.terminationGracePeriodSeconds) $needed) }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* Fails on combinations the schema cannot express. Included by the Deployment. */}}
{{- define "herald.validate" -}}
{{- if and (not .Values.cluster.enabled) (or .Values.cluster.natsUrl .Values.cluster.redisUrl) }}
{{- fail "cluster.natsUrl / cluster.redisUrl are set but cluster.enabled is false: set cluster.enabled=true" }}
{{- end }}
{{- if and .Values.cluster.enabled (not .Values.auth.existingSecret) (not (and .Values.cluster.natsUrl .Values.cluster.redisUrl)) }}
{{- fail "cluster.enabled needs both cluster.natsUrl and cluster.redisUrl (or auth.existingSecret with keys nats-url and redis-url)" }}
{{- end }}
{{- if and (not .Values.cluster.enabled) (or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled) }}
{{- fail "replicaCount > 1 and autoscaling need cluster mode (cluster.enabled with NATS and Redis): standalone nodes share no state" }}
{{- end }}
{{- range $key := list "node_id" "http_addr" "grpc_addr" "metrics_addr" "jwt_secret" "jwt_public_key" "jwt_audience" "jwt_issuer" "api_keys" "allowed_origins" "log_format" "drain_seconds" "gap_wait_ms" "fanout_coalesce_ms" "presence_ttl_seconds" "nats_url" "redis_url" "max_connections" "max_connections_per_user" "max_subscriptions" "commands_per_minute" "max_message_bytes" "max_json_depth" "client_queue_bytes" "ping_interval_seconds" "pong_timeout_seconds" "connect_timeout_seconds" "tls_cert" "tls_key" "grpc_tls" "backend_addr" "backend_timeout_ms" "backend_token" "backend_tls_ca" "backend_methods" "backend_max_concurrency" "rpc_per_minute" }}
{{- if hasKey $.Values.config $key }}
{{- fail (printf "config.%s: the chart sets this through an environment variable (which wins over the file); use the chart value instead (see README)" $key) }}
{{- end }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "tls.enabled needs tls.secretName: a Secret of type kubernetes.io/tls (keys tls.crt, tls.key)" }}
{{- end }}
{{- if and .Values.tls.grpc (not .Values.tls.enabled) }}
{{- fail "tls.grpc uses the certificate of tls.secretName: set tls.enabled=true" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (kindIs "invalid" .Values.autoscaling.targetCPUUtilizationPercentage) (kindIs "invalid" .Values.autoscaling.targetConnectionsPerPod) }}
{{- fail "autoscaling needs targetCPUUtilizationPercentage and/or targetConnectionsPerPod" }}
{{- end }}
{{- end }}

{{/*
herald.toml from a map. Helm reads every number in values as a float, and `toToml` would
write 100 as 100.0, which the gateway's integer settings refuse; these helpers write integral
numbers as integers. Scalars and lists of scalars first, then sub-tables as [a.b] headers.
*/}}
{{- define "herald.tomlKey" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{- define "herald.tomlValue" -}}
{{- if kindIs "string" . }}{{ toJson . }}
{{- else if kindIs "bool" . }}{{ . }}
{{- else if kindIs "float64" . }}{{ if eq . (floor .) }}{{ printf "%d" (int64 .) }}{{ else }}{{ . }}{{ end }}
{{- else if or (kindIs "int" .) (kindIs "int64" .) }}{{ . }}
{{- else if kindIs "slice" . }}[{{ range $i, $e := . }}{{ if $i }}, {{ end }}{{ include "herald.tomlValue" $e }}{{ end }}]
{{- else }}{{ fail (printf "config: cannot write %v (%s) to TOML" . (kindOf .)) }}
{{- end }}
{{- end }}

{{/* Arguments: dict "path" (list of keys to this table) "table" (the map). */}}
{{- define "herald.tomlTable" -}}
{{- $path := .path }}
{{- $table := .table }}
{{- $scalars := dict }}
{{- $tables := dict }}
{{- range $k, $v := $table }}
{{- if kindIs "map" $v }}{{ $_ := set $tables $k $v }}{{ else }}{{ $_ := set $scalars $k $v }}{{ end }}
{{- end }}
{{- if and $path (or $scalars (not $table)) }}
{{- $keys := list }}
{{- range $path }}{{ $keys = append $keys (include "herald.tomlKey" .) }}{{ end }}
[{{ join "." $keys }}]
{{- end }}
{{- range $k, $v := $scalars }}
{{ include "herald.tomlKey" $k }} = {{ include "herald.tomlValue" $v }}
{{- end }}
{{- range $k, $v := $tables }}
{{ include "herald.tomlTable" (dict "path" (append $path $k) "table" $v) }}
{{- end }}
{{- end }}

{{/*
A probe from values. With tls.enabled, an httpGet probe of the HTTP port speaks HTTPS (the
kubelet does not verify the certificate), unless the probe names its scheme.
*/}}
{{- define "herald.probe" -}}
{{- $probe := deepCopy .probe }}
{{- if and .root.Values.tls.enabled $probe.httpGet }}
{{- if and (eq (toString $probe.httpGet.port) "http") (not $probe.httpGet.scheme) }}
{{- $_ := set $probe.httpGet "scheme" "HTTPS" }}
{{- end }}
{{- end }}
{{- toYaml $probe }}
{{- end }}
