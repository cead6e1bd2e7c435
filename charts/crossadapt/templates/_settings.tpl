{{/*
Where the broker and the object store are, and the CROSSADAPT_* environment built from them.
Credentials only ever come from Secrets (secretKeyRef); the broker URL refers to the password
through Kubernetes' $(VAR) expansion, so no manifest holds it.
*/}}

{{- define "crossadapt.redis.host" -}}
{{- if .Values.redis.enabled }}
{{- printf "%s.%s.svc" (include "crossadapt.componentName" (list . "redis")) .Release.Namespace }}
{{- else }}
{{- .Values.externalRedis.host }}
{{- end }}
{{- end }}

{{- define "crossadapt.redis.port" -}}
{{- if .Values.redis.enabled }}6379{{ else }}{{ .Values.externalRedis.port }}{{ end }}
{{- end }}

{{/* The Secret holding the Redis password; empty when the external Redis has none. */}}
{{- define "crossadapt.redis.secretName" -}}
{{- if .Values.redis.enabled }}
{{- .Values.redis.auth.existingSecret | default (include "crossadapt.componentName" (list . "redis")) }}
{{- else }}
{{- .Values.externalRedis.existingSecret }}
{{- end }}
{{- end }}

{{- define "crossadapt.redis.secretKey" -}}
{{- if .Values.redis.enabled }}{{ .Values.redis.auth.passwordKey }}{{ else }}{{ .Values.externalRedis.passwordKey }}{{ end }}
{{- end }}

{{/* A Redis URL for one database: (list $ 0). */}}
{{- define "crossadapt.redis.url" -}}
{{- $root := index . 0 -}}
{{- $db := index . 1 -}}
{{- $tls := and (not $root.Values.redis.enabled) $root.Values.externalRedis.tls -}}
{{- $auth := ternary ":$(REDIS_PASSWORD)@" "" (ne (include "crossadapt.redis.secretName" $root) "") -}}
{{- printf "%s://%s%s:%s/%v%s" (ternary "rediss" "redis" $tls) $auth (include "crossadapt.redis.host" $root) (include "crossadapt.redis.port" $root) $db (ternary "?ssl_cert_reqs=required" "" $tls) }}
{{- end }}

{{- define "crossadapt.s3.endpoint" -}}
{{- if .Values.minio.enabled }}
{{- printf "%s.%s.svc:9000" (include "crossadapt.componentName" (list . "minio")) .Release.Namespace }}
{{- else }}
{{- .Values.s3.endpoint }}
{{- end }}
{{- end }}

{{- define "crossadapt.s3.secretName" -}}
{{- if .Values.minio.enabled }}
{{- .Values.minio.auth.existingSecret | default (include "crossadapt.componentName" (list . "minio")) }}
{{- else }}
{{- .Values.s3.existingSecret }}
{{- end }}
{{- end }}

{{- define "crossadapt.s3.accessKeyKey" -}}
{{- if .Values.minio.enabled }}{{ .Values.minio.auth.rootUserKey }}{{ else }}{{ .Values.s3.accessKeyKey }}{{ end }}
{{- end }}

{{- define "crossadapt.s3.secretKeyKey" -}}
{{- if .Values.minio.enabled }}{{ .Values.minio.auth.rootPasswordKey }}{{ else }}{{ .Values.s3.secretKeyKey }}{{ end }}
{{- end }}

{{/*
The platform environment of every service, worker and predictor container (services.common.settings).
CROSSADAPT_HOME and the caches live on the /tmp emptyDir: the root filesystem is read-only.
*/}}
{{- define "crossadapt.platformEnv" -}}
- name: CROSSADAPT_HOME
  value: /tmp/crossadapt
- name: XDG_CACHE_HOME
  value: /tmp/.cache
- name: MPLCONFIGDIR
  value: /tmp/.config/matplotlib
- name: CROSSADAPT_LOG_FORMAT
  value: json
- name: CROSSADAPT_LOG_LEVEL
  value: {{ .Values.settings.logLevel | quote }}
{{- if include "crossadapt.redis.secretName" . }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "crossadapt.redis.secretName" . }}
      key: {{ include "crossadapt.redis.secretKey" . }}
{{- end }}
- name: CROSSADAPT_BROKER_URL
  value: {{ include "crossadapt.redis.url" (list . (ternary 0 .Values.externalRedis.brokerDb .Values.redis.enabled)) | quote }}
- name: CROSSADAPT_RESULT_BACKEND
  value: {{ include "crossadapt.redis.url" (list . (ternary 1 .Values.externalRedis.resultDb .Values.redis.enabled)) | quote }}
- name: CROSSADAPT_VISIBILITY_TIMEOUT_S
  value: {{ .Values.settings.visibilityTimeoutSeconds | int64 | quote }}
- name: CROSSADAPT_TASK_MAX_DELIVERIES
  value: {{ .Values.settings.taskMaxDeliveries | int64 | quote }}
- name: CROSSADAPT_OPERATION_TTL_S
  value: {{ .Values.settings.operationTtlSeconds | int64 | quote }}
- name: CROSSADAPT_SHUTDOWN_GRACE_S
  value: {{ .Values.settings.shutdownGraceSeconds | int64 | quote }}
- name: CROSSADAPT_STORE_URL
  value: {{ printf "s3://%s/%s" .Values.s3.bucket .Values.s3.prefix | trimSuffix "/" | quote }}
- name: CROSSADAPT_S3_ENDPOINT
  value: {{ include "crossadapt.s3.endpoint" . | quote }}
- name: CROSSADAPT_S3_SECURE
  value: {{ and (not .Values.minio.enabled) .Values.s3.secure | quote }}
{{- if and (not .Values.minio.enabled) .Values.s3.region }}
- name: CROSSADAPT_S3_REGION
  value: {{ .Values.s3.region | quote }}
{{- end }}
- name: CROSSADAPT_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "crossadapt.s3.secretName" . }}
      key: {{ include "crossadapt.s3.accessKeyKey" . }}
- name: CROSSADAPT_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "crossadapt.s3.secretName" . }}
      key: {{ include "crossadapt.s3.secretKeyKey" . }}
{{- end }}

{{/* A gRPC server's listening environment: (list $ grpcPort). */}}
{{- define "crossadapt.serverEnv" -}}
{{- $root := index . 0 -}}
- name: CROSSADAPT_GRPC_HOST
  value: 0.0.0.0
- name: CROSSADAPT_GRPC_PORT
  value: {{ index . 1 | int64 | quote }}
- name: CROSSADAPT_METRICS_HOST
  value: 0.0.0.0
- name: CROSSADAPT_METRICS_PORT
  value: {{ $root.Values.metrics.port | int64 | quote }}
{{- end }}
