#!/usr/bin/env bash
# Lints the pgferry Helm chart and renders it with several value sets, with
# Helm v4 built from its Go module (no other download). Used by .ci/run
# (check_deploy); runs from any directory.
#
# The helm binary comes from $HELM if set, else from a cache shared with
# deploy/helm's Go test: ${XDG_CACHE_HOME:-~/.cache}/pgferry/helm-<version>/,
# built there once with `go install` (a few minutes on 2 cores).
set -euo pipefail

HELM_VERSION=v4.3.2
cd "$(dirname "$0")"
chart=./pgferry

helm_bin() {
	if [[ -n "${HELM:-}" ]]; then
		echo "$HELM"
		return
	fi
	local dir="${XDG_CACHE_HOME:-$HOME/.cache}/pgferry/helm-${HELM_VERSION}"
	if [[ ! -x "$dir/helm" ]]; then
		echo "check.sh: building helm ${HELM_VERSION} into $dir" >&2
		mkdir -p "$dir"
		GOBIN="$dir" GOFLAGS=-mod=mod go install "helm.sh/helm/v4/cmd/helm@${HELM_VERSION}" >&2
	fi
	echo "$dir/helm"
}

helm="$(helm_bin)"
"$helm" version

# name and the arguments that select its values.
value_sets=(
	"defaults|"
	"sidecar|--set mode=sidecar --set authFile.content=x"
	"everything|--set autoscaling.enabled=true --set serviceMonitor.enabled=true --set podMonitor.enabled=true --set workloadIdentity.enabled=true --set workloadIdentity.clientId=00000000-0000-0000-0000-000000000000 --set authFile.content=x --set podDisruptionBudget.minAvailable=1"
	"existing|--set existingConfigMap=my-config --set authFile.existingSecret=my-secret --set headlessService.enabled=false --set podDisruptionBudget.enabled=false"
)

echo "==> helm lint --strict" >&2
"$helm" lint --strict "$chart"
for vs in "${value_sets[@]}"; do
	name="${vs%%|*}"
	# shellcheck disable=SC2206 # the arguments are meant to split
	args=(${vs#*|})
	echo "==> helm lint / template: $name" >&2
	"$helm" lint --strict "$chart" "${args[@]}" >/dev/null
	"$helm" template pgferry "$chart" --namespace pgferry "${args[@]}" >/dev/null
done
# Values that must be refused.
if "$helm" template pgferry "$chart" --set workloadIdentity.enabled=true >/dev/null 2>&1; then
	echo "check.sh: workloadIdentity.enabled without clientId rendered" >&2
	exit 1
fi
echo "helm chart OK" >&2
