{{/*
Names, labels and images shared by every template.
*/}}

{{- define "crossadapt.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The resource-name prefix: <release>-<chart>, or <release> when it already contains the chart name. */}}
{{- define "crossadapt.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "crossadapt.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Name of a component's resources: (list $ "projector") -> <fullname>-projector. */}}
{{- define "crossadapt.componentName" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "crossadapt.fullname" $root) (index . 1) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select a component's pods: (list $ "projector"). */}}
{{- define "crossadapt.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "crossadapt.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Every label of a component's resources: (list $ "projector"). */}}
{{- define "crossadapt.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ include "crossadapt.chart" $root }}
{{ include "crossadapt.selectorLabels" . }}
app.kubernetes.io/part-of: crossadapt
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
{{- end }}

{{/* Labels on every pod of the release (what the NetworkPolicies call "this release"). */}}
{{- define "crossadapt.releaseSelector" -}}
app.kubernetes.io/name: {{ include "crossadapt.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* An image reference: (list $ .Values.services.projector.image) -> [registry/]repository:tag. */}}
{{- define "crossadapt.image" -}}
{{- $root := index . 0 -}}
{{- $image := index . 1 -}}
{{- $repository := $image.repository -}}
{{- if $root.Values.image.registry }}
{{- $repository = printf "%s/%s" (trimSuffix "/" $root.Values.image.registry) $repository -}}
{{- end }}
{{- $tag := $image.tag | default $root.Values.image.tag | default $root.Chart.AppVersion -}}
{{- printf "%s:%s" $repository $tag }}
{{- end }}

{{/* A third-party image (redis, minio): repository:tag, never prefixed by image.registry. */}}
{{- define "crossadapt.externalImage" -}}
{{- printf "%s:%s" .repository .tag }}
{{- end }}

{{- define "crossadapt.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The ServiceAccount of the workloads (no API access: its token is not mounted). */}}
{{- define "crossadapt.serviceAccountName" -}}
{{- include "crossadapt.fullname" . }}
{{- end }}

{{- define "crossadapt.operator.serviceAccountName" -}}
{{- include "crossadapt.componentName" (list . "operator") }}
{{- end }}

{{/* host:port of a service inside the cluster: (list $ "projector" 50051). */}}
{{- define "crossadapt.serviceAddress" -}}
{{- $root := index . 0 -}}
{{- printf "%s.%s.svc:%v" (include "crossadapt.componentName" (list $root (index . 1))) $root.Release.Namespace (index . 2) }}
{{- end }}

{{/* The predictor's Service: ours (a Deployment) or KServe's (<isvc>-predictor, RawDeployment mode). */}}
{{- define "crossadapt.predictor.serviceName" -}}
{{- include "crossadapt.componentName" (list . "predictor") }}
{{- end }}

{{/* The InferenceService's name: KServe names its Service <isvc>-predictor, the same as ours. */}}
{{- define "crossadapt.predictor.inferenceServiceName" -}}
{{- include "crossadapt.fullname" . }}
{{- end }}
