{{/*
Pod-level pieces shared by every workload: the restricted Pod Security Standard baseline, GPU
scheduling and resources, the writable /tmp of a read-only root filesystem.
*/}}

{{/* Restricted PSS at pod level: non-root with a fixed uid/gid (the images' user 10001), RuntimeDefault seccomp. */}}
{{- define "crossadapt.podSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
  fsGroupChangePolicy: OnRootMismatch
  seccompProfile:
    type: RuntimeDefault
{{- end }}

{{/* Restricted PSS at container level, plus a read-only root filesystem. */}}
{{- define "crossadapt.containerSecurityContext" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  runAsNonRoot: true
  capabilities:
    drop: [ALL]
  seccompProfile:
    type: RuntimeDefault
{{- end }}

{{/*
nodeSelector, tolerations and affinity of a workload: (list $ $workload). A workload with gpus > 0
also gets the GPU pool's selector (its own keys win) and tolerations.
*/}}
{{- define "crossadapt.scheduling" -}}
{{- $root := index . 0 -}}
{{- $workload := index . 1 -}}
{{- $nodeSelector := deepCopy ($workload.nodeSelector | default dict) -}}
{{- $tolerations := $workload.tolerations | default list -}}
{{- if gt (int ($workload.gpus | default 0)) 0 }}
{{- $nodeSelector = mergeOverwrite (deepCopy ($root.Values.gpuPool.nodeSelector | default dict)) $nodeSelector -}}
{{- $tolerations = concat ($root.Values.gpuPool.tolerations | default list) $tolerations -}}
{{- end }}
{{- with $nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $workload.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* A container's resources, with `gpus` of the GPU pool's resource as a limit: (list $ $workload). */}}
{{- define "crossadapt.resources" -}}
{{- $root := index . 0 -}}
{{- $workload := index . 1 -}}
{{- $resources := deepCopy ($workload.resources | default dict) -}}
{{- $gpus := int ($workload.gpus | default 0) -}}
{{- if gt $gpus 0 }}
{{- $limits := $resources.limits | default dict -}}
{{- $_ := set $limits $root.Values.gpuPool.resourceName $gpus -}}
{{- $_ = set $resources "limits" $limits -}}
{{- end }}
{{- with $resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Volumes every CrossAdapt pod has: /tmp (CROSSADAPT_HOME, caches) and, when asked, a larger /dev/shm. */}}
{{- define "crossadapt.volumes" -}}
volumes:
  - name: tmp
    emptyDir: {}
{{- with .shmSize }}
  - name: shm
    emptyDir:
      medium: Memory
      sizeLimit: {{ . }}
{{- end }}
{{- end }}

{{- define "crossadapt.volumeMounts" -}}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- if .shmSize }}
  - name: shm
    mountPath: /dev/shm
{{- end }}
{{- end }}

{{/* Pod annotations: Prometheus scraping hints plus the workload's own. (list $ $workload $scrape) */}}
{{- define "crossadapt.podAnnotations" -}}
{{- $root := index . 0 -}}
{{- $workload := index . 1 -}}
{{- $annotations := dict -}}
{{- if index . 2 }}
{{- $annotations = dict "prometheus.io/scrape" "true" "prometheus.io/port" (toString $root.Values.metrics.port) "prometheus.io/path" "/metrics" -}}
{{- end }}
{{- $annotations = mergeOverwrite $annotations (deepCopy ($workload.podAnnotations | default dict)) -}}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
