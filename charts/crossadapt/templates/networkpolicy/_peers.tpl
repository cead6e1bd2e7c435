{{/* `from` entries for "any pod of this release", plus extra peers: (list $ $extraPeers). */}}
{{- define "crossadapt.networkPolicy.releasePeers" -}}
{{- $root := index . 0 -}}
- podSelector:
    matchLabels:
      {{- include "crossadapt.releaseSelector" $root | nindent 6 }}
{{- with index . 1 }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* An ingress rule for /metrics: from networkPolicy.metricsFrom, or from anywhere when it is empty. */}}
{{- define "crossadapt.networkPolicy.metricsRule" -}}
- ports:
    - port: {{ .Values.metrics.port }}
      protocol: TCP
  {{- with .Values.networkPolicy.metricsFrom }}
  from:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
