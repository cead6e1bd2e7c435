{{/*
What the operator may do, mirrored from operators/rbac.yaml (a test checks they agree): list, watch
and patch its ModelSwitches (finalizer, handled action annotation), patch their status, create
events. It creates nothing else: services and the predictor are reached over gRPC. With peering on,
also kopf's peering objects.
*/}}
{{- define "crossadapt.operator.rules" -}}
- apiGroups: [crossadapt.io]
  resources: [modelswitches]
  verbs: [list, watch, patch]
- apiGroups: [crossadapt.io]
  resources: [modelswitches/status]
  verbs: [patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- if .Values.operator.peering.enabled }}
- apiGroups: [kopf.dev]
  resources: [{{ ternary "clusterkopfpeerings" "kopfpeerings" .Values.operator.clusterWide }}]
  verbs: [list, watch, patch]
{{- end }}
{{- end }}

{{/* The namespaces a namespaced operator watches (default: the release's). */}}
{{- define "crossadapt.operator.namespaces" -}}
{{- $namespaces := .Values.operator.watchNamespaces | default (list .Release.Namespace) -}}
{{- toJson (uniq $namespaces) }}
{{- end }}
