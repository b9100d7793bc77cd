{{/*
Helpers. The pgferry.sidecar.* templates are the chart's public partials: an
application chart that has pgferry as a dependency includes them in its own
pod spec (deploy/README.md). They read only .Values, .Release and .Chart, so
a parent chart passes
  (dict "Values" .Values.pgferry "Release" .Release "Chart" (dict "Name" "pgferry" "Version" "" "AppVersion" ""))
*/}}

{{- define "pgferry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pgferry.fullname" -}}
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

{{- define "pgferry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pgferry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pgferry.labels" -}}
{{ include "pgferry.selectorLabels" . }}
{{- with .Chart.Version }}
helm.sh/chart: {{ printf "%s-%s" $.Chart.Name . | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- with .Chart.AppVersion }}
app.kubernetes.io/version: {{ . | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service | default "Helm" }}
app.kubernetes.io/component: connection-pooler
{{- end }}

{{- define "pgferry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pgferry.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pgferry.configMapName" -}}
{{- default (include "pgferry.fullname" .) .Values.existingConfigMap }}
{{- end }}

{{- define "pgferry.authSecretName" -}}
{{- if .Values.authFile.existingSecret }}
{{- .Values.authFile.existingSecret }}
{{- else if .Values.authFile.content }}
{{- include "pgferry.fullname" . }}
{{- else }}
{{- printf "%s-auth" (include "pgferry.fullname" .) }}
{{- end }}
{{- end }}

{{- define "pgferry.hasAuthFile" -}}
{{- if .Values.authFile.enabled }}true{{ end }}
{{- end }}

{{- define "pgferry.terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" .Values.drain.terminationGracePeriodSeconds }}
{{- add .Values.drain.preStopSleepSeconds .Values.drain.shutdownTimeoutSeconds 10 }}
{{- else }}
{{- .Values.drain.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/*
pgferry.tomlValue renders one value as TOML: strings, booleans, numbers and
lists of strings. toJson's string escapes (\", \\, \uXXXX) are valid TOML.
*/}}
{{- define "pgferry.tomlValue" -}}
{{- if kindIs "float64" . }}
{{- if eq . (floor .) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else }}
{{- toJson . }}
{{- end }}
{{- end }}

{{/* pgferry.config renders pgferry.toml. */}}
{{- define "pgferry.config" -}}
{{- if not .Values.config.databases }}
{{- fail "config.databases needs at least one database (or the \"*\" fallback), or set existingConfigMap" }}
{{- end }}
# Rendered by the pgferry Helm chart; edit the chart's values, not this file.
{{- $fixed := dict
  "listen_addr" (ternary "127.0.0.1" "0.0.0.0" (eq .Values.mode "sidecar"))
  "listen_port" .Values.ports.client
  "metrics_listen" (printf "0.0.0.0:%v" .Values.ports.metrics)
  "shutdown_timeout" (printf "%vs" .Values.drain.shutdownTimeoutSeconds) }}
{{- if include "pgferry.hasAuthFile" . }}
{{- $_ := set $fixed "auth_file" (printf "/etc/pgferry-secrets/%s" .Values.authFile.key) }}
{{- end }}
{{- if and (eq .Values.mode "standalone") .Values.headlessService.enabled .Values.peering.enabled }}
{{- $_ := set $fixed "peer_id" .Values.peering.peerId }}
{{- $_ := set $fixed "peers_dns" (printf "%s-peers.%s.svc" (include "pgferry.fullname" .) .Release.Namespace) }}
{{- $_ := set $fixed "peers_port" .Values.ports.client }}
{{- if gt (int .Values.fleet.maxDBConnections) 0 }}
{{- $_ := set $fixed "fleet_max_db_connections" .Values.fleet.maxDBConnections }}
{{- end }}
{{- if gt (int .Values.fleet.maxUserConnections) 0 }}
{{- $_ := set $fixed "fleet_max_user_connections" .Values.fleet.maxUserConnections }}
{{- end }}
{{- $_ := set $fixed "fleet_interval" .Values.fleet.interval }}
{{- else if or (gt (int .Values.fleet.maxDBConnections) 0) (gt (int .Values.fleet.maxUserConnections) 0) }}
{{- fail "fleet.maxDBConnections and fleet.maxUserConnections need mode standalone with headlessService.enabled and peering.enabled (a sidecar fleet: see deploy/README.md)" }}
{{- end }}
{{- $settings := merge (deepCopy (.Values.config.settings | default dict)) $fixed }}
{{- range $k := keys $settings | sortAlpha }}
{{ $k }} = {{ include "pgferry.tomlValue" (get $settings $k) }}
{{- end }}
{{- range $name := keys (.Values.config.users | default dict) | sortAlpha }}

