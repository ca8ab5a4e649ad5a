{{/*
Names, labels and the pieces every control-plane pod shares (migrations, daphne, ingest,
Celery worker and beat all run the same settings: controlplane/settings/base.py).
*/}}

{{- define "sqlproxy.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of a component; call with (dict "context" $ "component" "worker"). */}}
{{- define "sqlproxy.labels" -}}
{{ include "sqlproxy.selectorLabels" . }}
app.kubernetes.io/version: {{ .context.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .context.Chart.Name .context.Chart.Version }}
{{- end -}}

{{- define "sqlproxy.selectorLabels" -}}
app.kubernetes.io/name: {{ .context.Chart.Name }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* An image reference; call with (dict "context" $ "repository" .Values.image.worker). */}}
{{- define "sqlproxy.image" -}}
{{- printf "%s:%s" .repository (.context.Values.image.tag | default .context.Chart.AppVersion) -}}
{{- end -}}

{{- define "sqlproxy.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "sqlproxy.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{- define "sqlproxy.secretName" -}}
{{- required "secrets.name is required: the Secret holding the database URL, the Redis URL and the keys (docs/deploy.md)" .Values.secrets.name -}}
{{- end -}}

{{/*
The control plane's environment. The URLs (with their passwords) and the keys are files from
the Secret (the settings read NAME_FILE), so they are not in the process environment.
*/}}
{{- define "sqlproxy.controlplane.env" -}}
- name: DATABASE_URL_FILE
  value: /run/secrets/sqlproxy/database-url
- name: REDIS_URL_FILE
  value: /run/secrets/sqlproxy/redis-url
- name: DJANGO_SECRET_KEY_FILE
  value: /run/secrets/sqlproxy/django-secret-key
- name: SQLPROXY_SECRET_KEY_FILE
  value: /run/secrets/sqlproxy/sqlproxy-secret-key
- name: DJANGO_ALLOWED_HOSTS
  value: {{ append .Values.controlplane.allowedHosts (printf "%s-controlplane" (include "sqlproxy.fullname" .)) | join "," | quote }}
- name: DJANGO_CSRF_TRUSTED_ORIGINS
  value: {{ .Values.controlplane.csrfTrustedOrigins | join "," | quote }}
- name: SQLPROXY_STREAM_WORKER
  value: {{ printf "%s-worker:%v" (include "sqlproxy.fullname" .) .Values.worker.service.port | quote }}
- name: SQLPROXY_FLEET_LISTEN_PORT
  value: {{ .Values.worker.port | quote }}
- name: SQLPROXY_FLEET_ADMIN_PORT
  value: {{ .Values.worker.adminPort | quote }}
{{- range $name, $value := .Values.controlplane.settings }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{- define "sqlproxy.controlplane.volumeMounts" -}}
- name: secrets
  mountPath: /run/secrets/sqlproxy
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "sqlproxy.controlplane.volumes" -}}
- name: secrets
  secret:
    secretName: {{ include "sqlproxy.secretName" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.secrets.keys.databaseUrl }}
        path: database-url
      - key: {{ .Values.secrets.keys.redisUrl }}
        path: redis-url
      - key: {{ .Values.secrets.keys.djangoSecretKey }}
        path: django-secret-key
      - key: {{ .Values.secrets.keys.fernetKeys }}
        path: sqlproxy-secret-key
- name: tmp
  emptyDir: {}
{{- end -}}

{{/* Placement shared by every control-plane pod. */}}
{{- define "sqlproxy.controlplane.placement" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.controlplane.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.controlplane.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.controlplane.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
