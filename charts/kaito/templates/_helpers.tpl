{{/* Names, labels, images and the checks no JSON schema can express. */}}

{{- define "kaito.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the release name, prefixed with the chart name unless it contains it. */}}
{{- define "kaito.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "kaito.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kaito.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "kaito.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "kaito.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kaito
{{- end }}

{{- define "kaito.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "kaito.fullname" .) }}
{{- end }}

{{- define "kaito.webhookServiceName" -}}
{{- printf "%s-webhook" (include "kaito.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kaito.webhookSecretName" -}}
{{- printf "%s-webhook-cert" (include "kaito.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Lease whose holder reconciles (leaderElection); the Role allows get/update on it only. */}}
{{- define "kaito.leaseName" -}}
{{- printf "%s-leader" (include "kaito.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The host the API server and the certificate use for the webhook: <service>.<namespace>.svc */}}
{{- define "kaito.webhookHost" -}}
{{- printf "%s.%s.svc" (include "kaito.webhookServiceName" .) .Release.Namespace }}
{{- end }}

{{/*
An image reference moved to global.imageRegistry when that is set: the registry part (a first
path component with a dot or colon, or "localhost") is replaced, a Docker Hub name is prefixed,
and a bare name:tag (relative to images.registry, which global.imageRegistry also replaces) is
left as it is. Call with (dict "ref" "<image>" "root" $).
*/}}
{{- define "kaito.image" -}}
{{- $ref := .ref | toString }}
{{- $global := .root.Values.global.imageRegistry | trimSuffix "/" }}
{{- if or (not $global) (not (contains "/" $ref)) }}
{{- $ref }}
{{- else }}
{{- $first := first (splitList "/" $ref) }}
{{- if or (contains "." $first) (contains ":" $first) (eq $first "localhost") }}
{{- printf "%s/%s" $global (join "/" (rest (splitList "/" $ref))) }}
{{- else }}
{{- printf "%s/%s" $global $ref }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kaito.operatorImage" -}}
{{- $img := .Values.operator.image }}
{{- printf "%s/%s:%s" (.Values.global.imageRegistry | default $img.registry | trimSuffix "/") $img.repository $img.tag }}
{{- end }}

{{/*
The plugin volumes: the install prefix (written by the install-plugins init container, read-only
in the operator), the index/registry CA and the OCI credentials when set. Call with
(dict "root" $ "readOnly" true|false).
*/}}
{{- define "kaito.pluginMounts" -}}
- name: plugins
  mountPath: /opt/kaito/plugins
  readOnly: {{ .readOnly }}
{{- if not .readOnly }}
- name: tmp
  mountPath: /tmp
{{- end }}
{{- if .root.Values.plugins.caConfigMap }}
- name: plugins-ca
  mountPath: /etc/kaito/plugins-ca
  readOnly: true
{{- end }}
{{- if .root.Values.plugins.ociPullSecret }}
- name: plugins-oci
  mountPath: /etc/kaito/plugins-oci
  readOnly: true
{{- end }}
{{- end }}

{{/* Cross-field checks: each failure names the value and the fix. */}}
{{- define "kaito.validate" -}}
{{- if and (eq .Values.nodeProvisioner.name "azure-agentpool") (not .Values.azure.workloadIdentity.clientId) }}
{{- fail "nodeProvisioner.name=azure-agentpool creates AKS agent pools through the Azure API and needs an identity: set azure.workloadIdentity.clientId to the client ID of a managed identity federated with the operator's ServiceAccount" }}
{{- end }}
{{- if not .Values.webhook.enabled }}
{{- fail "webhook.enabled=false is not supported yet: the operator registers its admission handler whatever the setting and stops at start-up without a webhook server (kaito_core/operator/handlers.py); keep webhook.enabled=true" }}
{{- end }}
{{- if and .Values.webhook.enabled (not .Values.webhook.port) }}
{{- fail "webhook.enabled=true needs webhook.port (the HTTPS port of the webhook server, e.g. 9443)" }}
{{- end }}
{{- if and (or .Values.plugins.ociArtifacts .Values.plugins.findLinks .Values.plugins.indexUrl) (not .Values.plugins.packages) }}
{{- fail "plugins.indexUrl, plugins.findLinks or plugins.ociArtifacts is set but plugins.packages is empty: list the plugin packages to install, e.g. plugins.packages=[kaito-smollm2==0.1.0]" }}
{{- end }}
{{- if and (gt (int .Values.operator.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail (printf "operator.replicas=%d needs leaderElection.enabled=true: without a leader every replica would reconcile the same Workspaces (and create duplicate NodeClaims)" (int .Values.operator.replicas)) }}
{{- end }}
{{- if not .Values.metrics.port }}
{{- fail "metrics.port=0 disables /metrics, which the operator's liveness probe reads: set metrics.port (default 8080)" }}
{{- end }}
{{- end }}

{{/*
The webhook's CA and serving certificate as a dict (ca, crt, key: PEM; notAfter: unix seconds).
Kept from the existing Secret on upgrade (so the CA bundle the API server trusts does not change)
unless it expires within 60 days; generated on install. Computed once per render and shared by
the Secret, the ValidatingWebhookConfiguration and the Deployment's checksum through $.
*/}}
{{- define "kaito.webhookCert" -}}
{{- if not (hasKey $ "kaitoWebhookCert") }}
{{- $now := now | unixEpoch | int64 }}
{{- $cert := dict }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "kaito.webhookSecretName" .) }}
{{- $data := dig "data" dict $existing }}
{{- $notAfter := dig "metadata" "annotations" "kaito.sh/certificate-not-after" "0" $existing | int64 }}
{{- if and (hasKey $data "ca.crt") (hasKey $data "tls.crt") (hasKey $data "tls.key") (gt $notAfter (add $now 5184000)) }}
{{- $cert = dict "ca" (index $data "ca.crt" | b64dec) "crt" (index $data "tls.crt" | b64dec) "key" (index $data "tls.key" | b64dec) "notAfter" $notAfter }}
{{- else }}
{{- $days := .Values.webhook.certificateValidityDays | int }}
{{- $svc := include "kaito.webhookServiceName" . }}
{{- $ns := .Release.Namespace }}
{{- $hosts := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) "localhost" }}
{{- $ca := genCA "kaito-webhook-ca" $days }}
{{- $leaf := genSignedCert (include "kaito.webhookHost" .) (list "127.0.0.1") $hosts $days $ca }}
{{- $cert = dict "ca" $ca.Cert "crt" $leaf.Cert "key" $leaf.Key "notAfter" (add $now (mul $days 86400)) }}
{{- end }}
{{- $_ := set $ "kaitoWebhookCert" $cert }}
{{- end }}
{{- toYaml (get $ "kaitoWebhookCert") }}
{{- end }}
