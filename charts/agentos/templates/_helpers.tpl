{{/*
Names. The release named `agentos` gets the names of deploy/rbac/ (agentos-controller,
agentos-operator, ...); any other release name is prefixed, so two releases in one cluster do
not share cluster-scoped objects.
*/}}
{{- define "agentos.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The name of one component's objects: (dict "ctx" $ "component" "api"). */}}
{{- define "agentos.componentName" -}}
{{- printf "%s-%s" (include "agentos.fullname" .ctx) .component -}}
{{- end -}}

{{- define "agentos.operatorLease" -}}
{{- .Values.operator.lease | default (printf "%s-operator" (include "agentos.fullname" .)) -}}
{{- end -}}

{{/* Labels that pick one component's pods: (dict "ctx" $ "component" "api"). */}}
{{- define "agentos.selectorLabels" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{/* Every object's labels: (dict "ctx" $ "component" "api"); component may be "". */}}
{{- define "agentos.labels" -}}
{{ include "agentos.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: agentos
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version }}
{{- end -}}

{{- define "agentos.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The database URL, from the Secret named in values (never inline). */}}
{{- define "agentos.databaseEnv" -}}
- name: AGENTOS_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.secretKey }}
{{- end -}}

{{- define "agentos.natsEnv" -}}
- name: AGENTOS_NATS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.nats.existingSecret }}
      key: {{ .Values.nats.secretKey }}
{{- end -}}

{{/*
Environment every Agent OS process shares. Listen on every address (the default, 127.0.0.1,
is unreachable from the kubelet and the Service); state and HOME under the writable /tmp.
*/}}
{{- define "agentos.commonEnv" -}}
- name: AGENTOS_HOST
  value: "0.0.0.0"
- name: AGENTOS_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: AGENTOS_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: AGENTOS_STATE_DIR
  value: /tmp/agentos
- name: HOME
  value: /tmp
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
{{- end -}}

{{/* Pod-level settings shared by every pod: (dict "ctx" $ "component" "api" "values" .Values.api). */}}
{{- define "agentos.podCommon" -}}
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .ctx.Values.podSecurityContext | nindent 2 }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- range . }}
  - {{ toYaml . | nindent 4 | trim }}
    {{- if not .labelSelector }}
    labelSelector:
      matchLabels:
        {{- include "agentos.selectorLabels" $ | nindent 8 }}
    {{- end }}
  {{- end }}
{{- end }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: {{ .ctx.Values.tmpSizeLimit }}
{{- end -}}

{{/* Container-level settings shared by every container. */}}
{{- define "agentos.containerCommon" -}}
image: {{ include "agentos.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end -}}

{{/*
A headless Service over one component's pods, for Prometheus to find their /metrics (the
ServiceMonitor selects it): (dict "ctx" $ "component" "relay").
*/}}
{{- define "agentos.metricsService" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "agentos.componentName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "agentos.labels" . | nindent 4 }}
spec:
  clusterIP: None
  selector:
    {{- include "agentos.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ .port }}
      targetPort: http
      appProtocol: http
{{- end -}}

{{/*
The gateway Service's cluster DNS name, <release>-gateway.<namespace>.svc (the cluster
domain, cluster.local or another, is left to the resolver's search list).
*/}}
{{- define "agentos.gatewayHost" -}}
{{- printf "%s.%s.svc" (include "agentos.componentName" (dict "ctx" . "component" "gateway")) .Release.Namespace -}}
{{- end -}}

{{/* Labels as the `k=v,k=v` the controller's AGENTOS_KUBERNETES_*_SELECTOR settings read. */}}
{{- define "agentos.selectorString" -}}
{{- $labels := include "agentos.selectorLabels" . | fromYaml -}}
{{- $items := list -}}
{{- range $k := keys $labels | sortAlpha -}}
{{- $items = append $items (printf "%s=%s" $k (index $labels $k)) -}}
{{- end -}}
{{- join "," $items -}}
{{- end -}}
