{{/* The name every gateway object takes: the release name. */}}
{{- define "sluice.name" -}}{{ .Release.Name }}{{- end -}}

{{/* Labels of the gateway's objects and the selector of its pods. */}}
{{- define "sluice.labels" -}}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "sluice.image" -}}{{ .Values.image.repository }}:{{ .Values.image.tag }}{{- end -}}
