{{/* Names, labels and image references shared by every template. */}}

{{- define "dermaops.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 45 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 45 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "dermaops.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: include with (list . "component"). */}}
{{- define "dermaops.selector" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ $root.Chart.Name }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* An image reference from images.<component>, by digest when one is given:
     include with (list . .Values.images.serving). */}}
{{- define "dermaops.image" -}}
{{- $root := index . 0 -}}
{{- $image := index . 1 -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository ($image.tag | default $root.Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{- define "dermaops.predictorImage" -}}
{{- include "dermaops.image" (list . (ternary .Values.images.servingGpu .Values.images.serving .Values.predictor.gpu.enabled)) -}}
{{- end -}}

{{- define "dermaops.monitorUrl" -}}
{{- printf "http://%s-monitor.%s.svc:8000" (include "dermaops.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/* The restricted Pod Security Standard, for pods and containers. */}}
{{- define "dermaops.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "dermaops.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The predictor container, the same under KServe and in the plain Deployment. */}}
{{- define "dermaops.predictorContainer" -}}
{{ include "dermaops.trackContainer" (list . "stable") }}
{{- end -}}

{{/* The predictor container of one track: include with (list . "stable") or (list . "canary").
     The canary's logs the requests a rollout's shadow mirrors to it (they carry
     x-dermaops-shadow-of, which the HTTPRoute sets only then) as shadow answers. */}}
{{- define "dermaops.trackContainer" -}}
{{- $track := index . 1 -}}
{{- with index . 0 -}}
{{- if and (eq .Values.predictor.precision "int8") (or .Values.predictor.gpu.enabled (has .Values.predictor.backend (list "torch" "cuda"))) }}
{{- fail "predictor.precision int8 runs the INT8 ONNX graph on CPUs; with predictor.gpu.enabled or a torch backend the predictor runs torch (CUDA in fp16): set precision auto or fp32, or backend onnx" }}
{{- end }}
{{- if and (gt (float64 .Values.predictor.queueTimeout) 0.0) (gt (float64 .Values.predictor.queueTimeout) (float64 .Values.predictor.requestTimeout)) }}
{{- fail (printf "predictor.queueTimeout (%v) must not pass predictor.requestTimeout (%v): the wait in the queue is part of a request's time" .Values.predictor.queueTimeout .Values.predictor.requestTimeout) }}
{{- end }}
name: kserve-container
image: {{ include "dermaops.predictorImage" . }}
imagePullPolicy: {{ .Values.images.pullPolicy }}
args:
  - --model_name={{ .Values.model.name }}
  - --model_dir=/mnt/models
  - --http_port=8080
  - --backend={{ ternary "cuda" .Values.predictor.backend .Values.predictor.gpu.enabled }}
env:
  # env[0] and env[1] are addressed by position by `dermaops deploy` (dermaops/deploy.py), with
  # test operations on their names: keep them first, in this order.
  - name: DERMAOPS_SERVING_MODEL_VERSION
    value: {{ .Values.model.version | quote }}
  {{- if and .Values.kserve.enabled (eq $track "stable") }}
  - name: STORAGE_URI  # KServe's webhook adds the storage initializer for it
    value: {{ include "dermaops.storageUri" . | quote }}
  {{- end }}
  - name: DERMAOPS_SERVING_PRECISION
    value: {{ .Values.predictor.precision | quote }}
  - name: DERMAOPS_SERVING_MAX_IMAGE_BYTES
    value: {{ .Values.predictor.maxImageBytes | int64 | quote }}
  - name: DERMAOPS_SERVING_MAX_INSTANCES
    value: {{ .Values.predictor.maxInstances | int64 | quote }}
  - name: DERMAOPS_SERVING_MAX_BODY_BYTES
    value: {{ .Values.predictor.maxBodyBytes | int64 | quote }}
  - name: DERMAOPS_SERVING_MAX_IN_FLIGHT
    value: {{ .Values.predictor.maxInFlight | int64 | quote }}
  - name: DERMAOPS_SERVING_MAX_QUEUE
    value: {{ .Values.predictor.maxQueue | int64 | quote }}
  - name: DERMAOPS_SERVING_QUEUE_TIMEOUT_S
    value: {{ .Values.predictor.queueTimeout | quote }}
  - name: DERMAOPS_SERVING_REQUEST_TIMEOUT_S
    value: {{ .Values.predictor.requestTimeout | quote }}
  - name: DERMAOPS_HOME
    value: /var/lib/dermaops
  {{- if .Values.monitor.enabled }}
  - name: DERMAOPS_SERVING_MONITOR_URL
    value: {{ include "dermaops.monitorUrl" . | quote }}
  - name: DERMAOPS_MONITOR_TOKEN_FILE
    value: /var/run/secrets/dermaops/monitor-token/token
  {{- end }}
  {{- if and (eq $track "canary") (or (include "dermaops.canaryRoute" .) (include "dermaops.shadowHome" .)) }}
  - name: DERMAOPS_SERVING_CHALLENGER
    value: "true"
  {{- end }}
  {{- if and (eq $track "stable") (include "dermaops.shadowHome" .) }}
  # A rollout's shadow under KServe: mirrored to the canary Deployment while the monitor's
  # rollout says shadow, with this version stable (serving/shadow.py).
  - name: DERMAOPS_SERVING_SHADOW_URL
    value: {{ printf "http://%s-predictor-canary.%s.svc" (include "dermaops.fullname" .) .Release.Namespace | quote }}
  - name: DERMAOPS_SERVING_SHADOW_FOLLOWS_ROLLOUT
    value: "true"
  {{- end }}
  {{- with .Values.predictor.env }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
ports:
  - name: http1  # the name Knative accepts for an HTTP/1 port (Serverless mode)
    containerPort: 8080
    protocol: TCP
readinessProbe:
  httpGet: {path: /v2/health/ready, port: 8080}
  periodSeconds: 5
  failureThreshold: 3
livenessProbe:
  httpGet: {path: /v2/health/live, port: 8080}
  initialDelaySeconds: 30
  periodSeconds: 15
startupProbe:
  httpGet: {path: /v2/health/ready, port: 8080}
  periodSeconds: 5
  failureThreshold: 60
resources:
  requests:
    {{- toYaml .Values.predictor.resources.requests | nindent 4 }}
  limits:
    {{- toYaml .Values.predictor.resources.limits | nindent 4 }}
    {{- if .Values.predictor.gpu.enabled }}
    nvidia.com/gpu: {{ .Values.predictor.gpu.count }}
    {{- end }}
securityContext:
  {{- include "dermaops.containerSecurity" . | nindent 2 }}
volumeMounts:
  - {name: home, mountPath: /var/lib/dermaops}
  - {name: tmp, mountPath: /tmp}
  {{- if .Values.monitor.enabled }}
  - {name: monitor-token, mountPath: /var/run/secrets/dermaops/monitor-token, readOnly: true}
  {{- end }}
{{- end -}}
{{- end -}}

{{/* The predictor's volumes besides the model: scratch space and the monitor's token. */}}
{{- define "dermaops.predictorVolumes" -}}
- {name: home, emptyDir: {}}
- {name: tmp, emptyDir: {}}
{{- if .Values.monitor.enabled }}
- name: monitor-token
  secret: {secretName: {{ .Values.monitor.tokenSecret }}, defaultMode: 0400}
{{- end }}
{{- end -}}

{{- define "dermaops.predictorScheduling" -}}
{{- if .Values.predictor.gpu.enabled }}
nodeSelector:
  {{- toYaml .Values.predictor.gpu.nodeSelector | nindent 2 }}
tolerations:
  {{- toYaml .Values.predictor.gpu.tolerations | nindent 2 }}
{{- else }}
{{- with .Values.predictor.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.predictor.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "dermaops.storageUri" -}}
{{- required "model.storageUri is required: the artifact URI of the version to serve" .Values.model.storageUri -}}
{{- end -}}

{{/* KServe's storage initializer: fetch model.storageUri into the `model` volume, with the
     credentials of storageInitializer.credentialsSecret. STORAGE_URI is env[0], which
     `dermaops deploy` patches on promotion. */}}
{{- define "dermaops.storageInitializer" -}}
name: storage-initializer
image: {{ .Values.storageInitializer.image }}
imagePullPolicy: IfNotPresent
args:
  - $(STORAGE_URI)
  - /mnt/models
env:
  - name: STORAGE_URI
    value: {{ include "dermaops.storageUri" . | quote }}
{{- with .Values.storageInitializer.credentialsSecret }}
envFrom:
  - secretRef: {name: {{ . | quote }}}
{{- end }}
resources:
  requests: {cpu: 100m, memory: 256Mi}
  limits: {cpu: "1", memory: 1Gi}
securityContext:
  {{- include "dermaops.containerSecurity" . | nindent 2 }}
volumeMounts:
  - {name: model, mountPath: /mnt/models}
  - {name: tmp, mountPath: /tmp}
{{- end -}}

{{/* The mesh identity of a service account in the release namespace: include with (list . "sa"). */}}
{{- define "dermaops.principal" -}}
{{- $root := index . 0 -}}
{{- printf "%s/ns/%s/sa/%s" $root.Values.istio.trustDomain $root.Release.Namespace (index . 1) -}}
{{- end -}}

{{/* The predictor's service account: the one holding storage credentials, else the default. */}}
{{- define "dermaops.predictorServiceAccount" -}}
{{- .Values.kserve.storageServiceAccount | default "default" -}}
{{- end -}}

{{/* Where the monitor fetches new versions' references: monitor.registry.trackingUri, else
     the chart's MLflow, else nothing. */}}
{{- define "dermaops.monitorTrackingUri" -}}
{{- if .Values.monitor.registry.trackingUri -}}
{{- .Values.monitor.registry.trackingUri -}}
{{- else if .Values.mlflow.enabled -}}
{{- printf "http://%s-mlflow.%s.svc:5000" (include "dermaops.fullname" .) .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* NAMESPACE/NAME of the Lease alias moves take turns under (DERMAOPS_PROMOTION_LEASE). */}}
{{- define "dermaops.promotionLease" -}}
{{- printf "%s/%s-promotion" .Release.Namespace (include "dermaops.fullname" .) -}}
{{- end -}}

{{/* "true" when the monitor runs the champion reconciler: on, with a registered model and a
tracking URI to read its champion from. */}}
{{- define "dermaops.monitorReconciles" -}}
{{- if and .Values.monitor.enabled .Values.monitor.reconcile.enabled .Values.monitor.registry.model (include "dermaops.monitorTrackingUri" .) -}}true{{- end -}}
{{- end -}}

{{/* "true" when the predictor runs as a Knative service (KServe's Serverless mode). */}}
{{- define "dermaops.serverless" -}}
{{- if and .Values.kserve.enabled (eq .Values.kserve.deploymentMode "Serverless") -}}true{{- end -}}
{{- end -}}

{{/* The plain Deployment of the predictor (the stable one only with kserve.enabled=false):
     include with (list . "stable") or (list . "canary"). The stable one keeps its selector
     (Kubernetes does not let a selector change in place); the canary's adds dermaops.io/track. */}}
{{- define "dermaops.plainPredictor" -}}
{{- $root := index . 0 -}}
{{- $track := index . 1 -}}
{{- with $root -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "dermaops.fullname" . }}-predictor{{ if eq $track "canary" }}-canary{{ end }}
  labels:
    {{- include "dermaops.labels" . | nindent 4 }}
    app.kubernetes.io/component: predictor
    dermaops.io/track: {{ $track }}
    dermaops.io/model-version: {{ .Values.model.version | quote }}
spec:
  replicas: {{ ternary 0 (max 1 .Values.predictor.minReplicas) (eq $track "canary") }}
  selector:
    matchLabels:
      {{- include "dermaops.selector" (list . "predictor") | nindent 6 }}
      {{- if eq $track "canary" }}
      dermaops.io/track: canary
      {{- end }}
  template:
    metadata:
      labels:
        {{- include "dermaops.selector" (list . "predictor") | nindent 8 }}
        dermaops.io/track: {{ $track }}
    spec:
      {{- with .Values.kserve.storageServiceAccount }}
      serviceAccountName: {{ . }}
      {{- end }}
      automountServiceAccountToken: false
      {{- with .Values.images.pullSecrets }}
      imagePullSecrets:
        {{- range . }}
        - name: {{ . }}
        {{- end }}
      {{- end }}
      securityContext:
        {{- include "dermaops.podSecurity" . | nindent 8 }}
      {{- include "dermaops.predictorScheduling" . | trim | nindent 6 }}
      initContainers:
        - {{ include "dermaops.storageInitializer" . | nindent 10 | trim }}
      containers:
        - {{ include "dermaops.trackContainer" (list . $track) | nindent 10 | trim }}
            - {name: model, mountPath: /mnt/models, readOnly: true}
      volumes:
        {{- include "dermaops.predictorVolumes" . | nindent 8 }}
        - {name: model, emptyDir: {}}
{{- end -}}
{{- end -}}

{{/* "true" when the canary Deployment is a KServe release's shadow home: the InferenceService's
     predictor mirrors to it during a rollout's shadow, asking the monitor when; empty otherwise. */}}
{{- define "dermaops.shadowHome" -}}
{{- if and .Values.kserve.enabled .Values.predictor.canary.enabled -}}
{{- if not .Values.monitor.enabled }}
{{- fail "predictor.canary.enabled under KServe is a rollout's shadow home, and the monitor drives rollouts and tells the predictor when to mirror: set monitor.enabled=true, or predictor.canary.enabled=false" }}
{{- end -}}
true
{{- end -}}
{{- end -}}

{{/* "true" when the plain Deployment's canary sits behind the chart's HTTPRoute (exact weights,
     and a rollout's shadow mirrored by the gateway); empty otherwise. */}}
{{- define "dermaops.canaryRoute" -}}
{{- if and (not .Values.kserve.enabled) .Values.predictor.canary.enabled .Values.predictor.canary.parentRefs -}}
true
{{- end -}}
{{- end -}}