[users.{{ toJson $name }}]
{{- $u := get $.Values.config.users $name }}
{{- range $k := keys $u | sortAlpha }}
{{ $k }} = {{ include "pgferry.tomlValue" (get $u $k) }}
{{- end }}
{{- end }}
{{- range $name := keys (.Values.config.databases | default dict) | sortAlpha }}

[databases.{{ toJson $name }}]
{{- $db := get $.Values.config.databases $name }}
{{- range $k := keys $db | sortAlpha }}
{{ $k }} = {{ include "pgferry.tomlValue" (get $db $k) }}
{{- end }}
{{- end }}
{{- end }}

{{/* pgferry.sidecar.container: the pgferry container, for a pod spec's containers (or initContainers with restartPolicy: Always). */}}
{{- define "pgferry.sidecar.container" -}}
- name: pgferry
  image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["-config", "/etc/pgferry/pgferry.toml"]
  ports:
    - name: postgres
      containerPort: {{ .Values.ports.client }}
      protocol: TCP
    - name: metrics
      containerPort: {{ .Values.ports.metrics }}
      protocol: TCP
  {{- with .Values.extraEnv }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  # Liveness: 200 while the process serves HTTP, draining included, so a
  # pgferry finishing transactions is never killed for it.
  livenessProbe:
    httpGet:
      path: /healthz
      port: metrics
    {{- toYaml .Values.livenessProbe | nindent 4 }}
  # Readiness: 503 from SIGTERM on, so the Service stops routing new clients.
  readinessProbe:
    httpGet:
      path: /readyz
      port: metrics
    {{- toYaml .Values.readinessProbe | nindent 4 }}
  startupProbe:
    httpGet:
      path: /readyz
      port: metrics
    {{- toYaml .Values.startupProbe | nindent 4 }}
  {{- if gt (int .Values.drain.preStopSleepSeconds) 0 }}
  lifecycle:
    # Keep accepting while endpoints drop the pod (the image has no shell:
    # the sleep action needs Kubernetes 1.30+). SIGTERM follows, and
    # shutdown_timeout lets running transactions finish.
    preStop:
      sleep:
        seconds: {{ .Values.drain.preStopSleepSeconds }}
  {{- end }}
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    # A directory, never subPath: subPath mounts never see updates.
    - name: pgferry-config
      mountPath: /etc/pgferry
      readOnly: true
    {{- if include "pgferry.hasAuthFile" . }}
    - name: pgferry-auth
      mountPath: /etc/pgferry-secrets
      readOnly: true
    {{- end }}
    {{- range .Values.extraSecretMounts }}
    - name: {{ .name }}
      mountPath: /etc/pgferry-extra/{{ .name }}
      readOnly: true
    {{- end }}
{{- end }}

{{/* pgferry.sidecar.volumes: the volumes pgferry.sidecar.container mounts. */}}
{{- define "pgferry.sidecar.volumes" -}}
- name: pgferry-config
  configMap:
    name: {{ include "pgferry.configMapName" . }}
{{- if include "pgferry.hasAuthFile" . }}
- name: pgferry-auth
  secret:
    secretName: {{ include "pgferry.authSecretName" . }}
    items:
      - key: {{ .Values.authFile.key }}
        path: {{ .Values.authFile.key }}
{{- end }}
{{- range .Values.extraSecretMounts }}
- name: {{ .name }}
  secret:
    secretName: {{ .secretName }}
{{- end }}
{{- end }}

{{/* pgferry.sidecar.podLabels: labels the pod needs (workload identity). */}}
{{- define "pgferry.sidecar.podLabels" -}}
{{- if .Values.workloadIdentity.enabled -}}
azure.workload.identity/use: "true"
{{- end }}
{{- end }}
