{{/* The chart name. */}}
{{- define "wme.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of the resources. */}}
{{- define "wme.fullname" -}}
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

{{/* Labels of every resource. */}}
{{- define "wme.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "wme.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the pods. */}}
{{- define "wme.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wme.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount's name. */}}
{{- define "wme.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wme.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the AppSecrets, if any. */}}
{{- define "wme.secretName" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else if .Values.appSecrets }}
{{- include "wme.fullname" . }}
{{- end }}
{{- end }}

{{/* The pod template of the Deployment and of the StatefulSet. */}}
{{- define "wme.podTemplate" -}}
metadata:
  labels:
    {{- include "wme.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "wme.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: exporter
      image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - --config=/etc/wechat-miniprogram-exporter/config.toml
        - --web.listen-address=:{{ .Values.service.port }}
        - --storage.path=/var/lib/wechat-miniprogram-exporter
        {{- if ne .Values.web.telemetryPath "/metrics" }}
        - --web.telemetry-path={{ .Values.web.telemetryPath }}
        {{- end }}
        {{- if .Values.web.configSecret }}
        - --web.config.file=/etc/wechat-miniprogram-exporter/web/web-config.yml
        {{- end }}
        {{- if gt (int .Values.shards) 1 }}
        - --shard=$(SHARD)
        - --total-shards={{ .Values.shards }}
        {{- end }}
        {{- with .Values.extraArgs }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- if or (gt (int .Values.shards) 1) .Values.extraEnv }}
      env:
        {{- if gt (int .Values.shards) 1 }}
        - name: SHARD
          valueFrom:
            fieldRef:
              fieldPath: metadata.labels['apps.kubernetes.io/pod-index']
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
      ports:
        - name: http
          containerPort: {{ .Values.service.port }}
          protocol: TCP
      {{- $liveness := deepCopy .Values.livenessProbe }}
      {{- $readiness := deepCopy .Values.readinessProbe }}
      {{- if and .Values.web.configSecret .Values.web.tls }}
      {{- if $liveness.httpGet }}{{ $_ := set $liveness.httpGet "scheme" "HTTPS" }}{{ end }}
      {{- if $readiness.httpGet }}{{ $_ := set $readiness.httpGet "scheme" "HTTPS" }}{{ end }}
      {{- end }}
      {{- if and .Values.web.configSecret .Values.web.basicAuth $readiness.httpGet }}
      {{- /* kubelet cannot authenticate: /healthz is the one path outside basic auth. */}}
      {{- $_ := set $readiness.httpGet "path" "/healthz" }}
      {{- end }}
      livenessProbe:
        {{- toYaml $liveness | nindent 8 }}
      readinessProbe:
        {{- toYaml $readiness | nindent 8 }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/wechat-miniprogram-exporter/config.toml
          subPath: config.toml
          readOnly: true
        - name: data
          mountPath: /var/lib/wechat-miniprogram-exporter
        {{- if include "wme.secretName" . }}
        - name: secrets
          mountPath: /etc/wechat-miniprogram-exporter/secrets
          readOnly: true
        {{- end }}
        {{- if .Values.web.configSecret }}
        - name: web
          mountPath: /etc/wechat-miniprogram-exporter/web
          readOnly: true
        {{- end }}
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "wme.fullname" . }}
    {{- if not .Values.persistence.enabled }}
    - name: data
      emptyDir: {}
    {{- else if le (int .Values.shards) 1 }}
    - name: data
      persistentVolumeClaim:
        claimName: {{ include "wme.fullname" . }}-data
    {{- end }}
    {{- with include "wme.secretName" . }}
    - name: secrets
      secret:
        secretName: {{ . }}
    {{- end }}
    {{- with .Values.web.configSecret }}
    - name: web
      secret:
        secretName: {{ . }}
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
