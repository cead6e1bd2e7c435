{{/*
The predictor's container, the same in our Deployment and in a KServe InferenceService
(`kserve-container` is the name KServe gives a custom predictor's container).
*/}}
{{- define "crossadapt.predictor.container" -}}
{{- $predictor := .Values.predictor -}}
- name: kserve-container
  image: {{ include "crossadapt.image" (list . $predictor.image) }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: [crossadapt]
  args: [serve, predictor]
  ports:
    # The first port is KServe's HTTP port; the others are exposed as they are (RawDeployment mode).
    - name: http1
      containerPort: {{ $predictor.httpPort }}
      protocol: TCP
    - name: h2c
      containerPort: {{ $predictor.grpcPort }}
      protocol: TCP
    - name: admin-grpc
      containerPort: {{ $predictor.adminPort }}
      protocol: TCP
    - name: metrics
      containerPort: {{ .Values.metrics.port }}
      protocol: TCP
  env:
    {{- include "crossadapt.platformEnv" . | nindent 4 }}
    {{- include "crossadapt.serverEnv" (list . $predictor.adminPort) | nindent 4 }}
    - name: CROSSADAPT_PREDICTOR_HOST
      value: 0.0.0.0
    - name: CROSSADAPT_PREDICTOR_HTTP_PORT
      value: {{ $predictor.httpPort | int64 | quote }}
    - name: CROSSADAPT_PREDICTOR_INFERENCE_GRPC_PORT
      value: {{ $predictor.grpcPort | int64 | quote }}
    - name: CROSSADAPT_PREDICTOR_MODEL_NAME
      value: {{ $predictor.modelName | quote }}
    - name: CROSSADAPT_PREDICTOR_TEACHER
      value: {{ $predictor.teacher | quote }}
    {{- with $predictor.student }}
    - name: CROSSADAPT_PREDICTOR_STUDENT
      value: {{ . | quote }}
    {{- end }}
    - name: CROSSADAPT_PREDICTOR_COHORT_KEY
      value: {{ $predictor.cohortKey | quote }}
    - name: CROSSADAPT_PREDICTOR_SHADOW_SHARE
      value: {{ $predictor.shadowShare | quote }}
    - name: CROSSADAPT_PREDICTOR_MAX_BATCH_ROWS
      value: {{ $predictor.maxBatchRows | int64 | quote }}
    - name: CROSSADAPT_PREDICTOR_TORCH_THREADS
      value: {{ $predictor.torchThreads | int64 | quote }}
    # The request reader's compiled loops (numba) need a writable cache folder: the root file system is
    # read-only, so they are compiled at the pod's first start into /tmp and reused across container restarts.
    - name: NUMBA_CACHE_DIR
      value: /tmp/numba-cache
    {{- with $predictor.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  # KServe's Open Inference Protocol health: live once up, ready once both arms are loaded.
  startupProbe:
    httpGet:
      path: /v2/health/live
      port: {{ $predictor.httpPort }}
    periodSeconds: 5
    failureThreshold: 120
  readinessProbe:
    httpGet:
      path: /v2/health/ready
      port: {{ $predictor.httpPort }}
    periodSeconds: 5
    timeoutSeconds: 3
  livenessProbe:
    httpGet:
      path: /v2/health/live
      port: {{ $predictor.httpPort }}
    periodSeconds: 20
    timeoutSeconds: 5
    failureThreshold: 3
  {{- with include "crossadapt.resources" (list . $predictor) }}{{- . | trim | nindent 2 }}{{- end }}
  {{- include "crossadapt.containerSecurityContext" . | nindent 2 }}
  {{- include "crossadapt.volumeMounts" $predictor | nindent 2 }}
{{- end }}
